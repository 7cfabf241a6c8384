"""The dialogs against a real backend (`ecolink serve`, local runtime): the hold a
dialog previews is the hold the backend then places, to the micro-dollar, when
computed for the same moment; refusals land on the right field; cancel changes
nothing.

"The same moment": the backend places a time-dependent hold (scale up, resume)
at its own clock's time, which is the hold entry's `at`. A second dialog on the
same cluster, its clock set to that instant, must preview exactly that amount.
"""

from __future__ import annotations

import secrets
from datetime import UTC
from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.widgets import Input, Static

from ecocore.clock import FakeClock, SystemClock
from ecocore.wire import EndpointOut, LedgerEntryOut
from ecotui import costs, dialogs, wording
from ecotui.client.rest import EcoClient


class Host(App[None]):
    def __init__(self, client: EcoClient, clock: Any = None) -> None:
        super().__init__()
        self.client = client
        self.clock = clock or SystemClock()
        self.tz = UTC
        self.results: list[Any] = []

    def compose(self) -> ComposeResult:
        yield Static("host")


@pytest.fixture
def account(shared_ecolink_server):
    """(url, key) of a new account with $10,000 on the shared backend."""
    key = shared_ecolink_server.new_account("acct-" + secrets.token_hex(4), "10000")
    yield shared_ecolink_server.url, key
    # End this account's replicas now rather than all at once at server shutdown.
    with shared_ecolink_server.client(key) as api:
        for c in api.get("/gpu-clusters").json()["clusters"]:
            api.delete(f"/gpu-clusters/{c['id']}")


@pytest.fixture
def poor_account(shared_ecolink_server):
    key = shared_ecolink_server.new_account("poor-" + secrets.token_hex(4), "20")
    return shared_ecolink_server.url, key


async def settle(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def launch_via_api(client: EcoClient, name: str = "web", **kw: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "region": "us-east",
        "gpu_type": "H100-80GB",
        "gpu_count": 2,
        "replicas": 2,
        "image": "busybox",
        "estimated_duration_hours": "3",
        "startup_command": "sleep infinity",
    }
    body.update(kw)
    return await client.launch(body)


async def holds(client: EcoClient, cluster_id: str) -> list[LedgerEntryOut]:
    return [e for e in await client.ledger(cluster_id=cluster_id) if e.kind == "hold"]


async def click(pilot, selector: str) -> None:
    """Click a button; a Button ignores clicks during its 0.2 s pressed look, so wait
    that out first (the backend answers faster than that). Pending input changes are
    handled first: clearing a field's error moves the buttons."""
    await settle(pilot)
    button = pilot.app.screen.query_one(selector)
    while button.has_class("-active"):
        await pilot.pause(0.05)
    await pilot.click(selector)


def status_text(d: Any) -> str:
    return str(d.query_one("#status", Static).render())


async def test_launch_preview_is_the_hold_placed(account):
    url, key = account
    async with EcoClient(url, key) as client:
        before = costs.usd_to_micros((await client.account()).available)
        app = Host(client)
        async with app.run_test(size=(80, 30)) as pilot:
            d = dialogs.open_launch(app, app.results.append)
            await settle(pilot)
            d.query_one("#name", Input).value = "inference-a"
            d.query_one("#gpu_type").value = "A100-80GB"  # $1.60/GPU-h
            await settle(pilot)
            d.query_one("#gpu_count").value = 1
            d.query_one("#replicas", Input).value = "3"
            d.query_one("#image", Input).value = "ghcr.io/acme/infer:1"
            # $4.80/h x 0.333333 h = 1.5999984 -> the hold rounds up to 1.599999
            d.query_one("#hours", Input).value = "0.333333"
            d.query_one("#startup_command", Input).value = "sleep infinity"
            await settle(pilot)
            preview = d.preview
            assert preview is not None
            assert preview.hourly_rate == 4_800_000
            assert preview.hold == 1_599_999
            assert preview.available == before
            assert "Hold $1.60 for" in str(d.query_one("#preview", Static).render())  # cents
            await click(pilot, "#confirm")
            await settle(pilot)
            assert app.screen is not d
        (cluster,) = app.results
        (hold,) = await holds(client, cluster.id)
        assert costs.usd_to_micros(hold.amount) == preview.hold
        after = costs.usd_to_micros((await client.account()).available)
        assert after == preview.left
        assert cluster.startup_command == "sleep infinity"
        assert d.sent[0][2]  # an Idempotency-Key was sent


async def test_scale_up_preview_is_the_hold_placed_at_that_moment(account):
    url, key = account
    async with EcoClient(url, key) as client:
        c = await launch_via_api(client, gpu_count=2, replicas=2, estimated_duration_hours="2.5")
        app = Host(client)
        async with app.run_test(size=(80, 24)) as pilot:
            d = dialogs.open_scale(app, c, app.results.append)
            await settle(pilot)
            d.query_one("#replicas", Input).value = "5"
            await settle(pilot)
            shown = d.preview_hold
            assert shown and f"{wording.usd(shown)}" in str(
                d.query_one("#preview", Static).render()
            )
            await click(pilot, "#confirm")
            await settle(pilot)
            assert app.screen is not d
            hold = (await holds(client, c.id))[0]  # newest first
            assert hold.memo.startswith("scale")
            placed = costs.usd_to_micros(hold.amount)
            at = wording.parse_time(hold.at)

            # The same dialog for the same cluster, its clock at the hold's instant.
            app.clock = FakeClock(at)
            d2 = dialogs.open_scale(app, c)
            await settle(pilot)
            d2.query_one("#replicas", Input).value = "5"
            await settle(pilot)
            assert d2.preview_hold == placed
            await pilot.press("escape")
        # The preview a moment earlier was a little more (less time was left later).
        per_second = 3 * 5_000_000 // 3600 + 1
        assert placed <= shown <= placed + per_second * 30
        assert app.results[0].replicas == 5


async def test_resume_preview_is_the_hold_placed_at_that_moment(account):
    url, key = account
    async with EcoClient(url, key) as client:
        c = await launch_via_api(client, estimated_duration_hours="1.5")
        c = await client.stop(c.id)
        assert c.status in ("stopping", "stopped")
        c = await client.cluster(c.id)
        app = Host(client)
        async with app.run_test(size=(80, 24)) as pilot:
            d = dialogs.open_resume(app, c, app.results.append)
            await settle(pilot)
            assert "New hold" in str(d.query_one("#preview", Static).render())
            await click(pilot, "#confirm")
            await settle(pilot)
            assert app.screen is not d
            hold = (await holds(client, c.id))[0]
            assert hold.memo.startswith("resume")
            app.clock = FakeClock(wording.parse_time(hold.at))
            d2 = dialogs.open_resume(app, c)
            await settle(pilot)
            assert d2.preview_hold == costs.usd_to_micros(hold.amount)
            await pilot.press("escape")


async def test_extend_preview_is_the_hold_placed(account):
    url, key = account
    async with EcoClient(url, key) as client:
        c = await launch_via_api(client)  # $10/h
        app = Host(client)
        async with app.run_test(size=(80, 24)) as pilot:
            d = dialogs.open_extend(app, c, app.results.append)
            await settle(pilot)
            d.query_one("#hours", Input).value = "1.2345678"  # 7 places: backend refuses
            await settle(pilot)
            await click(pilot, "#confirm")
            await settle(pilot)
            assert d.field_error("hours")  # refused, on the hours field
            assert app.screen is d
            d.query_one("#hours", Input).value = "0.123457"
            await settle(pilot)
            assert d.field_error("hours") is None
            shown = d.preview_hold
            assert shown == 1_234_570
            new_expiry = costs.add_micro_hours(c.expires_at, 123_457)
            assert wording.local_time_text(new_expiry, UTC, now=app.clock.now()) in str(
                d.query_one("#preview", Static).render()
            )
            await click(pilot, "#confirm")
            await settle(pilot)
            assert app.screen is not d
        hold = (await holds(client, c.id))[0]
        assert hold.memo.startswith("extend")
        assert costs.usd_to_micros(hold.amount) == shown
        assert wording.parse_time(app.results[0].expires_at) == new_expiry


async def test_launch_refusals_land_on_their_fields(account):
    url, key = account
    async with EcoClient(url, key) as client:
        await launch_via_api(client, name="taken")
        app = Host(client)
        async with app.run_test(size=(80, 30)) as pilot:
            d = dialogs.open_launch(app, app.results.append)
            await settle(pilot)
            d.query_one("#image", Input).value = "busybox"
            d.query_one("#name", Input).value = "Not_A_Label"
            await settle(pilot)
            await click(pilot, "#confirm")
            await settle(pilot)
            assert d.refusal is not None and d.refusal.status == 422
            assert "DNS label" in (d.field_error("name") or "")  # in words, not the regex
            assert d.query_one("#name").has_class("field-invalid")

            d.query_one("#name", Input).value = "taken"
            d.query_one("#hours", Input).value = "721"
            await settle(pilot)
            assert d.field_error("name") is None  # edited: the mark goes
            await click(pilot, "#confirm")
            await settle(pilot)
            assert "720" in (d.field_error("hours") or "")

            d.query_one("#hours", Input).value = "1"
            await settle(pilot)
            await click(pilot, "#confirm")
            await settle(pilot)
            assert d.refusal.status == 409
            assert "taken" in (d.field_error("name") or "")
            assert "Choose another name" in status_text(d)

            # Over the region's budget (us-east: 64 GPUs; 4 in use): 409, says what is free.
            d.query_one("#name", Input).value = "huge"
            d.query_one("#gpu_count").value = 8
            d.query_one("#replicas", Input).value = "8"
            await settle(pilot)
            assert "2 to 7 (60 GPUs free)" in str(d.query_one("#replicas-hint", Static).render())
            await click(pilot, "#confirm")
            await settle(pilot)
            assert d.refusal.status == 409
            assert "60 of 64 free" in status_text(d)
            assert app.screen is d
        assert [c.name for c in await client.clusters()] == ["taken"]


async def test_402_says_how_much_is_missing(poor_account):
    url, key = poor_account  # $20
    async with EcoClient(url, key) as client:
        app = Host(client)
        async with app.run_test(size=(80, 30)) as pilot:
            d = dialogs.open_launch(app)
            await settle(pilot)
            d.query_one("#name", Input).value = "pricey"
            d.query_one("#image", Input).value = "busybox"
            d.query_one("#gpu_count").value = 4
            d.query_one("#hours", Input).value = "2"
            await settle(pilot)
            assert d.preview.hold == 40_000_000 and d.preview.short_by == 20_000_000
            assert "short by $20.00" in str(d.query_one("#preview", Static).render())
            await click(pilot, "#confirm")
            await settle(pilot)
            assert d.refusal is not None and d.refusal.status == 402
            text = status_text(d)
            assert (
                "Not enough credit" in text and "$20.00 missing" in text
            )  # cents, not micro-dollars
        assert await client.clusters() == []


async def test_cancel_changes_nothing(account):
    url, key = account
    async with EcoClient(url, key) as client:
        c = await launch_via_api(client)
        ledger_before = await client.ledger()
        app = Host(client)
        async with app.run_test(size=(80, 24)) as pilot:
            for opener in (
                dialogs.open_scale,
                dialogs.open_extend,
                dialogs.open_stop,
                dialogs.open_terminate,
                dialogs.open_endpoint,
            ):
                d = opener(app, c)
                await settle(pilot)
                for inp in d.query(Input):
                    inp.value = "7" if inp.id != "confirm_name" else "web"
                await settle(pilot)
                await pilot.press("escape")
                await settle(pilot)
                assert app.screen is not d
        after = await client.cluster(c.id)
        assert await client.ledger() == ledger_before
        assert after.replicas == c.replicas and after.expires_at == c.expires_at
        assert after.endpoint is None and after.status in ("pending", "running")


async def test_stop_releases_and_terminate_after_typing_the_name(account):
    url, key = account
    async with EcoClient(url, key) as client:
        c = await launch_via_api(client)
        app = Host(client)
        async with app.run_test(size=(80, 24)) as pilot:
            d = dialogs.open_stop(app, c, app.results.append)
            await settle(pilot)
            await click(pilot, "#confirm")
            await settle(pilot)
            stopped = app.results[-1]
            assert stopped.status in ("stopping", "stopped")
            kinds = [e.kind for e in await client.ledger(cluster_id=c.id)]
            assert "hold_release" in kinds

            d = dialogs.open_terminate(app, stopped, app.results.append)
            await settle(pilot)
            await pilot.press(*"web")
            await settle(pilot)
            await pilot.press("enter")
            await settle(pilot)
            assert app.screen is not d
        assert app.results[-1].status in ("terminating", "terminated")
        assert (await client.cluster(c.id)).status in ("terminating", "terminated")


async def test_endpoint_open_change_port_close(account):
    url, key = account
    async with EcoClient(url, key) as client:
        c = await launch_via_api(client)
        app = Host(client)
        async with app.run_test(size=(80, 24)) as pilot:
            d = dialogs.open_endpoint(app, c, app.results.append)
            await settle(pilot)
            d.query_one("#port", Input).value = "70000"
            await click(pilot, "#confirm")
            await settle(pilot)
            assert d.field_error("port")  # 422 on the port field
            d.query_one("#port", Input).value = "8000"
            await click(pilot, "#confirm")
            await settle(pilot)
            ep = app.results[-1]
            assert ep.port == 8000 and "/service" in ep.url

            c = await client.cluster(c.id)
            d = dialogs.open_endpoint(app, c, app.results.append)
            await settle(pilot)
            d.query_one("#port", Input).value = "9000"
            await click(pilot, "#confirm")
            await settle(pilot)
            assert app.results[-1] == EndpointOut(url=ep.url, port=9000)  # the URL stays

            d = dialogs.open_endpoint(app, await client.cluster(c.id), app.results.append)
            await settle(pilot)
            await click(pilot, "#close")
            await settle(pilot)
        assert (await client.cluster(c.id)).endpoint is None


async def test_restart_a_replica_and_the_whole_cluster(account):
    url, key = account
    async with EcoClient(url, key) as client:
        c = await launch_via_api(client)
        app = Host(client)
        async with app.run_test(size=(80, 24)) as pilot:
            d = dialogs.open_restart(app, c, "web-0", app.results.append)
            await settle(pilot)
            await click(pilot, "#confirm")
            await settle(pilot)
            assert app.screen is not d and d.refusal is None
            d = dialogs.open_restart(app, c, None, app.results.append)
            await settle(pilot)
            await click(pilot, "#confirm")
            await settle(pilot)
            assert app.screen is not d and d.refusal is None
        events = [e.kind for e in await client.events(c.id)]
        assert "restarted" in events


async def test_scale_while_stopped_changes_only_the_count(account):
    url, key = account
    async with EcoClient(url, key) as client:
        c = await launch_via_api(client)
        await client.stop(c.id)
        c = await client.cluster(c.id)
        ledger_before = await client.ledger(cluster_id=c.id)
        app = Host(client)
        async with app.run_test(size=(80, 24)) as pilot:
            d = dialogs.open_scale(app, c, app.results.append)
            await settle(pilot)
            d.query_one("#replicas", Input).value = "4"
            await settle(pilot)
            assert d.preview_hold == 0
            assert "only the desired count changes" in str(d.query_one("#preview", Static).render())
            await click(pilot, "#confirm")
            await settle(pilot)
        assert app.results[0].replicas == 4
        assert await client.ledger(cluster_id=c.id) == ledger_before
