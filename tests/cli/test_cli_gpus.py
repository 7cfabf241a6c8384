"""`ecotui gpus` and the health line of `ecotui show`, against a real backend (local
runtime, simulated telemetry): rows, JSON, the unhealthy filter, a wrong name."""

from __future__ import annotations

import json
import secrets
import time

import pytest

from ecotui import cli
from ecotui.cli_gpus import health_summary, render_gpus


@pytest.fixture
def run(shared_ecolink_server, monkeypatch, tmp_path, capsys):
    key = shared_ecolink_server.new_account("gpus-" + secrets.token_hex(4), "10000")
    monkeypatch.setenv("ECO_API_URL", shared_ecolink_server.url)
    monkeypatch.setenv("ECO_API_KEY", key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))

    def call(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    yield call
    with shared_ecolink_server.client(key) as api:
        for c in api.get("/gpu-clusters").json()["clusters"]:
            api.delete(f"/gpu-clusters/{c['id']}")


def launch(run, name: str) -> None:
    code, _, err = run(
        "launch",
        "--name",
        name,
        "--region",
        "us-east",
        "--gpu-type",
        "H100-80GB",
        "--gpu-count",
        "2",
        "--replicas",
        "2",
        "--image",
        "busybox:1",
        "--hours",
        "1",
        "--startup-command",
        "sleep infinity",
        "--yes",
    )
    assert code == 0, err


def wait_gpus(run, name: str, n: int, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, out, err = run("gpus", name, "--json")
        assert code == 0, err
        rows = json.loads(out)["gpus"]
        if len(rows) >= n:
            return rows
        time.sleep(0.5)
    raise AssertionError(f"{name}: fewer than {n} GPUs after {timeout} s")


def test_gpus_lists_every_gpu_with_health_and_nothing_else(run):
    launch(run, "gpu-a")
    launch(run, "gpu-b")
    rows = wait_gpus(run, "gpu-a", 4)
    assert {r["cluster"] for r in rows} == {"gpu-a"}
    assert sorted((r["replica"], r["index"]) for r in rows) == [
        ("gpu-a-0", 0),
        ("gpu-a-0", 1),
        ("gpu-a-1", 0),
        ("gpu-a-1", 1),
    ]
    for r in rows:
        h = r["health"]
        assert h["verdict"] in ("ok", "degraded", "failing")
        # The simulation gives every reading; each GPU's process is mapped to its replica.
        assert h["ecc_dbe_volatile"] == 0 and h["nvlink_links"] == 18
        assert [p["replica"] for p in h["processes"]] == [r["replica"]]
    wait_gpus(run, "gpu-b", 4)
    code, out, _ = run("gpus", "--json")
    body = json.loads(out)
    assert code == 0 and {r["cluster"] for r in body["gpus"]} == {"gpu-a", "gpu-b"}
    assert body["health"]["verdict"] in ("ok", "degraded", "failing")

    code, out, _ = run("gpus", "gpu-a")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["HEALTH", "CLUSTER/REPLICA", "GPU"]
    assert all(len(line) <= 80 for line in lines)
    assert "4 GPUs:" in out

    code, out, _ = run("gpus", "--unhealthy", "--json")
    assert code == 0
    assert all(r["health"]["verdict"] in ("degraded", "failing") for r in json.loads(out)["gpus"])

    code, out, _ = run("show", "gpu-a")
    assert code == 0 and "gpu health" in out


def test_gpus_of_an_unknown_cluster_is_refused(run):
    code, _, err = run("gpus", "no-such-cluster")
    assert code == 1
    assert "no-such-cluster" in err


def test_render_shows_failing_first_with_readings_and_unknowns():
    rows = [
        {
            "cluster": "web",
            "replica": "web-0",
            "index": 0,
            "utilization": 50,
            "memory_used_mib": 1024,
            "memory_total_mib": 81920,
            "temperature_c": 60,
            "health": {"verdict": "ok", "reason": None},
        },
        {
            "cluster": "web",
            "replica": "web-1",
            "index": 1,
            "utilization": 0,
            "memory_used_mib": 0,
            "memory_total_mib": 81920,
            "temperature_c": 30,
            "health": {
                "verdict": "failing",
                "reason": "XID 79: GPU has fallen off the bus",
                "xid_events": [{"code": 79, "at": 1772366400.0}],
                "ecc_dbe_volatile": None,
            },
        },
    ]
    out = render_gpus(rows, detail=True)
    table = out.splitlines()
    assert table[1].startswith("✖ failing") and "web/web-1" in table[1]
    assert "1 failing, 0 degraded, 0 unknown, 1 ok" in out
    assert "79 at 2026-03-01 12:00:00Z: GPU has fallen off the bus" in out
    assert "ECC double-bit  volatile unknown, aggregate unknown" in out
    detail = out.split("\n\n", 1)[1]
    assert "width unknown of unknown" in detail
    assert "volatile 0" not in detail and "gen 0" not in detail


def test_show_health_line_in_words():
    c = {
        "status": "running",
        "gpu_summary": {
            "gpus": 8,
            "health": {
                "verdict": "degraded",
                "reason": "thermal throttling for 6m00s",
                "failing": 0,
                "degraded": 1,
            },
        },
    }
    assert health_summary(c) == "▲ degraded (1 degraded of 8 GPUs): thermal throttling for 6m00s"
    assert health_summary({"status": "stopped", "gpu_summary": {}}) is None
