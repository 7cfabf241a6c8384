"""The panels' values, computed from the model (the screens call these and hand the
result to the widgets)."""

from __future__ import annotations

from datetime import datetime, tzinfo

from ecocore.status import TERMINAL
from ecotui.model.dashboard import DashboardModel
from ecotui.model.values import Alert
from ecotui.panel_views import (
    ALERT_LINES,
    AlertLine,
    AlertsView,
    CostRow,
    CostView,
    GpuPanelView,
    StatusView,
)
from ecotui.wording import fmt_duration, fmt_local, fmt_rate, fmt_usd


def cost_view(model: DashboardModel, cid: str, now: datetime, tz: tzinfo | None) -> CostView:
    c = model.clusters.get(cid)
    view = model.nums.get(cid)
    if c is None or view is None:
        return CostView((CostRow("cluster", "not in the feed", "warning"),))
    if view.expires_at is not None and c.get("status") not in TERMINAL:
        left = (view.expires_at - now).total_seconds()
        left_txt = fmt_duration(left) if left > 0 else "expired"
        level = view.expiry_level(now)
    else:
        left_txt, level = "—", ""
    avail = model.account_micros.get("available") if model.account is not None else None
    low_credit = any(a.kind == "low_credit" for a in model.alerts())
    return CostView(
        (
            CostRow("hourly rate", fmt_rate(view.hourly)),
            CostRow("burn rate", fmt_rate(view.burn)),
            CostRow("hold", fmt_usd(view.hold)),
            CostRow("spent", fmt_usd(view.spent)),
            CostRow("hold remaining", fmt_usd(view.hold_remaining)),
            CostRow("projected total", fmt_usd(view.projected)),
            CostRow("time left", left_txt, level),
            CostRow("expires at", fmt_local(view.expires_at, tz, now=now)),
            CostRow(
                "available",
                "—" if avail is None else f"{fmt_usd(avail)} (account)",
                "warning" if low_credit else "",
            ),
        )
    )


def status_view(model: DashboardModel, now: datetime, tz: tzinfo | None) -> StatusView:
    text, level = model.connection_label(now)
    alerts = model.alerts()
    if alerts:
        worst = "error" if any(a.level == "error" for a in alerts) else "warning"
        n = len(alerts)
        alerts_text = f"{'✖' if worst == 'error' else '▲'} {n} alert{'s' if n != 1 else ''}"
    else:
        alerts_text, worst = "✓ no alerts", "ok"
    credit = ""
    if model.account is not None:
        credit = f"available {fmt_usd(model.account_micros.get('available', 0))}"
    return StatusView(text, level, alerts_text, worst, credit, fmt_local(now, tz, now=now))


def alert_text(a: Alert, model: DashboardModel, now: datetime) -> str:
    """The alert in words; expiry alerts count down live."""
    if a.kind == "expiring" and a.cluster_id in model.nums:
        view = model.nums[a.cluster_id]
        if view.expires_at is not None:
            name = model.clusters[a.cluster_id].get("name")
            return (
                f"{name} expires in {fmt_duration((view.expires_at - now).total_seconds())}; "
                f"extend it (e) to keep it"
            )
    return a.message


def alerts_view(model: DashboardModel, now: datetime, cluster_id: str | None = None) -> AlertsView:
    """The fleet's alerts (or one cluster's and the account's)."""
    alerts = model.alerts()
    if cluster_id is not None:
        alerts = [a for a in alerts if a.cluster_id in (None, cluster_id)]
    return AlertsView(
        tuple(AlertLine(a.level, a.title, alert_text(a, model, now)) for a in alerts[:ALERT_LINES]),
        len(alerts),
    )


def gpu_panel_view(model: DashboardModel, cid: str, now: datetime) -> GpuPanelView:
    c = model.clusters.get(cid) or {}
    reps = tuple(model.replicas.get(cid) or ())
    hist = model.gpu_history.get(cid) or {}
    telemetry = tuple(sorted({str(r.get("telemetry")) for r in reps if r.get("telemetry")}))
    if not telemetry:
        telemetry = tuple(model.telemetry_sources([cid]))
    return GpuPanelView(
        name=str(c.get("name", "")),
        status=str(c.get("status", "unknown")),
        now=now,
        replicas=reps,
        samples={key: tuple(dq) for key, dq in hist.items()},
        telemetry=telemetry,
    )
