"""Restart dialog: one replica, or the whole cluster one replica at a time."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from textual.widget import Widget
from textual.widgets import RadioSet, Static

from ecotui.client.rest import ClusterArg, EcoClient
from ecotui.dialogs._base import ClusterDialog
from ecotui.widgets.controls import EcoRadioButton


class RestartDialog(ClusterDialog):
    CONFIRM_LABEL = "Restart"
    CONFIRM_VARIANT = "warning"
    PROGRESS = "Restarting… waiting for the backend to confirm."

    def __init__(
        self, cluster: ClusterArg, client: EcoClient, replica: str | None = None, **kw: Any
    ) -> None:
        super().__init__(cluster, client, **kw)
        self.replica = replica

    def title_text(self) -> str:
        return f"Restart {self.replica or self.cluster.name}?"

    def compose_body(self) -> Iterable[Widget]:
        c = self.cluster
        yield Static(
            "A restart stops the replica's process and starts it again: shells and "
            "commands running in it end. The cluster's rate and hold do not change.",
            classes="text",
        )
        buttons = []
        if self.replica:
            buttons.append(
                EcoRadioButton(f"Only replica {self.replica}", value=True, id="one", compact=True)
            )
        buttons.append(
            EcoRadioButton(
                f"The whole cluster ({c.replicas} replicas), one replica at a time",
                value=not self.replica,
                id="all",
                compact=True,
            )
        )
        yield RadioSet(*buttons, id="scope", compact=True, classes="text")

    def on_mount(self) -> None:
        self.query_one("#scope", RadioSet).focus()

    def whole_cluster(self) -> bool:
        pressed = self.query_one("#scope", RadioSet).pressed_button
        return pressed is None or pressed.id == "all"

    def request_for(self, operation: str) -> Any:
        return {"replica": None if self.whole_cluster() else self.replica}

    async def send(self, operation: str, body: Any, idempotency_key: str) -> Any:
        return await self.client.restart(
            self.cluster.id, body["replica"], idempotency_key=idempotency_key
        )

    def done_message(self, operation: str, result: Any) -> str | None:
        if self.whole_cluster():
            return f"{self.cluster.name}: rolling restart, one replica at a time"
        return f"{self.replica}: restarting"
