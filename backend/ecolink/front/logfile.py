"""Keeps the backend's log file bounded: past `max_bytes` it is copied to `PATH.1`
(the older copy goes) and truncated in place. Whatever writes to it appends
(O_APPEND, as the embedded launcher opens it), so it carries on at the start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

CHECK_S = 5.0


def rotate_if_big(path: Path, max_bytes: int) -> bool:
    try:
        if path.stat().st_size <= max_bytes:
            return False
        old = path.with_name(path.name + ".1")
        tmp = path.with_name(path.name + ".1.tmp")
        shutil.copyfile(path, tmp)
        os.replace(tmp, old)
        with open(path, "r+b") as f:
            f.truncate(0)
        return True
    except OSError as exc:
        log.warning("rotating %s failed: %s", path.name, exc)
        return False


async def keep_bounded(path: Path, max_bytes: int) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        while True:
            await asyncio.to_thread(rotate_if_big, path, max_bytes)
            await asyncio.sleep(CHECK_S)
