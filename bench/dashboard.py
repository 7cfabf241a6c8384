"""Benchmark: the dashboard, headless, against a generated feed at fleet scale.

For each fleet size (default 1,000 clusters x 8 replicas x 8 GPUs, and 10 clusters
beside it in the same run) it starts a feed server in its own process (the /watch
WebSocket and the few REST routes the dashboard reads, speaking api.md's shapes over
loopback) and the dashboard in another (the real watch and REST clients, the real
app, Textual's headless driver at 160x48, or `--size 80x24` as over SSH in a tmux
pane), then reports for the dashboard process:

- CPU seconds per minute while the feed runs (no keys pressed),
- peak memory (max RSS),
- time to first paint (app start to the first screen update showing the clusters),
- key-press-to-repaint latency, median and p95 (cursor moves, sort, reverse, group),
- the same latency in the fleet GPU view (`H`: every GPU of every cluster; cursor
  moves, sort by health/utilisation/memory/temperature/idle cost, reverse), measured in
  the same run as the clusters view, for fleets of up to 10,000 GPUs,

and the ratios between the two sizes. The feed sends what the backend sends: the
snapshot, each cluster's changes about once a minute (its charges) with an account
frame each, summaries every 5 s, replicas every second for the focused clusters.

    python bench/dashboard.py                 # 1000 and 10 clusters, 30 s each
    python bench/dashboard.py --seconds 60 --sizes 1000,100,10
    python bench/dashboard.py --sizes 130 --seconds 10   # about 8,000 GPUs: both views
    python bench/dashboard.py --size 80x24      # the terminal an SSH user has
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT / "src", ROOT / "backend"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))


# -- the feed server (its own process) -----------------------------------------------


async def serve_feed(clusters: int, replicas: int, gpus: int, port_file: Path) -> None:
    from urllib.parse import parse_qs, urlsplit

    from websockets.asyncio.server import ServerConnection, serve
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    from ecotui.testing import GeneratedFleet, dumps

    fleet = GeneratedFleet(clusters, replicas, gpus)
    start = time.monotonic()
    conns: dict[ServerConnection, set[str]] = {}

    def json_response(status: int, body: Any) -> Response:
        data = json.dumps(body).encode()
        return Response(
            status,
            "OK",
            Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data)))]),
            data,
        )

    def rest(conn: ServerConnection, request: Any) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        url = urlsplit(request.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path
        if path == "/healthz":
            return json_response(200, {"status": "ok", "version": "bench"})
        if path == "/account":
            return json_response(200, fleet.account)
        if path == "/account/ledger":
            return json_response(200, {"entries": fleet.ledger(limit=int(q.get("limit", 100)))})
        if path == "/gpus":
            return json_response(
                200,
                fleet.fleet_gpus_answer(
                    time.monotonic() - start, brief=q.get("brief") == "true", since=q.get("since")
                ),
            )
        parts = path.strip("/").split("/")
        if len(parts) >= 3 and parts[0] == "gpu-clusters" and parts[1] in fleet.clusters:
            cid = parts[1]
            if parts[2] == "metrics":
                return json_response(200, fleet.metrics(cid, window_s=300, interval_s=5))
            if parts[2] == "events":
                return json_response(200, {"events": fleet.events(cid)})
        return json_response(404, {"error": {"code": "not_found", "message": path}})

    async def handler(conn: ServerConnection) -> None:
        conns[conn] = set()
        await conn.send(dumps(fleet.snapshot_frame()))
        try:
            async for msg in conn:
                frame = json.loads(msg)
                if frame.get("type") == "focus":
                    ids = {i for i in frame.get("clusters", [])[:100] if i in fleet.clusters}
                    conns[conn] = ids
                    t = time.monotonic() - start
                    for cid in ids:
                        await conn.send(dumps(fleet.replicas_frame(cid, t)))
        finally:
            conns.pop(conn, None)

    async def broadcast(text: str) -> None:
        for conn in list(conns):
            try:
                await conn.send(text)
            except Exception:
                conns.pop(conn, None)

    async def ticker() -> None:
        rng = random.Random(3)
        churn_per_s = clusters / 60.0  # each cluster's charges post about once a minute
        owed = 0.0
        n = 0
        while True:
            await asyncio.sleep(1.0)
            n += 1
            t = time.monotonic() - start
            for conn, ids in list(conns.items()):
                for cid in ids:
                    try:
                        await conn.send(dumps(fleet.replicas_frame(cid, t)))
                    except Exception:
                        break
            if n % 5 == 0:
                await broadcast(dumps(fleet.summaries_frame(t)))
            owed += churn_per_s
            k, owed = int(owed), owed - int(owed)
            for frame in fleet.churn(k, t):
                await broadcast(dumps(frame))
                await broadcast(dumps({"type": "account", "account": fleet.account}))
            if rng.random() < 0.2:
                cid = rng.choice(list(fleet.clusters))
                await broadcast(
                    dumps(
                        {
                            "type": "event",
                            "cluster_id": cid,
                            "event": {
                                "at": "2026-03-02T14:00:00Z",
                                "kind": "scaled",
                                "message": "bench event",
                            },
                        }
                    )
                )

    async with serve(handler, "127.0.0.1", 0, process_request=rest, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        port_file.write_text(str(port))
        await ticker()


# -- the dashboard (its own process) ----------------------------------------------------


async def run_dashboard(
    url: str, seconds: float, presses: int, size: tuple[int, int], gpu_view: bool = False
) -> dict[str, Any]:
    from ecotui.app import EcoApp
    from ecotui.client.rest import EcoClient
    from ecotui.client.watch import WatchClient

    t_start = time.perf_counter()
    client = EcoClient(url, "eco_bench")
    app = EcoApp(None, client=client, frame_source=WatchClient(url, "eco_bench"), refresh_hz=4.0)
    displays: list[float] = []
    written: list[tuple[float, int]] = []
    first_paint: list[float] = []
    original_display = app._display

    def display(screen: Any, renderable: Any) -> None:
        original_display(screen, renderable)
        if renderable is None or app._batch_count:
            return
        # Headless Textual skips the terminal encoding: do it here, so its cost is counted
        # and the bytes a terminal would receive are known.
        text = (
            renderable.render_segments(app.console)
            if hasattr(renderable, "render_segments")
            else ""
        )
        now = time.perf_counter()
        displays.append(now)
        written.append((now, len(text.encode("utf-8"))))
        if not first_paint and app.model.snapshots:
            try:
                table = app.screen.query_one("FleetTable")
            except Exception:
                return
            if table.row_count and table._cells:
                first_paint.append(now - t_start)

    app._display = display  # type: ignore[method-assign]
    result: dict[str, Any] = {}
    async with app.run_test(size=size, headless=True) as pilot:
        while not first_paint:
            await asyncio.sleep(0.005)
        result["first_paint_s"] = first_paint[0]
        result["clusters"] = len(app.model.clusters)
        await asyncio.sleep(2.0)  # let the focus and the first replicas frames settle

        # CPU while the feed runs and nobody types.
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        w0 = time.perf_counter()
        await asyncio.sleep(seconds)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        w1 = time.perf_counter()
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        result["cpu_s_per_min"] = cpu * 60.0 / (w1 - w0)
        result["paints_per_s"] = sum(1 for d in displays if w0 <= d <= w1) / (w1 - w0)
        result["terminal_kib_per_s"] = (
            sum(b for t, b in written if w0 <= t <= w1) / 1024 / (w1 - w0)
        )

        # Key press to the next screen update that follows it. Every key here changes the
        # screen (j then k keep the cursor inside the list; o, O and m change the order).
        keys = ["j", "k", "o", "j", "k", "O", "j", "k", "m"]
        latencies: list[float] = []
        for i in range(presses):
            key = keys[i % len(keys)]
            seen = len(displays)
            t0 = time.perf_counter()
            app.simulate_key(key)
            while len(displays) == seen:
                await asyncio.sleep(0.0005)
            latencies.append(displays[seen] - t0)
            if os.environ.get("ECOTUI_BENCH_DEBUG"):
                print(f"{key} {1000 * (displays[seen] - t0):.1f} ms", file=sys.stderr)
            await asyncio.sleep(0.05)
        latencies.sort()
        result["latency_median_ms"] = statistics.median(latencies) * 1000
        result["latency_p95_ms"] = latencies[max(0, int(round(0.95 * len(latencies))) - 1)] * 1000
        result["presses"] = len(latencies)

        if gpu_view:
            # The fleet GPU view, same process, same feed: open it, wait for every GPU.
            from ecotui.screens.gpus import GpusScreen

            app.simulate_key("H")
            t0 = time.perf_counter()
            while not (isinstance(app.screen, GpusScreen) and app.screen.loaded):
                await asyncio.sleep(0.005)
            result["gpu_view_first_paint_s"] = time.perf_counter() - t0
            result["gpus"] = len(app.screen.gpus)
            await asyncio.sleep(1.0)
            gkeys = ["j", "k", "o", "j", "k", "O", "j", "k", "o"]
            glat: list[float] = []
            for i in range(presses):
                key = gkeys[i % len(gkeys)]
                seen = len(displays)
                t0 = time.perf_counter()
                app.simulate_key(key)
                while len(displays) == seen:
                    await asyncio.sleep(0.0005)
                glat.append(displays[seen] - t0)
                await asyncio.sleep(0.05)
            glat.sort()
            result["gpu_latency_median_ms"] = statistics.median(glat) * 1000
            result["gpu_latency_p95_ms"] = glat[max(0, int(round(0.95 * len(glat))) - 1)] * 1000
            # Idle on the GPU view: its reloads every 3 s (and the feed) are what remains.
            c0, w0 = time.process_time(), time.perf_counter()
            await asyncio.sleep(9.0)
            result["gpu_idle_cpu_s_per_min"] = (
                (time.process_time() - c0) * 60 / (time.perf_counter() - w0)
            )
        del pilot
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


# -- the driver ---------------------------------------------------------------------------


def reload_cost(clusters: int, replicas: int, gpus: int, rounds: int = 7) -> None:
    """The GPU view's 3-second reload on its own: bytes read and CPU to parse and merge
    the answer, the whole list (baseline) beside the answer since the version held.
    Both views must end with the same rows."""
    from ecotui.screens.gpus import GpusScreen
    from ecotui.testing import GeneratedFleet

    fleet = GeneratedFleet(clusters, replicas, gpus)
    whole_view, since_view = GpusScreen(autoload=False), GpusScreen(autoload=False)
    first = fleet.fleet_gpus_answer(0.0, brief=True)
    whole_view.set_gpus(first["gpus"])
    since_view.apply_answer(first)
    cost: dict[str, list[float]] = {"whole": [], "since": []}
    size: dict[str, int] = {}
    for i in range(1, rounds + 1):
        t = 3.0 * i
        body = {
            "whole": json.dumps(fleet.fleet_gpus(t, brief=True)).encode(),
            "since": json.dumps(
                fleet.fleet_gpus_answer(t, brief=True, since=since_view.version)
            ).encode(),
        }
        for kind, view in (("whole", whole_view), ("since", since_view)):
            c0 = time.process_time()
            data = json.loads(body[kind])
            if kind == "whole":
                view.set_gpus(data["gpus"], data["health"])
            else:
                view.apply_answer(data)
            cost[kind].append((time.process_time() - c0) * 1000)
            size[kind] = len(body[kind])
        if whole_view.gpus != since_view.gpus:
            raise SystemExit("the incremental reload ended with other rows than a whole read")
    w, d = statistics.median(cost["whole"]), statistics.median(cost["since"])
    print(
        f"GPU view reload, {len(whole_view.gpus)} GPUs (no terminal): whole list "
        f"{size['whole'] / 1e6:.2f} MB, {w:.1f} ms CPU; since the version held "
        f"{size['since'] / 1e6:.2f} MB, {d:.1f} ms CPU ({w / d:.2f}x less CPU)"
    )


# The fleet GPU view is measured up to this many GPUs (its list is read whole over REST).
MAX_GPU_VIEW = 10_000


def measure(clusters: int, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT / "backend"), env.get("PYTHONPATH", "")]
    )
    port_file = Path(tempfile.gettempdir()) / f"ecotui-bench-{os.getpid()}-{clusters}.port"
    port_file.unlink(missing_ok=True)
    feed = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve-feed",
            str(clusters),
            "--replicas",
            str(args.replicas),
            "--gpus",
            str(args.gpus),
            "--port-file",
            str(port_file),
        ],
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text():
            if feed.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the feed server did not start")
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port_file.read_text()}"
        gpus = clusters * args.replicas * args.gpus
        extra = ["--gpu-view"] if gpus <= MAX_GPU_VIEW else []
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--dashboard",
                url,
                "--seconds",
                str(args.seconds),
                "--presses",
                str(args.presses),
                "--size",
                args.size,
                *extra,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=args.seconds + 300,
        )
        if out.returncode != 0:
            raise RuntimeError(f"dashboard run failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        feed.terminate()
        feed.wait(timeout=10)
        port_file.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="1000,10", help="fleet sizes, the first one compared to the last"
    )
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0, help="CPU measuring window")
    parser.add_argument("--presses", type=int, default=45)
    parser.add_argument("--serve-feed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dashboard", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument("--gpu-view", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", default="160x48", help="terminal size, COLSxROWS (e.g. 80x24)")
    args = parser.parse_args()

    if args.serve_feed is not None:
        asyncio.run(serve_feed(args.serve_feed, args.replicas, args.gpus, args.port_file))
        return
    if args.dashboard:
        cols, rows = (int(v) for v in args.size.lower().split("x"))
        res = asyncio.run(
            run_dashboard(
                args.dashboard, args.seconds, args.presses, (cols, rows), gpu_view=args.gpu_view
            )
        )
        print(json.dumps(res))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    results = {}
    for n in sizes:
        print(
            f"measuring {n} clusters x {args.replicas} replicas x {args.gpus} GPUs ...", flush=True
        )
        results[n] = measure(n, args)
    rows = [
        ("CPU s per minute", "cpu_s_per_min", "{:.2f}"),
        ("peak memory MiB", "peak_rss_mib", "{:.1f}"),
        ("time to first paint s", "first_paint_s", "{:.3f}"),
        ("key to repaint median ms", "latency_median_ms", "{:.1f}"),
        ("key to repaint p95 ms", "latency_p95_ms", "{:.1f}"),
        ("GPUs in the GPU view", "gpus", "{:.0f}"),
        ("GPU view: first paint s", "gpu_view_first_paint_s", "{:.3f}"),
        ("GPU view: key to repaint median", "gpu_latency_median_ms", "{:.1f}"),
        ("GPU view: key to repaint p95 ms", "gpu_latency_p95_ms", "{:.1f}"),
        ("GPU view: CPU s per minute (idle)", "gpu_idle_cpu_s_per_min", "{:.2f}"),
        ("screen updates per s (idle)", "paints_per_s", "{:.1f}"),
        ("terminal output KiB per s (idle)", "terminal_kib_per_s", "{:.1f}"),
    ]
    big, small = sizes[0], sizes[-1]
    head = f"{'':30}" + "".join(f"{str(n) + ' clusters':>16}" for n in sizes) + f"{'ratio':>10}"
    print()
    print(
        f"dashboard at {args.size}, {args.replicas} replicas x {args.gpus} GPUs per cluster, "
        f"{args.seconds:g} s CPU window, {args.presses} key presses, python {sys.version.split()[0]}"
    )
    print(head)
    for label, key, fmt in rows:
        vals = "".join(
            f"{fmt.format(results[n][key]) if key in results[n] else '—':>16}" for n in sizes
        )
        a, b = results[big].get(key), results[small].get(key)
        ratio = a / b if a is not None and b else float("nan")
        print(f"{label:30}{vals}{ratio:>9.2f}x")
    for n in sizes:
        r = results[n]
        if "gpu_latency_p95_ms" in r:
            print(
                f"{n} clusters ({r['gpus']:.0f} GPUs): key to repaint p95, GPU view "
                f"{r['gpu_latency_p95_ms']:.1f} ms beside clusters view "
                f"{r['latency_p95_ms']:.1f} ms: {r['gpu_latency_p95_ms'] / r['latency_p95_ms']:.2f}x"
            )
            reload_cost(n, args.replicas, args.gpus)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
