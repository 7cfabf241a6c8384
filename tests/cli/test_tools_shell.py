"""`ecotui shell` and `ecotui replay` against a real backend (local runtime): a shell
in this terminal (raw mode, resize, Ctrl-C and Ctrl-Z passed through, the remote
exit code), kept sessions, streaming without a terminal, the expiry warning on
stderr, and asciicast v2 recordings that asciinema's own tools accept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from ecotui.tools.asciicast import CastWriter, read_cast, schedule
from ecotui.tools.cli_shell import ExpiryWarner
from support.tools_helpers import PtyEcotui, account_env, ecotui, end_clusters, launch_ready


@pytest.fixture
def env(shared_ecolink_server, monkeypatch, tmp_path):
    e = account_env(shared_ecolink_server, monkeypatch, tmp_path, "shell")
    yield e
    end_clusters(shared_ecolink_server, e["ECO_API_KEY"])


def asciinema_cat(path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "asciinema", "cat", str(path)], capture_output=True, timeout=60
    )


def test_interactive_shell_keys_resize_exit_code_and_recording(
    shared_ecolink_server, env, tmp_path
):
    launch_ready(shared_ecolink_server, env["ECO_API_KEY"], "box", 2)
    cast = tmp_path / "s.cast"
    sh = PtyEcotui(
        env,
        "shell",
        "box",
        "box-1",
        "--record",
        str(cast),
        "--",
        "bash",
        "--norc",
        "-i",
        rows=30,
        cols=100,
    )
    try:
        sh.expect(b"bash-")  # the prompt: the remote shell reads its input now
        sh.send(b"PS1='P> '; echo $ECO_REPLICA_NAME-$((6*7))\r")
        sh.expect(b"box-1-42")
        sh.send(b"stty size\r")
        sh.expect(b"30 100")
        sh.resize(40, 120)
        sh.send(b"stty size\r")
        sh.expect(b"40 120")
        # Ctrl-C reaches the remote foreground job and not ecotui
        sh.send(b"echo go-$((5*5)); sleep 300\r")
        sh.expect(b"go-25")
        time.sleep(0.5)
        sh.send(b"\x03")
        sh.send(b"echo after-$((1+1))\r")
        sh.expect(b"after-2", timeout=10)
        # Ctrl-Z suspends it remotely (job control on the remote side)
        sh.send(b"echo go-$((6*6)); sleep 301\r")
        sh.expect(b"go-36")
        time.sleep(0.5)
        sh.send(b"\x1a")
        sh.expect(b"Stopped", timeout=10)
        sh.send(b"fg\r")
        sh.expect(b"sleep 301")
        sh.send(b"\x03")
        sh.send(b"exit 7\r")
        assert sh.wait() == 7
        err = sh.stderr()
    finally:
        sh.close()
    assert f"recording to {cast}".encode() in err
    assert b"box-1-42" not in err
    # asciinema's own reader accepts the file and shows what the shell printed
    p = asciinema_cat(cast)
    assert p.returncode == 0, p.stderr
    assert b"box-1-42" in p.stdout and b"after-2" in p.stdout
    lines = cast.read_text().splitlines()
    header = json.loads(lines[0])
    assert (header["version"], header["width"], header["height"]) == (2, 100, 30)
    events = [json.loads(x) for x in lines[1:]]
    assert [e[2] for e in events if e[1] == "r"] == ["120x40"]
    times = [e[0] for e in events]
    assert times == sorted(times)
    assert cast.stat().st_mode & 0o077 == 0


def test_without_a_terminal_it_streams_like_exec(shared_ecolink_server, env):
    launch_ready(shared_ecolink_server, env["ECO_API_KEY"], "pipe", 2)
    p = ecotui(env, "shell", "pipe", input=b"echo $ECO_REPLICA_NAME; echo oops >&2; exit 3\n")
    assert p.returncode == 3, p.stderr
    assert p.stdout == b"pipe-0\n"  # the first ready replica; stderr kept apart
    assert b"oops" in p.stderr
    p = ecotui(env, "shell", "pipe", "pipe-1", "--", "tr", "a-z", "A-Z", input=b"quiet\n")
    assert (p.returncode, p.stdout) == (0, b"QUIET\n")


def test_kept_session_detach_and_reattach(shared_ecolink_server, env):
    launch_ready(shared_ecolink_server, env["ECO_API_KEY"], "kept", 2)
    sh = PtyEcotui(env, "shell", "kept", "kept-1", "--session", "new", "--", "bash", "--norc", "-i")
    try:
        sh.expect(b"bash-")
        sh.send(b"X=remembered-$((2*21))\r")
        sh.send(b"echo $X\r")
        sh.expect(b"remembered-42")
        sh.send(b"\x1d")  # ctrl+]
        assert sh.wait() == 0
        err = sh.stderr().decode()
    finally:
        sh.close()
    assert "detached" in err
    sid = err.split("--session ")[-1].split()[0]
    sh = PtyEcotui(env, "shell", "kept", "--session", sid)
    try:
        sh.expect(b"remembered-42")  # the kept output is replayed
        sh.send(b"echo again-$X\r")
        sh.expect(b"again-remembered-42")
        sh.send(b"exit 5\r")
        assert sh.wait() == 5
    finally:
        sh.close()


def test_expiry_warning_goes_to_stderr_only(shared_ecolink_server, env):
    launch_ready(shared_ecolink_server, env["ECO_API_KEY"], "late", 2, hours=0.15)
    sh = PtyEcotui(env, "shell", "late", "--", "sh", "-c", "sleep 1; echo done-$((3*3))")
    try:
        assert sh.wait() == 0
        sh.read_some()
        err = sh.stderr()
    finally:
        sh.close()
    assert b"done-9" in sh.out and b"expires in" not in sh.out
    assert err.count(b"expires in") == 1
    assert b"late expires in 8 min" in err and b"ecotui extend late HOURS" in err


def test_expiry_warner_says_10_then_2_minutes_once_each():
    said: list[str] = []
    w = ExpiryWarner("demo", said.append)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    exp = (t0 + timedelta(minutes=30)).isoformat()
    for m in (0, 19, 20.5, 21, 27.9, 28.1, 29):
        w.check(exp, t0 + timedelta(minutes=m))
    assert [s.split(" (")[0] for s in said] == [
        "ecotui: demo expires in 9 min",
        "ecotui: demo expires in 1 min",
    ]
    # extended: the warnings come back when it nears expiry again
    exp2 = (t0 + timedelta(minutes=60)).isoformat()
    w.check(exp2, t0 + timedelta(minutes=30))
    w.check(exp2, t0 + timedelta(minutes=51))
    assert len(said) == 3 and "expires in 9 min" in said[-1]


def test_bad_input(shared_ecolink_server, env, tmp_path):
    launch_ready(shared_ecolink_server, env["ECO_API_KEY"], "bad", 2)
    p = ecotui(env, "shell", "nope", input=b"")
    assert p.returncode == 1 and b"nope" in p.stderr
    p = ecotui(env, "shell", "bad", "bad-9", input=b"true\n")
    assert p.returncode == 1 and b"bad-9" in p.stderr
    p = ecotui(env, "shell", "bad", "--session", "s-nope", input=b"")
    assert p.returncode == 1 and b"ecotui:" in p.stderr
    (tmp_path / "afile").write_text("keep me")
    p = ecotui(
        env, "shell", "bad", "--record", str(tmp_path / "afile" / "x.cast"), input=b"echo never\n"
    )
    assert p.returncode == 2 and b"cannot record to" in p.stderr and b"never" not in p.stdout
    assert (tmp_path / "afile").read_text() == "keep me"


@pytest.mark.slow  # starts a process
def test_replay_applies_resize_events(tmp_path):
    """`r` events become the terminal's resize request, in order; a malformed size
    is skipped and the rest still plays."""
    path = tmp_path / "rs.cast"
    path.write_text(
        '{"version": 2, "width": 80, "height": 24}\n'
        '[0.01, "o", "a"]\n[0.02, "r", "120x40"]\n[0.03, "o", "b"]\n'
        '[0.04, "r", "bogus"]\n[0.05, "r", "90x0"]\n[0.06, "o", "c"]\n'
    )
    env = {"XDG_DATA_HOME": str(tmp_path / "data")}
    p = ecotui(env, "replay", str(path), timeout=20)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"a\x1b[8;40;120tbc"


@pytest.mark.slow  # starts a process
def test_replay_plays_at_speed_with_idle_limit(tmp_path, monkeypatch):
    clock = iter([0.0, 0.5, 10.5, 11.0, 11.0])
    path = tmp_path / "r.cast"
    w = CastWriter(path, 80, 24, clock=lambda: next(clock), timestamp=1_700_000_000)
    w.output(b"one \xe2\x82")  # a character split across two reads
    w.output(b"\xac two\r\n")
    w.resize(100, 30)
    w.close()
    cast = read_cast(path)
    assert cast.events == [(0.5, "o", "one "), (10.5, "o", "€ two\r\n"), (11.0, "r", "100x30")]
    assert [round(d, 3) for d, _, _ in schedule(cast.events, speed=2, idle_limit=1)] == [
        0.25,
        0.5,
        0.25,
    ]
    p = asciinema_cat(path)
    assert p.returncode == 0 and p.stdout == "one € two\r\n".encode()
    env = {"XDG_DATA_HOME": str(tmp_path / "data")}
    p = ecotui(env, "replay", str(path), "--speed", "4", "--idle-limit", "0.2", timeout=20)
    assert p.returncode == 0, p.stderr
    # the resize is played as the terminal's size request (rows;cols), after the output
    assert p.stdout == "one € two\r\n\x1b[8;30;100t".encode()
    # bad input: a clear message and a non-zero exit
    p = ecotui(env, "replay", str(tmp_path / "missing.cast"))
    assert p.returncode == 1 and b"no such file" in p.stderr
    (tmp_path / "bad.cast").write_text("hello\n")
    p = ecotui(env, "replay", str(tmp_path / "bad.cast"))
    assert p.returncode == 1 and b"not an asciicast v2 header" in p.stderr
    p = ecotui(env, "replay", str(path), "--speed", "0")
    assert p.returncode == 2
    assert os.path.exists(path)
