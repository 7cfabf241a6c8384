"""`Idempotency-Key`: the port through which the use cases record the first answer
to a request, and the plain values a retried request gets back.

The API layer owns the recorder: it knows how an action's result becomes an
answer (status, content type, body). The service only asks it, inside the action's
transaction, for the answer to store, and on a retry hands back the stored one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class StoredAnswer:
    """The answer recorded for a key, replayed byte for byte."""

    status: int
    content_type: str
    body: bytes


class IdempotencyRecorder(Protocol):
    """An `Idempotency-Key`, the request's fingerprint, and how to turn the action's
    result into the answer to keep."""

    @property
    def key(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...

    def record(self, result: object) -> StoredAnswer: ...


class Replayed(Exception):
    """Not an error: the request was already answered; `answer` is that first answer."""

    def __init__(self, answer: StoredAnswer) -> None:
        super().__init__("idempotent replay")
        self.answer = answer
