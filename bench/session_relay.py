"""Kept-session relay benchmark: two `ecolink serve` instances on one throwaway
Postgres database; a kept session held by instance A is attached directly (through
A) and relayed (through B), in alternating rounds of one run.

    python bench/session_relay.py [--keys 200] [--mb 20] [--rounds 3]

Prints keystroke round trips (median, p99, ms) and output throughput (MB/s) of both
paths, and their ratios (relayed / direct).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT / "tests", ROOT / "backend", ROOT / "src"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from support.postgres import PostgresServer  # noqa: E402
from support.server import EcolinkServer  # noqa: E402

V5 = "v5.channel.k8s.io"
ECHO_CMD = "stty raw -echo; exec cat"


async def _attach(url: str, key: str) -> Any:
    return await websockets.connect(
        url,
        additional_headers={"Authorization": f"Bearer {key}"},
        subprotocols=[V5],  # type: ignore[list-item]
        max_size=None,
        proxy=None,
    )


async def keystrokes(url: str, key: str, n: int) -> list[float]:
    ws = await _attach(url, key)
    out: list[float] = []
    try:
        for i in range(n):
            ch = bytes([97 + i % 26])
            t = time.perf_counter()
            await ws.send(b"\x00" + ch)
            while True:
                msg = await asyncio.wait_for(ws.recv(), 10)
                if msg[:1] == b"\x01" and ch in msg[1:]:
                    break
            out.append((time.perf_counter() - t) * 1000)
    finally:
        await ws.close()
    return out


def output_session(api: httpx.Client, cid: str, mb: int) -> str:
    """A session that writes `mb` MB once a client had a second to attach."""
    r = api.post(
        f"/gpu-clusters/{cid}/replicas/bench-0/sessions",
        json={"command": f"sleep 1; head -c {mb * 1_000_000} /dev/zero", "tty": False},
    )
    r.raise_for_status()
    sid: str = r.json()["id"]
    return sid


async def throughput(url: str, key: str) -> float:
    ws = await _attach(url, key)
    got = 0
    t = time.perf_counter()
    try:
        while True:
            msg = await asyncio.wait_for(ws.recv(), 30)
            if msg[:1] == b"\x03":
                break
            if got == 0:
                t = time.perf_counter()
            got += len(msg) - 1
    finally:
        await ws.close()
    took = time.perf_counter() - t
    return got / 1e6 / took


def _fmt(xs: list[float]) -> str:
    q = statistics.quantiles(xs, n=100)
    return f"median {statistics.median(xs):6.2f} ms   p99 {q[98]:6.2f} ms"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--keys", type=int, default=200)
    p.add_argument("--mb", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    pg = PostgresServer()
    servers: list[EcolinkServer] = []
    try:
        env = {"ECOLINK_DATABASE_URL": pg.new_database()}
        tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
        for name in ("a", "b"):
            (tmp / name).mkdir()
            srv = EcolinkServer(tmp / name, env=env, account=f"owner-{name}")
            srv.start()
            servers.append(srv)
        a, b = servers
        key = a.new_account("bench", credit="1000")
        with a.client(key=key) as api:
            r = api.post(
                "/gpu-clusters",
                json={
                    "name": "bench",
                    "region": "us-east",
                    "gpu_type": "H100-80GB",
                    "gpu_count": 1,
                    "replicas": 2,
                    "image": "example/app:1",
                    "estimated_duration_hours": 1,
                    "startup_command": "sleep infinity",
                },
            )
            r.raise_for_status()
            cid = r.json()["id"]
            deadline = time.monotonic() + 60
            while api.get(f"/gpu-clusters/{cid}").json()["status"] != "running":
                assert time.monotonic() < deadline, "the cluster did not start"
                time.sleep(0.1)
            r = api.post(
                f"/gpu-clusters/{cid}/replicas/bench-0/sessions", json={"command": ECHO_CMD}
            )
            r.raise_for_status()
            sid = r.json()["id"]
            time.sleep(0.5)
            path = f"/gpu-clusters/{cid}/sessions/{{}}/attach"
            paths = {
                "direct": lambda s: a.ws_url(path.format(s)),
                "relayed": lambda s: b.ws_url(path.format(s)),
            }
            rtt: dict[str, list[float]] = {"direct": [], "relayed": []}
            mbs: dict[str, list[float]] = {"direct": [], "relayed": []}
            for _ in range(args.rounds):
                for which, url_of in paths.items():
                    rtt[which] += asyncio.run(keystrokes(url_of(sid), key, args.keys))
                    out = url_of(output_session(api, cid, args.mb))
                    mbs[which].append(asyncio.run(throughput(out, key)))
        print(f"keystroke round trip ({args.rounds} x {args.keys} keys):")
        for which in paths:
            print(f"  {which:8} {_fmt(rtt[which])}")
        ratio = statistics.median(rtt["relayed"]) / statistics.median(rtt["direct"])
        print(f"  ratio relayed / direct (median): {ratio:.2f}")
        print(f"output throughput ({args.rounds} x {args.mb} MB, median of rounds):")
        for which in paths:
            print(f"  {which:8} {statistics.median(mbs[which]):7.1f} MB/s  {mbs[which]}")
        ratio = statistics.median(mbs["relayed"]) / statistics.median(mbs["direct"])
        print(f"  ratio relayed / direct: {ratio:.2f}")
    finally:
        for srv in servers:
            srv.close()
        pg.close()


if __name__ == "__main__":
    main()
