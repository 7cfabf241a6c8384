"""The fleet's GPUs: every GPU of the account's running clusters, with its health.

`GET /gpus` answers one row per GPU (cluster, replica, readings, health verdict) and
the fleet's rolled-up verdict; `?unhealthy=true` keeps degraded and failing GPUs only.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ecocore.fleet_delta import RowVersions
from ecocore.gpu_health import Verdict, worst
from ecocore.money import format_usd
from ecocore.wire_health import FleetGpusOut
from ecolink.api.common import json_response
from ecolink.api.deps import Ctx, CurrentAccount
from ecolink.api.errors import refusals
from ecolink.api.render import replicas_json
from ecolink.errors import InvalidField
from ecolink.telemetry import IDLE_UTILIZATION

router = APIRouter(tags=["gpus"])

_PARAMS: list[dict[str, Any]] = [
    {
        "name": "unhealthy",
        "in": "query",
        "required": False,
        "schema": {"type": "boolean"},
        "description": "only degraded and failing GPUs",
    },
    {
        "name": "brief",
        "in": "query",
        "required": False,
        "schema": {"type": "boolean"},
        "description": "health as verdict and reason only (the full readings are on the "
        "cluster's replicas route); for lists of thousands of GPUs",
    },
    {
        "name": "since",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "the `version` of an earlier answer: only what changed since (new rows "
        "whole, changed fields with the row's key, `removed` keys); an unknown "
        "version gets the whole list",
    },
]
# The last answers kept per (account, query), for `since`.
_KEEP_VERSIONS = 4
_MAX_LISTS = 256


def _flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name, "false").strip().lower()
    if raw not in ("true", "false", "1", "0"):
        raise InvalidField(f"{name} must be true or false", field=name)
    return raw in ("true", "1")


@router.get(
    "/gpus",
    response_model=FleetGpusOut,
    responses=refusals(401, 422),
    openapi_extra={"parameters": _PARAMS},
    summary="Every GPU of the account's clusters, with its health",
)
async def fleet_gpus(request: Request, ctx: Ctx, acct: CurrentAccount) -> Response:
    only_bad = _flag(request, "unhealthy")
    brief = _flag(request, "brief")
    since = request.query_params.get("since") or None
    if since is not None and len(since) > 64:
        raise InvalidField("since must be a version of an earlier answer", field="since")
    rows: list[dict[str, Any]] = []
    verdicts: list[Verdict] = []
    for c in await ctx.streams.list_clusters(acct.id, ["pending", "running", "stopping"]):
        per_gpu = c.rate_per_gpu_hour
        for rep in replicas_json(ctx, c):
            for g in rep.get("gpus") or ():
                h = g.get("health") or {}
                level = h.get("verdict", "unknown")
                verdicts.append(Verdict(level, h.get("reason")))
                if only_bad and level not in ("degraded", "failing"):
                    continue
                idle = g.get("utilization", 0.0) < IDLE_UTILIZATION
                rows.append(
                    {
                        "cluster_id": c.id,
                        "cluster": c.name,
                        "region": c.region,
                        "replica": rep.get("name"),
                        "index": g.get("index"),
                        "uuid": g.get("uuid"),
                        "name": g.get("name"),
                        "utilization": g.get("utilization"),
                        "memory_used_mib": g.get("memory_used_mib"),
                        "memory_total_mib": g.get("memory_total_mib"),
                        "temperature_c": g.get("temperature_c"),
                        "power_w": g.get("power_w"),
                        "telemetry": rep.get("telemetry"),
                        "idle_cost_per_hour": format_usd(per_gpu if idle else 0),
                        "health": {"verdict": level, "reason": h.get("reason")} if brief else h,
                    }
                )
    overall = worst(verdicts)
    store = ctx.gpu_versions
    versions = store.get((acct.id, brief, only_bad))
    if versions is None:
        while len(store) >= _MAX_LISTS:  # the lists read longest ago go first
            store.pop(next(iter(store)))
        versions = store[(acct.id, brief, only_bad)] = RowVersions(_KEEP_VERSIONS)
    return json_response(
        {
            **versions.answer(rows, since),
            "health": {
                "verdict": overall.level,
                "reason": overall.reason,
                "failing": sum(1 for v in verdicts if v.level == "failing"),
                "degraded": sum(1 for v in verdicts if v.level == "degraded"),
            },
        }
    )
