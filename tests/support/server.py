"""A real `ecolink serve` on loopback for tests: `EcolinkServer` (see tests/conftest.py
for the fixtures that hand it out and what each attribute is)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT / "backend"), str(ROOT / "src")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("ECOLINK_STATE_DIR", None)
    env["PYTHONUNBUFFERED"] = "1"
    # Replicas that ignore SIGTERM would keep each stop waiting 30 s; tests of the
    # grace period pass --termination-grace-seconds themselves.
    env.setdefault("ECOLINK_TERMINATION_GRACE_SECONDS", "3")
    if extra:
        env.update(extra)
    return env


def serve_once(state_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`ecolink serve` on a free port with `env` added to this process's environment,
    run to its end: for settings it must refuse before it serves."""
    return subprocess.run(
        [sys.executable, "-m", "ecolink", "serve", "--port", "0", "--state-dir", str(state_dir)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _take_stdin_as_terminal() -> None:  # in the child, after setsid
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class EcolinkServer:
    def __init__(
        self,
        state_dir: Path,
        *,
        catalog: str | None = None,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        account: str = "test",
        credit: str = "10000",
        verify: str | bool = True,
    ) -> None:
        self.state_dir = state_dir
        # A CA file becomes an SSL context (httpx wants one).
        self.verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        )
        self.catalog = catalog
        self.extra_args = list(extra_args or [])
        self.env = _env(env)
        self.account = account
        self.log_path = state_dir / "serve.out"
        self.proc: subprocess.Popen[bytes] | None = None
        # True before start(): serve runs in a session of its own whose controlling
        # terminal is a pseudo-terminal (as when started from a shell), not none.
        self.terminal = False
        self._tty: int | None = None
        self.url = ""
        self.port = 0
        self.key = ""
        self.cli("accounts", "create", account, "--credit", credit)
        self.key = self.cli("keys", "create", "--account", account).stdout.split()[-1]

    # -- processes ---------------------------------------------------------
    def cli(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "ecolink", *args, "--state-dir", str(self.state_dir)]
        return subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, check=check, timeout=timeout
        )

    def start(self, port: int = 0) -> None:
        server_json = self.state_dir / "server.json"
        with contextlib.suppress(FileNotFoundError):
            server_json.unlink()
        cmd = [
            sys.executable,
            "-m",
            "ecolink",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--runtime",
            "local",
            "--state-dir",
            str(self.state_dir),
            # Two front processes whatever the machine: the path of several is tested.
            "--workers",
            "2",
        ]
        if self.catalog:
            cmd += ["--catalog", self.catalog]
        cmd += self.extra_args
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it
        stdin = subprocess.DEVNULL
        own_terminal: dict[str, Any] = {}
        if self.terminal:
            self._close_tty()
            self._tty, stdin = os.openpty()
            own_terminal = {"start_new_session": True, "preexec_fn": _take_stdin_as_terminal}
        try:
            self.proc = subprocess.Popen(
                cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=stdin, **own_terminal
            )
        finally:
            log.close()
            if self.terminal:
                os.close(stdin)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"ecolink serve exited with {self.proc.returncode}:\n" + self.log_tail()
                )
            try:
                info = json.loads(server_json.read_text())
                if info.get("pid") == self.proc.pid:
                    self.url = info["url"]
                    self.port = int(self.url.rsplit(":", 1)[1])
                    if (
                        httpx.get(self.url + "/healthz", timeout=2, verify=self.verify).status_code
                        == 200
                    ):
                        return
            except (OSError, ValueError, httpx.HTTPError):
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError("ecolink serve did not start in time:\n" + self.log_tail())

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT_S)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        return self.proc.returncode

    def restart(self) -> None:
        """Start again on the same state dir (after kill() or stop())."""
        self.stop()
        port = 0
        if self.port:
            # After kill(), the old run's other front process lets the port go once
            # it sees its control plane gone (its feed closes): give it a moment, so
            # that the URL stays the same.
            deadline = time.monotonic() + 5
            while not _port_free(self.port) and time.monotonic() < deadline:
                time.sleep(0.05)
            port = self.port if _port_free(self.port) else 0
        self.start(port)

    def close(self) -> None:
        self.stop()
        self._close_tty()
        self._kill_leftovers()
        # Replicas under their own uids keep their files outside the state dir.
        root = self.replica_dir("x").parent.parent
        if root != self.state_dir and "ECOLINK_REPLICA_ROOT" not in self.env:
            shutil.rmtree(root, ignore_errors=True)

    def _close_tty(self) -> None:
        if self._tty is not None:
            os.close(self._tty)
            self._tty = None

    def _kill_leftovers(self) -> None:
        # A SIGKILLed server leaves its replicas behind: end them by their marker.
        try:
            from ecocore.clock import SystemClock
            from ecolink.runtime.local import LocalRuntime
            from ecolink.runtime.local.proc import kill_now_sync
        except ImportError:
            return
        rid = LocalRuntime(self.state_dir, SystemClock()).rid
        with contextlib.suppress(Exception):
            kill_now_sync(lambda m: m.startswith(rid + "."), [])

    def replica_dir(self, cluster_id: str, replica: str | None = None) -> Path:
        """A replica's working dir (its HOME), laid out as this server's local runtime
        lays it out: under the replica root when replicas run under their own uids."""
        from unittest import mock

        from ecolink.runtime.local.users import default_replica_root, replica_uids_wanted

        keys = ("ECOLINK_REPLICA_UIDS", "ECOLINK_REPLICA_ROOT")
        with mock.patch.dict(os.environ, {k: self.env[k] for k in keys if k in self.env}):
            root = default_replica_root(self.state_dir) if replica_uids_wanted() else self.state_dir
        d = root / "replicas" / cluster_id
        return d / replica if replica else d

    # -- clients -------------------------------------------------------------
    def client(self, key: str | None = None, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            timeout=timeout,
            verify=self.verify,
            headers={"Authorization": f"Bearer {key or self.key}"},
        )

    def ws_url(self, path: str) -> str:
        scheme = "wss://" if self.url.startswith("https://") else "ws://"
        return scheme + self.url.split("://", 1)[1] + path

    def store(self) -> Any:
        from ecolink.store import Store

        return Store(self.env.get("ECOLINK_DATABASE_URL") or self.state_dir / "ecolink.db")

    def new_account(self, name: str, credit: str = "1000") -> str:
        """A new account with `credit` dollars; returns its API key. Written straight
        to the database (the server reads it on every request), which is much faster
        than two CLI runs."""
        from ecocore.clock import SystemClock
        from ecocore.money import usd_to_micros
        from ecolink.store import to_us

        store = self.store()
        try:
            now = to_us(SystemClock().now())
            with store.tx():
                acct = store.create_account(name, now)
                micros = usd_to_micros(credit)
                if micros:
                    store.post(acct.id, None, "credit", micros, "initial credit", now)
                return store.create_api_key(acct.id, now)
        finally:
            store.close()
