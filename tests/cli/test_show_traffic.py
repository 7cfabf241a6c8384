"""`ecotui show` says the service URL's traffic; `--json` carries the backend's field."""

from __future__ import annotations

import re
import time

import httpx


def test_show_prints_the_traffic_line(run, env):
    code, _, err = run(
        "launch",
        "--name",
        "traffic",
        "--region",
        "us-east",
        "--gpu-type",
        "H100-80GB",
        "--gpu-count",
        "1",
        "--replicas",
        "2",
        "--image",
        "busybox:1",
        "--hours",
        "1",
        "--expose-port",
        "8080",
        "--yes",
    )
    assert code == 0, err
    deadline = time.monotonic() + 30
    c = run.json("show", "traffic")
    while c["ready_replicas"] < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        c = run.json("show", "traffic")
    assert c["ready_replicas"] == 2, c
    code, out, _ = run("show", "traffic")
    line = next(ln for ln in out.splitlines() if ln.startswith("  traffic"))
    assert re.fullmatch(
        r"  traffic      (— req/s|0 req/s · 5xx 0/s · direct · 0 in flight)", line
    ), line
    with httpx.Client(headers={"Authorization": f"Bearer {env['ECO_API_KEY']}"}) as client:
        while time.monotonic() < deadline:
            assert client.get(c["endpoint"]["url"] + "x").status_code == 200
            c = run.json("show", "traffic")
            if (c["traffic"] or {}).get("requests_per_s"):
                break
            time.sleep(0.05)
    assert c["traffic"]["requests_per_s"] > 0 and c["traffic"]["path"] == "local", c["traffic"]
    code, out, _ = run("show", "traffic")
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("  traffic"))
    m = re.fullmatch(r"  traffic      (\S+) req/s · 5xx 0/s · direct · \d+ in flight", line)
    assert m and float(m.group(1)) > 0, line
