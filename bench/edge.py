"""A locked database against the event loop: `/healthz` latency while another process
holds SQLite's write lock, or locks the database against readers too.

Starts a real `ecolink serve` (loopback, tmp state dir, the local runtime), launches a
cluster, then a separate process locks the database for `--hold` seconds:
`--lock write` (the default) takes `BEGIN IMMEDIATE`, the write lock, which WAL
readers read past; `--lock readers` holds the read marks of the WAL's shared memory,
which keeps every reader out (as a process stalled holding them does). Meanwhile one client
polls `/healthz` every 50 ms, another reads `/gpu-clusters` and `/account`, and a
third sends one write (an extension) that must wait for the lock. Prints `/healthz`
median and max before and during the held lock, how the reads during it answered
(200, 503 `store_unavailable`, other) and their slowest, and what the write answered
and how long it took. `--busy-timeout S` starts the server with `--db-busy-timeout S`.

`--baseline DIR` first runs the same measurement on the backend of another checkout
(its `backend/` and `src/`, e.g. `git archive main | tar -x -C DIR`), then on this
one, and prints the ratio of the two:

    python bench/edge.py --baseline /tmp/before
    python bench/edge.py --baseline /tmp/before --lock readers --busy-timeout 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def env(source: Path) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(source / "backend"), str(source / "src")])
    e.pop("ECOLINK_STATE_DIR", None)
    return e


def ecolink(source: Path, state: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "ecolink", *args, "--state-dir", str(state)],
        env=env(source),
        capture_output=True,
        text=True,
        check=True,
        cwd=str(state.parent),
    )
    return out.stdout


LOCKS = {
    # The write lock: WAL readers go on reading.
    "write": (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n"
        "c.execute('BEGIN IMMEDIATE')\n"
    ),
    # The read marks of the WAL's shared memory: no reader can start a transaction (as
    # when a process stalls holding them); each waits about 10 s, then fails.
    "readers": (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1] + '-shm', os.O_RDWR)\n"
        "fcntl.lockf(fd, fcntl.LOCK_EX, 5, 123, os.SEEK_SET)\n"
    ),
}


def hold_lock(db: Path, seconds: float, taken: threading.Event, lock: str = "write") -> None:
    """In a separate process: take the lock, sleep, roll back."""
    code = LOCKS[lock] + "print('taken', flush=True)\ntime.sleep(float(sys.argv[2]))\n"
    p = subprocess.Popen(
        [sys.executable, "-c", code, str(db), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert p.stdout is not None
    if p.stdout.readline().strip() != "taken":
        raise SystemExit("the lock could not be taken")
    taken.set()
    p.wait()


def ms(xs: list[float]) -> str:
    if not xs:
        return "none"
    return f"median {statistics.median(xs) * 1000:.1f} ms, max {max(xs) * 1000:.1f} ms"


def run(
    source: Path, hold: float, label: str, lock: str = "write", busy_timeout: float | None = None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ecolink-edge-") as tmp:
        state = Path(tmp) / "state"
        ecolink(source, state, "accounts", "create", "bench", "--credit", "1000")
        key = ecolink(source, state, "keys", "create", "--account", "bench").split()[-1]
        log = open(Path(tmp) / "serve.out", "wb")  # noqa: SIM115
        extra = ["--db-busy-timeout", str(busy_timeout)] if busy_timeout is not None else []
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ecolink",
                "serve",
                "--port",
                "0",
                "--state-dir",
                str(state),
                *extra,
            ],
            env=env(source),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
        try:
            url = ""
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not url:
                try:
                    info = json.loads((state / "server.json").read_text())
                    if info.get("pid") == proc.pid:
                        url = info["url"]
                except (OSError, ValueError):
                    time.sleep(0.05)
            assert url, "the server did not start"
            api = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"})
            while True:
                try:
                    if api.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.05)
            r = api.post(
                "/gpu-clusters",
                json={
                    "name": "edge",
                    "region": "us-east",
                    "gpu_type": "L40S",
                    "gpu_count": 1,
                    "replicas": 2,
                    "image": "busybox",
                    "estimated_duration_hours": 1,
                    "startup_command": "sleep infinity",
                },
            )
            assert r.status_code == 201, r.text

            before: list[float] = []
            for _ in range(20):
                t = time.perf_counter()
                api.get("/healthz")
                before.append(time.perf_counter() - t)
                time.sleep(0.05)

            taken = threading.Event()
            locker = threading.Thread(
                target=hold_lock, args=(state / "ecolink.db", hold, taken, lock)
            )
            locker.start()
            taken.wait()
            t_lock = time.monotonic()
            during: list[float] = []
            reads = {"ok": 0, "store_unavailable": 0, "failed": 0}
            read_s: list[float] = []
            write: dict[str, Any] = {}
            stop = threading.Event()

            def reader() -> None:
                c = httpx.Client(
                    base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"}
                )
                while not stop.is_set():
                    for path in ("/gpu-clusters", "/account"):
                        t = time.perf_counter()
                        try:
                            r = c.get(path)
                            what = (
                                "ok"
                                if r.status_code == 200
                                else "store_unavailable"
                                if r.status_code == 503 and "store_unavailable" in r.text
                                else "failed"
                            )
                        except httpx.HTTPError:
                            what = "failed"
                        read_s.append(time.perf_counter() - t)
                        reads[what] += 1
                    time.sleep(0.1)

            def writer() -> None:
                c = httpx.Client(
                    base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"}
                )
                t = time.perf_counter()
                r = c.post("/gpu-clusters/edge/extend", json={"hours": 1})
                write.update(
                    status=r.status_code, seconds=time.perf_counter() - t, body=r.text[:200]
                )

            threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
            for th in threads:
                th.start()
            h = httpx.Client(base_url=url, timeout=60)
            while time.monotonic() - t_lock < hold - 0.3:
                t = time.perf_counter()
                try:
                    h.get("/healthz")
                except httpx.HTTPError:
                    pass
                during.append(time.perf_counter() - t)
                time.sleep(0.05)
            stop.set()
            locker.join()
            for th in threads:
                th.join()
            result = {
                "label": label,
                "before": before,
                "during": during,
                "reads": reads,
                "write": write,
            }
            print(f"[{label}] /healthz before the lock: {ms(before)}")
            print(
                f"[{label}] /healthz while another process holds the {lock} lock "
                f"{hold:.0f} s: {ms(during)} ({len(during)} requests)"
            )
            print(
                f"[{label}] reads of /gpu-clusters and /account during the lock: "
                f"{reads['ok']} answered 200, {reads['store_unavailable']} 503 "
                f"store_unavailable, {reads['failed']} other; {ms(read_s)}"
            )
            print(
                f"[{label}] one extension sent during the lock: {write.get('status')} "
                f"after {write.get('seconds', 0):.2f} s"
            )
            return result
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another checkout to measure first, in the same run",
    )
    ap.add_argument("--hold", type=float, default=8.0, help="seconds the lock is held")
    ap.add_argument(
        "--lock",
        choices=sorted(LOCKS),
        default="write",
        help="write: BEGIN IMMEDIATE; readers: no reader gets in",
    )
    ap.add_argument(
        "--busy-timeout",
        type=float,
        default=None,
        help="the server's --db-busy-timeout, in seconds",
    )
    args = ap.parse_args()
    base = (
        run(args.baseline.resolve(), args.hold, "baseline", args.lock, args.busy_timeout)
        if args.baseline
        else None
    )
    ours = run(ROOT, args.hold, "this checkout", args.lock, args.busy_timeout)
    if base is not None and base["during"] and ours["during"]:
        for what, f in (("median", statistics.median), ("max", max)):
            b, o = f(base["during"]), f(ours["during"])
            print(
                f"/healthz {what} while the lock is held: baseline {b * 1000:.1f} ms, "
                f"this checkout {o * 1000:.1f} ms, ratio {b / o:.1f}x"
            )


if __name__ == "__main__":
    main()
