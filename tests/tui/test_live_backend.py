"""The dashboard against a real `ecolink serve` (local runtime): what each view shows
as the live feed changes."""

from __future__ import annotations

import asyncio

from ecotui.app import EcoApp
from support.tui_helpers import (
    Connection,
    launch_body,
    live_app,
    row_text,
    screen_text,
    wait_for,
    wait_for_text,
)


async def test_clusters_view_shows_a_launched_cluster_live(ecolink_server, api):
    # The app as `ecotui` builds it: only a connection (URL and key).
    app = EcoApp(Connection(ecolink_server.url, ecolink_server.key), refresh_hz=20)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for_text(pilot, "● connected")
        assert "0 clusters" in screen_text(app)
        r = api.post("/gpu-clusters", json=launch_body("web-a", replicas=2))
        assert r.status_code == 201, r.text
        await wait_for(
            pilot, lambda: "2/2" in row_text(app, "web-a"), timeout=20, what="web-a ready 2/2"
        )
        row = row_text(app, "web-a")
        assert "● running" in row
        assert "us-east" in row and "H100-80GB×1" in row
        assert "$5.00/h" in row  # 2 replicas x 1 GPU x $2.50
        # The countdown is live: about an hour from launch.
        assert "59m" in row or "1h 00m" in row
        assert "telemetry: simulated" in screen_text(app)


async def test_replica_goes_pending_with_its_reason(ecolink_server, api):
    app = live_app(ecolink_server.url, ecolink_server.key)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for_text(pilot, "● connected")
        r = api.post("/gpu-clusters", json=launch_body("crashy", replicas=2, command="exit 3"))
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        await wait_for(pilot, lambda: "crashy" in screen_text(app), what="row")
        await pilot.press("enter")
        # The replicas table shows the pending phase with the runtime's reason.
        await wait_for_text(pilot, "◌ Pending", timeout=20)
        await wait_for_text(pilot, "CrashLoopBackOff", timeout=20)
        # Crash-looping is an alert in words (alert bar) and the events log says why.
        await wait_for(
            pilot, lambda: "crash-looping" in screen_text(app), timeout=30, what="crash-loop alert"
        )
        assert "exited with code 3" in screen_text(app)
        assert app.model.replicas.get(cid), "the cluster view focused the cluster"


async def test_connection_drops_and_returns(ecolink_server, api):
    r = api.post("/gpu-clusters", json=launch_body("steady", replicas=2))
    assert r.status_code == 201, r.text
    app = live_app(ecolink_server.url, ecolink_server.key)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_for(
            pilot,
            lambda: "steady" in screen_text(app) and "● connected" in screen_text(app),
            what="connected with the cluster",
        )
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.model.gpu_history.get(r.json()["id"]), what="GPU history")
        metrics_before = app.model.snapshots
        await asyncio.to_thread(ecolink_server.kill)
        await wait_for_text(pilot, "↻ reconnecting", timeout=10)
        assert "data stale" in screen_text(app)
        # The last known cluster is still shown while reconnecting.
        assert "steady" in screen_text(app)
        await asyncio.to_thread(ecolink_server.restart)
        await wait_for_text(pilot, "● connected", timeout=20)
        assert app.model.snapshots == metrics_before + 1
        assert "steady" in screen_text(app)


async def test_cluster_expires_with_alert_then_terminated(ecolink_server, api):
    app = live_app(ecolink_server.url, ecolink_server.key)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for_text(pilot, "● connected")
        r = api.post("/gpu-clusters", json=launch_body("brief", replicas=2, hours="0.01"))
        assert r.status_code == 201, r.text
        # 36 seconds to live: the 5-minute alert stands out in words at once.
        await wait_for_text(pilot, "brief expires in", timeout=10)
        assert "✖ ALERT Expiring soon" in screen_text(app)
        assert any(n.title == "Expiring soon" for n in app._notifications)
        row = row_text(app, "brief")
        assert row.lstrip().startswith("✖")
        # Then the backend expires it and the row says so; the alert goes away.
        await wait_for(
            pilot,
            lambda: "terminated" in row_text(app, "brief"),
            timeout=90,
            what="brief terminated",
        )
        await wait_for(
            pilot,
            lambda: "brief expires in" not in screen_text(app),
            timeout=5,
            what="expiry alert cleared",
        )
        assert app.model.clusters[r.json()["id"]]["status_reason"] == "expired"


async def test_logs_view_follows_and_shows_the_previous_run(ecolink_server, api):
    cmd = "echo run-start; for i in 1 2 3; do echo line-$i; done; sleep 1; echo bye; exit 3"
    r = api.post("/gpu-clusters", json=launch_body("talky", replicas=2, command=cmd))
    assert r.status_code == 201, r.text
    app = live_app(ecolink_server.url, ecolink_server.key)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_for(pilot, lambda: "talky" in screen_text(app), what="row")
        await pilot.press("l")
        await wait_for_text(pilot, "line-3", timeout=20)
        assert "logs of talky-" in screen_text(app)
        assert "following" in screen_text(app)
        await pilot.press("f")
        await wait_for_text(pilot, "paused")
        await pilot.press("slash")
        await pilot.press(*"line-2")
        await pilot.press("enter")
        await wait_for_text(pilot, "“line-2” 1/")
        # The run before the last restart (the replica exits with 3 and is started again;
        # its next run has begun once it is Running after a restart).
        await wait_for(
            pilot,
            lambda: any(
                s.get("restarts", 0) >= 1 and s.get("phase") == "Running"
                for s in app.model.find("talky")["replica_states"]
                if s["name"] == app.screen.replica
            ),
            timeout=30,
            what="a restart",
        )
        await pilot.press("v")
        await wait_for_text(pilot, "previous run")
        await wait_for_text(pilot, "bye", timeout=10)


async def test_account_view_shows_balances_and_the_ledger(ecolink_server, api, tmp_path):
    r = api.post("/gpu-clusters", json=launch_body("payer", replicas=2))
    assert r.status_code == 201, r.text
    app = live_app(ecolink_server.url, ecolink_server.key, export_dir=tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for_text(pilot, "payer")
        await pilot.press("a")
        await wait_for_text(pilot, "Ledger (newest first)")
        await wait_for_text(pilot, "hold")
        text = screen_text(app)
        assert "balance $10,000.00" in text
        assert "held $5.00" in text  # 1 h x $5.00/h
        assert "available $9,995.00" in text
        assert "-$5.00" in text and "payer" in text  # the hold takes $5.00 from available
        await pilot.press("x")
        await wait_for_text(pilot, "Export the ledger as CSV")
        await pilot.press("enter")
        await wait_for(pilot, lambda: list(tmp_path.glob("ecotui-ledger-*.csv")), what="CSV file")
        csv_text = next(tmp_path.glob("ecotui-ledger-*.csv")).read_text()
        assert "hold" in csv_text and "5.000000" in csv_text


async def test_a_refused_key_is_said_in_words(ecolink_server):
    app = live_app(ecolink_server.url, "eco_not_a_key")
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_for_text(pilot, "✖ API key refused (401)")
