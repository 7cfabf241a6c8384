"""Helpers the route modules share: reading and validating JSON bodies in api.md's
order of checks, `Idempotency-Key` handling, JSON answers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from ecolink.api.errors import first_error_field, validation_message
from ecolink.errors import ApiError, InvalidField, MalformedRequest
from ecolink.idempotency import StoredAnswer
from ecolink.store import Account

MAX_BODY_BYTES = 256 * 1024
M = TypeVar("M", bound=BaseModel)


class PayloadTooLarge(ApiError):
    status = 413
    code = "invalid_request"


def json_response(data: Any, status: int = 200) -> Response:
    return Response(dumps(data), status_code=status, media_type="application/json")


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def account_of(request: Request) -> Account:
    acct = request.state.account
    assert isinstance(acct, Account)
    return acct


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > MAX_BODY_BYTES:
                raise PayloadTooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes")
        except ValueError:
            raise MalformedRequest("bad Content-Length") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _int(text: str) -> int | float:
    # No integer the API takes has more than 40 digits; a longer one is out of range
    # (an infinity, refused by the field that gets it), not a reason to build a huge
    # integer or to call valid JSON invalid.
    if len(text.lstrip("-")) > 40:
        return float("-inf") if text.startswith("-") else float("inf")
    return int(text)


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constants, parse_int=_int)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MalformedRequest("the body is not valid JSON") from None


async def read_object(request: Request) -> tuple[dict[str, Any], bytes]:
    """The body as a JSON object (400 when it is missing, not JSON or not an object)."""
    raw = await read_body(request)
    if not raw.strip():
        raise MalformedRequest("a JSON object body is required")
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise MalformedRequest("the body must be a JSON object")
    return data, raw


def validate(model: type[M], data: dict[str, Any]) -> M:
    """Validate with the model; the first failing field becomes a 422 naming it."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first: dict[str, Any] = dict(errors[0]) if errors else {}
        raise InvalidField(validation_message(first), first_error_field(first)) from None


def fingerprint(request: Request, data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    h = hashlib.sha256()
    h.update(request.method.encode())
    h.update(b"\0")
    h.update(_canonical_path(request).encode())
    h.update(b"\0")
    h.update(canonical.encode())
    return h.hexdigest()


def _canonical_path(request: Request) -> str:
    """The request's path with the cluster named by its id: the same action sent by
    name and retried by id (or the other way) is one action."""
    cluster_id = getattr(request.state, "cluster_id", None)
    route = request.scope.get("route")
    path_format = getattr(route, "path_format", None)
    if not cluster_id or not isinstance(path_format, str):
        return request.url.path
    params = {**request.path_params, "id": cluster_id}
    for name, value in params.items():
        path_format = path_format.replace("{" + name + "}", str(value))
    return path_format


@dataclass(frozen=True)
class HttpRecorder:
    """The `Idempotency-Key` of a request and how its answer is rendered: the
    service's recorder port (`ecolink.idempotency.IdempotencyRecorder`)."""

    key: str
    fingerprint: str
    respond: Callable[[object], tuple[int, str, bytes]]

    def record(self, result: object) -> StoredAnswer:
        return StoredAnswer(*self.respond(result))


def idempotency(
    request: Request, data: Any, respond: Callable[[object], tuple[int, str, bytes]]
) -> HttpRecorder | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > 255 or not key.isprintable():
        raise InvalidField(
            "Idempotency-Key must be 1 to 255 printable characters", field="Idempotency-Key"
        )
    return HttpRecorder(key=key, fingerprint=fingerprint(request, data), respond=respond)


def respond_json(
    status: int, render: Callable[[Any], Any]
) -> Callable[[object], tuple[int, str, bytes]]:
    def respond(result: object) -> tuple[int, str, bytes]:
        return status, "application/json", dumps(render(result))

    return respond
