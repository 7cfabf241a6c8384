"""How the front's processes fit together.

`ecolink serve` is the control plane: it runs the API application (uvicorn on a
private unix socket in the state directory), the runtime and the store, and one
front in its own event loop. `--workers N` adds N-1 front processes
(`python -m ecolink.front.worker`), each with its own listening socket on the
same address (`SO_REUSEPORT`: the kernel spreads connections over them). Every
front reads credentials and clusters from the database itself (`table.py`); the
replicas' addresses come from the control plane, directly for its own front and
over the feed socket (JSON lines) for the others, which also send their traffic
counters back once a second and reserve each service WebSocket there, so that an
account's WebSocket cap holds across every front and the API together.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import os
import resource
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ecolink.front.proxy import ClientProtocol, Front, FrontConfig
from ecolink.front.table import Table
from ecolink.front.traffic import TrafficView

log = logging.getLogger("ecolink.front")

TARGETS_POLL_S = 0.1
STATS_EVERY_S = 1.0
FD_RESERVE = 256
SWEEP_S = 0.25


SCHEDULING = ("batch", "normal")


def apply_scheduling(policy: str) -> str:
    """Put the calling thread, and the threads it starts from now on, under `policy`;
    say in words what it runs under.

    "batch" is Linux's SCHED_BATCH: the same share of the CPU as before (the nice
    value is kept), but the scheduler treats the thread as a throughput task that
    does not preempt others when it wakes. A front shares the cores with the
    processes it feeds: the replicas behind it and the clients in front of it, on
    one node or one laptop. Under load it is the busiest of them. The replicas'
    long stalls once blamed on it came from each replica's session being a
    scheduling group of its own (`runtime.local.proc.replica_group_args`). With
    that fixed, bench/proxy.py on 2 cores: one front process at 256 connections had
    a lower p99 under SCHED_BATCH than under the normal policy in four runs of five
    (1.5 to 2.5 times nginx's, against 1.4 to 2.7); at 32 connections the two are
    within noise. The cost: a wakeup of a lightly loaded front on busy cores waits
    for the running task (one client's p99 3.7 ms instead of 3.1 ms, measured
    before that fix). "normal" (SCHED_OTHER) leaves the thread as it was."""
    if policy not in SCHEDULING:
        raise ValueError(f"scheduling must be one of {', '.join(SCHEDULING)}, not {policy!r}")
    setter = getattr(os, "sched_setscheduler", None)
    if setter is None:
        return "scheduling: normal (SCHED_BATCH does not exist here)"
    want = os.SCHED_BATCH if policy == "batch" else os.SCHED_OTHER
    try:
        setter(0, want, os.sched_param(0))
    except OSError as exc:
        return f"scheduling: normal (SCHED_BATCH refused: {exc.strerror})"
    return "scheduling: SCHED_BATCH" if policy == "batch" else "scheduling: normal"


def raise_fd_limit() -> int:
    """Lift the soft limit on open files to the hard one; the connection cap follows
    from it, less a reserve for the runtime (PTYs, logs, exec)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    return soft


def connection_cap(workers: int, requested: int | None) -> int:
    soft = raise_fd_limit()
    # Each client connection may hold one upstream connection as well.
    cap = max(64, (soft - FD_RESERVE) // 2)
    return min(cap, requested) if requested else cap


def bind_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, socktype, proto, _, addr = infos[0]
    sock = socket.socket(family, socktype, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(addr)
    sock.listen(4096)
    return sock


def ssl_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if not cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


async def serve_front(
    front: Front, sock: socket.socket, tls: ssl.SSLContext | None
) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: ClientProtocol(front), sock=sock, ssl=tls, backlog=4096
    )

    async def housekeeping() -> None:
        n = 0
        while True:
            await asyncio.sleep(SWEEP_S)
            front.sweep()
            n += 1
            if n % 20 == 0:
                front.housekeeping()

    front.housekeeping_task = loop.create_task(housekeeping())
    return server


def close_front(front: Front, server: asyncio.AbstractServer) -> None:
    server.close()
    task = front.housekeeping_task
    if task is not None:
        task.cancel()
    for client in list(front.clients):
        client._close()
    front.conns.close_all()
    front.api_conns.close_all()


# --------------------------------------------------------------------------- control plane


Targets = list[tuple[str, str, int, str]]


class ControlPlane:
    """Computes each service cluster's replica addresses from the runtime and feeds
    them to every front; gathers the fronts' traffic counters."""

    def __init__(self, ctx: Any, table: Table, feed_path: str) -> None:
        self.ctx = ctx
        self.table = table
        self.feed_path = feed_path
        self.local: list[Front] = []
        self.state: dict[str, tuple[Targets, str | None]] = {}
        self.writers: set[asyncio.StreamWriter] = set()
        self.worker_stats: dict[int, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._worker, path=self.feed_path)
        os.chmod(self.feed_path, 0o600)
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._server is not None:
            self._server.close()
        for w in list(self.writers):
            w.close()
        with contextlib.suppress(OSError):
            os.unlink(self.feed_path)

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh_all()
            except Exception:
                log.exception("computing the service targets failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TARGETS_POLL_S)

    async def compute(self, cluster_id: str) -> tuple[Targets, str | None] | None:
        from ecolink.runtime.base import RuntimeUnavailable

        info = self.table.snap.clusters.get(cluster_id)
        if info is None or info.status == "terminated" or info.endpoint_port is None:
            return None
        runtime = self.ctx.runtime
        streams = self.ctx.streams
        try:
            ready = streams.ready_replicas(cluster_id)
        except RuntimeUnavailable as exc:
            return [], f"the runtime cannot be reached: {exc}"
        kind = getattr(runtime, "target_path", None)
        out: Targets = []
        for name, hp in await streams.replica_targets(cluster_id, ready, info.endpoint_port):
            path = (
                kind(cluster_id, name)
                if callable(kind)
                else ("local" if runtime.info.name == "local" else "port-forward")
            )
            out.append((name, hp.host, hp.port, path))
        return out, None

    async def refresh_all(self) -> None:
        seen = set()
        changed: dict[str, tuple[Targets, str | None] | None] = {}
        for cid, info in list(self.table.snap.clusters.items()):
            if info.status == "terminated" or info.endpoint_port is None:
                continue
            seen.add(cid)
            value = await self.compute(cid)
            if value is None:
                continue
            if self.state.get(cid) != value:
                self.state[cid] = value
                changed[cid] = value
        for cid in [c for c in self.state if c not in seen]:
            del self.state[cid]
            changed[cid] = None
        if changed:
            self.publish(changed)

    async def refresh_one(self, cluster_id: str) -> None:
        value = await self.compute(cluster_id)
        if value is None:
            self.state.pop(cluster_id, None)
        else:
            self.state[cluster_id] = value
        self.publish({cluster_id: value})

    def publish(self, changed: dict[str, tuple[Targets, str | None] | None]) -> None:
        for front in self.local:
            apply_targets(front, changed)
        if self.writers:
            line = (json.dumps({"targets": changed}) + "\n").encode()
            for w in list(self.writers):
                with contextlib.suppress(Exception):
                    w.write(line)

    def reserve_websocket(self, account: str) -> bool:
        """Count one more WebSocket of `account` if it is under the cap (the count the
        API's WebSockets and this process's front keep, so one cap holds for all)."""
        counts = self.ctx.websockets_open
        if counts.get(account, 0) >= self.ctx.max_websockets_per_account:
            return False
        counts[account] = counts.get(account, 0) + 1
        return True

    def release_websocket(self, account: str, n: int = 1) -> None:
        counts = self.ctx.websockets_open
        left = counts.get(account, 0) - n
        if left > 0:
            counts[account] = left
        else:
            counts.pop(account, None)

    async def _worker(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        pid = 0
        # The WebSockets this worker holds, per account: released if it goes away.
        held: collections.Counter[str] = collections.Counter()
        try:
            writer.write((json.dumps({"targets": dict(self.state)}) + "\n").encode())
            while True:
                line = await reader.readline()
                if not line:
                    return
                msg = json.loads(line)
                if "need" in msg:
                    await self.table_refresh()
                    await self.refresh_one(str(msg["need"]))
                if "stats" in msg:
                    pid = int(msg.get("pid", 0))
                    self.worker_stats[pid] = msg["stats"]
                if "ws" in msg:
                    rid, account = int(msg["ws"][0]), str(msg["ws"][1])
                    ok = self.reserve_websocket(account)
                    if ok:
                        held[account] += 1
                    writer.write((json.dumps({"ws_ok": [rid, ok, account]}) + "\n").encode())
                if "ws_end" in msg:
                    account = str(msg["ws_end"])
                    if held[account] > 0:
                        held[account] -= 1
                        self.release_websocket(account)
        except (OSError, ValueError, asyncio.IncompleteReadError):
            return
        finally:
            for account, n in held.items():
                if n > 0:
                    self.release_websocket(account, n)
            self.writers.discard(writer)
            self.worker_stats.pop(pid, None)
            writer.close()

    async def table_refresh(self) -> None:
        await asyncio.to_thread(self.table.refresh)

    async def targets_now(self, cluster_id: str) -> None:
        """For the control plane's own front: a cluster it has no addresses for yet."""
        await self.table_refresh()
        await self.refresh_one(cluster_id)

    def counters(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Every front's per-replica counters, summed: cluster -> replica -> counters."""
        parts = [f.counters() for f in self.local] + list(self.worker_stats.values())
        return merge_counters(parts)


def merge_counters(parts: list[dict[str, dict[str, dict[str, Any]]]]) -> dict[str, Any]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for part in parts:
        for cid, replicas in part.items():
            dest = out.setdefault(cid, {})
            for name, c in replicas.items():
                d = dest.get(name)
                if d is None:
                    dest[name] = {k: (list(v) if isinstance(v, list) else v) for k, v in c.items()}
                    continue
                for k, v in c.items():
                    if isinstance(v, list):
                        d[k] = [a + b for a, b in zip(d[k], v, strict=False)]
                    elif isinstance(v, (int, float)) and not isinstance(v, bool):
                        d[k] = d[k] + v
    return out


def apply_targets(front: Front, changed: dict[str, Any]) -> None:
    for cid, value in changed.items():
        if value is None:
            front.set_targets(cid, None)
        else:
            targets, error = value
            front.set_targets(
                cid, [(str(t[0]), str(t[1]), int(t[2]), str(t[3])) for t in targets], error
            )


# --------------------------------------------------------------------------- in `ecolink serve`


class FrontGroup:
    """The control plane's side: its own front, the worker processes, the feed."""

    def __init__(
        self,
        ctx: Any,
        *,
        host: str,
        sock: socket.socket,
        api_socket: str,
        workers: int,
        cfg: FrontConfig,
        tls_cert: str | None,
        tls_key: str | None,
    ) -> None:
        self.ctx = ctx
        self.host = host
        self.sock = sock
        self.api_socket = api_socket
        self.workers = workers
        self.cfg = cfg
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        state_dir = Path(ctx.state_dir)
        self.db_path = state_dir / "ecolink.db"
        self.feed_path = str(state_dir / "front.sock")
        self.table: Table | None = None
        self.control: ControlPlane | None = None
        self.front: Front | None = None
        self.server: asyncio.AbstractServer | None = None
        self.procs: list[subprocess.Popen[bytes]] = []
        self.traffic: TrafficView | None = None
        self.scheduling = ""  # what the front's loop runs under, in words (after start)

    async def start(self) -> None:
        self.scheduling = apply_scheduling(self.cfg.scheduling)
        with contextlib.suppress(OSError):
            os.unlink(self.feed_path)
        self.table = Table(self.ctx.store.path)
        self.control = ControlPlane(self.ctx, self.table, self.feed_path)
        self.table.on_change = _threadsafe(self.control.wake)
        self.table.start()
        self.front = Front(
            self.table,
            self.api_socket,
            self.cfg,
            request_targets=self.control.targets_now,
            websockets_open=self.ctx.websockets_open,
        )
        self.control.local.append(self.front)
        await self.control.start()
        self.traffic = TrafficView(self.counters)
        self.traffic.start()
        self.ctx.traffic = self.traffic
        self.server = await serve_front(
            self.front, self.sock, ssl_context(self.tls_cert, self.tls_key)
        )
        port = self.sock.getsockname()[1]
        for _ in range(self.workers - 1):
            conf = {
                "host": self.host,
                "port": port,
                "db": str(self.ctx.store.path),
                "api": self.api_socket,
                "feed": self.feed_path,
                "tls_cert": self.tls_cert,
                "tls_key": self.tls_key,
                "cfg": asdict(self.cfg),
            }
            self.procs.append(_spawn(conf))

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()
        for p in self.procs:
            with contextlib.suppress(OSError):
                p.terminate()

    async def stop(self) -> None:
        self.stop_accepting()
        for p in self.procs:
            for _ in range(50):
                if p.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            else:
                p.kill()
        if self.front is not None and self.server is not None:
            close_front(self.front, self.server)
        if self.traffic is not None:
            await self.traffic.stop()
        if self.control is not None:
            await self.control.stop()
        if self.table is not None:
            self.table.stop()

    def counters(self) -> dict[str, Any]:
        return self.control.counters() if self.control is not None else {}


def _spawn(conf: dict[str, Any]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "ecolink.front.worker", json.dumps(conf)])


def _threadsafe(fn: Callable[[], None]) -> Callable[[], None]:
    loop = asyncio.get_running_loop()

    def call() -> None:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(fn)

    return call


# --------------------------------------------------------------------------- a worker


async def run_worker(conf: dict[str, Any]) -> None:
    cfg = FrontConfig(**conf["cfg"])
    apply_scheduling(cfg.scheduling)
    table = Table(conf["db"])
    table.start()
    reader, writer = await asyncio.open_unix_connection(conf["feed"])
    waiting: dict[str, list[asyncio.Future[None]]] = {}
    reserving: dict[int, asyncio.Future[bool]] = {}
    next_id = itertools.count(1)

    async def reserve_websocket(account: str) -> bool:
        rid = next(next_id)
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        reserving[rid] = fut
        writer.write((json.dumps({"ws": [rid, account]}) + "\n").encode())
        try:
            return await fut
        finally:
            reserving.pop(rid, None)

    def release_websocket(account: str) -> None:
        writer.write((json.dumps({"ws_end": account}) + "\n").encode())

    async def request_targets(cluster_id: str) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting.setdefault(cluster_id, []).append(fut)
        writer.write((json.dumps({"need": cluster_id}) + "\n").encode())
        await fut

    front = Front(
        table,
        conf["api"],
        cfg,
        request_targets=request_targets,
        reserve_websocket=reserve_websocket,
        release_websocket=release_websocket,
    )
    sock = bind_socket(conf["host"], conf["port"], reuse_port=True)
    server = await serve_front(front, sock, ssl_context(conf["tls_cert"], conf["tls_key"]))

    async def send_stats() -> None:
        while True:
            await asyncio.sleep(STATS_EVERY_S)
            writer.write(
                (json.dumps({"pid": os.getpid(), "stats": front.counters()}) + "\n").encode()
            )

    stats = asyncio.create_task(send_stats())
    try:
        while True:
            line = await reader.readline()
            if not line:
                break  # the control plane is gone: so are we
            msg = json.loads(line)
            if "ws_ok" in msg:
                rid, ok, account = msg["ws_ok"]
                answer = reserving.pop(int(rid), None)
                if answer is not None and not answer.done():
                    answer.set_result(bool(ok))
                elif ok:
                    release_websocket(str(account))  # nobody waits for it any more
            changed = msg.get("targets") or {}
            apply_targets(front, changed)
            for cid in changed:
                for fut in waiting.pop(cid, []):
                    if not fut.done():
                        fut.set_result(None)
    finally:
        stats.cancel()
        close_front(front, server)
        table.stop()


def worker_main(argv: list[str]) -> int:
    import signal

    import uvloop

    conf = json.loads(argv[0])
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The format `ecolink serve` was given (it sets the variable for its workers).
    from ecolink.observe.logs import apply_log_format

    apply_log_format(os.environ.get("ECOLINK_LOG_FORMAT") or "text")
    raise_fd_limit()

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await run_worker(conf)

    uvloop.run(main())
    return 0
