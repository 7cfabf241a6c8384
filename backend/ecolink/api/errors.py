"""Error answers: every non-2xx answer ecolink makes is api.md's error form, and no
input can make it answer a 5xx other than 503.

Also the OpenAPI `responses` entries for each route's refusals (`refusals(...)`).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ecocore.wire import ErrorBody
from ecolink.api.auth import deny_websocket
from ecolink.errors import ApiError
from ecolink.idempotency import Replayed
from ecolink.runtime.base import (
    ReplicaNotFound,
    RuntimeFailure,
    RuntimeRefused,
    RuntimeUnavailable,
)
from ecolink.store import StoreBusy, StoreUnavailable

log = logging.getLogger(__name__)

_DESCRIPTIONS = {
    400: "malformed JSON (`invalid_request`)",
    401: "missing, wrong or revoked credentials (`unauthenticated`)",
    404: "unknown id or name, or not this account's (`not_found`)",
    409: "not allowed in the current state, name in use, over the GPU budget, an "
    "Idempotency-Key reused with a different request, or the runtime refused the "
    "change (its words in the message) (`conflict`)",
    402: "a hold cannot be placed; the message says how much is missing (`insufficient_balance`)",
    413: "the request body is too large (`invalid_request`)",
    422: "a field is missing or out of range; `field` names it, or the runtime found "
    "the object invalid (its words in the message) (`invalid_request`)",
    503: "the runtime cannot be reached; nothing was changed (`runtime_unavailable`), or the "
    "database cannot be written in time (`store_unavailable`; the message says "
    "whether anything was changed)",
}


_NO_ROUTE = b'{"error":{"code":"not_found","message":"no such route"}}'


def refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the given error statuses, all in the error form."""
    return {s: {"model": ErrorBody, "description": _DESCRIPTIONS[s]} for s in statuses}


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    err: dict[str, str] = {"code": code, "message": message}
    if field is not None:
        err["field"] = field
    return JSONResponse({"error": err}, status_code=status, headers=headers)


def _field_of(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or None


def validation_message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    field = _field_of(tuple(err.get("loc", ()))) or "the body"
    if kind == "missing":
        return f"{field} is required"
    if kind == "extra_forbidden":
        return f"unknown field {field}"
    msg = str(err.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return f"{field}: {msg}"


def first_error_field(err: dict[str, Any]) -> str | None:
    return _field_of(tuple(err.get("loc", ())))


def runtime_failure_answer(exc: RuntimeFailure) -> tuple[int, dict[str, dict[str, str]]]:
    """The one mapping of runtime failures to api.md's error form, for HTTP answers
    and refused WebSocket handshakes alike: an unknown replica is 404, a runtime
    that cannot be reached 503, one that refused 409 or 422 with its own words. In
    every case nothing was changed."""
    if isinstance(exc, ReplicaNotFound):
        err = {"code": "not_found", "message": f"no replica {exc}", "field": "replica"}
        return 404, {"error": err}
    if isinstance(exc, RuntimeRefused):
        code = "invalid_request" if exc.status == 422 else "conflict"
        return exc.status, {"error": {"code": code, "message": str(exc)}}
    if isinstance(exc, RuntimeUnavailable):
        message = f"the runtime cannot be reached: {exc}"
    else:
        log.error("unexpected runtime failure", exc_info=exc)
        message = "the request could not be completed; nothing was changed"
    return 503, {"error": {"code": "runtime_unavailable", "message": message}}


def install(app: FastAPI) -> None:
    async def api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        headers = {"www-authenticate": 'Bearer realm="ecolink"'} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    async def replay(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, Replayed)
        answer = exc.answer
        return Response(
            answer.body,
            status_code=answer.status,
            media_type=answer.content_type,
            headers={"idempotent-replayed": "true"},
        )

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return error_response(404, "not_found", "no such route")
        if exc.status_code == 405:
            return error_response(
                405,
                "method_not_allowed",
                "method not allowed here",
                headers=dict(exc.headers or {}),
            )
        if exc.status_code >= 500:
            return error_response(503, "runtime_unavailable", str(exc.detail))
        return error_response(exc.status_code, "invalid_request", str(exc.detail))

    async def request_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        if not errors:
            return error_response(422, "invalid_request", "invalid request")
        first = errors[0]
        return error_response(
            422, "invalid_request", validation_message(first), first_error_field(first)
        )

    async def runtime_failure(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RuntimeFailure)
        status, body = runtime_failure_answer(exc)
        return JSONResponse(body, status_code=status)

    async def store_busy(_: Request, exc: Exception) -> Response:
        if isinstance(exc, StoreUnavailable):  # a read: it changes nothing
            return error_response(
                503,
                "store_unavailable",
                "the database cannot be read now (another process holds "
                "it, or the disk is slow); nothing was changed, try again",
            )
        # A transaction that did not commit rolled back whole.
        return error_response(
            503,
            "store_unavailable",
            "the database cannot be written now (another process holds "
            "it, or the disk failed); nothing was changed, try again",
        )

    async def anything(_: Request, exc: Exception) -> Response:
        # A bug must not turn into a 500: say 503, nothing was changed (the
        # transaction rolled back), and keep the traceback in the log.
        log.error("unexpected error", exc_info=exc)
        return error_response(
            503, "runtime_unavailable", "the request could not be completed; nothing was changed"
        )

    default = app.router.default

    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        # A WebSocket to no route gets the same JSON 404 as an HTTP request, not a
        # bare refusal of the handshake.
        if scope["type"] == "websocket":
            await deny_websocket(scope, receive, send, 404, _NO_ROUTE)
            return
        await default(scope, receive, send)

    app.router.default = not_found
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(Replayed, replay)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, request_validation)
    app.add_exception_handler(RuntimeFailure, runtime_failure)
    app.add_exception_handler(StoreBusy, store_busy)
    app.add_exception_handler(Exception, anything)
