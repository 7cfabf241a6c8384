"""Routes outside the clusters: health, console sessions, catalog, filesystems,
account and ledger."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ecocore.wire import (
    AccountOut,
    AuthSessionOut,
    CatalogOut,
    FilesystemsOut,
    Health,
    LedgerOut,
)
from ecolink import __version__
from ecolink.api.auth import SESSION_COOKIE, session_cookie
from ecolink.api.common import json_response
from ecolink.api.deps import Ctx, CurrentAccount
from ecolink.api.edge_rules import cookie_domain
from ecolink.api.errors import refusals
from ecolink.api.render import account_json, ledger_csv, ledger_entry_json
from ecolink.errors import InvalidField, Unauthenticated
from ecolink.store import SESSION_TTL_US, rfc3339

router = APIRouter()


@router.get(
    "/healthz",
    response_model=Health,
    tags=["open"],
    summary="Liveness and version (no credentials needed)",
)
async def healthz() -> Response:
    return json_response({"status": "ok", "version": __version__})


@router.post(
    "/auth/session",
    status_code=201,
    response_model=AuthSessionOut,
    responses=refusals(401),
    tags=["auth"],
    summary="Start a console session: sets the eco_session cookie (12 hours)",
)
async def create_session(request: Request, ctx: Ctx, acct: CurrentAccount) -> Response:
    key_id = getattr(request.state, "key_id", None)
    if getattr(request.state, "auth", None) != "key" or key_id is None:
        # Only an API key mints a session (the middleware already lets no cookie here).
        raise Unauthenticated("only an API key can start a console session")
    token, expires = await ctx.streams.open_console_session(acct.id, key_id)
    resp = json_response({"account": account_json(acct), "expires_at": rfc3339(expires)}, 201)
    secure = ctx.tls or request.url.scheme == "https"
    resp.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=SESSION_TTL_US // 1_000_000,
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure,
        domain=cookie_domain(request.headers.get("host"), ctx.service_domain),
    )
    return resp


@router.delete(
    "/auth/session",
    status_code=204,
    responses=refusals(401),
    tags=["auth"],
    summary="End the console session of the eco_session cookie (with an API key "
    "of the same account)",
)
async def delete_session(request: Request, ctx: Ctx, acct: CurrentAccount) -> Response:
    token = session_cookie(request.headers)
    if token:
        await ctx.streams.end_console_session(acct.id, token)
    resp = Response(status_code=204)
    secure = ctx.tls or request.url.scheme == "https"
    resp.delete_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure,
        domain=cookie_domain(request.headers.get("host"), ctx.service_domain),
    )
    return resp


@router.get(
    "/catalog",
    response_model=CatalogOut,
    responses=refusals(401),
    tags=["catalog"],
    summary="Regions, GPU types, per-GPU rates and GPU budgets",
)
async def catalog(ctx: Ctx) -> Response:
    return json_response(ctx.catalog.as_json())


@router.get(
    "/filesystems",
    response_model=FilesystemsOut,
    responses=refusals(401),
    tags=["catalog"],
    summary="Shared filesystems this account may attach",
)
async def filesystems(ctx: Ctx) -> Response:
    return json_response({"filesystems": ctx.service.filesystems()})


@router.get(
    "/account",
    response_model=AccountOut,
    responses=refusals(401),
    tags=["account"],
    summary="Balance, held and available",
)
async def account(ctx: Ctx, acct: CurrentAccount) -> Response:
    return json_response(account_json(await ctx.streams.account(acct.id)))


def _int_param(request: Request, name: str, lo: int, hi: int | None) -> int | None:
    values = request.query_params.getlist(name)
    if not values:
        return None
    # An empty or repeated value is not an integer; a huge one would overflow SQLite.
    hi_ = hi if hi is not None else 2**63 - 1
    try:
        if len(values) != 1:
            raise ValueError(name)
        value = int(values[0])
    except ValueError:
        raise InvalidField(f"{name} must be an integer", field=name) from None
    if value < lo or value > hi_:
        top = f" to {hi}" if hi is not None else " or more"
        raise InvalidField(f"{name} must be {lo}{top}", field=name)
    return value


_LEDGER_PARAMS: list[dict[str, Any]] = [
    {
        "name": "cluster_id",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "only this cluster's entries (its id or name)",
    },
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
    },
    {
        "name": "before",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
        "description": "entries older than this id",
    },
    {
        "name": "format",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": ["json", "csv"], "default": "json"},
    },
]


@router.get(
    "/account/ledger",
    response_model=LedgerOut,
    responses={
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "entries newest first (JSON, or CSV with ?format=csv)",
        },
        **refusals(401, 404, 422),
    },
    openapi_extra={"parameters": _LEDGER_PARAMS},
    tags=["account"],
    summary="The account's ledger, newest first",
)
async def ledger(request: Request, ctx: Ctx, acct: CurrentAccount) -> Response:
    cluster_ref = request.query_params.get("cluster_id")
    limit = _int_param(request, "limit", 1, 1000) or 100
    before = _int_param(request, "before", 1, 2**63 - 1)
    fmt = request.query_params.get("format", "json")
    if fmt not in ("json", "csv"):
        raise InvalidField("format must be json or csv", field="format")
    entries = await ctx.streams.ledger(acct.id, cluster_ref=cluster_ref, limit=limit, before=before)
    if fmt == "csv":
        return Response(
            ledger_csv(entries),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": 'attachment; filename="ledger.csv"'},
        )
    return json_response({"entries": [ledger_entry_json(e) for e in entries]})
