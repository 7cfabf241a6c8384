"""What the instance's metrics cost: a request through `ObserveMiddleware` beside
the same request to the bare ASGI app, and a store read timed by
`instrument_store` beside the same read on an untimed store.

Usage: python bench/observe.py [--requests 20000] [--reads 20000] [--rounds 5]
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

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "backend"), str(ROOT / "src")]

from fastapi import FastAPI  # noqa: E402

from ecolink.observe.metrics import Metrics, ObserveMiddleware, instrument_store  # noqa: E402
from ecolink.store import Store  # noqa: E402


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/gpu-clusters/{id}")
    async def one(id: str) -> dict[str, str]:
        return {"id": id}

    return app


async def drive(app: Any, n: int) -> float:
    """Seconds per request of `n` GETs straight into the ASGI app."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/gpu-clusters/gc_1",
        "raw_path": b"/gpu-clusters/gc_1",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"x")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    start = time.perf_counter()
    for _ in range(n):
        await app(dict(scope), receive, send)
    return (time.perf_counter() - start) / n


def reads(store: Store, account_id: str, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        store.account(account_id)
    return (time.perf_counter() - start) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--reads", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()

    bare = make_app()
    observed = make_app()
    metrics = Metrics()
    observed.add_middleware(ObserveMiddleware, metrics=metrics, routes=lambda: observed.routes)
    with tempfile.TemporaryDirectory() as d:
        plain_store = Store(Path(d) / "plain.db")
        timed_store = Store(Path(d) / "timed.db")
        instrument_store(timed_store, metrics.store)
        ids = []
        for s in (plain_store, timed_store):
            with s.tx():
                ids.append(s.create_account("bench", 0).id)
        req_bare, req_obs, rd_plain, rd_timed = [], [], [], []
        for _ in range(args.rounds):
            req_bare.append(asyncio.run(drive(bare, args.requests)))
            req_obs.append(asyncio.run(drive(observed, args.requests)))
            rd_plain.append(reads(plain_store, ids[0], args.reads))
            rd_timed.append(reads(timed_store, ids[1], args.reads))
        plain_store.close()
        timed_store.close()
    us = 1e6
    rb, ro = statistics.median(req_bare) * us, statistics.median(req_obs) * us
    sp, st = statistics.median(rd_plain) * us, statistics.median(rd_timed) * us
    print(f"request, bare app          {rb:8.1f} us (median of {args.rounds} rounds)")
    print(f"request, ObserveMiddleware {ro:8.1f} us  ratio {ro / rb:.2f}  (+{ro - rb:.1f} us)")
    print(f"store.account, untimed     {sp:8.1f} us")
    print(f"store.account, timed       {st:8.1f} us  ratio {st / sp:.2f}  (+{st - sp:.1f} us)")


if __name__ == "__main__":
    main()
