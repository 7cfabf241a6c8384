"""The embedded default: `ensure_backend` finds or starts the local backend of a state
dir (one, however many dashboards start at once), keeps the dashboard's key private,
replaces a backend of another version, and `ecolink stop` ends it cleanly."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from support.e2e_helpers import all_ready, launch, marked_processes, wait_for, wait_until

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "backend"), str(ROOT / "src"), e.get("PYTHONPATH", "")]
    )
    e.pop("ECOLINK_STATE_DIR", None)
    return e


def ecolink(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ecolink", *args, "--state-dir", str(state)],
        env=env(),
        capture_output=True,
        text=True,
        timeout=90,
    )


def server_pids(state: Path) -> list[int]:
    """`ecolink serve` processes of this state dir."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and str(state).encode() in argv and b"ecolink" in argv:
            out.append(int(d.name))
    return out


@pytest.fixture
def state(tmp_path: Path):
    sd = tmp_path / "xdg" / "ecolink"
    yield sd
    # Whatever a test left running on this state dir goes.
    if (sd / "server.json").exists():
        ecolink(sd, "stop")
    for pid in server_pids(sd):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    with contextlib.suppress(Exception):
        from ecolink.runtime.local.proc import kill_now_sync

        kill_now_sync(lambda m: True, [p for p in marked_processes(sd)])


ENSURE = textwrap.dedent("""
    import json, sys
    from ecotui.embedded import ensure_backend
    c = ensure_backend(sys.argv[1])
    print(json.dumps({"url": c.url, "key": c.key}))
""")


def test_two_dashboards_start_one_backend(state):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ENSURE, str(state)],
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert len({r["url"] for r in results}) == 1
    assert len({r["key"] for r in results}) == 1
    assert len(server_pids(state)) == 1
    info = json.loads((state / "server.json").read_text())
    assert server_pids(state) == [info["pid"]] and info["runtime"] == "local"
    # Private: the state dir and the key are the user's alone.
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    key_file = state / "dashboard.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() == results[0]["key"]
    acct = httpx.get(
        results[0]["url"] + "/account", headers={"Authorization": f"Bearer {results[0]['key']}"}
    ).json()
    assert acct["name"] == "local" and acct["balance"] == "1000.000000"
    assert (state / "backend.log").exists()


def test_backend_outlives_the_dashboard_and_ecolink_stop(state):
    from ecotui.embedded import ensure_backend

    first = ensure_backend(state)
    pid = json.loads((state / "server.json").read_text())["pid"]
    with httpx.Client(base_url=first.url, headers={"Authorization": f"Bearer {first.key}"}) as api:
        c = launch(api, "kept", replicas=2, command="sleep infinity")
        wait_for(api, c["id"], all_ready(2))
    # The dashboard is gone (nothing of it held the backend): a second one finds the
    # same backend, the same key and the same clusters.
    again = ensure_backend(state)
    assert again == first and json.loads((state / "server.json").read_text())["pid"] == pid
    with httpx.Client(base_url=again.url, headers={"Authorization": f"Bearer {again.key}"}) as api:
        assert [x["name"] for x in api.get("/gpu-clusters").json()["clusters"]] == ["kept"]
    assert len(marked_processes(state, c["id"])) >= 2
    # `ecolink stop`: the backend ends, its replicas stop, their charges are posted.
    r = ecolink(state, "stop")
    assert r.returncode == 0, r.stderr
    assert server_pids(state) == [] and not (state / "server.json").exists()
    assert marked_processes(state, c["id"]) == []
    from ecolink.store import Store

    store = Store(state / "ecolink.db")
    try:
        assert "charge" in [e.kind for e in store.ledger_all() if e.cluster_id == c["id"]]
        assert store.audit() == []
    finally:
        store.close()
    # The next dashboard starts a new backend on the same state.
    third = ensure_backend(state)
    assert third.key == first.key
    with httpx.Client(base_url=third.url, headers={"Authorization": f"Bearer {third.key}"}) as api:
        assert [x["name"] for x in api.get("/gpu-clusters").json()["clusters"]] == ["kept"]


OLD_BACKEND = textwrap.dedent("""
    import http.server, json, os, sys
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"status": "ok", "version": "0.0.1"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a):
            pass
    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    port = srv.server_address[1]
    with open(sys.argv[1], "w") as f:
        json.dump({"url": f"http://127.0.0.1:{port}", "pid": os.getpid(), "version": "0.0.1",
                   "runtime": "local"}, f)
    srv.serve_forever()
""")


def test_backend_of_another_version_is_replaced(state):
    from ecolink import __version__
    from ecotui.embedded import ensure_backend

    state.mkdir(parents=True)
    # An "old" backend, not our child (as one left by an earlier install would be).
    launcher = subprocess.run(
        [
            "sh",
            "-c",
            '"$@" >/dev/null 2>&1 </dev/null & echo $!',
            "sh",
            sys.executable,
            "-c",
            OLD_BACKEND,
            str(state / "server.json"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    old_pid = int(launcher.stdout.split()[-1])
    wait_until(lambda: (state / "server.json").exists(), what="old backend up")
    old_url = json.loads((state / "server.json").read_text())["url"]
    wait_until(lambda: httpx.get(old_url + "/healthz").status_code == 200)
    conn = ensure_backend(state)
    assert conn.url != old_url
    assert httpx.get(conn.url + "/healthz").json()["version"] == __version__
    deadline = time.monotonic() + 10
    while True:
        try:
            os.kill(old_pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "the old backend was not stopped"
        time.sleep(0.05)


SLOW_SERVE = textwrap.dedent("""
    # Slows down the start of `ecolink serve` (and nothing else) by two seconds.
    import time
    try:
        with open("/proc/self/cmdline", "rb") as f:
            argv = f.read().split(b"\\0")
    except OSError:
        argv = []
    if b"ecolink" in argv and b"serve" in argv:
        time.sleep(2.0)
""")


def _read_all(fd: int) -> bytes:
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return out
        if not chunk:
            return out
        out += chunk


def test_a_slow_backend_start_says_what_it_waits_for(state, tmp_path):
    import pty

    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(SLOW_SERVE)
    e = env()
    e["PYTHONPATH"] = os.pathsep.join([str(slow), e["PYTHONPATH"]])
    e["TERM"] = "xterm-256color"
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(
            [sys.executable, "-c", ENSURE, str(state)],
            env=e,
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
        )
        os.close(slave)
        out, _ = p.communicate(timeout=120)
        seen = _read_all(master).decode("utf-8", "replace")
    finally:
        os.close(master)
    assert p.returncode == 0, seen
    assert json.loads(out)["url"].startswith("http://127.0.0.1:")
    # A spinner with what it waits for, redrawn in place, erased at the end.
    assert f"ecotui: starting the local backend… (state dir {state}, log " in seen
    assert any(f"{frame} ecotui: starting the local backend" in seen for frame in "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")
    assert seen.count("\r\x1b[K⠋") + seen.count("\r\x1b[K⠙") >= 1
    assert seen.endswith("\r\x1b[K")
    # A backend already up answers at once: nothing is written.
    again = subprocess.run(
        [sys.executable, "-c", ENSURE, str(state)],
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["url"] == json.loads(out)["url"]
    assert "ecotui:" not in again.stderr
