"""What the `ecolink` admin commands share: their error, the time they stamp, and
their tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from ecocore.clock import SystemClock
from ecolink.store import to_us


class CliError(Exception):
    """A command's refusal: printed as `ecolink: <message>`, exit status 1."""


def now_us() -> int:
    return to_us(SystemClock().now())


def table(rows: Sequence[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip(), file=out)
