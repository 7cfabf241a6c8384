"""`ecotui run` against a real backend (`ecolink serve`, local runtime): the output
folded by identity, exit codes per replica, --replicas, --timeout and --json."""

from __future__ import annotations

import json
import secrets
import time

import pytest

from ecotui import cli
from support.tools_helpers import account_env, end_clusters, launch_ready


@pytest.fixture
def env(shared_ecolink_server, monkeypatch, tmp_path):
    e = account_env(shared_ecolink_server, monkeypatch, tmp_path, "run")
    yield shared_ecolink_server, e["ECO_API_KEY"]
    end_clusters(shared_ecolink_server, e["ECO_API_KEY"])


def call(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


SCRIPT = (
    'echo "driver 550"; if [ "$ECO_REPLICA_INDEX" = 6 ]; then echo "gpu 1 lost"; '
    'exit 4; fi; echo "gpu 1 ok"'
)


def test_output_folded_with_diff_and_exit_codes(env, capsys):
    server, key = env
    launch_ready(server, key, "demo", 8)
    code, out, err = call(capsys, "run", "demo", "--", "sh", "-c", SCRIPT)
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0] == "=== demo-0..5,7 (7 replicas) · exit 0"
    assert lines[1:3] == ["driver 550", "gpu 1 ok"]
    assert "=== demo-6 (1 replica) · exit 4 · differs from the majority" in lines
    assert "-gpu 1 ok" in lines and "+gpu 1 lost" in lines
    assert out.count("driver 550") == 2  # the majority in full, once more as diff context
    assert lines[-2:] == ["exit 0: demo-0..5,7 (7 replicas)", "exit 4: demo-6 (1 replica)"]

    # all succeed: exit 0, one group
    code, out, err = call(
        capsys, "run", "demo", "--replicas", "0-2,7", "--", "printenv", "ECO_CLUSTER_NAME"
    )
    assert code == 0, out + err
    assert out.splitlines()[:2] == ["=== demo-0..2,7 (4 replicas) · exit 0", "demo"]
    assert "differs" not in out


def test_json_one_object_per_replica(env, capsys):
    server, key = env
    launch_ready(server, key, "js", 3)
    code, out, err = call(
        capsys,
        "run",
        "js",
        "--json",
        "--",
        "sh",
        "-c",
        "echo $ECO_REPLICA_NAME; echo e >&2; exit $ECO_REPLICA_INDEX",
    )
    assert code == 1
    objs = json.loads(out)
    assert [(o["name"], o["exit_code"], o["stdout"], o["stderr"]) for o in objs] == [
        ("js-0", 0, "js-0\n", "e\n"),
        ("js-1", 1, "js-1\n", "e\n"),
        ("js-2", 2, "js-2\n", "e\n"),
    ]
    assert all(isinstance(o["duration"], float) and o["duration"] >= 0 for o in objs)


def test_timeout_ends_the_command_everywhere_and_says_where(env, capsys):
    server, key = env
    launch_ready(server, key, "slow", 3)
    marker = "tmo-" + secrets.token_hex(3)
    code, out, err = call(
        capsys,
        "run",
        "slow",
        "--timeout",
        "1.5",
        "--",
        "sh",
        "-c",
        f'[ "$ECO_REPLICA_INDEX" = 0 ] && exit 0; sleep 1000; echo {marker}',
    )
    assert code == 1
    assert "timed out: slow-1,2 (2 replicas)" in out
    assert "exit 0: slow-0 (1 replica)" in out
    assert "timed out after 1.5 s and ended: slow-1, slow-2" in err
    # the sleeps are gone from the replicas
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        code, out, _ = call(
            capsys,
            "run",
            "slow",
            "--",
            "sh",
            "-c",
            f"ps -eo args | grep -c '[{marker[0]}]{marker[1:]}' || true",
        )
        if code == 0 and set(out.splitlines()[1:2]) == {"0"}:
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"the timed-out commands still run: {out}")


def test_bad_input(env, capsys):
    server, key = env
    launch_ready(server, key, "bad", 2)
    code, _, err = call(capsys, "run", "nope", "--", "true")
    assert code == 1 and "nope" in err
    code, _, err = call(capsys, "run", "bad", "--replicas", "bad-7", "--", "true")
    assert code == 1 and "no replica 'bad-7'" in err and "bad-0, bad-1" in err
    code, _, err = call(capsys, "run", "bad")
    assert code == 2 and "needs a command" in err
    code, _, err = call(capsys, "run", "bad", "--timeout", "0", "--", "true")
    assert code == 2
    code, out, err = call(capsys, "run", "bad", "--", "no-such-program-xyz")
    assert code == 1 and "exit 127: bad-0,1 (2 replicas)" in out
