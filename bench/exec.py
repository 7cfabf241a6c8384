"""Exec benchmark: a 50 MB `cat` and keystroke round trips through the exec WebSocket
of a real backend (local runtime), each beside the same on a raw local PTY, in one run.

    python bench/exec.py [--mb 50] [--keys 500]

Prints throughput (MB/s) and round-trip latency (median, p99, in ms) for both paths
and their ratios (exec / raw). Starts its own `ecolink serve` on a temporary state dir
and stops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pty
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import websockets

ROOT = Path(__file__).resolve().parent.parent
V5 = "v5.channel.k8s.io"
ECHO_CMD = "stty raw -echo; exec cat"


# --------------------------------------------------------------------------- backend


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

    def start(self) -> None:
        self.cli("accounts", "create", "bench", "--credit", "100000")
        self.key = self.cli("keys", "create", "--account", "bench").split()[-1]
        log = open(self.state / "serve.out", "ab")  # noqa: SIM115
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
            ],
            env=_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                info = json.loads((self.state / "server.json").read_text())
                if info["pid"] == self.proc.pid:
                    self.url = info["url"]
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        raise SystemExit("the backend did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)

    def launch(self, name: str, command: str, port: int | None = None) -> str:
        body: dict[str, object] = {
            "name": name,
            "region": "us-east",
            "gpu_type": "H100-80GB",
            "gpu_count": 1,
            "replicas": 2,
            "image": "bench",
            "estimated_duration_hours": 1,
            "startup_command": command,
        }
        if port:
            body["expose"] = {"port": port}
        h = {"Authorization": f"Bearer {self.key}"}
        r = httpx.post(self.url + "/gpu-clusters", json=body, headers=h)
        r.raise_for_status()
        cid = r.json()["id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            c = httpx.get(f"{self.url}/gpu-clusters/{cid}", headers=h).json()
            if c["replica_states"] and all(s["ready"] for s in c["replica_states"]):
                return str(cid)
            time.sleep(0.1)
        raise SystemExit("replicas did not get ready")

    def exec_url(self, cid: str, replica: str, command: list[str], **flags: object) -> str:
        q = [("command", c) for c in command] + [(k, str(v)) for k, v in flags.items()]
        return (
            "ws://"
            + self.url.split("://", 1)[1]
            + f"/gpu-clusters/{cid}/replicas/{replica}/exec?{urlencode(q)}"
        )


# --------------------------------------------------------------------------- raw PTY


def raw_pty_cat(path: Path) -> tuple[int, float]:
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp("cat", ["cat", str(path)])
    n = 0
    t0 = time.perf_counter()
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        n += len(data)
    dt = time.perf_counter() - t0
    os.waitpid(pid, 0)
    os.close(fd)
    return n, dt


def raw_pty_rtt(keys: int) -> list[float]:
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp("sh", ["sh", "-c", ECHO_CMD])
    time.sleep(0.3)
    out = []
    for i in range(keys):
        b = bytes([97 + i % 26])
        t0 = time.perf_counter()
        os.write(fd, b)
        got = b""
        while b not in got:
            select.select([fd], [], [])
            got += os.read(fd, 1024)
        out.append(time.perf_counter() - t0)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    os.close(fd)
    return out


# --------------------------------------------------------------------------- through exec


async def exec_cat(be: Backend, cid: str, path: Path, tty: bool) -> tuple[int, float]:
    url = be.exec_url(cid, "bench-0", ["cat", str(path)], tty=int(tty))
    t0 = time.perf_counter()
    async with websockets.connect(
        url,
        additional_headers={"Authorization": f"Bearer {be.key}"},
        subprotocols=[V5],
        max_size=None,
        compression=None,
        proxy=None,
    ) as ws:
        n = 0
        async for msg in ws:
            assert isinstance(msg, bytes)
            if msg[0] in (1, 2):
                n += len(msg) - 1
            elif msg[0] == 3:
                status = json.loads(msg[1:])
                assert status["status"] == "Success", status
    return n, time.perf_counter() - t0


async def exec_rtt(be: Backend, cid: str, keys: int) -> list[float]:
    url = be.exec_url(cid, "bench-0", ["sh", "-c", ECHO_CMD], tty=1, stdin=1)
    out = []
    async with websockets.connect(
        url,
        additional_headers={"Authorization": f"Bearer {be.key}"},
        subprotocols=[V5],
        max_size=None,
        compression=None,
        proxy=None,
    ) as ws:
        await asyncio.sleep(0.3)
        for i in range(keys):
            b = bytes([97 + i % 26])
            t0 = time.perf_counter()
            await ws.send(b"\x00" + b)
            got = b""
            while b not in got:
                msg = await ws.recv()
                assert isinstance(msg, bytes)
                if msg[0] == 1:
                    got += msg[1:]
            out.append(time.perf_counter() - t0)
    return out


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--keys", type=int, default=500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        data = tmpd / "blob"
        # Printable data: a terminal would otherwise expand some bytes (CR/LF).
        line = (b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_" * 4)[
            :255
        ] + b"\n"
        with open(data, "wb") as f:
            for _ in range(args.mb * 1024 * 1024 // len(line)):
                f.write(line)
        be = Backend(tmpd / "state")
        be.state.mkdir()
        be.start()
        try:
            cid = be.launch("bench", "exec sleep infinity")
            raw_n, raw_t = raw_pty_cat(data)
            ex_n, ex_t = asyncio.run(exec_cat(be, cid, data, tty=True))
            pipe_n, pipe_t = asyncio.run(exec_cat(be, cid, data, tty=False))
            raw_rtt = raw_pty_rtt(args.keys)
            ex_rtt = asyncio.run(exec_rtt(be, cid, args.keys))
        finally:
            be.stop()
    mb = 1024 * 1024
    print(f"cat of a {args.mb} MB file (through a tty each line also gets a CR)")
    print(
        f"  raw local PTY          {raw_n / mb:7.1f} MB in {raw_t:6.3f} s = {raw_n / mb / raw_t:8.1f} MB/s"
    )
    print(
        f"  exec WebSocket, tty    {ex_n / mb:7.1f} MB in {ex_t:6.3f} s = {ex_n / mb / ex_t:8.1f} MB/s"
    )
    print(
        f"  exec WebSocket, pipes  {pipe_n / mb:7.1f} MB in {pipe_t:6.3f} s = {pipe_n / mb / pipe_t:8.1f} MB/s"
    )
    print(f"  ratio exec(tty)/raw throughput: {(ex_n / ex_t) / (raw_n / raw_t):.2f}")
    print(f"keystroke round trip, {args.keys} keys, one byte each (ms)")
    for name, xs in (("raw local PTY", raw_rtt), ("exec WebSocket", ex_rtt)):
        print(
            f"  {name:22s} median {statistics.median(xs) * 1e3:7.3f}  p99 {pct(xs, 99) * 1e3:7.3f}"
        )
    print(
        f"  ratio exec/raw: median {statistics.median(ex_rtt) / statistics.median(raw_rtt):.1f}x,"
        f" p99 {pct(ex_rtt, 99) / pct(raw_rtt, 99):.1f}x"
    )


if __name__ == "__main__":
    main()
