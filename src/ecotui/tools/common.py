"""What the tool commands share: exit codes (the same as `ecotui.cli`'s), a usage
error, argument types and the stdin pump."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class UsageError(Exception):
    """Exit 2 with this message."""


def err(message: str) -> None:
    print(f"ecotui: {message}", file=sys.stderr)


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not v > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return v


class LateParser(argparse.ArgumentParser):
    """Parses options written after NAME (argparse leaves them in the remainder)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def usage_guard(handler: Callable[..., Awaitable[int]]) -> Callable[..., Awaitable[int]]:
    async def guarded(*args: Any) -> int:
        try:
            return await handler(*args)
        except UsageError as exc:
            err(str(exc))
            return EXIT_USAGE

    return guarded


async def pump_stdin(conn: Any) -> None:
    """Our standard input to the exec's, then the end of input."""
    fd = sys.stdin.fileno()
    loop = asyncio.get_running_loop()
    while True:
        chunk = await loop.run_in_executor(None, os.read, fd, 65536)
        if not chunk:
            break
        await conn.send_stdin(chunk)
    await conn.close_stdin()
