"""What each view shows as a recorded feed changes (frames pushed at the watch-client seam).

The fleet is generated (fixed clock and data); the REST answers come from the same
fleet through httpx's mock transport. What is asserted is what the terminal shows.
"""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest

from ecotui.client.watch import connection_frame
from ecotui.keymap import CLUSTERS_VIEW, GLOBAL, ON_CLUSTER
from ecotui.screens import gpu_compare, shells
from support.tui_helpers import fixed_app, row_text, screen_text, wait_for, wait_for_text

BIG = (160, 48)
SMALL = (80, 24)


def cid_of(fx, name: str) -> str:
    return next(c["id"] for c in fx.fleet.clusters.values() if c["name"] == name)


def notifications(app) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications]


async def open_cluster(pilot, fx, name: str) -> None:
    fx.app.open_cluster(cid_of(fx, name))
    await wait_for(pilot, lambda: getattr(fx.app.screen, "_loaded", False), what="history loaded")
    await pilot.pause(0.1)


async def test_clusters_view_shows_every_column(tmp_path):
    fx = fixed_app()
    async with fx.app.run_test(size=BIG) as pilot:
        await wait_for_text(pilot, "12 clusters")
        row = row_text(fx.app, "tts-serve")
        for part in (
            "● running",
            "us-east",
            "A100-80GB×8",
            "8/8",
            "$102.40/h",
            "$172.37",
            "2d 22h",
        ):
            assert part in row, (part, row)
        assert "%" in row  # mean GPU utilisation
        assert "· terminated" in row_text(fx.app, "asr-serve")
        assert "✖ failed" in row_text(fx.app, "qwen-serve")
        assert "◌ pending" in row_text(fx.app, "mistral-serve")
        assert "○ stopped" in row_text(fx.app, "whisper-serve")
        text = screen_text(fx.app)
        assert "telemetry: simulated" in text
        assert "● connected" in text
        assert "available $8,379.57" in text


async def test_replica_goes_pending_with_the_schedulers_reason():
    fx = fixed_app()
    name = "tts-serve"
    cid = cid_of(fx, name)
    async with fx.app.run_test(size=BIG) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await open_cluster(pilot, fx, name)
        await wait_for_text(pilot, "tts-serve-3")
        reason = "Unschedulable: 0/12 nodes are available: 12 Insufficient nvidia.com/gpu"
        c = copy.deepcopy(fx.fleet.clusters[cid])
        c["replica_states"][3].update(phase="Pending", ready=False, reason=reason, node=None)
        c["ready_replicas"] = 7
        reps = fx.fleet.replicas_list(cid, 1.0)
        reps[3].update(phase="Pending", ready=False, reason=reason, node=None, gpus=[])
        fx.source.push(
            {"type": "cluster", "cluster": c},
            {"type": "replicas", "cluster_id": cid, "replicas": reps},
            {
                "type": "event",
                "cluster_id": cid,
                "event": {
                    "at": "2026-03-02T14:00:01Z",
                    "kind": "replica_pending",
                    "message": f"tts-serve-3 is pending: {reason}",
                    "replica": "tts-serve-3",
                },
            },
        )
        await wait_for_text(pilot, "◌ Pending")
        text = screen_text(fx.app)
        line = next(ln for ln in text.splitlines() if "tts-serve-3" in ln and "Pending" in ln)
        assert "✗ no" in line and "Unschedulable: 0/12 nodes are" in line
        assert (
            "✖ ALERT Replica unschedulable: tts-serve: replica tts-serve-3 cannot be scheduled"
            in text
        )
        assert "7/8 ready" in text
        assert any("Replica unschedulable" in n for n in notifications(fx.app))
        assert "tts-serve-3 is pending" in text  # the events log
        assert "no GPUs attached" in text  # the GPU panel says why
        await pilot.press("escape")
        await wait_for(pilot, lambda: "7/8" in row_text(fx.app, name), what="row 7/8")
        assert row_text(fx.app, name).lstrip().startswith("✖")


async def test_cluster_expires_countdown_alert_then_terminated():
    fx = fixed_app()
    cid = cid_of(fx, "embed-serve")
    async with fx.app.run_test(size=BIG) as pilot:
        await wait_for_text(pilot, "12 clusters")
        assert "4m 30s" in row_text(fx.app, "embed-serve")
        assert "embed-serve expires in 4m 30s" in screen_text(fx.app)
        fx.clock.advance(60)
        await wait_for(pilot, lambda: "3m 30s" in row_text(fx.app, "embed-serve"), what="countdown")
        assert "embed-serve expires in 3m 30s" in screen_text(fx.app)
        fx.clock.advance(210)
        c = copy.deepcopy(fx.fleet.clusters[cid])
        c.update(
            status="terminated",
            status_reason="expired",
            burn_rate="0.000000",
            ready_replicas=0,
            replica_states=[],
        )
        fx.fleet.clusters[cid] = c
        fx.source.push(
            {"type": "cluster", "cluster": c},
            {
                "type": "event",
                "cluster_id": cid,
                "event": {
                    "at": "2026-03-02T14:04:30Z",
                    "kind": "expired",
                    "message": "expired: terminated at its expiry time",
                },
            },
        )
        await wait_for(
            pilot, lambda: "· terminated" in row_text(fx.app, "embed-serve"), what="terminated"
        )
        row = row_text(fx.app, "embed-serve")
        assert "4m" not in row and "—" in row
        assert "embed-serve expires" not in screen_text(fx.app)
        await open_cluster(pilot, fx, "embed-serve")
        await wait_for_text(pilot, "✖ expired: terminated at")
        assert "● Running" not in screen_text(fx.app)  # no replicas run any more
        assert "no GPUs: the cluster is terminated" in screen_text(fx.app)
        assert "· terminated (expired)" in screen_text(fx.app)


async def test_connection_drops_and_returns_and_history_is_restored():
    fx = fixed_app()
    async with fx.app.run_test(size=BIG) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await open_cluster(pilot, fx, "tts-serve")
        metrics_calls = sum("/metrics" in r for r in fx.requests)
        assert metrics_calls == 1
        fx.source.drop(retry_in=4, now=fx.clock.now())
        await wait_for_text(pilot, "↻ reconnecting in 4s (attempt 1) · data stale")
        assert "tts-serve" in screen_text(fx.app)  # last known data still shown
        fx.clock.advance(2)
        await wait_for_text(pilot, "↻ reconnecting in 2s (attempt 1)")
        fx.source.restore(fx.fleet.snapshot_frame())
        await wait_for_text(pilot, "● connected")
        await wait_for(
            pilot,
            lambda: sum("/metrics" in r for r in fx.requests) == 2,
            what="history fetched again after the reconnect",
        )
        assert fx.app.model.snapshots == 2


async def test_stale_when_the_feed_goes_quiet():
    fx = fixed_app()
    async with fx.app.run_test(size=SMALL) as pilot:
        await wait_for_text(pilot, "● connected")
        fx.clock.advance(20)
        await wait_for_text(pilot, "◌ stale: no data for 20s")
        fx.source.push(fx.fleet.summaries_frame(20.0))
        await wait_for_text(pilot, "● connected")


async def test_idle_gpus_alert_names_the_cost():
    fx = fixed_app()
    async with fx.app.run_test(size=BIG) as pilot:
        await wait_for_text(pilot, "12 clusters")
        for k in range(121):
            fx.clock.advance(5)
            fx.source.push(fx.fleet.summaries_frame(5.0 * k))
        await wait_for(
            pilot,
            lambda: any("Idle GPUs" in n for n in notifications(fx.app)),
            what="idle notification",
        )
        (note,) = [n for n in notifications(fx.app) if "Idle GPUs" in n]
        assert (
            "llama-serve: 64 GPUs under 5% for 10+ minutes: you pay $160.00/h for idle GPUs" in note
        )
        assert row_text(fx.app, "llama-serve").lstrip().startswith("▲")
        await open_cluster(pilot, fx, "llama-serve")
        await wait_for_text(pilot, "▲ WARNING Idle GPUs: llama-serve: 64 GPUs under 5%")


async def test_sort_filter_and_group_from_the_keyboard():
    fx = fixed_app()
    async with fx.app.run_test(size=BIG) as pilot:
        await wait_for_text(pilot, "12 clusters")

        def names() -> list[str]:
            return [
                (ln.split()[1] if ln.split()[0] in "✖▲~" else ln.split()[0]).lstrip("✖▲~›·")
                for ln in screen_text(fx.app).splitlines()
                if "-serve" in ln and "/h" in ln or "—" in ln and "-serve" in ln
            ]

        assert names()[0] == "asr-serve"
        await pilot.press("o")  # status
        await wait_for_text(pilot, "sort: status ▲")
        assert names()[0] == "qwen-serve"  # failed sorts first
        await pilot.press("O")
        await wait_for_text(pilot, "sort: status ▼")
        assert names()[0] == "asr-serve"  # terminated last, reversed
        await pilot.press("slash", *"west")
        await wait_for_text(pilot, "4 of 12 clusters match “west”")
        assert set(names()) == {"mistral-serve", "sdxl-serve", "vision-serve", "bert-serve"}
        await pilot.press("escape")
        await wait_for_text(pilot, "12 clusters ·")
        await pilot.press("m")
        await wait_for_text(pilot, "group: region")
        assert "▾ eu-central (4)" in screen_text(fx.app)


async def test_enter_and_mouse_open_a_cluster():
    fx = fixed_app()
    async with fx.app.run_test(size=BIG) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await pilot.press("j", "enter")
        await wait_for_text(pilot, "clusters › bert-serve")
        await pilot.press("escape")
        await wait_for_text(pilot, "12 clusters")
        # double click on the row of clip-serve (third row under the header)
        table = fx.app.screen.query_one("FleetTable")
        await pilot.click(table, offset=(5, 3), times=2)
        await wait_for_text(pilot, "clusters › clip-serve")


async def test_focus_follows_the_rows_on_screen_only():
    fx = fixed_app(1000)
    async with fx.app.run_test(size=SMALL) as pilot:
        await wait_for_text(pilot, "1000 clusters")
        table = fx.app.screen.query_one("FleetTable")
        await wait_for(pilot, lambda: fx.source.focused, what="a focus frame")
        first = set(fx.source.focused)
        assert first == set(table.visible_keys())
        assert 0 < len(first) <= 20
        await pilot.press("ctrl+f", "ctrl+f")
        await wait_for(
            pilot,
            lambda: (
                set(fx.source.focused) == set(table.visible_keys())
                and set(fx.source.focused) != first
            ),
            what="focus moved with the page",
        )
        # The list keeps the latest readings of the rows on screen and no per-GPU history.
        assert set(fx.app.model.replicas) <= set(fx.source.focused)
        assert fx.app.model.gpu_history == {}
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(fx.source.focused) == 1, what="cluster view focus")
        (cid,) = fx.source.focused
        await wait_for(pilot, lambda: list(fx.app.model.gpu_history) == [cid], what="history")


async def test_only_changed_cells_of_rows_on_screen_are_repainted():
    fx = fixed_app(1000)
    async with fx.app.run_test(size=BIG) as pilot:
        await wait_for_text(pilot, "1000 clusters")
        await pilot.pause(0.2)
        table = fx.app.screen.query_one("FleetTable")
        counts = []
        original = table.update_rows
        table.update_rows = lambda keys: counts.append((set(keys), original(keys))) or counts[-1][1]
        computed = []
        cells_fn = table._cells_fn
        table._cells_fn = lambda key, widths: computed.append(key) or cells_fn(key, widths)
        visible = table.visible_keys()
        on_screen = next(k for k in visible if fx.fleet.clusters[k]["status"] == "running")
        off_screen = next(
            k
            for k in reversed(list(fx.fleet.clusters))
            if k not in visible and fx.fleet.clusters[k]["status"] == "running"
        )
        for key in (on_screen, off_screen):
            c = copy.deepcopy(fx.fleet.clusters[key])
            c["cost"]["spent"] = "4321.000000"
            fx.source.push({"type": "cluster", "cluster": c})
        await wait_for(pilot, lambda: any(on_screen in keys for keys, _ in counts), what="repaint")
        refreshed = sum(n for keys, n in counts if on_screen in keys)
        assert refreshed == 1  # the spent cell only
        assert "$4,321.00" in row_text(fx.app, fx.fleet.clusters[on_screen]["name"])
        assert off_screen not in computed  # never drawn while off screen


async def test_footer_help_and_palette_cover_the_key_map():
    fx = fixed_app()
    async with fx.app.run_test(size=(200, 50)) as pilot:
        await wait_for_text(pilot, "12 clusters")
        footer = "\n".join(screen_text(fx.app).splitlines()[-3:])
        expected = [
            "? help",
            "q quit",
            "a account",
            "^p palette",
            "T theme",
            "esc back",
            "j/k move",
            "g/G top/bottom",
            "^f/^b page",
            "⏎ open",
            "/ filter",
            "o sort",
            "O reverse",
            "m group",
            "n launch",
            "+ scale",
            "e extend",
            "u endpoint",
            "R restart",
            "p stop",
            "P resume",
            "D terminate",
            "s shell",
            "l logs",
            "N nvidia-smi",
            "S shells",
        ]
        for item in expected:
            assert item in footer, (item, footer)
        titles = {c.title for c in fx.app.get_system_commands(fx.app.screen)}
        for b in GLOBAL + CLUSTERS_VIEW + ON_CLUSTER:
            if b.action != "app.command_palette":
                assert b.description.capitalize() in titles, b.description
        group = next(c for c in fx.app.get_system_commands(fx.app.screen) if c.title == "Group")
        group.callback()
        await wait_for_text(pilot, "group: region")
        await pilot.press("question_mark")
        await wait_for_text(pilot, "ecotui help")
        help_text = screen_text(fx.app)
        for b in GLOBAL + CLUSTERS_VIEW + ON_CLUSTER:
            assert b.description in help_text, b.description
        assert "ctrl+]" in help_text
        await pilot.press("escape")
        await wait_for_text(pilot, "12 clusters")


async def test_theme_toggle_and_no_color(monkeypatch):
    fx = fixed_app()
    async with fx.app.run_test(size=SMALL) as pilot:
        await wait_for_text(pilot, "clusters")
        assert fx.app.current_theme.dark
        await pilot.press("T")
        assert not fx.app.current_theme.dark
        await pilot.press("T")
        assert fx.app.current_theme.dark
    monkeypatch.setenv("NO_COLOR", "1")
    fx = fixed_app()
    async with fx.app.run_test(size=SMALL) as pilot:
        await wait_for_text(pilot, "clusters")
        assert fx.app.no_color
        assert any(type(f).__name__ in ("Monochrome", "NoColor") for f in fx.app._filters)
        # Without colour the states still read in words and symbols.
        assert "✖ failed" in screen_text(fx.app) and "● running" in screen_text(fx.app)


@pytest.mark.parametrize(
    "key,dialog",
    [
        ("n", "LaunchDialog"),
        ("plus", "ScaleDialog"),
        ("e", "ExtendDialog"),
        ("u", "EndpointDialog"),
        ("R", "RestartDialog"),
        ("p", "StopDialog"),
        ("P", "ResumeDialog"),
        ("D", "TerminateDialog"),
    ],
)
async def test_action_keys_open_the_dialogs_on_the_selected_cluster(key, dialog):
    fx = fixed_app()
    async with fx.app.run_test(size=BIG) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await pilot.press("j")  # bert-serve
        await pilot.press(key)
        await wait_for(pilot, lambda: type(fx.app.screen).__name__ == dialog, what=dialog)
        screen = fx.app.screen
        assert type(screen).__module__.startswith("ecotui.dialogs")
        if key != "n":
            assert "bert-serve" in screen_text(fx.app)


async def test_shell_keys_call_the_shell_screens_with_cluster_and_replica(monkeypatch):
    calls = []

    async def open_shell(app, cluster, replica):
        calls.append(("shell", cluster["name"], replica))

    async def open_shells_view(app):
        calls.append(("shells",))

    async def open_gpu_compare(app, cluster):
        calls.append(("nvidia-smi", cluster["name"]))

    monkeypatch.setattr(shells, "open_shell", open_shell)
    monkeypatch.setattr(shells, "open_shells_view", open_shells_view)
    monkeypatch.setattr(gpu_compare, "open_gpu_compare", open_gpu_compare)
    fx = fixed_app()
    async with fx.app.run_test(size=BIG) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await pilot.press("j", "s", "S", "N")
        await open_cluster(pilot, fx, "vision-serve")
        await pilot.press("j", "s")  # the selected replica in the cluster view
        await pilot.pause(0.1)
    assert calls == [
        ("shell", "bert-serve", "bert-serve-0"),
        ("shells",),
        ("nvidia-smi", "bert-serve"),
        ("shell", "vision-serve", "vision-serve-1"),
    ]


async def test_cluster_view_shows_cost_url_gpus_and_events():
    fx = fixed_app()
    async with fx.app.run_test(size=BIG) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await open_cluster(pilot, fx, "llama-serve")
        await wait_for_text(pilot, "llama-serve-7")
        text = screen_text(fx.app)
        flat = " ".join(text.replace("│", " ").split())
        for part in (
            "hourly rate $160.00/h",
            "burn rate $160.00/h",
            "hold $640.00",
            "spent $640.00",
            "hold remaining $0.00",
            "projected total $1,280.00",
            "time left 4h 00m",
            "available $8,379.57 (account)",
        ):
            assert part in flat, part
        assert "URL http://127.0.0.1:8600/gpu-clusters/gc_00000/service/ → port 8000" in text
        assert "GPUs · telemetry: simulated" in text
        assert "utilisation, last" in text and "(5 s per cell)" in text
        assert "▶ launched llama-serve with 8" in text
        assert "● Running" in text and "node-us-east-00" in text
        # The history restored from /metrics is drawn (idle: the lowest block).
        gpu_line = next(ln for ln in text.splitlines() if "9/80G" in ln)
        assert "▁▁▁▁" in gpu_line


async def test_logs_view_search_pause_and_previous_run():
    fx = fixed_app()
    async with fx.app.run_test(size=BIG) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await open_cluster(pilot, fx, "vision-serve")
        await pilot.press("l")
        await wait_for_text(pilot, "60 lines")
        assert "logs of vision-serve-0" in screen_text(fx.app)
        assert "current run · live · following" in screen_text(fx.app)
        await pilot.press("f")
        await wait_for_text(pilot, "paused (+0)")
        await pilot.press("slash", *"health")
        await wait_for_text(pilot, "“health” 6 matches")
        await pilot.press("enter")
        await wait_for_text(pilot, "“health” 1/6")
        await pilot.press("n")
        await wait_for_text(pilot, "“health” 2/6")
        await pilot.press("N", "N")
        await wait_for_text(pilot, "“health” 6/6")
        await pilot.press("v")
        await wait_for_text(pilot, "RuntimeError: CUDA error: out of memory")
        assert "previous run" in screen_text(fx.app)


async def test_account_view_ledger_filter_ended_costs_and_csv(tmp_path):
    fx = fixed_app(export_dir=tmp_path)
    async with fx.app.run_test(size=BIG) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await pilot.press("a")
        await wait_for_text(pilot, "28 entries")
        text = screen_text(fx.app)
        assert "balance $20,995.15" in text and "held $12,615.57" in text
        assert "available $8,379.57" in text and "LOW CREDIT" in text
        assert "Ended clusters: cost $639.20" in text
        assert "demo credit" in text and "+$25,000.00" in text
        await pilot.press("slash", *"llama-serve", "enter")
        await wait_for_text(pilot, "cluster llama-serve · page 1 · 2 entries")
        assert any("cluster_id=gc_00000" in r for r in fx.requests)
        await pilot.press("x")  # asks where, the export directory offered
        await wait_for_text(pilot, "Export the ledger as CSV")
        assert str(tmp_path) in screen_text(fx.app)
        await pilot.press("enter")
        await wait_for(pilot, lambda: list(tmp_path.glob("*.csv")), what="CSV")
        (path,) = tmp_path.glob("*.csv")
        assert path.name == "ecotui-ledger-llama-serve-20260302-140000.csv"
        lines = path.read_text().splitlines()
        assert lines[0].startswith("id,at,cluster_id,kind,amount")
        assert len(lines) == 3 and all("gc_00000" in ln for ln in lines[1:])
        await pilot.press("escape")  # clears the filter first
        await wait_for_text(pilot, "all clusters · page 1 · 28 entries")
        await pilot.press("escape")
        await wait_for_text(pilot, "12 clusters")


async def test_small_terminal_keeps_every_part_reachable():
    fx = fixed_app()
    async with fx.app.run_test(size=SMALL) as pilot:
        await wait_for_text(pilot, "12 clusters")
        text = screen_text(fx.app)
        assert "ALERT" in text and "● connected" in text
        await open_cluster(pilot, fx, "tts-serve")
        assert fx.app.screen.has_class("-narrow")
        await pilot.press("tab", "tab")
        await pilot.pause(0.1)
        assert "GPUs · telemetry: simulated" in screen_text(fx.app) or "Cost" in screen_text(fx.app)


async def test_connection_pseudo_frames_render_as_words():
    fx = fixed_app()
    async with fx.app.run_test(size=SMALL) as pilot:
        await wait_for_text(pilot, "● connected")
        fx.source.push(
            connection_frame(
                "reconnecting",
                attempt=2,
                next_retry_at=fx.clock.now() + timedelta(seconds=8),
                error="connection lost",
            )
        )
        await wait_for_text(pilot, "↻ reconnecting in 8s (attempt 2) · data stale")


async def test_a_cluster_with_stale_states_says_so():
    fx = fixed_app()
    cid = cid_of(fx, "tts-serve")
    async with fx.app.run_test(size=BIG) as pilot:
        await wait_for_text(pilot, "12 clusters")
        c = copy.deepcopy(fx.fleet.clusters[cid])
        c["stale"] = True
        fx.source.push({"type": "cluster", "cluster": c})
        await wait_for(pilot, lambda: "~running" in row_text(fx.app, "tts-serve"), what="stale row")
        assert "~ 1 cluster stale (runtime unreachable)" in screen_text(fx.app)
        assert row_text(fx.app, "tts-serve").lstrip().startswith("~")
        await open_cluster(pilot, fx, "tts-serve")
        assert "~ STALE: runtime unreachable, last known states" in screen_text(fx.app)


async def test_replicas_table_is_updated_by_diff():
    fx = fixed_app()
    cid = cid_of(fx, "tts-serve")
    async with fx.app.run_test(size=BIG) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await open_cluster(pilot, fx, "tts-serve")
        await wait_for_text(pilot, "tts-serve-7")
        table = fx.app.screen.query_one("ReplicasTable")
        before = table.cell_updates
        reps = copy.deepcopy(fx.app.model.replicas[cid])
        reps[2]["restarts"] = 1  # one cell of one row
        fx.source.push({"type": "replicas", "cluster_id": cid, "replicas": reps})
        await wait_for(pilot, lambda: table.cell_updates > before, what="a cell update")
        assert table.cell_updates - before == 1
        assert table.row_count == 8
        # A replica goes away (scaled down): its row is removed, the others stay.
        fx.source.push({"type": "replicas", "cluster_id": cid, "replicas": reps[:7]})
        await wait_for(pilot, lambda: table.row_count == 7, what="row removed")
        assert table.cell_updates - before == 1
