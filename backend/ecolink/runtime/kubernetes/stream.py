"""Pod exec and port-forward over WebSocket, straight to the API server.

Exec speaks the Kubernetes channel protocol: subprotocol `v5.channel.k8s.io`
(falling back to `v4.channel.k8s.io`), binary frames whose first byte is the
channel (0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize, v5: 255 close).
Port-forward speaks the WebSocket port-forward protocol (`v4.channel.k8s.io`):
per tunnelled TCP connection one WebSocket, channel 0 data and 1 errors, each
channel's first frame being the port as two little-endian bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import struct
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ecolink.runtime.base import (
    CLOSE,
    RESIZE,
    STATUS,
    STDERR,
    STDIN,
    STDOUT,
    ExecRequest,
    ExecResult,
    ExecStream,
    HostPort,
    ReplicaNotFound,
    RuntimeFailure,
    RuntimeRefused,
    RuntimeUnavailable,
)
from ecolink.runtime.kubernetes.client import KubeTarget

log = logging.getLogger(__name__)

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
EXEC_PROTOCOLS = (V5, V4)
# A login shell: bash where the image has it, else sh.
LOGIN_SHELL = (
    "sh",
    "-c",
    "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi",
)


# Kubelets that do not fill in `details.causes` (KWOK among them) still end
# the message with the process's exit status.
_EXIT_IN_MESSAGE = re.compile(r"(?:exit status|exit code:?)\s+(\d+)\s*$")


def exit_code_from_status(status: dict[str, Any]) -> ExecResult:
    """Read a Kubernetes `Status` (channel 3) as an exit code."""
    if status.get("status") == "Success":
        return ExecResult(0)
    message = str(status.get("message") or status.get("reason") or "exec failed")
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            with contextlib.suppress(TypeError, ValueError):
                return ExecResult(int(cause.get("message")), message)
    m = _EXIT_IN_MESSAGE.search(message)
    if m:
        return ExecResult(int(m.group(1)), message)
    return ExecResult(None, message)


async def _open(
    target: KubeTarget, path: str, protocols: tuple[str, ...], open_timeout: float = 10
) -> ClientConnection:
    try:
        return await connect(
            target.ws_url(path),
            subprotocols=list(protocols),  # type: ignore[arg-type]
            additional_headers=target.auth_headers(),
            ssl=target.ssl_context(),
            server_hostname=target.server_hostname(),
            open_timeout=open_timeout,
            max_size=None,
            # Back-pressure: at most this many frames wait unread.
            max_queue=16,
            ping_interval=20,
            compression=None,
            proxy=None,
        )
    except InvalidStatus as e:
        status = e.response.status_code
        body = e.response.body.decode(errors="replace") if e.response.body else ""
        message = body
        with contextlib.suppress(ValueError):
            message = json.loads(body).get("message", body)
        if status == 404:
            raise ReplicaNotFound(message or "not found") from e
        if status >= 500 and "container not found" not in message:
            raise RuntimeUnavailable(f"API server answered {status}: {message}") from e
        raise RuntimeRefused(
            f"API server answered {status}: {message}", 422 if status in (400, 422) else 409
        ) from e
    except (TimeoutError, OSError, websockets.exceptions.InvalidHandshake) as e:
        raise RuntimeUnavailable(f"cannot reach the API server: {e}") from e


def exec_path(namespace: str, pod: str, container: str, req: ExecRequest) -> str:
    command = list(req.command) or list(LOGIN_SHELL)
    if req.env:
        command = ["env", *[f"{k}={v}" for k, v in req.env], *command]
    query: list[tuple[str, str]] = [("command", c) for c in command]
    query += [
        ("container", container),
        ("stdin", "true" if req.stdin else "false"),
        ("stdout", "true" if req.stdout else "false"),
        # The API server rejects stderr together with tty (it is merged).
        ("stderr", "true" if req.stderr and not req.tty else "false"),
        ("tty", "true" if req.tty else "false"),
    ]
    return (
        f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(pod, safe='')}/exec?"
        + urlencode(query)
    )


class KubeExecStream(ExecStream):
    """A running exec in a pod; frames are read from the WebSocket on demand,
    so a slow reader slows the pod's output instead of growing a buffer."""

    def __init__(self, ws: ClientConnection, tty: bool) -> None:
        self._ws = ws
        self._tty = tty
        self.protocol = ws.subprotocol
        self._result: ExecResult | None = None
        self._done = asyncio.Event()
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        target: KubeTarget,
        namespace: str,
        pod: str,
        container: str,
        req: ExecRequest,
        protocols: tuple[str, ...] = EXEC_PROTOCOLS,
    ) -> KubeExecStream:
        ws = await _open(target, exec_path(namespace, pod, container, req), protocols)
        if ws.subprotocol not in protocols:
            await ws.close()
            raise RuntimeFailure(f"API server chose no channel protocol ({ws.subprotocol!r})")
        stream = cls(ws, req.tty)
        if req.tty:
            await stream.resize(req.width, req.height)
        return stream

    async def read_frame(self) -> bytes | None:
        """The next raw frame as the API server sent it (for relaying
        unchanged to a client that speaks the same protocol version)."""
        while True:
            try:
                msg = await self._ws.recv()
            except ConnectionClosed:
                self._finish(None)
                return None
            if isinstance(msg, str):
                msg = msg.encode()
            if not msg:
                continue
            if msg[0] == STATUS:
                try:
                    self._finish(exit_code_from_status(json.loads(msg[1:] or b"{}")))
                except ValueError:
                    self._finish(ExecResult(None, "unreadable exec status"))
            return msg

    async def read(self) -> tuple[int, bytes] | None:
        while True:
            frame = await self.read_frame()
            if frame is None:
                return None
            channel, payload = frame[0], frame[1:]
            if channel in (STDOUT, STDERR):
                if payload:
                    return channel, payload
                # An empty first frame per channel is the server's hello.
                continue
            if channel == STATUS:
                # The server closes after the status; drain to the close.
                continue

    def _finish(self, result: ExecResult | None) -> None:
        if self._result is None and result is not None:
            self._result = result
        if result is None and not self._done.is_set():
            if self._result is None:
                self._result = ExecResult(None, "the connection ended without an exit status")
            self._done.set()

    async def write_frame(self, frame: bytes) -> None:
        async with self._write_lock:
            try:
                await self._ws.send(frame)
            except ConnectionClosed:
                pass

    async def write(self, data: bytes) -> None:
        await self.write_frame(bytes([STDIN]) + data)

    async def close_stdin(self) -> None:
        # Only v5 can half-close stdin; v4 has no way to say EOF.
        if self.protocol == V5:
            await self.write_frame(bytes([CLOSE, STDIN]))

    async def resize(self, width: int, height: int) -> None:
        if self._tty:
            body = json.dumps({"Width": int(width), "Height": int(height)}).encode()
            await self.write_frame(bytes([RESIZE]) + body)

    async def result(self) -> ExecResult:
        if not self._done.is_set():
            # Drain what is left so the status frame is seen.
            while await self.read_frame() is not None:
                pass
        assert self._result is not None
        return self._result

    async def kill(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close()
        self._finish(None)


# ------------------------------------------------------------------ port-forward


def portforward_path(namespace: str, pod: str, port: int) -> str:
    return (
        f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(pod, safe='')}"
        f"/portforward?ports={int(port)}"
    )


async def _pump_tcp_to_ws(reader: asyncio.StreamReader, ws: ClientConnection) -> None:
    while True:
        data = await reader.read(65536)
        if not data:
            return
        await ws.send(b"\x00" + data)


async def _pump_ws_to_tcp(
    ws: ClientConnection,
    writer: asyncio.StreamWriter,
    port: int,
    refused: Callable[[str], None] | None = None,
) -> None:
    """Pod to client. A message on the error channel before any data is the kubelet
    refusing the port (nothing listens there): told to `refused`."""
    seen_port = {0: False, 1: False}
    errors: list[bytes] = []
    delivered = False
    try:
        async for msg in ws:
            if isinstance(msg, str):
                msg = msg.encode()
            if not msg:
                continue
            channel, payload = msg[0], msg[1:]
            if channel in seen_port and not seen_port[channel]:
                # First frame of each channel: the port, two bytes little-endian.
                seen_port[channel] = True
                if len(payload) >= 2 and struct.unpack("<H", payload[:2])[0] == port:
                    payload = payload[2:]
                if not payload:
                    continue
            if channel == 0:
                delivered = True
                writer.write(payload)
                await writer.drain()
            elif channel == 1:
                errors.append(payload)
                if not delivered and refused is not None:
                    refused(b"".join(errors).decode(errors="replace").strip())
    except ConnectionClosed:
        pass
    if errors:
        log.info("port-forward to port %s: %s", port, b"".join(errors).decode(errors="replace"))


class PortForwardListener:
    """A loopback listener whose every connection is tunnelled to one pod port."""

    def __init__(self, target: KubeTarget, namespace: str, pod: str, port: int) -> None:
        self._target, self._ns, self._pod, self._port = target, namespace, pod, port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._conns: dict[int, tuple[asyncio.StreamWriter, list[ClientConnection]]] = {}
        self.address: HostPort | None = None
        self.on_unavailable: Callable[[], None] | None = None
        # Connections the kubelet refused (nothing listens on the pod's port), by
        # the client's address: the reason, for whoever holds the other end.
        self.refusals: dict[tuple[str, int], str] = {}

    async def start(self) -> HostPort:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.address = HostPort(host, port)
        return self.address

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        ws: ClientConnection | None = None
        holder: list[ClientConnection] = []
        self._conns[id(writer)] = (writer, holder)
        try:
            try:
                ws = await _open(
                    self._target, portforward_path(self._ns, self._pod, self._port), (V4,)
                )
                holder.append(ws)
            except RuntimeUnavailable:
                if self.on_unavailable:
                    self.on_unavailable()
                return
            except Exception as e:  # noqa: BLE001 - the client just sees a closed connection
                log.info("port-forward to %s:%s refused: %s", self._pod, self._port, e)
                return
            up = asyncio.create_task(_pump_tcp_to_ws(reader, ws))
            peer = writer.get_extra_info("peername")

            def refused(message: str) -> None:
                if isinstance(peer, tuple) and len(self.refusals) < 1024:
                    self.refusals[(str(peer[0]), int(peer[1]))] = message

            down = asyncio.create_task(_pump_ws_to_tcp(ws, writer, self._port, refused))
            done, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            if up in done and down not in done:
                # The client finished sending; WebSocket port-forward cannot
                # half-close, so give the answer a moment to arrive.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(down), 30)
            for t in (up, down):
                t.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
        except asyncio.CancelledError:
            # Closing the listener ends its connections; not an error.
            pass
        finally:
            self._conns.pop(id(writer), None)
            if ws is not None:
                with contextlib.suppress(Exception):
                    await ws.close()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        # End every tunnel by closing its ends; the handlers then return.
        for writer, holder in list(self._conns.values()):
            writer.close()
            for ws in holder:
                with contextlib.suppress(Exception):
                    await ws.close()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
