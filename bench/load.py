"""Load benchmark: one backend holding, at once and for `--duration` seconds,
`--exec` concurrent exec sessions (one-shot `cat` execs plus `--kept` kept sessions,
each echoing a line every couple of seconds), `--watch` watch clients, and a steady,
open-loop request rate (`--rate` per second, reads plus a share of scale/extend).

    python bench/load.py [--duration 300] [--exec 200] [--kept 50] [--watch 100] [--rate 40]

Reports errors (HTTP 5xx and transport failures, WebSockets that drop, echoes that
never come back), latency percentiles (HTTP requests, exec echo round trips, watch
snapshot), and the backend's resident memory at the start of the measured window
(all clients connected, after a warm-up) and at its end, with the bound it must stay
within: growth <= max(--max-growth-mib, 10% of the start). Exit status 1 when there
were errors or the bound was broken.

Starts its own `ecolink serve` (local runtime, temporary state dir) unless `--url`
and `--key` name a running backend (then memory is read only if `--pid` is given).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
V5 = "v5.channel.k8s.io"
STDIN, STDOUT = 0, 1


# --------------------------------------------------------------------------- the backend


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "backend"), str(ROOT / "src"), env.get("PYTHONPATH", "")]
    )
    env.pop("ECOLINK_STATE_DIR", None)
    return env


class Backend:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.key = ""

    def cli(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "ecolink", *args, "--state-dir", str(self.state)],
            env=_env(),
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def start(self, websockets: int = 64) -> None:
        self.cli("accounts", "create", "load", "--credit", "1000000")
        self.key = self.cli("keys", "create", "--account", "load").split()[-1]
        log = open(self.state / "serve.out", "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ecolink",
                "serve",
                "--port",
                "0",
                "--runtime",
                "local",
                "--state-dir",
                str(self.state),
                # One account holds every socket here: room for them all.
                "--max-websockets-per-account",
                str(websockets),
            ],
            env=_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, KeyError):
                info = json.loads((self.state / "server.json").read_text())
                if info["pid"] == self.proc.pid:
                    self.url = info["url"]
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise SystemExit(
            "the backend did not start:\n"
            + (self.state / "serve.out").read_text(errors="replace")[-3000:]
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- measuring


@dataclass
class Stats:
    http: list[float] = field(default_factory=list)
    http_write: list[float] = field(default_factory=list)
    http_status: Counter[int] = field(default_factory=Counter)
    echo: list[float] = field(default_factory=list)
    snapshot: list[float] = field(default_factory=list)
    watch_frames: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    exec_open: int = 0
    watch_open: int = 0
    measuring: bool = False

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.error_samples) < 20:
            self.error_samples.append(f"{kind}: {detail[:300]}")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] * 1000


# --------------------------------------------------------------------------- clients


async def exec_client(
    i: int,
    base: str,
    key: str,
    target: tuple[str, str],
    kept: bool,
    http: httpx.AsyncClient,
    stats: Stats,
    stop: asyncio.Event,
    ready: asyncio.Event,
    period: float,
) -> None:
    cluster, replica = target
    sid = None
    opened = False
    try:
        if kept:
            r = await http.post(
                f"/gpu-clusters/{cluster}/replicas/{replica}/sessions",
                json={"command": ["cat"], "tty": False},
            )
            r.raise_for_status()
            sid = r.json()["id"]
            path = f"/gpu-clusters/{cluster}/sessions/{sid}/attach"
        else:
            path = f"/gpu-clusters/{cluster}/replicas/{replica}/exec?command=cat&stdin=1"
        async with connect(
            base + path,
            additional_headers={"Authorization": f"Bearer {key}"},
            subprotocols=[V5],
            open_timeout=60,
            ping_interval=None,
            max_size=None,
            proxy=None,
        ) as ws:  # type: ignore[list-item]
            stats.exec_open += 1
            opened = True
            ready.set()
            n = 0
            await asyncio.sleep(random.uniform(0, period))
            while not stop.is_set():
                n += 1
                token = f"echo-{i}-{n}\n".encode()
                t0 = time.perf_counter()
                await ws.send(bytes([STDIN]) + token)
                got = b""
                while token not in got:
                    msg = await asyncio.wait_for(ws.recv(), 15)
                    if isinstance(msg, bytes) and msg[:1] == bytes([STDOUT]):
                        got += msg[1:]
                if stats.measuring:
                    stats.echo.append(time.perf_counter() - t0)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), random.uniform(0.5, 1.5) * period)
    except Exception as exc:
        if not stop.is_set():
            stats.error("exec", f"{'kept' if kept else 'exec'} {i}: {exc!r}")
    finally:
        if opened and not stop.is_set():
            stats.exec_open -= 1
        if sid is not None:
            with contextlib.suppress(Exception):
                await http.delete(f"/gpu-clusters/{cluster}/sessions/{sid}")


async def watch_client(
    i: int, base: str, key: str, focus: list[str], stats: Stats, stop: asyncio.Event
) -> None:
    opened = False
    try:
        t0 = time.perf_counter()
        async with connect(
            base + "/watch",
            additional_headers={"Authorization": f"Bearer {key}"},
            open_timeout=60,
            ping_interval=None,
            max_size=None,
            proxy=None,
        ) as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if first.get("type") != "snapshot":
                stats.error("watch", f"first frame {first.get('type')}")
            stats.snapshot.append(time.perf_counter() - t0)
            stats.watch_open += 1
            opened = True
            if focus:
                await ws.send(json.dumps({"type": "focus", "clusters": focus}))
            while not stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 1.0)
                except TimeoutError:
                    continue
                if stats.measuring:
                    stats.watch_frames[json.loads(raw)["type"]] += 1
    except Exception as exc:
        if not stop.is_set():
            stats.error("watch", f"{i}: {exc!r}")
    finally:
        if opened and not stop.is_set():
            stats.watch_open -= 1


async def request_loop(
    http: httpx.AsyncClient,
    clusters: list[dict[str, Any]],
    rate: float,
    mutate_share: float,
    stats: Stats,
    stop: asyncio.Event,
) -> None:
    """Open loop: requests start on schedule whether or not earlier ones finished."""
    ids = [c["id"] for c in clusters]
    reads = [
        lambda: ("GET", "/gpu-clusters", None),
        lambda: ("GET", "/account", None),
        lambda: ("GET", f"/gpu-clusters/{random.choice(ids)}", None),
        lambda: ("GET", f"/gpu-clusters/{random.choice(ids)}/replicas", None),
        lambda: ("GET", f"/gpu-clusters/{random.choice(ids)}/events", None),
        lambda: ("GET", "/account/ledger", None),
        lambda: ("GET", f"/gpu-clusters/{random.choice(ids)}/metrics", None),
        lambda: ("GET", "/catalog", None),
    ]
    writes = [
        lambda: (
            "POST",
            f"/gpu-clusters/{random.choice(ids)}/scale",
            {"replicas": random.choice([2, 3])},
        ),
        lambda: ("POST", f"/gpu-clusters/{random.choice(ids)}/extend", {"hours": "0.01"}),
    ]
    tasks: set[asyncio.Task[None]] = set()

    async def one() -> None:
        write = random.random() < mutate_share
        method, path, body = (random.choice(writes) if write else random.choice(reads))()
        t0 = time.perf_counter()
        try:
            r = await http.request(method, path, json=body)
        except Exception as exc:
            stats.error("http", f"{method} {path}: {exc!r}")
            return
        if stats.measuring:
            (stats.http_write if write else stats.http).append(time.perf_counter() - t0)
            stats.http_status[r.status_code] += 1
        if r.status_code >= 500 or r.status_code in (400, 401, 404, 422):
            stats.error("http", f"{method} {path}: {r.status_code} {r.text[:200]}")

    start = time.perf_counter()
    n = 0
    while not stop.is_set():
        n += 1
        t = asyncio.create_task(one())
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    if tasks:
        await asyncio.wait(tasks, timeout=30)


# --------------------------------------------------------------------------- the run


async def run(args: argparse.Namespace, url: str, key: str, pid: int | None) -> dict[str, Any]:
    base = "ws://" + url.split("://", 1)[1]
    # Idle connections expire before uvicorn's 5 s keep-alive ends them, so a request
    # never races the server's close of an idle connection.
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=2.0)
    http = httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        limits=limits,
        trust_env=False,
    )
    stats = Stats()
    clusters = []
    for i in range(args.clusters):
        r = await http.post(
            "/gpu-clusters",
            json={
                "name": f"load-{os.getpid()}-{i}",
                "region": "us-east",
                "gpu_type": "L40S",
                "gpu_count": 1,
                "replicas": 2,
                "image": "busybox:1.36",
                "estimated_duration_hours": 24,
                "startup_command": "sleep 86400",
            },
        )
        r.raise_for_status()
        clusters.append(r.json())
    for c in clusters:
        for _ in range(300):
            got = (await http.get(f"/gpu-clusters/{c['id']}")).json()
            if got["ready_replicas"] >= 2:
                break
            await asyncio.sleep(0.1)
    targets = [(c["id"], f"{c['name']}-{j}") for c in clusters for j in range(2)]

    stop = asyncio.Event()
    ready = asyncio.Event()
    tasks = []
    t_setup = time.perf_counter()
    for i in range(args.exec):
        kept = i < args.kept
        tasks.append(
            asyncio.create_task(
                exec_client(
                    i,
                    base,
                    key,
                    targets[i % len(targets)],
                    kept,
                    http,
                    stats,
                    stop,
                    ready,
                    args.echo_period,
                )
            )
        )
        if i % 20 == 19:
            await asyncio.sleep(0.2)  # ramp up rather than stampede
    for i in range(args.watch):
        focus = [clusters[i % len(clusters)]["id"]] if i % 10 == 0 else []
        tasks.append(asyncio.create_task(watch_client(i, base, key, focus, stats, stop)))
    tasks.append(
        asyncio.create_task(request_loop(http, clusters, args.rate, args.mutate_share, stats, stop))
    )
    deadline = time.perf_counter() + 120
    while (
        (stats.exec_open < args.exec or stats.watch_open < args.watch)
        and time.perf_counter() < deadline
        and not stats.errors
    ):
        await asyncio.sleep(0.2)
    connected_s = time.perf_counter() - t_setup
    await asyncio.sleep(args.warmup)

    mem: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    rss_start = rss_mib(pid) if pid else float("nan")
    fds_start = open_fds(pid) if pid else 0
    cpu_start = cpu_seconds(pid) if pid else 0.0
    client_cpu_start = time.process_time()
    stats.measuring = True
    while time.perf_counter() - t0 < args.duration:
        await asyncio.sleep(min(5.0, max(0.0, args.duration - (time.perf_counter() - t0))))
        if pid:
            mem.append((time.perf_counter() - t0, rss_mib(pid)))
    stats.measuring = False
    elapsed = time.perf_counter() - t0
    rss_end = rss_mib(pid) if pid else float("nan")
    fds_end = open_fds(pid) if pid else 0
    cpu_used = (cpu_seconds(pid) - cpu_start) if pid else 0.0
    client_cpu = time.process_time() - client_cpu_start
    concurrent = (stats.exec_open, stats.watch_open)
    stop.set()
    await asyncio.wait(tasks, timeout=60)
    for c in clusters:
        with contextlib.suppress(Exception):
            await http.delete(f"/gpu-clusters/{c['id']}")
    await http.aclose()

    bound = max(args.max_growth_mib, 0.10 * rss_start) if pid else float("nan")
    growth = rss_end - rss_start
    report = {
        "duration_s": round(elapsed, 1),
        "connected_in_s": round(connected_s, 1),
        "concurrent_at_end": {"exec_sessions": concurrent[0], "watch_clients": concurrent[1]},
        "http": {
            "requests": len(stats.http) + len(stats.http_write),
            "rate_per_s": round((len(stats.http) + len(stats.http_write)) / elapsed, 1),
            "reads_p50_ms": round(pct(stats.http, 50), 1),
            "reads_p99_ms": round(pct(stats.http, 99), 1),
            "reads_max_ms": round(pct(stats.http, 100), 1),
            "writes": len(stats.http_write),
            "writes_p50_ms": round(pct(stats.http_write, 50), 1),
            "writes_p99_ms": round(pct(stats.http_write, 99), 1),
            "statuses": dict(sorted(stats.http_status.items())),
        },
        "exec_echo": {
            "round_trips": len(stats.echo),
            "p50_ms": round(pct(stats.echo, 50), 1),
            "p99_ms": round(pct(stats.echo, 99), 1),
            "max_ms": round(pct(stats.echo, 100), 1),
        },
        "watch": {
            "snapshot_p99_ms": round(pct(stats.snapshot, 99), 1),
            "frames": dict(stats.watch_frames),
        },
        "errors": dict(stats.errors),
        "error_samples": stats.error_samples,
        "backend": {
            "rss_start_mib": round(rss_start, 1),
            "rss_end_mib": round(rss_end, 1),
            "rss_growth_mib": round(growth, 1),
            "growth_bound_mib": round(bound, 1),
            "rss_samples_mib": [round(m, 1) for _, m in mem],
            "open_fds_start": fds_start,
            "open_fds_end": fds_end,
            "cpu_seconds": round(cpu_used, 1),
            "cpu_share_of_one_core": round(cpu_used / elapsed, 2) if elapsed else 0,
        },
        # This load generator is one Python process: when it nears a whole core, the
        # latencies above include its own queueing.
        "load_generator_cpu_share_of_one_core": round(client_cpu / elapsed, 2),
        "machine_load_average": os.getloadavg(),
    }
    report["ok"] = (
        not stats.errors and concurrent == (args.exec, args.watch) and (not pid or growth <= bound)
    )
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=300.0, help="measured seconds (300)")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring (10)")
    p.add_argument("--exec", type=int, default=200, help="concurrent exec sessions (200)")
    p.add_argument(
        "--kept", type=int, default=50, help="how many of those are kept sessions, attached (50)"
    )
    p.add_argument("--watch", type=int, default=100, help="watch clients (100)")
    p.add_argument("--rate", type=float, default=40.0, help="HTTP requests per second (40)")
    p.add_argument(
        "--mutate-share",
        type=float,
        default=0.025,
        help="share of requests that scale or extend (0.025: one a second at 40/s)",
    )
    p.add_argument(
        "--echo-period", type=float, default=2.0, help="seconds between echoes per exec session (2)"
    )
    p.add_argument("--clusters", type=int, default=4, help="clusters (2 replicas each) (4)")
    p.add_argument(
        "--max-growth-mib",
        type=float,
        default=48.0,
        help="allowed RSS growth over the measured window, MiB, or 10%% of the start if more (48)",
    )
    p.add_argument("--url", default=None, help="use this backend instead of starting one")
    p.add_argument("--key", default=None, help="its API key")
    p.add_argument("--pid", type=int, default=None, help="its pid (for memory figures)")
    p.add_argument("--json", default=None, help="also write the report to this file")
    args = p.parse_args(argv)
    if args.kept > args.exec:
        p.error("--kept cannot exceed --exec")

    backend = None
    tmp = None
    try:
        if args.url:
            if not args.key:
                p.error("--url needs --key")
            url, key, pid = args.url.rstrip("/"), args.key, args.pid
        else:
            tmp = tempfile.TemporaryDirectory(prefix="ecolink-load-")
            backend = Backend(Path(tmp.name))
            backend.start(websockets=max(64, args.exec + args.kept + args.watch + 16))
            assert backend.proc is not None
            url, key, pid = backend.url, backend.key, backend.proc.pid
        report = asyncio.run(run(args, url, key, pid))
        if backend is not None and backend.proc is not None and backend.proc.poll() is not None:
            report["ok"] = False
            report["errors"]["backend_died"] = 1
    finally:
        if backend is not None:
            backend.stop()
        if tmp is not None:
            tmp.cleanup()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
