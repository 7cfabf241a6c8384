"""The panels draw from small immutable views alone: no model, no feed."""

from __future__ import annotations

from datetime import UTC, datetime

from textual.app import App, ComposeResult

from ecotui.panel_views import AlertLine, AlertsView, CostRow, CostView, GpuPanelView, StatusView
from ecotui.widgets.alert_bar import AlertBar
from ecotui.widgets.cost_panel import CostPanel
from ecotui.widgets.gpu_panel import GpuPanel
from ecotui.widgets.status_bar import StatusBar

NOW = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)


class Panels(App[None]):
    def compose(self) -> ComposeResult:
        yield StatusBar("clusters")
        yield AlertBar(id="alerts")
        yield CostPanel(id="cost")
        yield GpuPanel(id="gpus")


def plain(widget) -> str:
    return str(widget.render())


async def test_panels_show_the_views_they_are_given():
    app = Panels()
    async with app.run_test(size=(120, 40)) as pilot:
        cost = app.query_one(CostPanel)
        cost.view = CostView(
            (CostRow("hourly rate", "$30.00/h"), CostRow("time left", "4m 09s", "error"))
        )
        bar = app.query_one(AlertBar)
        assert not bar.has_class("-shown")
        bar.view = AlertsView((AlertLine("error", "Expiring soon", "web expires in 4m 09s"),))
        status = app.query_one(StatusBar)
        status.view = StatusView(
            "● connected", "ok", "✖ 1 alert", "error", "available $12.00", "14:00:00"
        )
        gpus = app.query_one(GpuPanel)
        gpus.view = GpuPanelView(
            "web",
            "running",
            NOW,
            (
                {
                    "name": "web-0",
                    "telemetry": "simulated",
                    "gpus": [
                        {
                            "index": 0,
                            "utilization": 97.0,
                            "memory_used_mib": 1024,
                            "memory_total_mib": 81920,
                            "temperature_c": 61,
                            "power_w": 300,
                        }
                    ],
                },
            ),
            samples={("web-0", 0): ((NOW.timestamp() - 1, 97.0, 1024.0, 61.0, 300.0),)},
            telemetry=("simulated",),
        )
        await pilot.pause()
        assert (
            "hourly rate" in plain(cost) and "$30.00/h" in plain(cost) and "4m 09s" in plain(cost)
        )
        assert bar.has_class("-shown")
        assert "ALERT Expiring soon: web expires in 4m 09s" in plain(bar)
        assert str(status.query_one("#sb-alerts").render()) == "✖ 1 alert"
        assert status.query_one("#sb-alerts").has_class("-error")
        assert str(status.query_one("#sb-credit").render()) == "available $12.00"
        assert gpus.border_title == "GPUs · telemetry: simulated"
        line = "".join(seg.text for seg in gpus.render_line(1))
        assert "web-0" in line and "97%" in line and "61°C" in line
        # Only the first lines travel; the bar counts the rest (40 rows: 5 lines at most).
        bar.view = AlertsView(
            tuple(AlertLine("warning", "Idle GPUs", f"c{i}: idle") for i in range(5)), total=12
        )
        await pilot.pause()
        assert "c3: idle" in plain(bar) and "c4: idle" not in plain(bar)
        assert "… and 8 more alerts" in plain(bar)
        bar.view = AlertsView()
        await pilot.pause()
        assert not bar.has_class("-shown")
