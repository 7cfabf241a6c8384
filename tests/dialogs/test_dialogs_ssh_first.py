"""Dialogs over SSH at 80×24, without colour, on a laggy link: the findings of the
UX review that concern dialogs, one test each (they fail on the code reviewed)."""

from __future__ import annotations

import asyncio
import re

from test_dialog_behaviour import Host, ScriptedClient, cluster, settle
from textual import events
from textual.widgets import Button, Input, Select
from textual.widgets._select import SelectCurrent

from ecocore.wire import CatalogOut
from ecotui import dialogs
from ecotui.client.rest import ApiRefusal

SMALL = (80, 24)
TWO_REGIONS = {
    "regions": [
        {
            "name": "us-east",
            "gpu_budget": 32,
            "gpu_types": [
                {"name": "H100-80GB", "rate_per_gpu_hour": "2.500000", "gpu_counts": [1, 2]}
            ],
        },
        {
            "name": "eu-west",
            "gpu_budget": 32,
            "gpu_types": [
                {"name": "H100-80GB", "rate_per_gpu_hour": "2.700000", "gpu_counts": [1, 2]}
            ],
        },
    ]
}
MICRO_AMOUNT = re.compile(r"\$[\d,]+\.\d{3,}")


def text_of(app) -> str:
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


class TwoRegions(ScriptedClient):
    async def catalog(self):
        return CatalogOut.model_validate(TWO_REGIONS)


class NoFilesystems(ScriptedClient):
    async def filesystems(self):
        return []


async def test_gpu_type_label_shows_the_new_regions_price():
    app = Host(TwoRegions())
    async with app.run_test(size=SMALL) as pilot:
        d = dialogs.open_launch(app)
        await settle(pilot)
        assert "$2.50/GPU-h" in text_of(app)
        d.query_one("#region", Select).value = "eu-west"
        await settle(pilot)
        label = str(
            d.query_one("#gpu_type", Select).query_one(SelectCurrent).query_one("#label").render()
        )
        assert "$2.70/GPU-h" in label, label
        assert "$2.50" not in text_of(app)
        assert "$2.70/GPU-h × 1 GPUs × 2 replicas = $5.40/h" in text_of(app)


async def test_focus_is_marked_in_plain_text_and_moves_with_tab():
    app = Host(ScriptedClient())
    async with app.run_test(size=SMALL) as pilot:
        dialogs.open_launch(app)
        await settle(pilot)
        assert "› Name" in text_of(app)
        await pilot.press("tab")
        await settle(pilot)
        text = text_of(app)
        assert "› Region" in text and "› Name" not in text


async def test_checkboxes_and_radios_differ_by_glyph():
    app = Host(ScriptedClient())
    async with app.run_test(size=SMALL) as pilot:
        d = dialogs.open_launch(app)
        await settle(pilot)
        text = text_of(app)
        assert "[ ] off: expose on port" in text and "[ ] weights" in text
        assert "X" not in "".join(ln for ln in text.splitlines() if "Public URL" in ln)
        d.query_one("#expose").toggle()
        await settle(pilot)
        assert "[x] on: expose on port" in text_of(app)
        d.dismiss(None)
        await settle(pilot)
        dialogs.open_restart(app, cluster(), "web-1")
        await settle(pilot)
        text = text_of(app)
        assert "(•) Only replica web-1" in text
        assert "( ) The whole cluster" in text
        assert "^s restart" in text  # the confirm key is said


async def test_startup_command_says_port_and_filesystems_say_how_to_make_one():
    app = Host(NoFilesystems())
    async with app.run_test(size=SMALL) as pilot:
        dialogs.open_launch(app)
        await settle(pilot)
        text = text_of(app)
        assert "$PORT" in text
        assert "ecolink filesystems create NAME" in text


async def test_a_bad_name_is_refused_in_words_not_markup_or_regex():
    msg = "name: String should match pattern '^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$'"
    app = Host(ScriptedClient(ApiRefusal(422, "invalid_request", msg, "name")))
    async with app.run_test(size=SMALL) as pilot:
        d = dialogs.open_launch(app)
        await settle(pilot)
        d.query_one("#name", Input).value = "démo-日本"
        await pilot.press("ctrl+s")
        await settle(pilot)
        text = text_of(app)
        assert "a name is a DNS label: lowercase letters, digits" in text
        assert "lowercase letters, digits and '-'" in d.field_error("name")
        assert "pattern" not in text and "{0,38}" not in text and "^(" not in text


async def test_a_refusal_with_brackets_is_shown_as_typed():
    app = Host(ScriptedClient(ApiRefusal(409, "conflict", "state [bold]stopping[/bold]")))
    async with app.run_test(size=SMALL) as pilot:
        dialogs.open_scale(app, cluster())
        await settle(pilot)
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "[bold]stopping[/bold]" in text_of(app)


async def test_money_is_in_cents_in_every_preview():
    # 4 h 55 m 17.3 s left: holds come to fractions of a cent
    c = cluster(expires_at="2026-01-01T16:55:17.300001Z")
    stopped = cluster(
        status="stopped",
        expires_at="2026-01-01T16:55:17.300001Z",
        cost={
            "hold": "23.938268",
            "spent": "1.000001",
            "hold_remaining": "23.938268",
            "projected_total": "2.5",
        },
    )
    app = Host(ScriptedClient())
    async with app.run_test(size=SMALL) as pilot:
        for open_ in (
            lambda: dialogs.open_scale(app, c),
            lambda: dialogs.open_extend(app, c),
            lambda: dialogs.open_stop(app, stopped),
            lambda: dialogs.open_resume(app, stopped),
            lambda: dialogs.open_launch(app),
        ):
            d = open_()
            await settle(pilot)
            if isinstance(d, dialogs.ScaleDialog):
                d.query_one("#replicas", Input).value = "4"
                await settle(pilot)
            text = text_of(app)
            assert not MICRO_AMOUNT.search(text), text
            d.dismiss(None)
            await settle(pilot)


async def test_backspace_and_a_digit_in_one_burst_are_both_applied():
    app = Host(ScriptedClient())
    async with app.run_test(size=SMALL) as pilot:
        d = dialogs.open_scale(app, cluster())
        await settle(pilot)
        box = d.query_one("#replicas", Input)
        assert box.value == "3" and box.has_focus
        # one read from the terminal: both keys are queued before either is handled
        app.post_message(events.Key("backspace", None))
        app.post_message(events.Key("5", "5"))
        await settle(pilot)
        assert box.value == "5"
        app.post_message(events.Key("backspace", None))
        app.post_message(events.Key("1", "1"))
        app.post_message(events.Key("2", "2"))
        app.post_message(events.Key("left", None))
        app.post_message(events.Key("backspace", None))
        await settle(pilot)
        assert box.value == "2"


async def test_progress_shows_on_the_button_row_at_80x24():
    client = ScriptedClient()
    client.gate = asyncio.Event()
    app = Host(client)
    async with app.run_test(size=SMALL) as pilot:
        d = dialogs.open_stop(app, cluster())
        await settle(pilot)
        await pilot.press("ctrl+s")
        await pilot.pause(0.1)
        text = text_of(app)
        assert "Stopping… waiting for the backend to confirm." in text
        assert str(d.query_one("#confirm", Button).label) == "Stopping…"
        client.gate.set()
        await settle(pilot)
        assert d.result is not None and not d.is_attached


async def test_a_tall_dialog_scrolls_with_its_confirm_key_in_view():
    app = Host(ScriptedClient())
    async with app.run_test(size=(80, 14)) as pilot:
        d = dialogs.open_launch(app)
        await settle(pilot)
        text = text_of(app)
        assert "Launch" in text.splitlines()[-2] or "Launch" in text.splitlines()[-1]
        assert "^s launch · esc cancel" in text
        confirm = d.query_one("#confirm", Button)
        assert confirm.region.bottom <= 14 and confirm.region.height == 1


async def test_endpoint_says_how_to_authenticate_and_which_port():
    app = Host(ScriptedClient())
    async with app.run_test(size=SMALL) as pilot:
        dialogs.open_endpoint(app, cluster())
        await settle(pilot)
        text = " ".join(text_of(app).split())
        assert "Authorization: Bearer" in text
        assert "$PORT" in text
        assert "on every ready replica" not in text
