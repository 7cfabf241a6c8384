"""Extend dialog: hours to add, the additional hold (hours × hourly rate while the
cluster runs; nothing while stopped) and the new expiry time in local time."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from textual.widget import Widget
from textual.widgets import Input, Static

from ecotui import costs, wording
from ecotui.client.rest import ClusterArg, EcoClient
from ecotui.dialogs._base import ClusterDialog
from ecotui.widgets.controls import EcoInput
from ecotui.wording import cluster_summary, fmt_usd


class ExtendDialog(ClusterDialog):
    CONFIRM_LABEL = "Extend"
    PROGRESS = "Extending… waiting for the backend to confirm."
    FIELDS = {"hours": "hours"}

    def __init__(
        self, cluster: ClusterArg, client: EcoClient, *, hours: str = "1", **kw: Any
    ) -> None:
        super().__init__(cluster, client, **kw)
        self.initial_hours = hours

    def title_text(self) -> str:
        return f"Extend {self.cluster.name}"

    def compose_body(self) -> Iterable[Widget]:
        yield Static(cluster_summary(self.cluster), classes="text")
        yield Static("", id="expiry", classes="text")
        yield from self.field_row(
            "Hours to add",
            EcoInput(self.initial_hours, id="hours", compact=True, type="number"),
            hint=self._hours_hint(),
        )
        yield Static("", id="preview", classes="preview")

    def _hours_hint(self) -> str:
        try:
            total = costs.hours_to_micro_hours(self.cluster.estimated_duration_hours)
        except costs.MoneyError:
            return ""
        left = max(0, costs.MAX_TOTAL_MICRO_HOURS - total)
        return f"up to {costs.format_hours(left)} more"

    def on_mount(self) -> None:
        self.refresh_preview()
        self.query_one("#hours", Input).focus()
        self.set_interval(1.0, self.refresh_preview)
        self.run_worker(self.load_available(), group="load")

    def refresh_preview(self) -> None:
        if not self.composed:
            return
        c = self.cluster
        now = self.now()
        remaining = costs.remaining_us(c.expires_at, now)
        self.query_one("#expiry", Static).update(
            f"Expires {self.when(c.expires_at)} ({wording.duration_text(remaining)} left); "
            "at expiry it terminates."
        )
        preview = self.query_one("#preview", Static)
        raw = self.query_one("#hours", Input).value.strip()
        try:
            mh = costs.parse_hours(raw)
        except costs.MoneyError:
            self.preview_hold = None
            preview.update("Enter the hours to add, for example 2 or 0.5.")
            return
        hold = costs.cluster_extend_hold(c, mh)
        self.preview_hold = hold
        new_expiry = costs.add_micro_hours(c.expires_at, mh)
        lines = [f"New expiry        {self.when(new_expiry)}"]
        if c.status in costs.ACCRUING_STATUSES:
            lines.append(
                f"Additional hold   {fmt_usd(hold)} "
                f"({costs.format_hours(mh)} h × "
                f"{fmt_usd(costs.cluster_hourly_rate(c))}/h)"
            )
            if self.available is not None:
                left = costs.left_after(self.available, hold)
                if left < 0:
                    lines.append(
                        f"Available         {fmt_usd(self.available)}: short by {fmt_usd(-left)}"
                    )
                else:
                    lines.append(
                        f"Available         {fmt_usd(self.available)} → {fmt_usd(left)} left"
                    )
        else:
            lines.append(f"{c.name} is {c.status}: only the expiry moves; nothing is held now.")
        preview.update("\n".join(lines))

    def request_for(self, operation: str) -> Any:
        return {"hours": self.query_one("#hours", Input).value.strip()}

    async def send(self, operation: str, body: Any, idempotency_key: str) -> Any:
        return await self.client.extend(
            self.cluster.id, body["hours"], idempotency_key=idempotency_key
        )

    def done_message(self, operation: str, result: Any) -> str | None:
        return f"{result.name}: now expires {self.when(result.expires_at)}"

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_confirm()
