"""The ledger's `/` filter takes any text: a cluster's name or id, a kind, words of the memo."""

from __future__ import annotations

from textual.widgets import DataTable

from support.tui_helpers import fixed_app, screen_text, wait_for, wait_for_text

SMALL = (80, 24)


def rows(app) -> int:
    return app.screen.query_one("#ledger", DataTable).row_count


async def test_the_ledger_filter_matches_cluster_kind_and_memo():
    fx = fixed_app()
    ledger = fx.fleet._ledger
    assert len(ledger) == 28
    charges = [e for e in ledger if e["kind"] == "charge"]
    releases = [e for e in ledger if e["kind"] == "hold_release"]
    assert 0 < len(charges) < 27 and releases
    async with fx.app.run_test(size=SMALL) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await pilot.press("a")
        await wait_for_text(pilot, "28 entries")
        # a kind, as the ledger spells it
        await pilot.press("slash", *"charge")
        await wait_for_text(pilot, f"“charge” {len(charges)} of 28 entries")
        assert rows(fx.app) == len(charges)
        # the words the view shows for a kind ("release")
        await pilot.press(*["backspace"] * 6, *"release")
        await wait_for_text(pilot, f"“release” {len(releases)} of 28 entries")
        assert rows(fx.app) == len(releases)
        # words of the memo
        await pilot.press(*["backspace"] * 7, *"demo credit")
        await wait_for_text(pilot, "“demo credit” 1 of 28 entries")
        assert rows(fx.app) == 1
        # a cluster id: its entries only; enter keeps the filter and goes to the table
        cid = next(e["cluster_id"] for e in releases)
        mine = [e for e in ledger if e["cluster_id"] == cid]
        box = fx.app.screen.query_one("#filter")
        box.value = ""
        await pilot.press(*cid[:-1])  # a part of the id is enough
        await pilot.press(cid[-1], "enter")
        await wait_for(pilot, lambda: rows(fx.app) == len(mine), what="the cluster's entries")
        # the whole id names the cluster: the backend is asked for its ledger
        assert any(f"cluster_id={cid}" in r for r in fx.requests)
        # text that names nothing: no rows, and it says so
        await pilot.press("slash")
        await wait_for(pilot, lambda: box.has_focus, what="the filter")
        box.value = "no such words"
        await pilot.press("enter")
        await wait_for_text(pilot, "“no such words” 0 of 28 entries")
        assert rows(fx.app) == 0
        await pilot.press("escape")  # clears the filter
        await wait_for_text(pilot, "all clusters · page 1 · 28 entries")
        assert rows(fx.app) == 28
        assert "“" not in screen_text(fx.app)
