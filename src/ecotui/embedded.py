"""The embedded default: find the local backend of the user's state directory, or
start one in the background (as tmux starts its server).

`ensure_backend(state_dir=None) -> Connection(url, key)`:
- the state dir is `ECOLINK_STATE_DIR`, else `${XDG_DATA_HOME:-~/.local/share}/ecolink`
  (mode 0700);
- under an exclusive lock on `embedded.lock`, so two dashboards started together
  never start two backends;
- a backend is in use when `server.json` names one whose `/healthz` answers; one
  whose version is not the installed ecolink's is stopped (`ecolink stop`) and
  replaced;
- otherwise `ecolink serve --port 0 --runtime local` starts detached (its own
  session, output in `backend.log`) and outlives the dashboard;
- the dashboard's API key is kept in `dashboard.key` (mode 0600), for a local
  account ("local", with demo credit) made on first use through the `ecolink` CLI;
- a wait longer than half a second says on stderr what it waits for (a spinner on a
  terminal, one line per step elsewhere; see `startup_status.py`).

Everything goes through processes and HTTP: nothing of the backend is imported but
its version.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from ecotui import __version__
from ecotui.startup_status import StartupStatus

LOCAL_ACCOUNT = "local"
DEMO_CREDIT = "1000"
START_TIMEOUT_S = 60.0
LOCK_TIMEOUT_S = 120.0
_SETSID_EXEC = (
    "import os, sys; os.setsid(); os.execv(sys.executable, [sys.executable] + sys.argv[1:])"
)


@dataclass(frozen=True)
class Connection:
    url: str
    key: str


class EmbeddedError(RuntimeError):
    """The local backend could not be found or started; the message says why."""


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("ECOLINK_STATE_DIR"):
        return Path(env["ECOLINK_STATE_DIR"]).expanduser()
    base = env.get("XDG_DATA_HOME") or str(
        Path(env.get("HOME") or Path.home()) / ".local" / "share"
    )
    return Path(base) / "ecolink"


def installed_version() -> str:
    """The backend ships in this distribution, so its version is this one."""
    return __version__


def _backend_env() -> dict[str, str]:
    """The environment for `python -m ecolink`: make sure it imports the same ecolink
    this process sees (a source checkout is not installed)."""
    spec = importlib.util.find_spec("ecolink")
    if spec is None or spec.origin is None:
        raise EmbeddedError("the ecolink backend is not installed with this ecotui")
    env = dict(os.environ)
    root = str(Path(spec.origin).resolve().parent.parent)
    paths = [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("ECOLINK_STATE_DIR", None)  # --state-dir says it
    return env


def _ecolink(state_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "ecolink", *args, "--state-dir", str(state_dir)]
    return subprocess.run(
        cmd,
        env=_backend_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def _locked(path: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EmbeddedError(f"{path} stayed locked for {timeout:.0f} s") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read_server_json(state_dir: Path) -> dict[str, object] | None:
    try:
        data = json.loads((state_dir / "server.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _health(url: str, timeout: float = 2.0) -> dict[str, object] | None:
    try:
        r = httpx.get(url.rstrip("/") + "/healthz", timeout=timeout, trust_env=False)
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    try:
        data = r.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def find_backend(state_dir: Path, wait_s: float = 5.0) -> tuple[str, str] | None:
    """(url, version) of the backend serving `state_dir`, or None."""
    info = _read_server_json(state_dir)
    if not info or not isinstance(info.get("url"), str):
        return None
    url = str(info["url"])
    pid = info.get("pid")
    deadline = time.monotonic() + wait_s
    while True:
        health = _health(url)
        if health is not None and health.get("status") == "ok":
            return url, str(health.get("version", ""))
        # A live process that does not answer yet may be starting or busy: wait a bit.
        if not (isinstance(pid, int) and _pid_alive(pid)) or time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def _log_tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def start_backend(state_dir: Path, timeout: float = START_TIMEOUT_S) -> str:
    """Start `ecolink serve` in the background; its URL once `/healthz` answers.

    A short-lived `sh` starts it and exits, so the backend is nobody's child here: it
    outlives the dashboard, and no dead backend lingers as this process's zombie."""
    with contextlib.suppress(FileNotFoundError):
        (state_dir / "server.json").unlink()
    log_path = state_dir / "backend.log"
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.close(fd)
    # In a session of its own, so the terminal's hang-up does not reach it.
    argv = [
        sys.executable,
        "-c",
        _SETSID_EXEC,
        "-m",
        "ecolink",
        "serve",
        "--port",
        "0",
        "--runtime",
        "local",
        "--state-dir",
        str(state_dir),
        "--log-file",
        str(log_path),
    ]
    env = _backend_env()
    env["ECOTUI_BACKEND_LOG"] = str(log_path)
    launcher = subprocess.run(
        ["sh", "-c", '"$@" >>"$ECOTUI_BACKEND_LOG" 2>&1 </dev/null & echo $!', "sh", *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    try:
        pid = int(launcher.stdout.split()[-1])
    except (ValueError, IndexError):
        raise EmbeddedError(
            f"could not start the local backend: {launcher.stderr.strip()}"
        ) from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = _read_server_json(state_dir)
        if info and isinstance(info.get("url"), str) and _health(str(info["url"])) is not None:
            return str(info["url"])
        if not _pid_alive(pid):
            raise EmbeddedError(
                f"the local backend exited at once; see {log_path}:\n" + _log_tail(log_path)
            )
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 15)
    raise EmbeddedError(f"the local backend did not start within {timeout:.0f} s; see {log_path}")


def stop_backend(state_dir: Path) -> None:
    r = _ecolink(state_dir, "stop", timeout=90)
    if r.returncode != 0 and _read_server_json(state_dir):
        raise EmbeddedError(
            f"could not stop the old backend: {r.stderr.strip() or r.stdout.strip()}"
        )


def _key_works(url: str, key: str) -> bool:
    try:
        r = httpx.get(
            url + "/account", headers={"Authorization": f"Bearer {key}"}, timeout=5, trust_env=False
        )
    except httpx.HTTPError:
        return False
    return r.status_code == 200


def _write_key(path: Path, key: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (key + "\n").encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def ensure_key(state_dir: Path, url: str) -> str:
    """The dashboard's key: the stored one if the backend accepts it, else a new one
    for the local account (created with demo credit the first time)."""
    path = state_dir / "dashboard.key"
    with contextlib.suppress(OSError):
        key = path.read_text().strip()
        if key and _key_works(url, key):
            os.chmod(path, 0o600)
            return key
    listing = _ecolink(state_dir, "accounts", "list")
    names = {line.split()[0] for line in listing.stdout.splitlines()[1:] if line.strip()}
    if LOCAL_ACCOUNT not in names:
        made = _ecolink(state_dir, "accounts", "create", LOCAL_ACCOUNT, "--credit", DEMO_CREDIT)
        if made.returncode != 0:
            raise EmbeddedError(f"could not create the local account: {made.stderr.strip()}")
    made = _ecolink(state_dir, "keys", "create", "--account", LOCAL_ACCOUNT)
    words = made.stdout.split()
    if made.returncode != 0 or not words:
        raise EmbeddedError(f"could not create an API key: {made.stderr.strip()}")
    key = words[-1]
    _write_key(path, key)
    return key


def ensure_backend(state_dir: Path | str | None = None, *, say_steps: bool = True) -> Connection:
    """The local backend of the state dir, started if none runs. Slow steps are said on
    stderr unless `say_steps` is False (a caller that says them itself)."""
    sd = Path(state_dir).expanduser() if state_dir else default_state_dir()
    sd.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        os.chmod(sd, 0o700)
    with StartupStatus(sys.stderr if say_steps else io.StringIO()) as status:
        status.step(f"waiting for another dashboard to start the local backend (state dir {sd})")
        with _locked(sd / "embedded.lock"):
            status.step(f"looking for the local backend… (state dir {sd})")
            found = find_backend(sd)
            if found is not None and found[1] != installed_version():
                # A backend from another install: replace it (clusters stop and are billed
                # up to now; the new one starts what the store says should run).
                status.step(f"stopping the local backend of another version… (state dir {sd})")
                stop_backend(sd)
                found = None
            if found is None:
                status.step(
                    f"starting the local backend… (state dir {sd}, log {sd / 'backend.log'})"
                )
            url = found[0] if found else start_backend(sd)
            status.step(f"getting the dashboard's key from the local backend… (state dir {sd})")
            key = ensure_key(sd, url)
    return Connection(url=url, key=key)
