"""The cluster routes of api.md: launch, list, get, scale, extend, stop, resume, restart,
terminate, endpoint, replicas, replica restart, metrics, events.

Checks run in api.md's order: credentials (middleware), then the cluster (404), then
the body (400, 422), then state, budget and balance in the service (409, 402), then
the runtime (503). Bodies are read by hand so that order holds; their schemas are
attached to the OpenAPI document with `openapi_extra`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ecocore.status import ClusterStatus
from ecocore.wire import (
    ClusterOut,
    ClustersOut,
    EndpointIn,
    EndpointOut,
    EventsOut,
    ExtendIn,
    LaunchIn,
    MetricsOut,
    ReplicasOut,
    ReplicaStateOut,
    ScaleIn,
    check_hours,
)
from ecolink.api.common import (
    account_of,
    idempotency,
    json_response,
    read_object,
    respond_json,
    validate,
)
from ecolink.api.context import AppContext, get_ctx
from ecolink.api.errors import refusals
from ecolink.api.render import (
    cluster_json,
    cluster_json_text,
    endpoint_url,
    event_json,
    replicas_json,
)
from ecolink.errors import InvalidField
from ecolink.service import LaunchRequest
from ecolink.store import Cluster

router = APIRouter(tags=["clusters"])

STATUSES = tuple(str(s) for s in ClusterStatus)

IDEMPOTENCY_HEADER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "per account, kept 24 hours: a retry with the same key and body returns "
    "the first answer and changes nothing more",
}


def _body(model: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}},
        },
        "parameters": [IDEMPOTENCY_HEADER],
    }


_NO_BODY: dict[str, Any] = {"parameters": [IDEMPOTENCY_HEADER]}


def _base(ctx: AppContext, request: Request) -> str:
    return ctx.public_url or str(request.base_url)


def _renderer(ctx: AppContext, request: Request) -> Callable[[Any], dict[str, Any]]:
    base = _base(ctx, request)
    last: list[tuple[Cluster, dict[str, Any]]] = []

    def render(c: Any) -> dict[str, Any]:
        assert isinstance(c, Cluster)
        # The answer stored for an Idempotency-Key (rendered inside the action's
        # transaction) and the answer sent are one and the same rendering.
        if last and last[0][0] is c:
            return last[0][1]
        out = cluster_json(ctx, c, base_url=base)
        last[:] = [(c, out)]
        return out

    return render


async def _lookup(request: Request, ref: str) -> tuple[AppContext, str, Cluster]:
    ctx = get_ctx(request)
    acct = account_of(request)
    c = await ctx.streams.cluster(acct.id, ref)
    request.state.cluster_id = c.id  # Idempotency-Key fingerprints name it by id
    return ctx, acct.id, c


# ---------------------------------------------------------------------------- launch, list, get


@router.post(
    "/gpu-clusters",
    status_code=201,
    response_model=ClusterOut,
    responses=refusals(400, 401, 409, 402, 413, 422, 503),
    openapi_extra=_body("LaunchIn"),
    summary="Launch a cluster",
)
async def launch(request: Request) -> Response:
    ctx = get_ctx(request)
    acct = account_of(request)
    data, _ = await read_object(request)
    body = validate(LaunchIn, data)
    req = LaunchRequest(
        name=body.name,
        region=body.region,
        gpu_type=body.gpu_type,
        gpu_count=body.gpu_count,
        replicas=body.replicas,
        image=body.image,
        duration_mh=check_hours(body.estimated_duration_hours),
        startup_command=body.startup_command,
        shared_filesystems=tuple(body.shared_filesystems),
        expose_port=body.expose.port if body.expose is not None else None,
        termination_grace_seconds=body.termination_grace_seconds,
    )
    ctx.service.validate_launch(req)
    render = _renderer(ctx, request)
    idem = idempotency(request, data, respond_json(201, render))
    c = await ctx.service.launch(acct.id, req, idem)
    return json_response(render(c), 201)


_LIST_PARAMS: list[dict[str, Any]] = [
    {
        "name": "status",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "only clusters in these statuses (comma-separated: "
        + ", ".join(STATUSES)
        + ")",
    },
]


@router.get(
    "/gpu-clusters",
    response_model=ClustersOut,
    responses=refusals(401, 422),
    openapi_extra={"parameters": _LIST_PARAMS},
    summary="The account's clusters (terminated ones stay listed 7 days)",
)
async def list_clusters(request: Request) -> Response:
    ctx = get_ctx(request)
    acct = account_of(request)
    statuses: list[str] | None = None
    raw = request.query_params.get("status")
    if raw:
        statuses = [s.strip() for s in raw.split(",") if s.strip()]
        for s in statuses:
            if s not in STATUSES:
                raise InvalidField(
                    f"unknown status {s!r}; one of {', '.join(STATUSES)}", field="status"
                )
    clusters = await ctx.streams.list_clusters(acct.id, statuses)
    base = _base(ctx, request)
    text = ",".join(cluster_json_text(ctx, c, base_url=base) for c in clusters)
    return Response(('{"clusters":[' + text + "]}").encode("utf-8"), media_type="application/json")


@router.get(
    "/gpu-clusters/{id}",
    response_model=ClusterOut,
    responses=refusals(401, 404),
    summary="One cluster, by id or name",
)
async def get_cluster(request: Request, id: str) -> Response:
    ctx, _, c = await _lookup(request, id)
    return Response(
        cluster_json_text(ctx, c, base_url=_base(ctx, request)).encode("utf-8"),
        media_type="application/json",
    )


# ---------------------------------------------------------------------------- actions


@router.post(
    "/gpu-clusters/{id}/scale",
    response_model=ClusterOut,
    responses=refusals(400, 401, 404, 409, 402, 413, 422, 503),
    openapi_extra=_body("ScaleIn"),
    summary="Change the replica count",
)
async def scale(request: Request, id: str) -> Response:
    ctx, account_id, c = await _lookup(request, id)
    data, _ = await read_object(request)
    body = validate(ScaleIn, data)
    render = _renderer(ctx, request)
    idem = idempotency(request, data, respond_json(200, render))
    c = await ctx.service.scale(account_id, c.id, body.replicas, idem)
    return json_response(render(c))


@router.post(
    "/gpu-clusters/{id}/extend",
    response_model=ClusterOut,
    responses=refusals(400, 401, 404, 409, 402, 413, 422, 503),
    openapi_extra=_body("ExtendIn"),
    summary="Add hours before expiry (total at most 720)",
)
async def extend(request: Request, id: str) -> Response:
    ctx, account_id, c = await _lookup(request, id)
    data, _ = await read_object(request)
    body = validate(ExtendIn, data)
    render = _renderer(ctx, request)
    idem = idempotency(request, data, respond_json(200, render))
    c = await ctx.service.extend(account_id, c.id, check_hours(body.hours), idem)
    return json_response(render(c))


@router.post(
    "/gpu-clusters/{id}/stop",
    response_model=ClusterOut,
    responses=refusals(401, 404, 409, 422, 503),
    openapi_extra=_NO_BODY,
    summary="Stop: charges stop, the unused hold is released",
)
async def stop(request: Request, id: str) -> Response:
    ctx, account_id, c = await _lookup(request, id)
    render = _renderer(ctx, request)
    idem = idempotency(request, None, respond_json(200, render))
    c = await ctx.service.stop(account_id, c.id, idem)
    return json_response(render(c))


@router.post(
    "/gpu-clusters/{id}/resume",
    response_model=ClusterOut,
    responses=refusals(401, 404, 409, 402, 422, 503),
    openapi_extra=_NO_BODY,
    summary="Resume a stopped cluster (holds the time to expiry)",
)
async def resume(request: Request, id: str) -> Response:
    ctx, account_id, c = await _lookup(request, id)
    render = _renderer(ctx, request)
    idem = idempotency(request, None, respond_json(200, render))
    c = await ctx.service.resume(account_id, c.id, idem)
    return json_response(render(c))


@router.post(
    "/gpu-clusters/{id}/restart",
    response_model=ClusterOut,
    responses=refusals(401, 404, 409, 422, 503),
    openapi_extra=_NO_BODY,
    summary="Rolling restart, one replica at a time",
)
async def restart(request: Request, id: str) -> Response:
    ctx, account_id, c = await _lookup(request, id)
    render = _renderer(ctx, request)
    idem = idempotency(request, None, respond_json(200, render))
    c = await ctx.service.restart(account_id, c.id, idem)
    return json_response(render(c))


@router.delete(
    "/gpu-clusters/{id}",
    response_model=ClusterOut,
    responses=refusals(401, 404, 409, 422, 503),
    openapi_extra=_NO_BODY,
    summary="Terminate (again: 200, same answer)",
)
async def terminate(request: Request, id: str) -> Response:
    ctx, account_id, c = await _lookup(request, id)
    render = _renderer(ctx, request)
    idem = idempotency(request, None, respond_json(200, render))
    c = await ctx.service.terminate(account_id, c.id, idem)
    return json_response(render(c))


# ---------------------------------------------------------------------------- endpoint


@router.put(
    "/gpu-clusters/{id}/endpoint",
    response_model=EndpointOut,
    responses=refusals(400, 401, 404, 409, 413, 422, 503),
    openapi_extra=_body("EndpointIn"),
    summary="Open the public URL, or change only its port",
)
async def set_endpoint(request: Request, id: str) -> Response:
    ctx, account_id, c = await _lookup(request, id)
    data, _ = await read_object(request)
    body = validate(EndpointIn, data)
    base = _base(ctx, request)

    def render(result: object) -> dict[str, Any]:
        assert isinstance(result, Cluster)
        return {"url": endpoint_url(ctx, result, base), "port": result.endpoint_port}

    idem = idempotency(request, data, respond_json(200, render))
    c = await ctx.service.set_endpoint(account_id, c.id, body.port, idem)
    return json_response(render(c))


@router.delete(
    "/gpu-clusters/{id}/endpoint",
    status_code=204,
    responses=refusals(401, 404, 409, 422, 503),
    openapi_extra=_NO_BODY,
    summary="Close the public URL",
)
async def close_endpoint(request: Request, id: str) -> Response:
    ctx, account_id, c = await _lookup(request, id)

    def respond(_: object) -> tuple[int, str, bytes]:
        return 204, "application/json", b""

    idem = idempotency(request, None, respond)
    await ctx.service.close_endpoint(account_id, c.id, idem)
    return Response(status_code=204)


# ---------------------------------------------------------------------------- replicas


@router.get(
    "/gpu-clusters/{id}/replicas",
    response_model=ReplicasOut,
    responses=refusals(401, 404),
    summary="Replica states with their GPUs",
)
async def replicas(request: Request, id: str) -> Response:
    ctx, _, c = await _lookup(request, id)
    return json_response({"replicas": replicas_json(ctx, c)})


@router.post(
    "/gpu-clusters/{id}/replicas/{replica}/restart",
    response_model=ReplicaStateOut,
    responses=refusals(401, 404, 409, 422, 503),
    openapi_extra=_NO_BODY,
    summary="Restart one replica",
)
async def restart_replica(request: Request, id: str, replica: str) -> Response:
    ctx, account_id, c = await _lookup(request, id)

    def render(result: object) -> dict[str, Any]:
        as_json: Callable[[], dict[str, Any]] = result.as_json  # type: ignore[attr-defined]
        return as_json()

    idem = idempotency(request, None, respond_json(200, render))
    state = await ctx.service.restart_replica(account_id, c.id, replica, idem)
    return json_response(state.as_json())


_METRICS_PARAMS: list[dict[str, Any]] = [
    {
        "name": "since",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "format": "date-time"},
        "description": "only samples after this RFC 3339 time (default: the last hour)",
    },
]


@router.get(
    "/gpu-clusters/{id}/metrics",
    response_model=MetricsOut,
    responses=refusals(401, 404, 422),
    openapi_extra={"parameters": _METRICS_PARAMS},
    summary="GPU samples per replica (at least the last hour)",
)
async def metrics(request: Request, id: str) -> Response:
    ctx, _, c = await _lookup(request, id)
    since: datetime | None = None
    values = request.query_params.getlist("since")
    if values:
        # RFC 3339: exactly one value, a date and a time with its offset.
        try:
            if len(values) != 1 or "T" not in values[0].upper():
                raise ValueError(values)
            since = datetime.fromisoformat(values[0].strip().replace("z", "Z"))
            if since.tzinfo is None:
                raise ValueError(values)
        except ValueError:
            raise InvalidField("since must be an RFC 3339 time", field="since") from None
    if ctx.telemetry is None:
        return json_response(
            {"interval_s": 1.0, "telemetry": ctx.runtime.info.telemetry, "replicas": []}
        )
    return json_response(ctx.telemetry.metrics(c.id, since))


@router.get(
    "/gpu-clusters/{id}/events",
    response_model=EventsOut,
    responses=refusals(401, 404),
    summary="The cluster's events, oldest first",
)
async def events(request: Request, id: str) -> Response:
    ctx, _, c = await _lookup(request, id)
    return json_response({"events": [event_json(e) for e in await ctx.streams.events(c.id)]})
