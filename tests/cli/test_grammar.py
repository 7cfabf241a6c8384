"""One CLI grammar, against a real backend: what changes or costs something asks on a
terminal and takes --yes (restart and endpoint too), reads take --json with the shapes
README.md documents, `show` prints whole values, and text from the backend or a replica
never acts on the reader's terminal (control characters shown, not obeyed)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time

from test_commands import ecotui, launch_args, pty_run, subprocess_env, wait_running

from ecotui import cli

HOSTILE = "printf 'boot\\n'; sleep infinity # \x1b]52;c;cHduZWQ=\x07\x1b]0;owned\x07\x1b[2J\x9b31m"


def test_restart_asks_on_a_terminal_and_takes_yes(run, env):
    run(*launch_args("web"))
    wait_running(run, "web")
    p = pty_run(env, ["restart", "web", "web-0"], b"n\n")
    assert p.returncode == 2 and b"Proceed? [y/N]" in p.stderr
    assert b"Restart web-0 of web" in b" ".join(p.stderr.split())
    p = ecotui(env, "restart", "web")  # no terminal, no --yes: refused, nothing done
    assert p.returncode == 2 and b"--yes" in p.stderr and p.stdout == b""
    assert all(s["restarts"] == 0 for s in run.json("show", "web")["replica_states"])
    p = pty_run(env, ["restart", "web", "web-0"], b"y\n")
    assert p.returncode == 0, p.stderr
    code, out, _ = run("restart", "web", "web-1", "--yes")
    assert code == 0 and "web-1: restarting." in out


def test_endpoint_open_change_and_close_ask_and_take_yes(run, env):
    run(*launch_args("web"))
    p = pty_run(env, ["endpoint", "web", "8000"], b"n\n")
    assert p.returncode == 2 and b"Open a public URL for web" in b" ".join(p.stderr.split())
    assert run.json("show", "web")["endpoint"] is None
    p = ecotui(env, "endpoint", "web", "8000")
    assert p.returncode == 2 and b"--yes" in p.stderr
    assert run.json("show", "web")["endpoint"] is None
    ep = run.json("endpoint", "web", "8000", "--yes")
    assert ep["port"] == 8000
    p = pty_run(env, ["endpoint", "web", "9000"], b"n\n")
    assert p.returncode == 2 and b"from port 8000 to port 9000" in b" ".join(p.stderr.split())
    p = ecotui(env, "endpoint", "web", "--close")
    assert p.returncode == 2
    assert run.json("show", "web")["endpoint"]["port"] == 8000
    p = pty_run(env, ["endpoint", "web", "--close"], b"y\n")
    assert p.returncode == 0 and b"public URL closed" in p.stdout
    assert run.json("show", "web")["endpoint"] is None
    closed = run.json("endpoint", "web", "--close", "--yes")
    assert closed == {"closed": True, "id": ep["url"].split("/")[-3]} or closed["closed"] is True


CLUSTER_KEYS = {
    "id",
    "name",
    "status",
    "region",
    "gpu_type",
    "gpu_count",
    "replicas",
    "image",
    "hourly_rate",
    "burn_rate",
    "cost",
    "expires_at",
    "endpoint",
    "replica_states",
    "ready_replicas",
}


def test_reads_answer_json_in_the_documented_shapes(run, env):
    c = run.json(*launch_args("web"))
    assert CLUSTER_KEYS <= set(c)
    wait_running(run, "web")
    listed = run.json("ls")
    assert set(listed) == {"clusters"} and CLUSTER_KEYS <= set(listed["clusters"][0])
    assert CLUSTER_KEYS <= set(run.json("show", "web"))
    ledger = run.json("ledger")
    assert set(ledger) == {"entries"}
    assert {"id", "at", "kind", "amount", "balance_after", "held_after"} <= set(
        ledger["entries"][0]
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        logs = run.json("logs", "web", "web-1")
        if "hello-from-web-1" in logs["lines"]:
            break
        time.sleep(0.2)
    assert set(logs) == {"cluster", "replica", "previous", "lines"}
    assert logs["cluster"] == "web" and logs["replica"] == "web-1" and logs["previous"] is False
    assert "hello-from-web-1" in logs["lines"]
    # Mutations answer the cluster (restart: the replica), endpoint the endpoint.
    assert CLUSTER_KEYS <= set(run.json("scale", "web", "3", "--yes"))
    assert CLUSTER_KEYS <= set(run.json("extend", "web", "1", "--yes"))
    assert {"name", "phase", "ready"} <= set(run.json("restart", "web", "web-0", "--yes"))
    assert set(run.json("endpoint", "web", "8000", "--yes")) >= {"url", "port"}
    assert run.json("endpoint", "web", "--close", "--yes")["closed"] is True
    assert CLUSTER_KEYS <= set(run.json("stop", "web", "--yes"))
    assert CLUSTER_KEYS <= set(run.json("resume", "web", "--yes"))
    assert CLUSTER_KEYS <= set(run.json("terminate", "web", "--yes"))
    # Errors: stderr only, with the README's codes; stdout stays empty for a script.
    for argv, code in (
        (["show", "nosuch", "--json"], 1),
        (["scale", "web", "x"], 2),
        (["logs", "web", "web-9", "--json"], 1),
    ):
        got, out, err = run(*argv)
        assert (got, out) == (code, "") and err.startswith(("ecotui:", "usage:")), argv


def test_show_prints_whole_values_and_shows_control_characters(run, env):
    long = (
        "echo "
        + " ".join(f"word{i:02d}" for i in range(30))
        + "; exec python3 -m http.server $PORT"
    )
    run(*launch_args("web", command=long))
    code, out, _ = run("show", "web")
    assert code == 0 and long in out  # whole, on one line, to be copied
    run(*launch_args("evil", command=HOSTILE))
    code, out, err = run("show", "evil")
    assert code == 0, err
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    assert "^[]52;c;cHduZWQ=^G^[]0;owned^G^[[2J<U+009B>31m" in out
    assert run.json("show", "evil")["startup_command"] == HOSTILE  # --json: the value as is


def test_ls_and_errors_show_control_characters(run, env, monkeypatch):
    """No backend string in `ls` can hold a control character today (names are DNS
    labels); the table escapes them all the same, as it does a refusal's message."""
    from ecocore.wire import ClusterOut, CostOut
    from ecotui.client.rest import ApiRefusal, EcoClient

    async def clusters(self, status=None):
        # Built without validation: the status could not pass it, the table must cope anyway.
        return [
            ClusterOut.model_construct(
                name="x\x1b]0;t\x07",
                status="running\x1b[31m",
                region="us-east",
                replicas=1,
                gpu_count=1,
                gpu_type="L4\x9b",
                ready_replicas=1,
                burn_rate="1",
                cost=CostOut.model_construct(spent="0"),
                expires_at=None,
            )
        ]

    monkeypatch.setattr(EcoClient, "clusters", clusters)
    code, out, _ = run("ls")
    assert code == 0 and "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    assert "x^[]0;" in out and "running^[[31m" in out and "L4<U+009B>" in out

    async def refuse(self, name):
        raise ApiRefusal(409, "conflict", "busy \x1b]52;c;eA==\x07 now")

    monkeypatch.setattr(EcoClient, "cluster", refuse)
    code, out, err = run("show", "web")
    assert code == 1 and out == "" and "\x1b" not in err and "busy ^[]52;c;eA==^G now" in err


def _pty_stdout(env, argv: list[str], until: bytes, timeout: float = 30) -> bytes:
    """Run ecotui with a terminal on stdout; what it wrote there."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecotui", *argv],
        env=subprocess_env(env),
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    got = b""
    deadline = time.monotonic() + timeout
    try:
        while until not in got and time.monotonic() < deadline:
            r, _, _ = select.select([leader], [], [], 0.2)
            if r:
                try:
                    got += os.read(leader, 65536)
                except OSError:
                    break
            elif proc.poll() is not None:
                break
    finally:
        proc.kill()
        proc.wait(10)
        os.close(leader)
    return got


def test_logs_to_a_terminal_show_control_characters_unless_raw(run, env):
    cmd = "printf 'start \\033]0;owned\\007\\033]52;c;cHduZWQ=\\007 end\\n'; sleep infinity"
    code, _, err = run(*launch_args("web", command=cmd))
    assert code == 0, err
    wait_running(run, "web")
    deadline = time.monotonic() + 20
    while "start" not in run("logs", "web", "web-0")[1] and time.monotonic() < deadline:
        time.sleep(0.2)
    shown = _pty_stdout(env, ["logs", "web", "web-0"], b" end")
    assert b"start ^[]0;owned^G^[]52;c;cHduZWQ=^G end" in shown and b"\x1b" not in shown
    followed = _pty_stdout(env, ["logs", "web", "web-0", "-f"], b" end")
    assert b"^[]0;owned^G" in followed and b"\x1b" not in followed
    raw = _pty_stdout(env, ["logs", "web", "web-0", "--raw"], b" end")
    assert b"\x1b]0;owned\x07" in raw
    piped = ecotui(env, "logs", "web", "web-0")  # to a pipe: the bytes as written
    assert b"\x1b]52;c;cHduZWQ=\x07" in piped.stdout
    answer = json.loads(ecotui(env, "logs", "web", "web-0", "--json").stdout)
    assert "start \x1b]0;owned\x07\x1b]52;c;cHduZWQ=\x07 end" in answer["lines"]


def test_exit_codes_are_the_readmes(run, env):
    assert (cli.EXIT_OK, cli.EXIT_REFUSED, cli.EXIT_USAGE, cli.EXIT_UNREACHABLE) == (0, 1, 2, 3)
    readme = cli.__file__.rsplit("/src/", 1)[0] + "/README.md"
    text = open(readme, encoding="utf-8").read()
    text = " ".join(text.split())
    assert "Exit codes: 0 done, 1 refused by the backend, 2 usage" in text
    assert "3 cannot reach the backend" in text
