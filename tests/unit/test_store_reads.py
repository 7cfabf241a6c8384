"""Reads off the event loop: `Store.run_read` answers `StoreUnavailable` when the
database keeps its readers out, and `Store.cached_read` serves a read from memory
only while nothing was committed since, by this process or another."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecolink.store import Store, StoreUnavailable

NOW = 1_767_225_600_000_000
READERS_OUT = (
    "import fcntl, os, sys, time\n"
    "fd = os.open(sys.argv[1] + '-shm', os.O_RDWR)\n"
    "fcntl.lockf(fd, fcntl.LOCK_EX, 5, 123, os.SEEK_SET)\n"
    "print('taken', flush=True)\n"
    "time.sleep(30)\n"
)


def _store(tmp_path: Path, **kw: int) -> tuple[Store, str]:
    store = Store(tmp_path / "ecolink.db", **kw)
    with store.tx():
        acct = store.create_account("alice", NOW).id
    return store, acct


def test_a_cached_read_lasts_until_the_next_commit(tmp_path: Path) -> None:
    store, acct = _store(tmp_path)
    calls: list[int] = []

    def read() -> int:
        calls.append(1)
        return len(store.api_keys())

    async def main() -> None:
        assert await store.cached_read("keys", read) == 0
        assert await store.cached_read("keys", read) == 0
        assert len(calls) == 1  # the second came from memory
        # This process commits: read again at once.
        await store.run_write(lambda: store.create_api_key(acct, NOW))
        assert await store.cached_read("keys", read) == 1
        assert len(calls) == 2
        # Another process (here: another connection) commits: seen by the watch.
        other = sqlite3.connect(tmp_path / "ecolink.db", isolation_level=None)
        other.execute("UPDATE accounts SET name = 'alice2' WHERE id = ?", (acct,))
        other.close()
        deadline = time.monotonic() + 5
        while len(calls) == 2:
            assert time.monotonic() < deadline, "another connection's commit went unseen"
            await store.cached_read("keys", read)
            await asyncio.sleep(0.01)
        # Nothing found is never kept: asked again every time.
        misses: list[int] = []

        def missing() -> None:
            misses.append(1)

        await store.cached_read("none", missing)
        await store.cached_read("none", missing)
        assert len(misses) == 2

    try:
        asyncio.run(main())
    finally:
        store.close()


def test_a_read_the_database_keeps_out_is_unavailable_in_time(tmp_path: Path) -> None:
    store, acct = _store(tmp_path, busy_timeout_ms=300)
    # Hold every read mark of the WAL's shared memory from another process: no
    # reader can start (SQLite's own retries last about 10 s, whatever the timeout).
    holder = subprocess.Popen(
        [sys.executable, "-c", READERS_OUT, str(tmp_path / "ecolink.db")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "taken"

    async def main() -> float:
        t = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.run_read(lambda: store.account(acct))
        return time.monotonic() - t

    try:
        took = asyncio.run(main())
        # The busy timeout (0.3 s) and its grace (1 s), not SQLite's 10 s.
        assert took < 3.0, took
    finally:
        holder.kill()
        holder.wait()
        store.close()
