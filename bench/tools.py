"""Replica tools benchmark, each beside its baseline in the same run (local runtime):

- port-forward throughput and connection rate against a direct TCP connection to
  the replica's port (an echo server in the replica);
- `ecotui cp` of a file (default 1 GiB) up and down against `cat` through `ecotui exec`;
- `ecotui run` on 8 replicas against 8 sequential execs of the same command.

    python bench/tools.py [--mb 1024] [--stream-mb 128] [--conns 200] [--repeat 5]
                          [--only portforward|cp|run]

Starts its own `ecolink serve` on a temporary state dir and stops it at the end.
Prints medians and the ratios (tool / baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "backend")]

from ecotui.client.rest import EcoClient  # noqa: E402
from ecotui.tools.portforward import Forward  # noqa: E402
from ecotui.tools.runner import run_everywhere, run_one  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_exec", ROOT / "bench" / "exec.py")
assert _spec is not None and _spec.loader is not None
bench_exec = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_exec)
Backend = bench_exec.Backend

ECHO = r"""exec python3 -c '
import os, socketserver
class H(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            d = self.request.recv(262144)
            if not d:
                break
            self.request.sendall(d)
class S(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
S(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
'"""


def launch(be: Backend, name: str, replicas: int, command: str) -> dict:
    h = {"Authorization": f"Bearer {be.key}"}
    r = httpx.post(
        be.url + "/gpu-clusters",
        headers=h,
        json={
            "name": name,
            "region": "us-east",
            "gpu_type": "H100-80GB",
            "gpu_count": 1,
            "replicas": replicas,
            "image": "bench",
            "estimated_duration_hours": 1,
            "startup_command": command,
        },
    )
    r.raise_for_status()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        c = httpx.get(f"{be.url}/gpu-clusters/{name}", headers=h).json()
        if c["ready_replicas"] == replicas:
            return dict(c)
        time.sleep(0.1)
    raise SystemExit("replicas did not get ready")


# --------------------------------------------------------------------------- port-forward


def stream(port: int, total: int) -> float:
    """Echo `total` bytes through 127.0.0.1:port; seconds taken."""
    block = os.urandom(256 * 1024)
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:

        def send() -> None:
            left = total
            while left > 0:
                n = min(left, len(block))
                s.sendall(block[:n])
                left -= n
            s.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=send)
        t.start()
        got = 0
        while d := s.recv(1 << 20):
            got += len(d)
        t.join()
    assert got == total, (got, total)
    return time.perf_counter() - t0


def connections(port: int, n: int) -> float:
    """n connections one after another, one byte echoed on each; connections per second."""
    t0 = time.perf_counter()
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"x")
            assert s.recv(1) == b"x"
    return n / (time.perf_counter() - t0)


class ForwardThread:
    """A Forward on its own event loop thread (the measuring code is blocking)."""

    def __init__(self, be: Backend, cluster: str, replica: str, port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self._stop: asyncio.Event | None = None
        self.args = (be, cluster, replica, port)
        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(self._run(),), daemon=True
        )
        self.thread.start()
        self.ready.wait(30)

    async def _run(self) -> None:
        be, cluster, replica, port = self.args
        client = EcoClient(be.url, be.key)
        fwd = Forward(client, cluster, port, 0, "127.0.0.1", replica, on_line=print)
        await fwd.start()
        self.port = fwd.local
        self._stop = asyncio.Event()
        self.ready.set()
        await self._stop.wait()
        await fwd.close()
        await client.aclose()

    def close(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)


# --------------------------------------------------------------------------- cp vs cat


def _env(be: Backend) -> dict[str, str]:
    env = bench_exec._env()
    env.update(ECO_API_URL=be.url, ECO_API_KEY=be.key)
    return env


def timed(
    argv: list[str], env: dict[str, str], stdin: Path | None = None, stdout: Path | None = None
) -> float:
    t0 = time.perf_counter()
    with open(stdin or os.devnull, "rb") as i, open(stdout or os.devnull, "wb") as o:
        subprocess.run(
            [sys.executable, "-m", "ecotui", *argv], env=env, stdin=i, stdout=o, check=True
        )
    return time.perf_counter() - t0


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 24):
            h.update(b)
    return h.hexdigest()


# --------------------------------------------------------------------------- run vs exec


async def run_vs_exec(
    be: Backend,
    cluster: str,
    replicas: list[str],
    repeat: int,
) -> tuple[list[float], list[float]]:
    client = EcoClient(be.url, be.key)
    cmd = ["sh", "-c", "echo $ECO_REPLICA_NAME; sleep 0.05"]
    folded, sequential = [], []
    try:
        for _ in range(repeat):
            t0 = time.perf_counter()
            out = await run_everywhere(client, cluster, replicas, cmd)
            folded.append(time.perf_counter() - t0)
            assert all(o.ok for o in out)
            t0 = time.perf_counter()
            for r in replicas:
                o = await run_one(client, cluster, r, cmd)
                assert o.ok
            sequential.append(time.perf_counter() - t0)
    finally:
        await client.aclose()
    return folded, sequential


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=1024, help="cp file size in MiB")
    ap.add_argument("--stream-mb", type=int, default=128, help="port-forward stream size, MiB")
    ap.add_argument("--conns", type=int, default=200, help="connections for the rate")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", choices=("portforward", "cp", "run"), help="one part alone")
    args = ap.parse_args()
    parts = {args.only} if args.only else {"portforward", "cp", "run"}
    mib = 1024 * 1024
    with tempfile.TemporaryDirectory() as d:
        tmpd = Path(d)
        be = Backend(tmpd / "state")
        be.state.mkdir()
        be.start()
        try:
            c = launch(be, "bench", 8, ECHO)
            names = sorted(
                (s["name"] for s in c["replica_states"]), key=lambda n: int(n.rsplit("-", 1)[1])
            )
            env = _env(be)
            port = int(
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "ecotui",
                        "exec",
                        "bench",
                        names[0],
                        "--",
                        "printenv",
                        "PORT",
                    ],
                    env=env,
                    capture_output=True,
                    check=True,
                ).stdout
            )
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            if "portforward" in parts:
                fwd = ForwardThread(be, "bench", names[0], port)
                try:
                    total = args.stream_mb * mib
                    d_tp, f_tp, d_cr, f_cr = [], [], [], []
                    for _ in range(args.repeat):
                        d_tp.append(total / stream(port, total) / mib)
                        f_tp.append(total / stream(fwd.port, total) / mib)
                        d_cr.append(connections(port, args.conns))
                        f_cr.append(connections(fwd.port, args.conns))
                finally:
                    fwd.close()
            if "cp" in parts:
                data = tmpd / "data.bin"
                with open(data, "wb") as f:
                    for _ in range(args.mb):
                        f.write(os.urandom(mib))
                want = sha(data)
                back = tmpd / "back.bin"
                cp_up, cp_down, cat_up, cat_down = [], [], [], []
                for _ in range(max(1, args.repeat // 2)):
                    cat_up.append(
                        timed(
                            ["exec", "-i", "bench", names[1], "--", "sh", "-c", "cat > cat.bin"],
                            env,
                            stdin=data,
                        )
                    )
                    cat_down.append(
                        timed(["exec", "bench", names[1], "--", "cat", "cat.bin"], env, stdout=back)
                    )
                    assert sha(back) == want
                    back.unlink()
                    cp_up.append(timed(["cp", str(data), f"bench/{names[1]}:cp.bin"], env))
                    cp_down.append(timed(["cp", f"bench/{names[1]}:cp.bin", str(back)], env))
                    assert sha(back) == want
                    back.unlink()
            if "run" in parts:
                folded, sequential = asyncio.run(run_vs_exec(be, "bench", names, args.repeat))
        finally:
            be.stop()

    med = statistics.median
    if "portforward" in parts:
        print("port-forward (echo server in the replica), medians of", args.repeat)
        print(
            f"  throughput  direct {med(d_tp):8.1f} MiB/s   forward {med(f_tp):8.1f} MiB/s"
            f"   ratio {med(f_tp) / med(d_tp):.3f}"
        )
        print(
            f"  conn rate   direct {med(d_cr):8.1f} /s      forward {med(f_cr):8.1f} /s"
            f"      ratio {med(f_cr) / med(d_cr):.3f}"
        )
    if "cp" in parts:
        print(f"cp of {args.mb} MiB vs cat through ecotui exec (s), medians")
        print(
            f"  upload      cat {med(cat_up):7.2f}   cp {med(cp_up):7.2f}"
            f"   ratio cp/cat {med(cp_up) / med(cat_up):.2f}"
            f"   ({args.mb / med(cp_up):.0f} MiB/s)"
        )
        print(
            f"  download    cat {med(cat_down):7.2f}   cp {med(cp_down):7.2f}"
            f"   ratio cp/cat {med(cp_down) / med(cat_down):.2f}"
            f"   ({args.mb / med(cp_down):.0f} MiB/s)"
        )
    if "run" in parts:
        print(f"run on {len(names)} replicas vs {len(names)} sequential execs (s), medians")
        print(
            f"  run {med(folded):.3f}   sequential exec {med(sequential):.3f}"
            f"   speed-up {med(sequential) / med(folded):.1f}x"
        )


if __name__ == "__main__":
    main()
