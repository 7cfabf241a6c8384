"""The front's own work per service-URL request, in one process, with no sockets.

    python bench/front_cpu.py [--requests 30000] [--repeats 7]

A `ClientProtocol` of the front is handed the bytes `wrk` sends and a pooled
upstream connection the bytes a demo replica answers, over and over, with
transports that only count writes: what is left is the Python the front runs for
each request (parsing callbacks, the key check, routing, the forwarded head, the
replica's choice, the answer's head, counters). The baseline is the least any
httptools proxy does for the same bytes: both parsers fed, with callbacks that do
nothing. Best of the repeats (the machine is shared), and the ratio. The front that
ships is compiled by mypyc (`python -m ecolink.front.build`); the same front as
plain Python (`ECOLINK_FRONT_PYTHON=1`) is measured in a child process beside it.

`bench/proxy.py` measures the same path with real sockets against nginx; this one
separates what the front's code costs from what the kernel and the load cost.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backend"))

import httptools  # noqa: E402

from ecolink.front import compiled  # noqa: E402
from ecolink.front.proxy import ClientProtocol, Front, FrontConfig  # noqa: E402
from ecolink.front.table import ClusterInfo, Snapshot  # noqa: E402
from ecolink.front.upstream import Upstream  # noqa: E402

KEY = "eco_bench-key"
REQUEST = (
    b"GET /gpu-clusters/c1/service/bench HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
    b"Authorization: Bearer " + KEY.encode() + b"\r\n\r\n"
)
BODY = (
    b'{"replica":"bench-0","index":0,"cluster_id":"c1","gpus":["0"],"gpu_type":"H100",'
    b'"request":{"method":"GET","path":"/bench","query":"","body_bytes":0}}'
)
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    b"X-Replica: bench-0\r\nConnection: keep-alive\r\n\r\n%s" % (len(BODY), BODY)
)


class Table:
    """The credential tables as the front reads them: one key, one cluster."""

    snap = Snapshot()

    def account_for_key(self, key: str) -> str | None:
        return "acct" if key == KEY else None

    def account_for_session(self, token: str) -> str | None:
        return None

    def cluster(self, account: str, ref: str) -> ClusterInfo | None:
        return ClusterInfo("c1", "acct", "bench", "running", 8080, 0)

    def refresh(self, *, from_loop: bool = False) -> bool:
        return False


class Transport:
    """Counts writes; everything else a transport does is a no-op here."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


def front_round() -> Callable[[], None]:
    front = Front(Table(), "/nonexistent", FrontConfig())  # type: ignore[arg-type]
    front.set_targets("c1", [(f"r{i}", "127.0.0.1", 9000 + i, "local") for i in range(2)])
    for key in (("127.0.0.1", 9000), ("127.0.0.1", 9001)):
        for _ in range(4):
            up = Upstream(front.conns, key)
            up.connection_made(Transport())  # type: ignore[arg-type]
            front.conns._members.add(up)
            front.conns.open[key] += 1
            front.conns.release(up)
    client = ClientProtocol(front)
    client.connection_made(Transport())  # type: ignore[arg-type]

    def one() -> None:
        client.data_received(REQUEST)
        ex = client.active
        assert ex is not None and ex.up is not None
        ex.up.data_received(ANSWER)

    one()
    assert client.active is None and client.transport.writes == 1  # type: ignore[union-attr]
    return one


class Quiet:
    """Callbacks that do nothing: what every httptools proxy pays at the least."""

    def on_header(self, name: bytes, value: bytes) -> None: ...
    def on_headers_complete(self) -> None: ...
    def on_body(self, data: bytes) -> None: ...
    def on_message_complete(self) -> None: ...


def floor_round() -> Callable[[], None]:
    quiet = Quiet()
    request = httptools.HttpRequestParser(quiet)
    answer = httptools.HttpResponseParser(quiet)
    up, down = Transport(), Transport()

    def one() -> None:
        request.feed_data(REQUEST)
        up.write(REQUEST)
        answer.feed_data(ANSWER)
        down.write(ANSWER)

    return one


def best_per_request(one: Callable[[], None], n: int, repeats: int) -> float:
    for _ in range(n // 10):
        one()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            one()
        best = min(best, time.perf_counter() - t0)
    return best / n


async def main() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--requests", type=int, default=30000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--only", action="store_true", help="this process's front alone")
    args = ap.parse_args()
    ours = best_per_request(front_round(), args.requests, args.repeats)
    floor = best_per_request(floor_round(), args.requests, args.repeats)
    print(
        f"{compiled.describe().split(' (')[0]}, one service-URL request and its answer: "
        f"{ours * 1e6:.2f} us; both parsers with empty callbacks: {floor * 1e6:.2f} us "
        f"({ours / floor:.1f}x; best of {args.repeats} x {args.requests})",
        flush=True,
    )
    return args


def python_front_too(args: argparse.Namespace) -> None:
    """The same front as plain Python, in a child process (a process runs one)."""
    if not args.only and compiled.ACTIVE:
        env = {**os.environ, "ECOLINK_FRONT_PYTHON": "1"}
        cmd = [sys.executable, __file__, "--only", "--requests", str(args.requests)]
        subprocess.run([*cmd, "--repeats", str(args.repeats)], env=env, check=True)


if __name__ == "__main__":
    import uvloop

    python_front_too(uvloop.run(main()))
