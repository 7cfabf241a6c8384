"""Scale dialog: a new replica count, with what it adds to the hold (scaling up,
for the time remaining), the plain statement that scaling down refunds nothing,
and the new hourly rate. While stopped only the desired count changes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from textual.widget import Widget
from textual.widgets import Input, Static

from ecotui import costs, wording
from ecotui.client.rest import ClusterArg, EcoClient
from ecotui.dialogs._base import ClusterDialog, log
from ecotui.widgets.controls import EcoInput
from ecotui.wording import cluster_summary, fmt_usd


class ScaleDialog(ClusterDialog):
    CONFIRM_LABEL = "Scale"
    PROGRESS = "Scaling… waiting for the backend to confirm."
    FIELDS = {"replicas": "replicas"}

    def __init__(self, cluster: ClusterArg, client: EcoClient, **kw: Any) -> None:
        super().__init__(cluster, client, **kw)
        self.max_replicas: int | None = None

    def title_text(self) -> str:
        return f"Scale {self.cluster.name}"

    def compose_body(self) -> Iterable[Widget]:
        yield Static(cluster_summary(self.cluster), classes="text")
        yield from self.field_row(
            "Replicas",
            EcoInput(str(self.cluster.replicas), id="replicas", compact=True, type="integer"),
            hint="",
            hint_id="replicas-hint",
        )
        yield Static("", id="preview", classes="preview")

    def on_mount(self) -> None:
        self.refresh_preview()
        self.query_one("#replicas", Input).focus()
        self.set_interval(1.0, self.refresh_preview)
        self.run_worker(self._load(), group="load")

    async def _load(self) -> None:
        """The account's available money and the region's free GPUs, for the preview."""
        try:
            account, catalog, clusters = await asyncio.gather(
                self.client.account(), self.client.catalog(), self.client.clusters()
            )
        except Exception as exc:  # the preview works without them; the backend still checks
            log.warning("ScaleDialog: no account or catalog for the preview: %r", exc)
            return
        self.available = costs.usd_to_micros(account.available)
        for region in catalog.regions:
            if region.name == self.cluster.region:
                free = costs.gpus_free(
                    region.gpu_budget,
                    clusters,
                    self.cluster.region,
                    exclude_id=self.cluster.id,
                )
                self.max_replicas = costs.max_replicas(free, int(self.cluster.gpu_count))
        self.refresh_preview()

    def new_replicas(self) -> int | None:
        try:
            return int(self.query_one("#replicas", Input).value.strip())
        except ValueError:
            return None

    def refresh_preview(self) -> None:
        if not self.composed:
            return
        c = self.cluster
        stopped = c.status not in costs.ACCRUING_STATUSES
        hint = self.query_one("#replicas-hint", Static)
        if self.max_replicas is not None and not stopped:
            hint.update(f"2 to {max(2, self.max_replicas)} (region budget)")
        else:
            hint.update("at least 2")
        r_new = self.new_replicas()
        preview = self.query_one("#preview", Static)
        if r_new is None:
            self.preview_hold = None
            preview.update("Enter a whole number of replicas.")
            return
        per = costs.cluster_per_replica_rate(c)
        r = int(c.replicas)
        new_rate = per * r_new
        rate_line = f"New hourly rate   {fmt_usd(new_rate)}/h (now {fmt_usd(per * r)}/h)"
        now = self.now()
        remaining = costs.remaining_us(c.expires_at, now)
        if stopped:
            self.preview_hold = 0
            lines = [
                rate_line,
                f"{c.name} is {c.status}: only the desired count changes and "
                "nothing is held now. Resuming holds the time then remaining at the "
                "new rate.",
            ]
        elif r_new > r:
            hold = costs.cluster_scale_hold(c, r_new, now)
            self.preview_hold = hold
            lines = [
                rate_line,
                f"Additional hold   {fmt_usd(hold)} for the "
                f"{wording.duration_text(remaining)} remaining",
            ]
            if self.available is not None:
                left = costs.left_after(self.available, hold)
                lines.append(self._left_line(left))
        elif r_new < r:
            self.preview_hold = 0
            lines = [
                rate_line,
                "Scaling down refunds nothing: the hold stays as it is, and charges "
                "follow the new rate from now.",
            ]
        else:
            self.preview_hold = 0
            lines = [f"{c.name} already has {r} replicas."]
        preview.update("\n".join(lines))
        self.update_confirm()

    def _left_line(self, left: int) -> str:
        if left < 0:
            return f"Available         {fmt_usd(self.available or 0)}: short by {fmt_usd(-left)}"
        return f"Available         {fmt_usd(self.available or 0)} → {fmt_usd(left)} left"

    def request_for(self, operation: str) -> Any:
        raw = self.query_one("#replicas", Input).value.strip()
        try:
            return {"replicas": int(raw)}
        except ValueError:
            # Let the backend say what is wrong with it, on the field.
            return {"replicas": raw}

    async def send(self, operation: str, body: Any, idempotency_key: str) -> Any:
        return await self.client.scale(
            self.cluster.id, body["replicas"], idempotency_key=idempotency_key
        )

    def done_message(self, operation: str, result: Any) -> str | None:
        return f"{result.name}: scaling to {result.replicas} replicas"

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_confirm()
