"""WebSocket client for exec and kept shell sessions (api.md, "Exec and shell sessions").

Speaks the Kubernetes channel framing: binary frames `[channel][payload]`,
0 stdin, 1 stdout, 2 stderr, 3 status (a Kubernetes `Status`, then the server
closes), 4 resize `{"Width": W, "Height": H}`, 255 close (v5 only: `[255][0]`
closes stdin). Offers `v5.channel.k8s.io` first, `v4.channel.k8s.io` as the
fallback; whichever the server picks is `ExecConnection.protocol`.

- `open_exec(client, cluster, replica, command, ...)`: a one-shot exec;
- `attach_session(client, cluster, sid)`: attach to a kept session (the kept
  output is replayed first, then it goes on live);
- `run_command(...)`: run a command to its end and collect its output and
  exit code (what the GPU comparison view uses for `nvidia-smi`).

A refusal before the upgrade (401, 404, 503 ...) raises `ApiRefusal` with the
backend's error form; a backend that cannot be reached raises
`BackendUnreachable` (both from `ecotui.client.rest`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from ecotui.client.rest import ApiRefusal, BackendUnreachable, EcoClient

STDIN, STDOUT, STDERR, STATUS, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
SUBPROTOCOLS = (Subprotocol(V5), Subprotocol(V4))
# The backend closes a client that fell too far behind a kept session with this code.
CLOSE_TOO_SLOW = 4008


@dataclass(frozen=True)
class ExecStatus:
    """What channel 3 said: `exit_code` None when the status carried no code."""

    success: bool
    exit_code: int | None
    reason: str | None = None
    message: str | None = None


def parse_status(payload: bytes | str | dict[str, Any]) -> ExecStatus:
    """A Kubernetes `Status` (channel 3) as an exit code."""
    try:
        obj = payload if isinstance(payload, dict) else json.loads(payload)
    except (ValueError, TypeError):
        return ExecStatus(False, None, "InvalidStatus", "the status could not be read")
    if obj.get("status") == "Success":
        return ExecStatus(True, 0)
    code: int | None = None
    for cause in (obj.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            with contextlib.suppress(TypeError, ValueError):
                code = int(cause.get("message"))
    return ExecStatus(False, code, obj.get("reason"), obj.get("message"))


class ExecConnection:
    """One exec or attach WebSocket: send stdin and resizes, read output frames."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self.protocol: str = ws.subprotocol or V4
        self.status: ExecStatus | None = None
        self.close_code: int | None = None
        self.close_reason: str = ""
        self._send_lock = asyncio.Lock()
        # Attach: how many bytes of output at the start are the replayed history.
        self.replay_bytes = 0
        response = getattr(ws, "response", None)
        raw = response.headers.get("x-eco-replay-bytes") if response is not None else None
        with contextlib.suppress(TypeError, ValueError):
            self.replay_bytes = max(0, int(raw or 0))

    @property
    def v5(self) -> bool:
        return self.protocol == V5

    async def send_stdin(self, data: bytes) -> None:
        if data:
            await self._send(bytes([STDIN]) + data)

    async def resize(self, width: int, height: int) -> None:
        payload = json.dumps({"Width": int(width), "Height": int(height)}).encode()
        await self._send(bytes([RESIZE]) + payload)

    async def close_stdin(self) -> None:
        """End of input (v5 only; v4 has no way to say it)."""
        if self.v5:
            await self._send(bytes([CLOSE, STDIN]))

    async def _send(self, frame: bytes) -> None:
        async with self._send_lock:
            await self._ws.send(frame)

    async def frames(self) -> AsyncIterator[tuple[int, bytes]]:
        """Output frames (channel, payload) until the server closes.

        A status frame is recorded in `status` and not yielded; after the
        loop, `status` is None when the connection ended without one (lost)."""
        try:
            async for message in self._ws:
                if isinstance(message, str):
                    message = message.encode()
                if not message:
                    continue
                channel, payload = message[0], bytes(message[1:])
                if channel == STATUS:
                    self.status = parse_status(payload)
                    continue
                if channel in (STDOUT, STDERR):
                    yield channel, payload
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self._ws.close_code
            self.close_reason = self._ws.close_reason or ""

    @property
    def closed(self) -> bool:
        return self._ws.close_code is not None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close()


def _refusal_from(exc: InvalidStatus) -> ApiRefusal:
    resp = exc.response
    status = resp.status_code
    try:
        err = json.loads(resp.body or b"{}")["error"]
        return ApiRefusal(
            status, err.get("code", "error"), err.get("message", ""), err.get("field")
        )
    except (ValueError, KeyError, TypeError):
        return ApiRefusal(
            status,
            "error",
            (resp.body or b"").decode("utf-8", "replace")[:200] or resp.reason_phrase,
        )


async def _open(client: EcoClient, path: str, *, open_timeout: float = 15.0) -> ExecConnection:
    url = client.ws_url(path)
    try:
        ws = await connect(
            url,
            subprotocols=list(SUBPROTOCOLS),
            additional_headers=client.auth_headers(),
            open_timeout=open_timeout,
            max_size=None,
            compression=None,
            ping_interval=20,
            ping_timeout=60,
        )
    except InvalidStatus as exc:
        raise _refusal_from(exc) from exc
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise BackendUnreachable(f"cannot reach the backend at {client.base_url}: {exc}") from exc
    return ExecConnection(ws)


def exec_path(
    cluster: str,
    replica: str,
    command: Sequence[str] | None = None,
    *,
    stdin: bool = False,
    stdout: bool = True,
    stderr: bool = True,
    tty: bool = False,
) -> str:
    query: list[tuple[str, str]] = [("command", c) for c in (command or ())]
    query += [
        ("stdin", "1" if stdin else "0"),
        ("stdout", "1" if stdout else "0"),
        ("stderr", "1" if stderr else "0"),
        ("tty", "1" if tty else "0"),
    ]
    return (
        f"/gpu-clusters/{quote(cluster, safe='')}/replicas/{quote(replica, safe='')}/exec?"
        + urlencode(query)
    )


async def open_exec(
    client: EcoClient,
    cluster: str,
    replica: str,
    command: Sequence[str] | None = None,
    *,
    stdin: bool = False,
    stdout: bool = True,
    stderr: bool = True,
    tty: bool = False,
) -> ExecConnection:
    """Start a one-shot exec in a replica (no command: a login shell)."""
    return await _open(
        client,
        exec_path(cluster, replica, command, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty),
    )


async def attach_session(client: EcoClient, cluster: str, sid: str) -> ExecConnection:
    """Attach to a kept session: its kept output is replayed, then it goes on live."""
    return await _open(
        client, f"/gpu-clusters/{quote(cluster, safe='')}/sessions/{quote(sid, safe='')}/attach"
    )


@dataclass(frozen=True)
class CommandResult:
    stdout: bytes
    stderr: bytes
    exit_code: int | None  # None: no exit status (refused, or the connection was lost)
    error: str | None = None  # why there is no result, in words

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.error is None


async def run_command(
    client: EcoClient,
    cluster: str,
    replica: str,
    command: Sequence[str],
    *,
    timeout: float = 30.0,
    max_bytes: int = 4 << 20,
) -> CommandResult:
    """Run `command` in a replica to its end; its output and exit code."""
    out = bytearray()
    err = bytearray()
    try:
        conn = await open_exec(client, cluster, replica, command)
    except (ApiRefusal, BackendUnreachable) as exc:
        return CommandResult(b"", b"", None, str(exc) or exc.__class__.__name__)

    async def collect() -> None:
        async for channel, payload in conn.frames():
            buf = out if channel == STDOUT else err
            if len(buf) < max_bytes:
                buf.extend(payload[: max_bytes - len(buf)])

    try:
        await asyncio.wait_for(collect(), timeout)
    except TimeoutError:
        await conn.close()
        return CommandResult(bytes(out), bytes(err), None, f"no answer within {timeout:g} s")
    finally:
        await conn.close()
    st = conn.status
    if st is None:
        return CommandResult(
            bytes(out), bytes(err), None, "the connection ended without an exit status"
        )
    if st.success:
        return CommandResult(bytes(out), bytes(err), 0)
    if st.exit_code is None:
        return CommandResult(bytes(out), bytes(err), None, st.message or st.reason or "failed")
    return CommandResult(bytes(out), bytes(err), st.exit_code)
