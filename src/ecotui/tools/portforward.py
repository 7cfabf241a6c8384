"""Port-forward, the client side: listen on a local port and carry each accepted
TCP connection over its own WebSocket to a port of a replica.

Every new connection dials afresh (so a forward outlives a replica restart, a
backend restart and a network blip); a connection that cannot be carried is
closed with a line that says why (`on_line`), and the forward goes on
listening. Without a fixed replica, connections go to the first ready replica
(looked up again when that one is gone).

Shared by `ecotui port-forward` and the dashboard's forwards list.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from ecotui.client.rest import ApiRefusal, BackendUnreachable, EcoClient
from ecotui.tools.runner import ready_replicas

CHUNK = 64 * 1024
# The backend's close code for a connection the replica refused after the upgrade
# (kubernetes: nothing listens on the port), and how long a check waits for it.
CLOSE_REFUSED = 4409
CHECK_WAIT_S = 1.0
# Connections the kernel queues for us before we accept them: a burst of hundreds
# (a browser, a load test) waits here instead of retrying its SYN a second later.
BACKLOG = 1024
_SPEC = re.compile(r"^(?:(\d*):)?(\d+)$")


class ForwardError(Exception):
    """A connection could not be carried; the message says why, in words."""

    def __init__(
        self, message: str, *, status: int | None = None, unreachable: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.unreachable = unreachable


def is_port_spec(text: str) -> bool:
    return bool(_SPEC.match(text))


def parse_spec(text: str) -> tuple[int, int]:
    """`[LOCAL:]REMOTE` -> (local, remote); `:REMOTE` picks a free local port (0)."""
    m = _SPEC.match(text)
    if not m:
        raise ValueError(f"not a port or LOCAL:REMOTE pair: {text!r}")
    local_raw, remote_raw = m.group(1), m.group(2)
    remote = int(remote_raw)
    if local_raw is None:
        local = remote
    elif local_raw == "":
        local = 0
    else:
        local = int(local_raw)
    if not 1 <= remote <= 65535 or not 0 <= local <= 65535:
        raise ValueError(f"port out of range in {text!r} (1..65535)")
    return local, remote


def forward_path(cluster: str, replica: str, port: int) -> str:
    return (
        f"/gpu-clusters/{quote(cluster, safe='')}/replicas/{quote(replica, safe='')}"
        f"/portforward?port={port}"
    )


async def dial(
    client: EcoClient, cluster: str, replica: str, port: int, *, open_timeout: float = 15.0
) -> ClientConnection:
    """One WebSocket to `port` of the replica; ForwardError when refused."""
    try:
        return await connect(
            client.ws_url(forward_path(cluster, replica, port)),
            additional_headers=client.auth_headers(),
            open_timeout=open_timeout,
            max_size=4 * CHUNK,
            max_queue=4,
            write_limit=CHUNK,
            compression=None,
            ping_interval=20,
            ping_timeout=60,
        )
    except InvalidStatus as exc:
        resp = exc.response
        try:
            message = json.loads(resp.body or b"{}")["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = (resp.body or b"").decode("utf-8", "replace")[:200] or resp.reason_phrase
        raise ForwardError(message, status=resp.status_code) from exc
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise ForwardError(
            f"cannot reach the backend at {client.base_url}: {exc}", unreachable=True
        ) from exc


@dataclass
class ForwardStats:
    connections: int = 0
    active: int = 0
    bytes_in: int = 0  # from the replica
    bytes_out: int = 0  # to the replica
    failures: int = 0
    last_error: str | None = None


@dataclass
class Forward:
    """One listening local port forwarded to `remote` of a replica."""

    client: EcoClient
    cluster: str  # id or name
    remote: int
    local: int = 0
    address: str = "127.0.0.1"
    replica: str | None = None  # None: the first ready replica, per connection
    on_line: Callable[[str], None] = print
    stats: ForwardStats = field(default_factory=ForwardStats)
    _server: asyncio.Server | None = None
    _chosen: str | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def target(self) -> str:
        return f"{self.replica or self._chosen or self.cluster}:{self.remote}"

    async def start(self) -> None:
        """Bind the local port (OSError when it is in use)."""
        self._server = await asyncio.start_server(
            self._accept, self.address, self.local, limit=CHUNK, backlog=BACKLOG
        )
        sock = self._server.sockets[0]
        self.local = int(sock.getsockname()[1])

    async def check(self) -> None:
        """Dial once and hang up: ForwardError when the target cannot be reached now.
        Where the backend learns only after the upgrade that nothing listens (the
        kubernetes runtime), the refusal is a close (CLOSE_REFUSED) that follows at
        once: it is waited for, briefly."""
        ws = await self._dial()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ws.wait_closed(), CHECK_WAIT_S)
            if ws.close_code == CLOSE_REFUSED:
                raise ForwardError(
                    ws.close_reason or f"nothing listens on port {self.remote}", status=409
                )
        finally:
            await ws.close()

    async def _replica(self, refresh: bool = False) -> str:
        if self.replica is not None:
            return self.replica
        if self._chosen is None or refresh:
            try:
                c = await self.client.cluster(self.cluster)
            except ApiRefusal as exc:
                raise ForwardError(exc.message or str(exc), status=exc.status) from exc
            except BackendUnreachable as exc:
                raise ForwardError(str(exc), unreachable=True) from exc
            ready = ready_replicas(c)
            if not ready:
                raise ForwardError(f"{c.name} has no ready replica ({c.status})", status=409)
            self._chosen = ready[0]
        return self._chosen

    async def _dial(self) -> ClientConnection:
        replica = await self._replica()
        try:
            return await dial(self.client, self.cluster, replica, self.remote)
        except ForwardError as exc:
            if self.replica is None and (exc.status == 404 or exc.status == 409):
                # that replica went away or stopped listening: ask again which is ready
                fresh = await self._replica(refresh=True)
                if fresh != replica:
                    return await dial(self.client, self.cluster, fresh, self.remote)
            raise

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.stats.connections += 1
        self.stats.active += 1
        try:
            try:
                ws = await self._dial()
            except ForwardError as exc:
                self.stats.failures += 1
                self.stats.last_error = str(exc)
                self.on_line(f"{self.address}:{self.local} -> {self.target}: {exc}")
                return
            await self._relay(ws, reader, writer)
        except asyncio.CancelledError:
            pass  # the forward is closing: this handler ends quietly
        finally:
            self.stats.active -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    async def _relay(
        self, ws: ClientConnection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        async def local_to_remote() -> None:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    await ws.send(b"")  # end of our input; the answer may still come
                    return
                self.stats.bytes_out += len(data)
                await ws.send(data)

        async def remote_to_local() -> None:
            try:
                async for message in ws:
                    data = message if isinstance(message, bytes) else message.encode()
                    self.stats.bytes_in += len(data)
                    writer.write(data)
                    await writer.drain()
            except ConnectionClosed:
                pass
            if ws.close_code == CLOSE_REFUSED:
                self.stats.failures += 1
                self.stats.last_error = ws.close_reason or "refused"
                self.on_line(
                    f"{self.address}:{self.local} -> {self.target}: refused"
                    f" ({ws.close_reason or 'nothing listens on the port'})"
                )
            elif ws.close_code == 1006:  # no close frame: the connection itself broke
                self.on_line(
                    f"{self.address}:{self.local} -> {self.target}: connection lost"
                    f" (the connection to the backend at {self.client.base_url} broke)"
                )
            elif ws.close_code not in (None, 1000):
                self.on_line(
                    f"{self.address}:{self.local} -> {self.target}: connection lost"
                    f" ({ws.close_reason or ws.close_code})"
                )

        up = asyncio.create_task(local_to_remote())
        down = asyncio.create_task(remote_to_local())
        try:
            await down  # the remote side decides when the connection is over
        except (ConnectionError, OSError):
            pass
        finally:
            up.cancel()
            with contextlib.suppress(BaseException):
                await up
            await ws.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
