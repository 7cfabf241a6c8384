"""Store records to api.md's JSON shapes (clusters, accounts, ledger entries, events)."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any
from urllib.parse import urlsplit

from ecocore import billing
from ecocore.money import MICRO, format_usd
from ecolink.api.context import AppContext
from ecolink.api.edge_rules import service_host
from ecolink.runtime.base import ReplicaState
from ecolink.store import Account, Cluster, Event, LedgerEntry, rfc3339


def account_json(a: Account) -> dict[str, Any]:
    return {
        "id": a.id,
        "name": a.name,
        "balance": format_usd(a.balance),
        "held": format_usd(a.held),
        "available": format_usd(a.available),
    }


def ledger_entry_json(e: LedgerEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": rfc3339(e.at),
        "cluster_id": e.cluster_id,
        "kind": e.kind,
        "amount": format_usd(e.amount),
        "balance_after": format_usd(e.balance_after),
        "held_after": format_usd(e.held_after),
        "memo": e.memo,
    }


LEDGER_CSV_COLUMNS = [
    "id",
    "at",
    "cluster_id",
    "kind",
    "amount",
    "balance_after",
    "held_after",
    "memo",
]


def ledger_csv(entries: list[LedgerEntry]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(LEDGER_CSV_COLUMNS)
    for e in entries:
        d = ledger_entry_json(e)
        w.writerow(["" if d[k] is None else _csv_safe(str(d[k])) for k in LEDGER_CSV_COLUMNS])
    return buf.getvalue()


def _csv_safe(value: str) -> str:
    # A cell starting with = + - @ is a formula in spreadsheets; amounts are numbers
    # and stay as they are, free text gets a leading quote.
    if value[:1] in ("=", "+", "@") or (value[:1] == "-" and not _is_number(value)):
        return "'" + value
    return value


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def event_json(e: Event) -> dict[str, Any]:
    d: dict[str, Any] = {"at": rfc3339(e.at), "kind": e.kind, "message": e.message}
    if e.replica is not None:
        d["replica"] = e.replica
    return d


def hours_number(micro_hours: int) -> int | float:
    whole, frac = divmod(micro_hours, MICRO)
    return whole if frac == 0 else float(f"{whole}.{frac:06d}")


def endpoint_url(ctx: AppContext, c: Cluster, base: str | None = None) -> str:
    root = (ctx.public_url or base or "").rstrip("/")
    if ctx.service_domain:
        # The cluster's own origin: its host name under the service domain, on the
        # scheme and port of the public URL.
        parts = urlsplit(root)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme or 'https'}://{service_host(c.id, ctx.service_domain)}{port}/"
    return f"{root}/gpu-clusters/{c.id}/service/"


def empty_summary(ctx: AppContext) -> dict[str, Any]:
    return {
        "gpus": 0,
        "mean_utilization": 0.0,
        "idle_gpus": 0,
        "telemetry": ctx.runtime.info.telemetry,
    }


def gpu_summary(ctx: AppContext, c: Cluster) -> dict[str, Any]:
    if ctx.telemetry is None or c.status not in ("pending", "running"):
        return empty_summary(ctx)
    summary: dict[str, Any] = ctx.telemetry.summary(c.id)
    return summary


def replica_states(ctx: AppContext, c: Cluster) -> list[ReplicaState]:
    if c.status in ("terminated",):
        return []
    return ctx.runtime.replicas(c.id)


def replicas_json(ctx: AppContext, c: Cluster) -> list[dict[str, Any]]:
    """The replicas route's shape: each replica state with its GPUs and telemetry kind."""
    states = replica_states(ctx, c)
    if ctx.telemetry is not None:
        out: list[dict[str, Any]] = ctx.telemetry.replicas_json(c.id, states)
    else:
        kind = ctx.runtime.info.telemetry
        out = [{**s.as_json(), "gpus": [], "telemetry": kind} for s in states]
    traffic = ctx.traffic
    for r in out:
        # The service URL's traffic to the replica (None: no endpoint, or no front).
        r["traffic"] = traffic.replica(c.id, r["name"]) if traffic is not None else None
    return out


def traffic_json(ctx: AppContext, c: Cluster) -> dict[str, Any] | None:
    traffic = ctx.traffic
    return traffic.cluster(c.id) if traffic is not None else None


def termination_grace_seconds(ctx: AppContext, c: Cluster) -> int:
    """The cluster's grace, or the runtime's default for one launched without."""
    if c.termination_grace_seconds is not None:
        return c.termination_grace_seconds
    return math.ceil(ctx.runtime.default_termination_grace_s)


def _store_fields(ctx: AppContext, c: Cluster, base_url: str | None) -> dict[str, Any]:
    """The part of a cluster's JSON that only changes when its store row does."""
    hourly = billing.hourly_rate(c.rate_per_gpu_hour, c.gpu_count, c.replicas)
    burn = ctx.service.burn_rate(c)
    hold_remaining = c.hold_total - c.released_total - c.spent_total
    # Posted charges cover up to last_charge_at; the rest to expiry at the burn rate.
    ahead = max(0, c.expires_at - c.last_charge_at) if burn else 0
    projected = c.spent_total + (burn * ahead) // billing.US_PER_HOUR
    return {
        "id": c.id,
        "name": c.name,
        "region": c.region,
        "gpu_type": c.gpu_type,
        "gpu_count": c.gpu_count,
        "replicas": c.replicas,
        "image": c.image,
        "startup_command": c.startup_command,
        "shared_filesystems": list(c.shared_filesystems),
        "termination_grace_seconds": termination_grace_seconds(ctx, c),
        "status": c.status,
        "status_reason": c.status_reason
        if c.status in ("terminated", "terminating", "failed")
        else None,
        "created_at": rfc3339(c.created_at),
        "started_at": rfc3339(c.started_at) if c.started_at is not None else None,
        "expires_at": rfc3339(c.expires_at),
        "estimated_duration_hours": hours_number(c.duration_mh),
        "hourly_rate": format_usd(hourly),
        "burn_rate": format_usd(burn),
        "cost": {
            "hold": format_usd(c.hold_total),
            "spent": format_usd(c.spent_total),
            "hold_remaining": format_usd(hold_remaining),
            "projected_total": format_usd(projected),
        },
        "endpoint": (
            {"url": endpoint_url(ctx, c, base_url), "port": c.endpoint_port}
            if c.endpoint_port is not None
            else None
        ),
    }


def _runtime_fields(ctx: AppContext, c: Cluster) -> dict[str, Any]:
    """The part that comes from the runtime and telemetry (changes without the store)."""
    states = replica_states(ctx, c)
    return {
        "stale": not ctx.runtime.available(),
        "ready_replicas": sum(1 for s in states if s.ready),
        "replica_states": [s.as_json() for s in states],
        "gpu_summary": gpu_summary(ctx, c),
        "traffic": traffic_json(ctx, c),
    }


def cluster_json(
    ctx: AppContext, c: Cluster, *, now: int | None = None, base_url: str | None = None
) -> dict[str, Any]:
    """api.md's cluster object."""
    d = _store_fields(ctx, c, base_url)
    d.update(_runtime_fields(ctx, c))
    return d


_CACHE_MAX = 50_000


def cluster_json_text(ctx: AppContext, c: Cluster, *, base_url: str | None = None) -> str:
    """The cluster object as JSON text, the same as `cluster_json`, with the store part
    encoded once per row version (lists of a thousand clusters stay cheap)."""
    cache = ctx.render_cache
    key = (c.id, base_url)
    # Every field the store part shows (the version alone could repeat after a
    # transaction that rendered and then did not commit).
    sig = (
        c.version,
        c.status,
        c.status_reason,
        c.replicas,
        c.hold_total,
        c.released_total,
        c.spent_total,
        c.last_charge_at,
        c.expires_at,
        c.duration_mh,
        c.started_at,
        c.endpoint_port,
        c.suspended,
    )
    hit = cache.get(key)
    if hit is not None and hit[0] == sig:
        head = hit[1]
    else:
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        head = _dumps(_store_fields(ctx, c, base_url))[1:-1]
        cache[key] = (sig, head)
    return "{" + head + "," + _dumps(_runtime_fields(ctx, c))[1:]


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
