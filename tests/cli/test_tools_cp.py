"""`ecotui cp` against a real backend (local runtime): trees with modes, mtimes and
symlinks both ways, stdin/stdout, --all in parallel, 1 GiB byte-exact both ways in
bounded memory, and failures that leave nothing half-copied."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.tools_helpers import account_env, ecotui, end_clusters, launch_ready, subprocess_env


@pytest.fixture
def env(shared_ecolink_server, monkeypatch, tmp_path):
    e = account_env(shared_ecolink_server, monkeypatch, tmp_path, "cp")
    yield e
    end_clusters(shared_ecolink_server, e["ECO_API_KEY"])


def remote(env, cluster: str, replica: str, script: str) -> str:
    p = ecotui(env, "exec", cluster, replica, "--", "sh", "-c", script)
    assert p.returncode == 0, p.stderr
    return p.stdout.decode()


def make_tree(root: Path) -> Path:
    tree = root / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (tree / "run.sh").chmod(0o751)
    (tree / "sub" / "data.bin").write_bytes(os.urandom(300_000))
    (tree / "sub" / "deeper" / "empty").write_bytes(b"")
    (tree / "sub" / "deeper" / "empty").chmod(0o600)
    os.symlink("run.sh", tree / "rel-link")
    os.symlink("/etc/hostname", tree / "abs-link")
    for i, p in enumerate(sorted(tree.rglob("*"))):
        if not p.is_symlink():
            os.utime(p, (1_600_000_000 + i, 1_600_000_000 + i))
    return tree


def describe(tree: Path) -> dict[str, tuple]:
    out = {}
    for p in sorted(tree.rglob("*")):
        rel = str(p.relative_to(tree))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = ("dir", oct(p.stat().st_mode & 0o777))
        else:
            st = p.stat()
            out[rel] = (
                "file",
                oct(st.st_mode & 0o777),
                int(st.st_mtime),
                hashlib.sha256(p.read_bytes()).hexdigest(),
            )
    return out


def no_leftovers(where: Path) -> list[str]:
    return [str(p) for p in where.rglob(".ecotui-cp.*")]


def test_tree_round_trip_keeps_modes_mtimes_and_links(shared_ecolink_server, env, tmp_path):
    launch_ready(shared_ecolink_server, env["ECO_API_KEY"], "cpt", 2)
    tree = make_tree(tmp_path / "src")
    p = ecotui(env, "cp", str(tree), "cpt/cpt-1:.")
    assert p.returncode == 0, p.stderr
    assert p.stderr == b""  # quiet when not on a terminal
    mtime = int((tree / "run.sh").stat().st_mtime)
    assert (
        remote(
            env,
            "cpt",
            "cpt-1",
            "stat -c '%a %Y' tree/run.sh; readlink tree/abs-link; cat tree/run.sh",
        )
        == f"751 {mtime}\n/etc/hostname\n#!/bin/sh\necho hi\n"
    )
    out = tmp_path / "back"
    out.mkdir()
    p = ecotui(env, "cp", "cpt/cpt-1:tree", str(out))
    assert p.returncode == 0, p.stderr
    assert describe(out / "tree") == describe(tree)
    # to a new name
    p = ecotui(env, "cp", "cpt/cpt-1:tree/sub/data.bin", str(out / "renamed.bin"))
    assert p.returncode == 0, p.stderr
    assert (out / "renamed.bin").read_bytes() == (tree / "sub" / "data.bin").read_bytes()
    assert no_leftovers(tmp_path) == []
    assert remote(env, "cpt", "cpt-1", "ls -a").count(".ecotui-cp") == 0


def test_stdin_and_stdout(shared_ecolink_server, env):
    launch_ready(shared_ecolink_server, env["ECO_API_KEY"], "pipe", 2)
    blob = os.urandom(3 << 20)
    p = ecotui(env, "cp", "-", "pipe:notes.bin", input=blob)
    assert p.returncode == 0, p.stderr
    p = ecotui(env, "cp", "pipe/pipe-0:notes.bin", "-")
    assert p.returncode == 0 and p.stdout == blob
    # a directory to stdout is a tar stream
    remote(env, "pipe", "pipe-0", "mkdir -p d && echo x > d/f")
    p = ecotui(env, "cp", "pipe/pipe-0:d", "-")
    assert p.returncode == 0
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(p.stdout)) as t:
        assert sorted(t.getnames()) == ["d", "d/f"]


def test_all_uploads_to_every_ready_replica(shared_ecolink_server, env, tmp_path):
    launch_ready(shared_ecolink_server, env["ECO_API_KEY"], "many", 3)
    f = tmp_path / "model.bin"
    f.write_bytes(os.urandom(1 << 20))
    want = hashlib.sha256(f.read_bytes()).hexdigest()
    p = ecotui(env, "cp", "--all", str(f), "many:model.bin")
    assert p.returncode == 0, p.stderr
    p = ecotui(env, "run", "many", "--json", "--", "sha256sum", "model.bin")
    got = {o["name"]: o["stdout"].split()[0] for o in json.loads(p.stdout)}
    assert got == {"many-0": want, "many-1": want, "many-2": want}
    # without --all only the first ready replica
    p = ecotui(env, "cp", str(f), "many:only-one.bin")
    assert p.returncode == 0, p.stderr
    p = ecotui(env, "run", "many", "--json", "--", "sh", "-c", "ls only-one.bin || true")
    assert [bool(o["stdout"]) for o in json.loads(p.stdout)] == [True, False, False]
    # --all downloads into one folder per replica
    out = tmp_path / "each"
    out.mkdir()
    p = ecotui(env, "cp", "--all", "many:model.bin", str(out))
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in out.iterdir()) == ["many-0", "many-1", "many-2"]
    assert (out / "many-2" / "model.bin").read_bytes() == f.read_bytes()


def test_bad_input_fails_cleanly(shared_ecolink_server, env, tmp_path):
    launch_ready(shared_ecolink_server, env["ECO_API_KEY"], "bad", 2)
    f = tmp_path / "x"
    f.write_text("keep")
    remote(env, "bad", "bad-0", "mkdir -p dir/x && echo old > file")
    cases = [
        (["cp", str(f), "nope:x"], 1, b"nope"),
        (["cp", str(f), "bad/bad-9:x"], 1, b"no replica bad-9"),
        (["cp", "bad/bad-0:missing", str(tmp_path)], 1, b"no such file or directory"),
        (["cp", str(tmp_path / "missing"), "bad/bad-0:."], 1, b"no such file or directory"),
        (["cp", str(f), "bad/bad-0:dir"], 1, b"dir/x: is a directory"),
        (["cp", str(f), "bad/bad-0:no/such/dir/x"], 1, b"no such directory"),
        (["cp", "bad/bad-0:dir", str(f)], 1, b"not a directory"),
        (["cp", str(f), str(tmp_path / "y")], 2, b"one side of cp"),
        (["cp", "bad:a", "bad:b"], 2, b"one side of cp"),
    ]
    for argv, code, words in cases:
        p = ecotui(env, *argv)
        assert (p.returncode, words in p.stderr) == (code, True), (argv, p.stderr)
    assert f.read_text() == "keep"
    assert (
        remote(env, "bad", "bad-0", "cat file; ls -a; ls -a dir")
        == "old\n.\n..\ndir\nfile\n.\n..\nx\n"
    )
    assert no_leftovers(tmp_path) == []


def test_replica_gone_mid_copy_leaves_nothing(shared_ecolink_server, env, tmp_path):
    launch_ready(shared_ecolink_server, env["ECO_API_KEY"], "gone", 2)
    # upload from a stdin that pauses: restart the replica while it waits
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecotui", "cp", "-", "gone/gone-0:big.bin"],
        env=subprocess_env(env),
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(os.urandom(4 << 20))
    proc.stdin.flush()
    deadline = time.monotonic() + 20
    while ".ecotui-cp" not in remote(env, "gone", "gone-0", "ls -a"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    with shared_ecolink_server.client(env["ECO_API_KEY"]) as api:
        assert api.post("/gpu-clusters/gone/replicas/gone-0/restart").status_code == 200
    try:
        while proc.poll() is None:
            proc.stdin.write(b"x" * 65536)
            proc.stdin.flush()
    except BrokenPipeError:
        pass
    code = proc.wait(30)
    err = proc.stderr.read() if proc.stderr else b""
    assert code == 1, err
    assert b"gone-0:big.bin" in err
    launch_deadline = time.monotonic() + 30
    while True:
        p = ecotui(env, "exec", "gone", "gone-0", "--", "ls", "-a")
        if p.returncode == 0:
            break
        assert time.monotonic() < launch_deadline
        time.sleep(0.2)
    assert p.stdout.decode().split() == [".", ".."]


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _run_measured(env, *argv: str) -> tuple[int, int, bytes]:
    """(exit code, peak RSS in KiB of the ecotui process, stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecotui", *argv],
        env=subprocess_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss, err


def test_one_gib_both_ways_byte_exact_in_bounded_memory(ecolink_server, monkeypatch, tmp_path):
    import threading

    env = account_env(ecolink_server, monkeypatch, tmp_path, "gib")
    launch_ready(ecolink_server, env["ECO_API_KEY"], "gib", 2)
    src = tmp_path / "one.gib"
    digest = hashlib.sha256()
    with open(src, "wb") as f:
        for _ in range(64):
            block = os.urandom(16 << 20)
            digest.update(block)
            f.write(block)
    want = digest.hexdigest()
    small = tmp_path / "small"
    small.write_bytes(b"x" * 1000)
    code, base_rss, err = _run_measured(env, "cp", str(small), "gib/gib-0:small")
    assert code == 0, err

    assert ecolink_server.proc is not None
    server_pid = ecolink_server.proc.pid
    server_before = _rss_kib(server_pid)
    server_peak = [server_before]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            server_peak[0] = max(server_peak[0], _rss_kib(server_pid))
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        code, up_rss, err = _run_measured(env, "cp", str(src), "gib/gib-0:one.gib")
        assert code == 0, err
        got = remote(env, "gib", "gib-0", "sha256sum one.gib").split()[0]
        assert got == want
        out = tmp_path / "back"
        out.mkdir()
        code, down_rss, err = _run_measured(env, "cp", "gib/gib-0:one.gib", str(out))
        assert code == 0, err
    finally:
        stop.set()
        t.join()
    back = hashlib.sha256()
    with open(out / "one.gib", "rb") as f:
        while block := f.read(16 << 20):
            back.update(block)
    assert back.hexdigest() == want
    limit_kib = 64 * 1024
    assert up_rss - base_rss < limit_kib, (up_rss, base_rss)
    assert down_rss - base_rss < limit_kib, (down_rss, base_rss)
    assert server_peak[0] - server_before < limit_kib, (server_peak[0], server_before)
    end_clusters(ecolink_server, env["ECO_API_KEY"])


def test_all_downloads_run_in_parallel_and_bounded(monkeypatch, tmp_path):
    """--all downloads overlap (at most PARALLEL at once); a failing one is reported
    and makes the exit non-zero without stopping the others."""
    import argparse
    import asyncio

    from ecotui.tools import cli_cp
    from ecotui.tools.copy import CopyError

    names = [f"w-{i}" for i in range(cli_cp.PARALLEL + 3)]
    running = 0
    peak = 0
    done: list[str] = []

    async def targets(client, where, every):
        assert every
        return "cid", names

    async def download(client, cid, replica, path, into):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.sleep(0.05)
            if replica == "w-1":
                raise CopyError("no such file")
            Path(into, "f").write_text(replica)
            done.append(replica)
        finally:
            running -= 1

    monkeypatch.setattr(cli_cp, "_targets", targets)
    monkeypatch.setattr(cli_cp, "download", download)
    args = argparse.Namespace(src="w:f", dst=str(tmp_path), all=True)
    rc = asyncio.run(cli_cp.cmd_cp(None, args))
    assert rc != 0
    assert peak == cli_cp.PARALLEL
    assert sorted(done) == sorted(n for n in names if n != "w-1")
    assert (tmp_path / "w-0" / "f").read_text() == "w-0"


def test_no_space_left_on_the_replica_fails_clearly_and_leaves_nothing(
    ecolink_server_factory, monkeypatch, tmp_path
):
    # The local runtime's per-replica disk quota (1 MiB, checked every 0.2 s) against
    # a 256 MiB upload: the replica runs out of room long before the copy is done.
    srv = ecolink_server_factory(
        extra_args=["--replica-disk-quota", "1", "--replica-disk-check", "0.2"]
    )
    env = account_env(srv, monkeypatch, tmp_path, "full")
    c = launch_ready(srv, env["ECO_API_KEY"], "full", 2)
    home = srv.replica_dir(c["id"], "full-0")
    assert home.is_dir()
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(256 << 20)
    p = ecotui(env, "cp", str(big), "full/full-0:big.bin")
    assert p.returncode == 1, p.stderr
    assert b"full-0:big.bin: no space left on the replica" in p.stderr, p.stderr
    assert b"disk quota" in p.stderr and b"quota 1 MiB" in p.stderr, p.stderr
    assert p.stderr.count(b"\n") == 1, p.stderr  # one line, no traceback
    # Nothing half-copied is left in the replica's home: neither the file nor the
    # hidden directory it was unpacked into.
    assert home.is_dir() and sorted(x.name for x in home.rglob("*")) == []
    assert big.stat().st_size == 256 << 20  # the source is untouched
    # The other replica is untouched, and takes a copy that fits.
    small = tmp_path / "small.txt"
    small.write_bytes(b"fits\n")
    p = ecotui(env, "cp", str(small), "full/full-1:small.txt")
    assert p.returncode == 0, p.stderr
    assert remote(env, "full", "full-1", "cat small.txt; ls -a") == "fits\n.\n..\nsmall.txt\n"
    end_clusters(srv, env["ECO_API_KEY"])
