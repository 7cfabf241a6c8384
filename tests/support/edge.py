"""What the edge tests share: a cluster running the built-in demo service behind its
service URL, a raw keep-alive HTTP/1.1 connection, and the refusal checks."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx

from support.reliability import wait_for

LAUNCH = {
    "region": "us-east",
    "gpu_type": "L40S",
    "gpu_count": 1,
    "replicas": 2,
    "image": "busybox:1.36",
    "estimated_duration_hours": 2,
}


def launch_service(client: httpx.Client, name: str, **extra: Any) -> dict[str, Any]:
    """A cluster whose replicas run the demo service on port 8080, once both are ready."""
    r = client.post(
        "/gpu-clusters", json={**LAUNCH, "name": name, "expose": {"port": 8080}, **extra}
    )
    assert r.status_code == 201, r.text
    wait_for(
        lambda: client.get(f"/gpu-clusters/{name}").json()["ready_replicas"] == 2,
        30,
        what=f"{name} ready",
    )
    return client.get(f"/gpu-clusters/{name}").json()  # type: ignore[no-any-return]


def csp_of(r: httpx.Response) -> str:
    values = r.headers.get_list("content-security-policy")
    assert values, (r.status_code, dict(r.headers))
    return values[0]


def assert_sandboxed(r: httpx.Response, *, same_origin: bool = False) -> None:
    tokens = csp_of(r).split()
    assert tokens[0] == "sandbox", tokens
    assert {
        "allow-scripts",
        "allow-forms",
        "allow-popups",
        "allow-modals",
        "allow-downloads",
    } <= set(tokens), tokens
    assert ("allow-same-origin" in tokens) is same_origin, tokens


def is_error(r: httpx.Response, status: int, code: str, field: str | None = None) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["code"] == code, r.text
    if field is not None:
        assert err.get("field") == field, r.text


class KeepAlive:
    """One HTTP/1.1 connection kept open across requests, read by Content-Length."""

    def __init__(self, url: str) -> None:
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        self.host = f"{host}:{port}"
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.buf = b""

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}"]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
        return self._response()

    def _response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection mid-body")
            self.buf += chunk
        body, self.buf = self.buf[:n], self.buf[n:]
        return int(status_line.split()[1]), headers, body

    def json(
        self, method: str, path: str, key: str | None, data: Any = None, raw: bytes | None = None
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        body = raw if raw is not None else (json.dumps(data).encode() if data is not None else None)
        if body is not None:
            headers["Content-Type"] = "application/json"
        status, _, payload = self.request(method, path, headers=headers, body=body)
        return status, json.loads(payload) if payload else {}

    def close(self) -> None:
        self.sock.close()
