"""Expiry warning: a cluster is about to reach its expiry (and terminate);
`e` opens the extend dialog in one key."""

from __future__ import annotations

from datetime import tzinfo
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Static

from ecocore.clock import Clock, SystemClock
from ecocore.wire import ClusterOut
from ecotui import costs, wording
from ecotui.client.rest import ClusterArg, as_cluster
from ecotui.dialogs._base import ModalCard
from ecotui.wording import cluster_summary


class ExpiryWarningDialog(ModalCard[str | None]):
    """Dismisses with "extend" when the user chose to extend, else None."""

    DEFAULT_CSS = """
    ExpiryWarningDialog > #dialog {
        border: round $warning;
    }
    ExpiryWarningDialog #left {
        color: $text-warning;
        text-style: bold;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e", "extend", "Extend"),
        Binding("escape", "dismiss_warning", "Dismiss"),
    ]

    def __init__(
        self, cluster: ClusterArg, *, clock: Clock | None = None, tz: tzinfo | None = None
    ) -> None:
        super().__init__()
        self.cluster: ClusterOut = as_cluster(cluster)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.tz = tz

    def compose(self) -> ComposeResult:
        c = self.cluster
        with Vertical(id="dialog") as box:
            box.border_title = f"{c.name} expires soon"
            yield Static("", id="left", classes="text")
            yield Static(cluster_summary(c), classes="text")
            yield Static(
                "At expiry it terminates: its replicas are deleted, charges stop there and "
                "the unused hold is released. Extend it to keep it running.",
                classes="text",
            )
            with Horizontal(id="buttons"):
                yield Button("Dismiss", id="dismiss", compact=True)
                yield Button("Extend… (e)", id="extend", variant="primary", compact=True)

    def on_mount(self) -> None:
        self._tick()
        self.set_interval(1.0, self._tick)

    def _tick(self) -> None:
        now = self.clock.now()
        remaining = costs.remaining_us(self.cluster.expires_at, now)
        at = wording.local_time_text(self.cluster.expires_at, self.tz, now=now)
        text = (
            f"{self.cluster.name} expires in {wording.duration_text(remaining)}, at {at}."
            if remaining > 0
            else f"{self.cluster.name} has reached its expiry ({at})."
        )
        self.query_one("#left", Static).update(text)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "extend":
            self.action_extend()
        else:
            self.action_dismiss_warning()

    def action_extend(self) -> None:
        self.dismiss("extend")

    def action_dismiss_warning(self) -> None:
        self.dismiss(None)
