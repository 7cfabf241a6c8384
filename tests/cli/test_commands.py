"""Every CLI command against a real backend (`ecolink serve`, local runtime):
human output (readable at 80 columns), `--json`, and exit codes (0 done,
1 refused by the backend, 2 usage)."""

from __future__ import annotations

import os
import pty
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ecotui import cli, costs, wording

ROOT = Path(__file__).resolve().parents[2]


def launch_args(
    name: str = "web",
    *extra: str,
    replicas: str = "2",
    gpus: str = "2",
    hours: str = "3",
    command: str = "echo hello-from-$ECO_REPLICA_NAME; sleep infinity",
) -> list[str]:
    return [
        "launch",
        "--name",
        name,
        "--region",
        "us-east",
        "--gpu-type",
        "H100-80GB",
        "--gpu-count",
        gpus,
        "--replicas",
        replicas,
        "--image",
        "busybox:1",
        "--hours",
        hours,
        "--startup-command",
        command,
        "--yes",
        *extra,
    ]


def subprocess_env(env: dict[str, str]) -> dict[str, str]:
    e = dict(os.environ, **env)
    e["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT / "backend"), os.environ.get("PYTHONPATH", "")]
    )
    return e


def ecotui(env, *argv: str, input: bytes | None = None, timeout: float = 60):
    return subprocess.run(
        [sys.executable, "-m", "ecotui", *argv],
        env=subprocess_env(env),
        capture_output=True,
        input=input,
        timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def wait_running(run: Any, name: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = run.json("show", name)
        if c["replica_states"] and all(s["phase"] == "Running" for s in c["replica_states"]):
            return c
        time.sleep(0.1)
    raise AssertionError(f"{name} did not run: {c}")


def assert_fits_80(text: str) -> None:
    for line in text.splitlines():
        assert len(line) <= 80, line


def test_launch_ls_show(run):
    code, out, err = run(*launch_args("web", "--expose-port", "8000"))
    assert code == 0, err
    assert "Launched web" in out and "hold $30.00" in out and "/service" in out
    assert_fits_80(out)

    c = run.json("show", "web")
    assert c["name"] == "web" and c["replicas"] == 2 and c["hourly_rate"] == "10.000000"
    assert c["endpoint"]["port"] == 8000

    code, out, _ = run("ls")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "STATUS", "REGION"]
    assert lines[1].startswith("web ") and "2x2 H100-80GB" in lines[1] and "$10.00" in lines[1]
    assert_fits_80(out)
    listed = run.json("ls")
    assert [x["name"] for x in listed["clusters"]] == ["web"]

    code, out, _ = run("show", "web")
    assert code == 0
    assert "2 replicas x 2 H100-80GB (4 GPUs)" in out and "$10.00/h" in out
    assert "web-0" in out and "web-1" in out
    assert_fits_80(out)


def test_launch_json_and_the_hold_it_placed(run):
    c = run.json(*launch_args("jsonly", hours="0.333333"))
    assert c["cost"]["hold"] == "3.333330"  # $10/h x 0.333333 h
    ledger = run.json("ledger")["entries"]
    assert ledger[0]["kind"] == "hold" and ledger[0]["amount"] == "3.333330"


def test_refusals_exit_1_with_words(run):
    code, out, err = run(*launch_args("Bad_Name"))
    assert code == 1 and out == ""
    assert "invalid --name" in err
    assert run(*launch_args("web"))[0] == 0
    code, _, err = run(*launch_args("web"))
    assert code == 1 and "Choose another name" in err
    code, _, err = run(*launch_args("huge", replicas="8", gpus="8"))  # 64 > 60 free
    assert code == 1 and "60 of 64 free" in err
    code, _, err = run(*launch_args("long", hours="800"))
    assert code == 1 and "--hours" in err
    code, _, err = run("show", "nosuch")
    assert code == 1 and "refresh" in err
    code, _, err = run("scale", "web", "1", "--yes")
    assert code == 1 and "replicas" in err


def test_402_says_what_is_missing(shared_ecolink_server, monkeypatch, capsys):
    key = shared_ecolink_server.new_account("poor-" + secrets.token_hex(4), "5")
    monkeypatch.setenv("ECO_API_URL", shared_ecolink_server.url)
    monkeypatch.setenv("ECO_API_KEY", key)
    code = cli.main(launch_args("pricey"))  # needs $30
    err = capsys.readouterr().err
    assert code == 1
    assert "Not enough credit" in err and "25.000000" in err


def test_scale_extend(run):
    run(*launch_args("web"))
    c = run.json("scale", "web", "4", "--yes")
    assert c["replicas"] == 4 and c["hourly_rate"] == "20.000000"
    holds = [e for e in run.json("ledger", "--cluster", "web")["entries"] if e["kind"] == "hold"]
    assert holds[0]["memo"].startswith("scale")
    # what the CLI previews is the formula the backend used, at the backend's moment
    placed = costs.usd_to_micros(holds[0]["amount"])
    assert 0 < placed <= 2 * 5_000_000 * 3

    code, out, _ = run("scale", "web", "2", "--yes")
    assert code == 0 and "2 replicas" in out

    before = run.json("show", "web")
    c = run.json("extend", "web", "1.5", "--yes")
    assert wording.parse_time(c["expires_at"]) == costs.add_micro_hours(
        before["expires_at"], 1_500_000
    )
    holds = [e for e in run.json("ledger", "--cluster", "web")["entries"] if e["kind"] == "hold"]
    assert holds[0]["amount"] == "15.000000"  # 1.5 h x $10/h
    code, out, _ = run("extend", "web", "1", "--yes")
    assert code == 0 and "expires" in out


def test_stop_resume_terminate(run):
    run(*launch_args("web"))
    c = run.json("stop", "web", "--yes")
    assert c["status"] in ("stopping", "stopped")
    kinds = [e["kind"] for e in run.json("ledger", "--cluster", "web")["entries"]]
    assert "hold_release" in kinds
    c = run.json("resume", "web", "--yes")
    assert c["status"] in ("pending", "running")
    code, out, _ = run("stop", "web", "--yes")
    assert code == 0 and "web:" in out
    code, out, _ = run("resume", "web", "--yes")
    assert code == 0 and "web:" in out
    c = run.json("terminate", "web", "--yes")
    assert c["status"] in ("terminating", "terminated")
    code, _, err = run("resume", "web", "--yes")
    assert code == 1


def test_restart(run):
    run(*launch_args("web"))
    wait_running(run, "web")
    code, out, err = run("restart", "web", "web-1", "--yes")
    assert code == 0, err
    assert "web-1" in out
    state = run.json("restart", "web", "web-0", "--yes")
    assert state["name"] == "web-0"
    code, out, _ = run("restart", "web", "--yes")
    assert code == 0 and "one at a time" in out
    code, _, err = run("restart", "web", "web-9", "--yes")
    assert code == 1


def test_endpoint(run):
    run(*launch_args("web"))
    ep = run.json("endpoint", "web", "8000", "--yes")
    assert ep["port"] == 8000 and ep["url"].endswith("/service/")
    code, out, _ = run("endpoint", "web", "9000", "--yes")
    assert code == 0
    assert f"{ep['url']} -> port 9000" in out
    assert f'curl {ep["url"]} -H "Authorization: Bearer eco_YOUR_KEY"' in out
    assert run.json("show", "web")["endpoint"] == {"url": ep["url"], "port": 9000}
    code, out, _ = run("endpoint", "web", "--close", "--yes")
    assert code == 0 and "closed" in out
    assert run.json("show", "web")["endpoint"] is None
    code, _, err = run("endpoint", "web", "0", "--yes")
    assert code == 1 and "port" in err


def test_ledger_forms(run):
    run(*launch_args("web"))
    code, out, _ = run("ledger")
    assert code == 0
    assert out.splitlines()[0].split() == [
        "ID",
        "AT",
        "CLUSTER",
        "KIND",
        "AMOUNT",
        "BALANCE",
        "HELD",
    ]
    assert any(" web " in line and "hold" in line and "$30.00" in line for line in out.splitlines())
    assert_fits_80(out)
    entries = run.json("ledger")["entries"]
    assert [e["kind"] for e in entries] == ["hold", "credit"]
    code, out, _ = run("ledger", "--csv")
    assert code == 0
    rows = out.strip().splitlines()
    assert len(rows) == 3 and "hold" in rows[1] and "30.000000" in rows[1]


def test_logs(run, env):
    run(*launch_args("web"))
    wait_running(run, "web")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        code, out, err = run("logs", "web", "web-1", "--tail", "5")
        assert code == 0, err
        if "hello-from-web-1" in out:
            break
        time.sleep(0.2)
    assert "hello-from-web-1" in out
    code, _, err = run("logs", "web", "web-7")
    assert code == 1

    # -f keeps streaming until interrupted
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecotui", "logs", "web", "web-0", "-f"],
        env=subprocess_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        first = proc.stdout.readline()
        assert b"hello-from-web-0" in first
        time.sleep(0.3)
        assert proc.poll() is None  # still following
    finally:
        proc.kill()
        proc.wait(10)


def test_exec_streams_and_exit_code(run, env):
    run(*launch_args("web"))
    wait_running(run, "web")
    p = ecotui(
        env, "exec", "web", "web-0", "--", "sh", "-c", "echo to-out; echo to-err >&2; exit 3"
    )
    assert p.returncode == 3, p.stderr
    assert p.stdout == b"to-out\n"
    assert b"to-err" in p.stderr
    p = ecotui(env, "exec", "web", "web-1", "--", "printenv", "ECO_REPLICA_NAME")
    assert p.returncode == 0 and p.stdout.strip() == b"web-1"
    p = ecotui(env, "exec", "-i", "web", "web-0", "--", "tr", "a-z", "A-Z", input=b"hello\n")
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"HELLO\n"
    p = ecotui(env, "exec", "web", "web-9", "--", "true")
    assert p.returncode == 1 and b"ecotui:" in p.stderr


def test_confirmations_refuse_without_a_terminal_and_change_nothing(run, env):
    run(*launch_args("web"))
    p = ecotui(env, "terminate", "web")
    assert p.returncode == 2 and b"--yes" in p.stderr
    p = ecotui(env, "scale", "web", "5")
    assert p.returncode == 2
    after = run.json("show", "web")
    assert after["status"] in ("pending", "running") and after["replicas"] == 2


def test_terminate_asks_for_the_name_on_a_terminal(run, env):
    run(*launch_args("web"))
    for answer, code in ((b"nope\n", 2), (b"web\n", 0)):
        p = pty_run(env, ["terminate", "web"], answer)
        assert p.returncode == code, p.stderr
        assert b"cannot be undone" in p.stderr
        status = run.json("show", "web")["status"]
        assert (status in ("terminating", "terminated")) == (code == 0)


def pty_run(env, argv: list[str], answer: bytes) -> subprocess.CompletedProcess:
    """Run ecotui with a terminal on stdin, answering its question."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ecotui", *argv],
            env=subprocess_env(env),
            stdin=follower,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        os.write(leader, answer)
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(leader)
        os.close(follower)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_launch_and_scale_say_what_they_hold_before_asking(run, env):
    argv = [a for a in launch_args("web") if a != "--yes"]
    p = pty_run(env, argv, b"n\n")
    assert p.returncode == 2, p.stderr
    said = b" ".join(p.stderr.split())
    assert b"places a hold of $30.00" in said and b"Proceed? [y/N]" in said
    assert run.json("ls")["clusters"] == []
    p = pty_run(env, argv, b"y\n")
    assert p.returncode == 0, p.stderr
    assert b"Launched web" in p.stdout
    p = pty_run(env, ["scale", "web", "3"], b"y\n")
    assert p.returncode == 0, p.stderr
    said = b" ".join(p.stderr.split())
    assert b"Additional hold about $14.99" in said and b"New rate $15.00/h" in said
    p = pty_run(env, ["scale", "web", "2"], b"y\n")
    assert p.returncode == 0 and b"refunds nothing" in b" ".join(p.stderr.split())
