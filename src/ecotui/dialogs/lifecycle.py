"""Stop, resume and terminate confirmations: each says what happens to the
cluster's hold; resume shows the new hold it places; terminate says it cannot be
undone and asks for the cluster's name typed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from textual.widget import Widget
from textual.widgets import Button, Input, Static

from ecocore.wire import ClusterOut
from ecotui import costs, wording
from ecotui.dialogs._base import ClusterDialog
from ecotui.widgets.controls import EcoInput
from ecotui.wording import cluster_summary, fmt_usd, gpus_text


def _held_now(cluster: ClusterOut) -> str:
    try:
        return fmt_usd(costs.usd_to_micros(cluster.cost.hold_remaining))
    except costs.MoneyError:
        return "?"


class StopDialog(ClusterDialog):
    CONFIRM_LABEL = "Stop"
    CONFIRM_VARIANT = "warning"
    PROGRESS = "Stopping… waiting for the backend to confirm."

    def title_text(self) -> str:
        return f"Stop {self.cluster.name}?"

    def compose_body(self) -> Iterable[Widget]:
        c = self.cluster
        yield Static(cluster_summary(c), classes="text")
        yield Static(
            f"Its replicas stop and its charges stop. Charges are posted up to now, and "
            f"what it still holds (about {_held_now(c)}) is released to your account.",
            classes="text",
        )
        yield Static(
            f"It still expires {self.when(c.expires_at)}. Resuming places a new hold "
            "for the time then remaining. The public URL, if any, stays.",
            classes="text",
        )

    async def send(self, operation: str, body: Any, idempotency_key: str) -> Any:
        return await self.client.stop(self.cluster.id, idempotency_key=idempotency_key)

    def done_message(self, operation: str, result: Any) -> str | None:
        return f"{result.name}: {result.status}"


class ResumeDialog(ClusterDialog):
    CONFIRM_LABEL = "Resume"
    PROGRESS = "Resuming… waiting for the backend to confirm."

    def title_text(self) -> str:
        return f"Resume {self.cluster.name}?"

    def compose_body(self) -> Iterable[Widget]:
        yield Static(cluster_summary(self.cluster), classes="text")
        yield Static("", id="preview", classes="preview")

    def on_mount(self) -> None:
        self.refresh_preview()
        self.set_interval(1.0, self.refresh_preview)
        self.run_worker(self.load_available(), group="load")

    def refresh_preview(self) -> None:
        if not self.composed:
            return
        c = self.cluster
        now = self.now()
        remaining = costs.remaining_us(c.expires_at, now)
        hold = costs.cluster_resume_hold(c, now)
        self.preview_hold = hold
        if remaining <= 0:
            text = (
                f"{c.name} expired {self.when(c.expires_at)}; it cannot run again. "
                "Launch a new cluster instead."
            )
        else:
            lines = [
                f"Its {gpus_text(c)} start again and charges accrue at "
                f"{fmt_usd(costs.cluster_hourly_rate(c))}/h.",
                "",
                f"New hold          {fmt_usd(hold)} for the "
                f"{wording.duration_text(remaining)} until it expires {self.when(c.expires_at)}",
            ]
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
            text = "\n".join(lines)
        self.query_one("#preview", Static).update(text)

    async def send(self, operation: str, body: Any, idempotency_key: str) -> Any:
        return await self.client.resume(self.cluster.id, idempotency_key=idempotency_key)

    def done_message(self, operation: str, result: Any) -> str | None:
        return f"{result.name}: resuming"


class TerminateDialog(ClusterDialog):
    CONFIRM_LABEL = "Terminate"
    CONFIRM_VARIANT = "error"
    PROGRESS = "Terminating… waiting for the backend to confirm."

    def title_text(self) -> str:
        return f"Terminate {self.cluster.name}?"

    def compose_body(self) -> Iterable[Widget]:
        c = self.cluster
        yield Static(cluster_summary(c), classes="text")
        url = " and its public URL closes" if c.endpoint else ""
        yield Static(
            f"This cannot be undone: its replicas are deleted{url}. Charges are posted up "
            f"to now and the unused hold (about {_held_now(c)}) is released.",
            classes="text",
        )
        yield from self.field_row(
            "Type its name", EcoInput("", id="confirm_name", compact=True, placeholder=c.name)
        )

    def on_mount(self) -> None:
        self.query_one("#confirm_name", Input).focus()
        self.update_confirm()

    def can_submit(self, operation: str) -> bool:
        return self.query_one("#confirm_name", Input).value.strip() == str(self.cluster.name)

    def update_confirm(self) -> None:
        if self.composed and not self.busy:
            self.query_one("#confirm", Button).disabled = not self.can_submit("confirm")

    def refresh_preview(self) -> None:
        self.update_confirm()

    async def send(self, operation: str, body: Any, idempotency_key: str) -> Any:
        return await self.client.terminate(self.cluster.id, idempotency_key=idempotency_key)

    def done_message(self, operation: str, result: Any) -> str | None:
        return f"{result.name}: {result.status}"

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_confirm()
