"""Instants as the store keeps them: integer microseconds since the Unix epoch (UTC),
and their RFC 3339 text."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def to_us(when: datetime) -> int:
    """A timezone-aware datetime as integer microseconds since the epoch (exact)."""
    return (when - _EPOCH) // _ONE_US


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


@functools.lru_cache(maxsize=65536)
def rfc3339(us: int) -> str:
    """RFC 3339 UTC with microseconds: 2026-01-01T00:00:00.000000Z. (Cached: the same
    few instants of every cluster are formatted again and again.)"""
    d = from_us(us)
    return (
        f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:"
        f"{d.second:02d}.{d.microsecond:06d}Z"
    )
