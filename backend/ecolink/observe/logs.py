"""Request ids and structured logs.

Every HTTP request and WebSocket the API serves carries a request id: the client's
`X-Request-Id` when it is well-formed, else a fresh one. It is echoed in the
answer's `X-Request-Id` header and added to every log line written while the
request is handled (`request_id`). `ecolink serve --log-format json` (or
`ECOLINK_LOG_FORMAT=json`) writes one JSON object a line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
from datetime import UTC, datetime
from typing import Any

REQUEST_ID_HEADER = "x-request-id"
LOG_FORMATS = ("text", "json")
# Ids a client may choose: what tracing systems and proxies generate (UUIDs, hex,
# W3C trace ids with separators), nothing that could forge a log line.
_WELL_FORMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "ecolink_request_id", default=None
)


def request_id_from(value: str | None) -> str:
    """The client's id when it is well-formed, else a new one."""
    if value is not None and _WELL_FORMED.fullmatch(value):
        return value
    return os.urandom(16).hex()


class RequestIdFilter(logging.Filter):
    """Puts the id of the request being handled on every record (None outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


# uvicorn's access lines: (client, method, path, http version, status).
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request id, and for
    access lines the request's method, path and status."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid is not None:
            out["request_id"] = rid
        # Structured fields a line carries (`extra={"fields": {...}}`), never
        # replacing the ones above.
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for k, v in fields.items():
                out.setdefault(str(k), v)
        if (
            record.name == "uvicorn.access"
            and isinstance(record.args, tuple)
            and len(record.args) == len(_ACCESS_FIELDS)
        ):
            out.update(zip(_ACCESS_FIELDS, record.args, strict=True))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")


def apply_log_format(fmt: str) -> None:
    """Give every handler of the backend's loggers the request id, and with "json"
    the JSON formatter (call after uvicorn has set up its handlers)."""
    for name in _LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
                handler.addFilter(RequestIdFilter())
            if fmt == "json":
                handler.setFormatter(JsonFormatter())
