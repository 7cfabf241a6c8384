"""Helpers for the tool commands' tests (run, shell, port-forward, cp): an account on
the shared backend, a cluster whose replicas are ready, and ecotui under a pty."""

from __future__ import annotations

import fcntl
import os
import pty
import secrets
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def account_env(server, monkeypatch, tmp_path, prefix: str) -> dict[str, str]:
    key = server.new_account(prefix + "-" + secrets.token_hex(4), "10000")
    env = {
        "ECO_API_URL": server.url,
        "ECO_API_KEY": key,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def end_clusters(server, key: str) -> None:
    with server.client(key) as api:
        for c in api.get("/gpu-clusters").json()["clusters"]:
            api.delete(f"/gpu-clusters/{c['id']}")


def launch_ready(
    server, key: str, name: str, replicas: int, *, hours: float = 1, command: str = "sleep infinity"
) -> dict[str, Any]:
    with server.client(key) as api:
        r = api.post(
            "/gpu-clusters",
            json={
                "name": name,
                "region": "us-east",
                "gpu_type": "H100-80GB",
                "gpu_count": 1,
                "replicas": replicas,
                "image": "busybox:1",
                "estimated_duration_hours": hours,
                "startup_command": command,
            },
        )
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            c = api.get(f"/gpu-clusters/{name}").json()
            if c["ready_replicas"] == replicas:
                return c
            time.sleep(0.1)
    raise AssertionError(f"{name} did not become ready: {c}")


def subprocess_env(env: dict[str, str]) -> dict[str, str]:
    e = dict(os.environ, **env)
    e["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT / "backend"), os.environ.get("PYTHONPATH", "")]
    )
    return e


def ecotui(
    env: dict[str, str], *argv: str, input: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "ecotui", *argv],
        env=subprocess_env(env),
        capture_output=True,
        input=input,
        timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


class PtyEcotui:
    """ecotui with a terminal on stdin and stdout (stderr kept apart, in a pipe)."""

    def __init__(self, env: dict[str, str], *argv: str, rows: int = 24, cols: int = 80) -> None:
        self.leader, follower = pty.openpty()
        self.set_size(rows, cols, follower)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ecotui", *argv],
            env=subprocess_env(env),
            stdin=follower,
            stdout=follower,
            stderr=subprocess.PIPE,
        )
        os.close(follower)
        self.out = b""

    def set_size(self, rows: int, cols: int, fd: int | None = None) -> None:
        fcntl.ioctl(
            self.leader if fd is None else fd,
            termios.TIOCSWINSZ,
            struct.pack("HHHH", rows, cols, 0, 0),
        )

    def resize(self, rows: int, cols: int) -> None:
        self.set_size(rows, cols)
        self.proc.send_signal(signal.SIGWINCH)

    def send(self, data: bytes) -> None:
        os.write(self.leader, data)

    def read_some(self, timeout: float = 0.2) -> bytes:
        r, _, _ = select.select([self.leader], [], [], timeout)
        if not r:
            return b""
        try:
            chunk = os.read(self.leader, 65536)
        except OSError:
            return b""
        self.out += chunk
        return chunk

    def expect(self, needle: bytes, timeout: float = 20) -> bytes:
        deadline = time.monotonic() + timeout
        start = len(self.out)
        while time.monotonic() < deadline:
            if needle in self.out[start:]:
                return self.out[start:]
            if not self.read_some() and self.proc.poll() is not None:
                break
        raise AssertionError(f"{needle!r} not seen; got {self.out[start:][-2000:]!r}")

    def wait(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.read_some()
        return self.proc.wait(timeout=1)

    def stderr(self) -> bytes:
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.leader)
