"""Benchmark of the ecolink API on the local runtime.

Starts a real `ecolink serve` (loopback, tmp state dir, a catalog whose GPU budget
allows it), launches N clusters whose replicas run `sleep infinity`, then measures:
- GET /gpu-clusters (list) and GET /gpu-clusters/{id} (get) latency, median and p99,
  beside GET /healthz on the same server as the baseline, and their ratios;
- /watch fan-out: C WebSocket clients connected while clusters change state (stop,
  then resume); for every change and client, the time from the request to the frame
  showing the new state.

Usage: python bench/api.py [--clusters 1000] [--clients 50] [--requests 200] [--changes 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

ROOT = Path(__file__).resolve().parent.parent

CATALOG = """
[[regions]]
name = "bench"
gpu_budget = 1000000

[[regions.gpu_types]]
name = "L40S"
rate_per_gpu_hour = "0.95"
gpu_counts = [1, 2, 4, 8]
"""


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "backend"), str(ROOT / "src"), e.get("PYTHONPATH", "")]
    )
    e.pop("ECOLINK_STATE_DIR", None)
    return e


def ecolink(state: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "ecolink", *args, "--state-dir", str(state)],
        env=env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, int(round(p / 100 * (len(s) - 1)))))
    return s[k]


def fmt_ms(values: list[float]) -> str:
    return (
        f"median {statistics.median(values) * 1000:8.2f} ms   p99 {pct(values, 99) * 1000:8.2f} ms"
    )


async def timed(client: httpx.AsyncClient, path: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = await client.get(path)
        out.append(time.perf_counter() - t)
        assert r.status_code == 200, r.text
    return out


async def launch_all(client: httpx.AsyncClient, n: int, replicas: int) -> list[str]:
    ids: list[str] = []
    sem = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        async with sem:
            r = await client.post(
                "/gpu-clusters",
                json={
                    "name": f"b{i}",
                    "region": "bench",
                    "gpu_type": "L40S",
                    "gpu_count": 1,
                    "replicas": replicas,
                    "image": "busybox",
                    "estimated_duration_hours": 24,
                    "startup_command": "sleep infinity",
                },
            )
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])

    await asyncio.gather(*(one(i) for i in range(n)))
    return ids


async def watch_fanout(
    url: str, key: str, api: httpx.AsyncClient, ids: list[str], clients: int, changes: int
) -> dict[str, Any]:
    ws_url = "ws://" + url.split("://", 1)[1] + "/watch"
    sent: dict[tuple[str, str], float] = {}
    answered: dict[tuple[str, str], float] = {}
    latencies: list[float] = []
    arrivals: list[tuple[tuple[str, str], float]] = []
    missing = 0
    conns = []
    t = time.perf_counter()
    for _ in range(clients):
        conns.append(
            await websockets.connect(
                ws_url, additional_headers={"Authorization": f"Bearer {key}"}, max_size=None
            )
        )
    snap_bytes = 0
    for ws in conns:
        first = await ws.recv()
        snap_bytes = len(first)
        assert json.loads(first)["type"] == "snapshot"
    connect_s = time.perf_counter() - t
    targets = random.Random(1).sample(ids, changes)
    expect = {(cid, st) for cid in targets for st in ("stopped", "running")}
    got: list[set[tuple[str, str]]] = [set() for _ in conns]
    frames = [0] * len(conns)
    done = asyncio.Event()

    async def reader(i: int, ws: Any) -> None:
        try:
            async for raw in ws:
                frames[i] += 1
                f = json.loads(raw)
                if f["type"] != "cluster":
                    continue
                k = (f["cluster"]["id"], f["cluster"]["status"])
                if k in expect and k not in got[i] and k in sent:
                    got[i].add(k)
                    now = time.perf_counter()
                    latencies.append(now - sent[k])
                    arrivals.append((k, now))
                if all(len(g) == len(expect) for g in got):
                    done.set()
        except websockets.ConnectionClosed:
            pass

    readers = [asyncio.create_task(reader(i, ws)) for i, ws in enumerate(conns)]
    t0 = time.perf_counter()
    for cid in targets:
        sent[(cid, "stopped")] = time.perf_counter()
        r = await api.post(f"/gpu-clusters/{cid}/stop")
        answered[(cid, "stopped")] = time.perf_counter()
        assert r.status_code == 200, r.text
    for cid in targets:
        sent[(cid, "running")] = time.perf_counter()
        r = await api.post(f"/gpu-clusters/{cid}/resume")
        answered[(cid, "running")] = time.perf_counter()
        assert r.status_code == 200, r.text
    actions_s = time.perf_counter() - t0
    try:
        await asyncio.wait_for(done.wait(), 30)
    except TimeoutError:
        pass
    total_s = time.perf_counter() - t0
    missing = sum(len(expect) - len(g) for g in got)
    for task in readers:
        task.cancel()
    for ws in conns:
        await ws.close()
    # From the API's answer to the frame at the client (negative: the frame came first).
    # "stopped" is committed before the answer; "running" comes later, when the runtime
    # reports the replicas started, so only the first measures the feed alone.
    after_answer = [t - answered[k] for k, t in arrivals if k in answered]
    stop_after_answer = [
        t - answered[k] for k, t in arrivals if k in answered and k[1] == "stopped"
    ]
    return {
        "latencies": latencies,
        "after_answer": after_answer,
        "stop_after_answer": stop_after_answer,
        "missing": missing,
        "connect_s": connect_s,
        "snapshot_bytes": snap_bytes,
        "actions": 2 * changes,
        "actions_s": actions_s,
        "total_s": total_s,
        "frames": sum(frames),
    }


def start_server(state: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    (state / "catalog.toml").write_text(CATALOG)
    ecolink(state, "accounts", "create", "bench", "--credit", "100000000")
    key = ecolink(state, "keys", "create", "--account", "bench").split()[-1]
    log = open(state / "serve.out", "wb")  # noqa: SIM115 - the child writes it
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ecolink",
            "serve",
            "--port",
            "0",
            "--catalog",
            str(state / "catalog.toml"),
            "--state-dir",
            str(state),
        ],
        env=env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    for _ in range(600):
        try:
            info = json.loads((state / "server.json").read_text())
            if info["pid"] == proc.pid:
                return proc, str(info["url"]), key
        except (OSError, ValueError):
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("ecolink serve did not start:\n" + (state / "serve.out").read_text())


async def bench(args: argparse.Namespace, url: str, key: str) -> None:
    async with httpx.AsyncClient(
        base_url=url, timeout=600, headers={"Authorization": f"Bearer {key}"}
    ) as api:
        t = time.perf_counter()
        ids = await launch_all(api, args.clusters, args.replicas)
        launch_s = time.perf_counter() - t
        print(
            f"launched {len(ids)} clusters x {args.replicas} replicas in {launch_s:.1f} s "
            f"({len(ids) / launch_s:.1f} launches/s)"
        )
        # Measure in the steady state: every replica started.
        deadline = time.monotonic() + args.settle_timeout
        running = 0
        while time.monotonic() < deadline:
            cs = (await api.get("/gpu-clusters")).json()["clusters"]
            running = sum(1 for c in cs if c["status"] == "running")
            if running == len(ids):
                break
            await asyncio.sleep(2)
        print(
            f"{running}/{len(ids)} running {time.perf_counter() - t:.1f} s after the first "
            f"launch; list answer {len((await api.get('/gpu-clusters')).content) / 1e6:.2f} MB"
        )
        # Warm up, then measure each kind in turn on the same server.
        await timed(api, "/healthz", 20)
        health = await timed(api, "/healthz", args.requests)
        gets: list[float] = []
        rng = random.Random(2)
        for _ in range(args.requests):
            cid = rng.choice(ids)
            t = time.perf_counter()
            r = await api.get(f"/gpu-clusters/{cid}")
            gets.append(time.perf_counter() - t)
            assert r.status_code == 200
        lists = await timed(api, "/gpu-clusters", max(20, args.requests // 4))
        hm = statistics.median(health)
        print()
        print(f"GET /healthz          {fmt_ms(health)}   (baseline, n={len(health)})")
        print(
            f"GET /gpu-clusters/id  {fmt_ms(gets)}   x{statistics.median(gets) / hm:6.1f} "
            f"median, x{pct(gets, 99) / pct(health, 99):6.1f} p99 (n={len(gets)})"
        )
        print(
            f"GET /gpu-clusters     {fmt_ms(lists)}   x{statistics.median(lists) / hm:6.1f} "
            f"median, x{pct(lists, 99) / pct(health, 99):6.1f} p99 (n={len(lists)}, "
            f"{len(ids)} clusters)"
        )
        print()
        w = await watch_fanout(url, key, api, ids, args.clients, args.changes)
        lat = w["latencies"]
        print(
            f"watch: {args.clients} clients connected and got their snapshots "
            f"({w['snapshot_bytes'] / 1e6:.2f} MB each) in {w['connect_s']:.1f} s"
        )
        print(
            f"watch: {w['actions']} state changes (stop, then resume) sent in "
            f"{w['actions_s']:.1f} s; {len(lat)} deliveries, {w['missing']} missing, "
            f"{w['frames']} frames in all"
        )
        if lat:
            print(
                f"watch: request sent -> frame at client   {fmt_ms(lat)}   "
                f"max {max(lat) * 1000:.1f} ms"
            )
            aa = w["after_answer"]
            print(
                f"watch: API answer   -> frame at client   {fmt_ms(aa)}   "
                f"max {max(aa) * 1000:.1f} ms"
            )
            sa = w["stop_after_answer"]
            print(
                f"watch: stop answer  -> 'stopped' frame   {fmt_ms(sa)}   "
                f"max {max(sa) * 1000:.1f} ms  (the feed alone)"
            )


def end_leftover_replicas(state: Path) -> None:
    """Kill replicas a server that did not stop cleanly left behind (by their marker)."""
    sys.path[:0] = [str(ROOT / "backend")]
    from ecocore.clock import SystemClock
    from ecolink.runtime.local import LocalRuntime
    from ecolink.runtime.local.proc import kill_now_sync

    rid = LocalRuntime(state, SystemClock()).rid
    left = kill_now_sync(lambda m: m.startswith(rid + "."), [])
    if left:
        print(f"killed {left} replica processes left behind")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--changes", type=int, default=40)
    p.add_argument(
        "--settle-timeout",
        type=float,
        default=900.0,
        help="how long to wait for every cluster to run before measuring",
    )
    p.add_argument("--keep", action="store_true", help="keep the state dir")
    args = p.parse_args()
    state = Path(tempfile.mkdtemp(prefix="ecolink-bench-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc, url, key = start_server(state)
        asyncio.run(bench(args, url, key))
    finally:
        if proc is not None:
            # A clean stop ends the replicas (and posts their charges).
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(600)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            end_leftover_replicas(state)
        if args.keep:
            print(f"state dir: {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
