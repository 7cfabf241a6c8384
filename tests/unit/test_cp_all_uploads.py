"""`ecotui cp --all` uploads: to every replica at once (at most PARALLEL at a time);
a failing one is reported and makes the exit non-zero without stopping the others."""

from __future__ import annotations

import argparse
import asyncio

from ecotui.tools import cli_cp
from ecotui.tools.copy import CopyError


def test_uploads_to_every_replica_run_in_parallel_and_bounded(monkeypatch, tmp_path, capsys):
    names = [f"w-{i}" for i in range(cli_cp.PARALLEL + 3)]
    running = 0
    peak = 0
    done: list[str] = []

    async def targets(client, where, every):
        assert every and where.path == "model.bin"
        return "cid", names

    async def upload(client, cid, replica, src, dst):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.sleep(0.05)
            if replica == "w-2":
                raise CopyError(f"{replica}:{dst}: No space left on device")
            done.append(replica)
        finally:
            running -= 1

    src = tmp_path / "model.bin"
    src.write_bytes(b"weights")
    monkeypatch.setattr(cli_cp, "_targets", targets)
    monkeypatch.setattr(cli_cp, "upload", upload)
    args = argparse.Namespace(src=str(src), dst="w:model.bin", all=True)
    rc = asyncio.run(cli_cp.cmd_cp(None, args))
    assert rc != 0
    assert peak == cli_cp.PARALLEL
    assert sorted(done) == sorted(n for n in names if n != "w-2")
    assert "w-2: w-2:model.bin: No space left on device" in capsys.readouterr().err
