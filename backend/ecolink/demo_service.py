"""The built-in demo service a local replica runs when its cluster has no startup command.

A small HTTP/1.1 server on 127.0.0.1:$PORT (standard library only, so it starts fast
and costs little per replica). Every request gets a JSON answer naming the replica,
its cluster, the GPUs it was given and the request it received (method, path, query,
headers, body size). Also:
- `POST /echo` answers with the request body;
- `GET /stream?chunks=N&delay=S` answers N chunks, S seconds apart (chunked encoding);
- `GET /ws` (WebSocket upgrade) echoes every message back.

Run: `python -m ecolink.demo_service` (PORT from the environment, default 8000).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import signal
import struct
import sys
from urllib.parse import parse_qs, urlsplit

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEADER = 64 * 1024


def identity() -> dict[str, object]:
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return {
        "replica": os.environ.get("ECO_REPLICA_NAME", ""),
        "index": int(os.environ.get("ECO_REPLICA_INDEX", "0") or 0),
        "cluster_id": os.environ.get("ECO_CLUSTER_ID", ""),
        "gpus": [g for g in gpus.split(",") if g],
        "gpu_type": os.environ.get("ECO_GPU_TYPE", ""),
        "telemetry": os.environ.get("ECO_TELEMETRY", ""),
        "pid": os.getpid(),
    }


class BadRequest(Exception):
    pass


async def read_head(
    reader: asyncio.StreamReader,
) -> tuple[str, str, str, list[tuple[str, str]]] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise BadRequest("incomplete request head") from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise BadRequest("request head too large") from exc
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError as exc:
        raise BadRequest("bad request line") from exc
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest("bad header line")
        headers.append((name.strip(), value.strip()))
    return method, target, version, headers


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts: list[bytes] = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                # Trailers end with an empty line.
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    n = int(headers.get("content-length", "0") or 0)
    return await reader.readexactly(n) if n else b""


def response(status: int, reason: str, body: bytes, content_type: str, keep: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Replica: {os.environ.get('ECO_REPLICA_NAME', '')}\r\n"
        f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
    )
    return head.encode("latin-1") + body


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                parsed = await read_head(reader)
            except BadRequest as exc:
                writer.write(response(400, "Bad Request", str(exc).encode(), "text/plain", False))
                await writer.drain()
                return
            if parsed is None:
                return
            method, target, version, header_list = parsed
            headers = {k.lower(): v for k, v in header_list}
            url = urlsplit(target)
            conn = headers.get("connection", "").lower()
            keep = version == "HTTP/1.1" and "close" not in conn
            if "websocket" in headers.get("upgrade", "").lower():
                await websocket_echo(reader, writer, headers)
                return
            body = await read_body(reader, headers)
            if url.path == "/echo":
                writer.write(
                    response(
                        200,
                        "OK",
                        body,
                        headers.get("content-type", "application/octet-stream"),
                        keep,
                    )
                )
            elif url.path == "/stream":
                q = parse_qs(url.query)
                await stream(
                    writer, int(q.get("chunks", ["5"])[0]), float(q.get("delay", ["0.1"])[0])
                )
                keep = False
            elif url.path == "/healthz":
                writer.write(response(200, "OK", b"ok\n", "text/plain", keep))
            else:
                info = identity()
                info.update(
                    method=method,
                    path=url.path,
                    query=url.query,
                    headers=header_list,
                    body_bytes=len(body),
                )
                writer.write(
                    response(200, "OK", json.dumps(info).encode(), "application/json", keep)
                )
            await writer.drain()
            if not keep:
                return
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        return
    except asyncio.CancelledError:
        return  # shutting down: end quietly
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def stream(writer: asyncio.StreamWriter, chunks: int, delay: float) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n"
    )
    for i in range(max(0, min(chunks, 100000))):
        data = f"chunk {i} from {os.environ.get('ECO_REPLICA_NAME', '')}\n".encode()
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()
        if delay > 0:
            await asyncio.sleep(delay)
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def websocket_echo(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str]
) -> None:
    key = headers.get("sec-websocket-key", "")
    accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
    writer.write(
        (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n"
            f"X-Replica: {os.environ.get('ECO_REPLICA_NAME', '')}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    message = bytearray()
    msg_op = 0
    while True:
        b0, b1 = await reader.readexactly(2)
        fin, op = b0 & 0x80, b0 & 0x0F
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await reader.readexactly(8))
        mask = await reader.readexactly(4) if b1 & 0x80 else b""
        payload = bytearray(await reader.readexactly(n))
        if mask:
            for i in range(n):
                payload[i] ^= mask[i % 4]
        if op == 0x8:  # close: answer with the same code
            writer.write(frame(0x8, bytes(payload[:2])))
            await writer.drain()
            return
        if op == 0x9:  # ping
            writer.write(frame(0xA, bytes(payload)))
            await writer.drain()
            continue
        if op == 0xA:
            continue
        if op in (0x1, 0x2):
            msg_op = op
            message = bytearray(payload)
        else:  # continuation
            message += payload
        if fin:
            writer.write(frame(msg_op, bytes(message)))
            await writer.drain()
            message = bytearray()


def frame(op: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | op, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | op, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | op, 127, n)
    return head + payload


async def main() -> None:
    port = int(os.environ.get("PORT", "8000"))
    server = await asyncio.start_server(handle, "127.0.0.1", port, limit=MAX_HEADER)
    print(
        f"demo service {os.environ.get('ECO_REPLICA_NAME', '')} listening on 127.0.0.1:{port}"
        f" (gpus: {os.environ.get('CUDA_VISIBLE_DEVICES', '') or 'none'})",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    print("demo service stopping", flush=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    sys.exit(0)
