"""A cluster's money: rates, hold, spent, what is left, the projection and the account.

All figures are the backend's (integer micro-dollars parsed from the API's
strings); only the time left is computed here, from the injected clock.
"""

from __future__ import annotations

from datetime import datetime, tzinfo

from rich.text import Text
from textual.widgets import Static

from ecotui.model import DashboardModel, fmt_duration, fmt_local, fmt_rate, fmt_usd


class CostPanel(Static):
    DEFAULT_CSS = """
    CostPanel {
        height: auto;
        border: round $primary 50%;
        border-title-color: $foreground;
        padding: 0 1;
    }
    """
    COMPONENT_CLASSES = {"cost-panel--label", "cost-panel--warning", "cost-panel--error"}
    DEFAULT_CSS += """
    CostPanel > .cost-panel--label { color: $foreground 65%; }
    CostPanel > .cost-panel--warning { color: $warning; text-style: bold; }
    CostPanel > .cost-panel--error { color: $error; text-style: bold; }
    """

    def __init__(self, model: DashboardModel, cluster_id: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self.cluster_id = cluster_id
        self.border_title = "Cost"
        self._plain = ""

    def rows(self, now: datetime, tz: tzinfo | None) -> list[tuple[str, str, str]]:
        """(label, value, level) pairs, in reading order."""
        m = self.model
        c = m.clusters.get(self.cluster_id)
        nums = m.nums.get(self.cluster_id)
        if c is None or nums is None:
            return [("cluster", "not in the feed", "warning")]
        if nums.expires_at is not None and c.get("status") not in ("terminated", "failed"):
            left = (nums.expires_at - now).total_seconds()
            left_txt = fmt_duration(left) if left > 0 else "expired"
            level = "error" if left <= 300 else "warning" if left <= 1800 else ""
        else:
            left_txt, level = "—", ""
        avail = m.account_micros.get("available") if m.account is not None else None
        return [
            ("hourly rate", fmt_rate(nums.hourly), ""),
            ("burn rate", fmt_rate(nums.burn), ""),
            ("hold", fmt_usd(nums.hold), ""),
            ("spent", fmt_usd(nums.spent), ""),
            ("hold remaining", fmt_usd(nums.hold_remaining), ""),
            ("projected total", fmt_usd(nums.projected), ""),
            ("time left", left_txt, level),
            ("expires at", fmt_local(nums.expires_at, tz, now=now), ""),
            ("available", ("—" if avail is None else f"{fmt_usd(avail)} (account)"),
             "warning" if any(a.kind == "low_credit" for a in m.alerts()) else ""),
        ]

    def show(self, now: datetime, tz: tzinfo | None) -> None:
        rows = self.rows(now, tz)
        width = self.content_region.width or 40
        label_style = self.get_component_rich_style("cost-panel--label")
        text = Text(no_wrap=True, overflow="ellipsis")
        two = width >= 58 and len(rows) > 1
        if two:
            pairs = [rows[i:i + 2] for i in range(0, len(rows), 2)]
        else:
            pairs = [[r] for r in rows]
        for n, pair in enumerate(pairs):
            if n:
                text.append("\n")
            for k, (label, value, level) in enumerate(pair):
                if k:
                    text.append("  ")
                text.append(f"{label:<15} ", label_style)
                style = self.get_component_rich_style(f"cost-panel--{level}") if level else ""
                text.append(f"{value:<12}" if two and k == 0 else value, style)
        if text.plain != self._plain:
            self._plain = text.plain
            self.update(text)

    def on_resize(self) -> None:
        self._plain = ""
