"""Errors that the API turns into api.md's error form.

`{"error": {"code": ..., "message": ..., "field": ...}}`; the service layer raises
these, the API layer renders them. The runtime's failures (`ecolink.runtime.base`:
unavailable, refused, no such replica) have their one mapping in `api/errors.py`.
"""

from __future__ import annotations


class ApiError(Exception):
    status: int = 400
    code: str = "invalid_request"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def body(self) -> dict[str, dict[str, str]]:
        err: dict[str, str] = {"code": self.code, "message": self.message}
        if self.field is not None:
            err["field"] = self.field
        return {"error": err}


class Unauthenticated(ApiError):
    status = 401
    code = "unauthenticated"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class MalformedRequest(ApiError):
    """400: the body is not JSON (or not an object)."""

    status = 400
    code = "invalid_request"


class InvalidField(ApiError):
    """422: a field is missing or out of range; always names the field."""

    status = 422
    code = "invalid_request"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class InsufficientBalance(ApiError):
    status = 402
    code = "insufficient_balance"


class StoreUnavailableError(ApiError):
    """503: the database could not be written in time (another process holds its write
    lock, or the disk failed). The message says whether anything was changed."""

    status = 503
    code = "store_unavailable"
