"""The service URL's traffic in the dashboard against a real `ecolink serve` (local
runtime): requests sent through the URL show up in the cluster and clusters views."""

from __future__ import annotations

import asyncio
import re

import httpx

from support.tui_helpers import (
    launch_body,
    live_app,
    replica_columns,
    row_text,
    screen_text,
    wait_for,
    wait_for_text,
)

# A cluster row's req/s and 5xx cells follow its GPU health cell, whatever the
# health is (the simulated GPUs of a shared server may carry another test's fault):
# a word with an optional count, then the two traffic cells.
TRAFFIC = re.compile(r"(?:✓ ok|▲ degr|✖ fail|\? unkn)(?: [2-9+])?\s{2,}(\S+)\s+(\S+)")


def _rate(text: str) -> float:
    value = text.strip()
    return float(value[:-1]) * 1000 if value.endswith("k") else float(value)


async def test_requests_through_the_url_show_in_the_views(ecolink_server, api):
    # No startup command: each replica serves HTTP on the exposed port.
    r = api.post(
        "/gpu-clusters", json=launch_body("served", replicas=2, command=None, expose={"port": 8080})
    )
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    app = live_app(ecolink_server.url, ecolink_server.key)
    stop = asyncio.Event()
    sent = 0

    async def load() -> None:
        # Requests through the public URL, with the account's key, until the test is done.
        nonlocal sent
        async with httpx.AsyncClient(
            base_url=ecolink_server.url, headers={"Authorization": f"Bearer {ecolink_server.key}"}
        ) as client:
            while not stop.is_set():
                answer = await client.get(f"/gpu-clusters/{cid}/service/hello")
                if answer.status_code == 200:
                    sent += 1
                await asyncio.sleep(0.02)

    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(
            pilot, lambda: "2/2" in row_text(app, "served"), timeout=30, what="served ready 2/2"
        )
        # Before any request: the traffic is unknown or a known 0, never a made-up rate.
        cells = TRAFFIC.search(row_text(app, "served"))
        assert cells is not None and cells.groups() in (("—", "—"), ("0", "0")), row_text(
            app, "served"
        )
        title_re = re.compile(r"Replicas · (\S+) req/s")
        task = asyncio.create_task(load())
        try:
            await pilot.press("enter")
            await wait_for_text(pilot, "served-1", timeout=20)

            def title_rate() -> float:
                m = title_re.search(screen_text(app))
                return _rate(m.group(1)) if m and m.group(1) != "—" else 0.0

            await wait_for(
                pilot,
                lambda: sent > 0 and title_rate() > 0,
                timeout=30,
                what="a nonzero request rate in the cluster view",
            )
            text = screen_text(app)
            assert "· direct ·" in text  # the local runtime: the front dials the replicas
            # Each replica's row has its own count (least-outstanding spreads the load).
            await wait_for(
                pilot,
                lambda: any(
                    replica_columns(app, n, ("req/s",))["req/s"] not in ("—", "0")
                    for n in ("served-0", "served-1")
                ),
                timeout=15,
                what="a replica's req/s",
            )
            p99 = [replica_columns(app, n, ("p99",))["p99"] for n in ("served-0", "served-1")]
            assert any(v.endswith("s") for v in p99), p99  # "4.2ms": measured
            # The clusters view: the row's req/s (summaries every few seconds).
            await pilot.press("escape")

            def row_rate() -> float:
                m = TRAFFIC.search(row_text(app, "served"))
                return _rate(m.group(1)) if m and m.group(1) != "—" else 0.0

            await wait_for(
                pilot, lambda: row_rate() > 0, timeout=20, what="a nonzero req/s in the row"
            )
            m = TRAFFIC.search(row_text(app, "served"))
            assert m is not None and m.group(2) == "0", "no 5xx"
        finally:
            stop.set()
            await task
        assert sent > 0
