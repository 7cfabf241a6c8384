"""What every dashboard screen shares: status line, alerts, key bar, actions on a cluster.

The app's repaint timer calls `refresh_view(changes, now, second)` on the
top-most dashboard screen only; a screen that comes back into view repaints in
full from the model (`full_refresh`), so hidden screens cost nothing.
The keys on a cluster open the dialogs, the shells and the replica tools.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import Any

from textual.app import ComposeResult
from textual.screen import Screen

from ecotui import dialogs
from ecotui.host import EcoHost, OpenLogs, OpenShell, OpenView, eco_host
from ecotui.model import Changes
from ecotui.model.panels import alerts_view, status_view
from ecotui.screens import copy_files, forwards, gpu_compare, run_everywhere
from ecotui.screens.command_line import CommandLine
from ecotui.widgets.alert_bar import AlertBar
from ecotui.widgets.keybar import KeyBar
from ecotui.widgets.status_bar import StatusBar


class DashboardScreen(Screen[None]):
    """Base of the clusters, cluster, logs and account views."""

    where = ""
    alert_cluster: str | None = None

    @property
    def eco(self) -> EcoHost:
        return eco_host(self.app)

    def compose(self) -> ComposeResult:
        yield StatusBar(self.where)
        yield AlertBar(cluster_id=self.alert_cluster, id="alerts")
        yield from self.compose_body()
        yield KeyBar()
        yield CommandLine()

    def open_command_line(self) -> None:
        self.query_one(CommandLine).open()

    def close_command_line(self) -> bool:
        """Close the command line if it is open (escape). True if it was."""
        found = self.query(CommandLine)
        return bool(found) and found.first().close()

    def compose_body(self) -> ComposeResult:
        yield from ()

    # -- repaint ---------------------------------------------------------------
    def refresh_view(self, changes: Changes, now: datetime, second: bool) -> None:
        """Repaint what `changes` touched (and the clocks, once a second)."""
        if changes.connection or changes.alerts or changes.account or second or changes.snapshot:
            self.query_one(StatusBar).view = status_view(self.eco.model, now, self.eco.tz)
        if changes.alerts or second or changes.snapshot:
            self.query_one(AlertBar).view = alerts_view(self.eco.model, now, self.alert_cluster)

    def full_refresh(self, now: datetime) -> None:
        """Repaint everything from the model (on mount and when shown again)."""
        self.query_one(StatusBar).view = status_view(self.eco.model, now, self.eco.tz)
        self.query_one(AlertBar).view = alerts_view(self.eco.model, now, self.alert_cluster)

    ready = False  # children composed and mounted: refresh_view may run

    def on_mount(self) -> None:
        self.ready = True
        self.call_after_refresh(self._initial_paint)

    def on_unmount(self) -> None:
        self.ready = False

    def on_screen_resume(self) -> None:
        self.call_after_refresh(self._initial_paint)

    def _initial_paint(self) -> None:
        if self.is_attached:
            self.full_refresh(self.eco.clock.now())
            self.eco.focus_changed()

    def wanted_focus(self) -> list[str]:
        """Clusters whose replicas this screen shows (sent as the watch focus)."""
        return []

    def wanted_history(self) -> list[str]:
        """Clusters whose per-GPU history this screen draws (a subset of the focus)."""
        return []

    def handle_back(self) -> bool:
        """Escape: undo something local first (close a search). True if handled."""
        return False

    # -- the cluster under the cursor --------------------------------------------
    def current_cluster(self) -> dict[str, Any] | None:
        return None

    def current_replica(self) -> str | None:
        """The selected replica, or the cluster's first ready replica."""
        c = self.current_cluster()
        if c is None:
            return None
        states = c.get("replica_states") or []
        ready = [r for r in states if r.get("ready")]
        pick = (ready or states or [None])[0]
        return None if pick is None else str(pick.get("name"))

    def selected_replica(self) -> str | None:
        """A replica the user explicitly selected (restart one, not the cluster)."""
        return None

    # -- actions on a cluster ------------------------------------------------------
    def _in_worker(self, opening: Awaitable[Any]) -> None:
        """Run an `open_*` that waits for its screen (or asks first) in a worker."""
        self.run_worker(opening, group="dialog")

    def _need_cluster(self) -> dict[str, Any] | None:
        c = self.current_cluster()
        if c is None:
            self.notify("No cluster selected", severity="warning")
        return c

    def _need_replica(self, c: dict[str, Any], what: str) -> str | None:
        replica = self.current_replica()
        if replica is None:
            self.notify(f"{c.get('name')} has {what}", severity="warning")
        return replica

    def action_launch(self) -> None:
        dialogs.open_launch(self.app)

    def action_scale(self) -> None:
        if (c := self._need_cluster()) is not None:
            dialogs.open_scale(self.app, c)

    def action_extend(self) -> None:
        if (c := self._need_cluster()) is not None:
            dialogs.open_extend(self.app, c)

    def action_endpoint(self) -> None:
        if (c := self._need_cluster()) is not None:
            dialogs.open_endpoint(self.app, c)

    def action_stop(self) -> None:
        if (c := self._need_cluster()) is not None:
            dialogs.open_stop(self.app, c)

    def action_resume(self) -> None:
        if (c := self._need_cluster()) is not None:
            dialogs.open_resume(self.app, c)

    def action_terminate(self) -> None:
        if (c := self._need_cluster()) is not None:
            dialogs.open_terminate(self.app, c)

    def action_restart(self) -> None:
        if (c := self._need_cluster()) is not None:
            dialogs.open_restart(self.app, c, self.selected_replica())

    def action_shell(self) -> None:
        c = self._need_cluster()
        if c is None:
            return
        replica = self._need_replica(c, "no replica to open a shell in")
        if replica is not None:
            self.post_message(OpenShell(c, replica))

    def action_shells(self) -> None:
        self.post_message(OpenView("shells"))

    def action_nvidia_smi(self) -> None:
        if (c := self._need_cluster()) is not None:
            self._in_worker(gpu_compare.open_gpu_compare(self.app, c))

    def action_run_everywhere(self) -> None:
        if (c := self._need_cluster()) is not None:
            self._in_worker(run_everywhere.open_run_everywhere(self.app, c))

    def action_port_forward(self) -> None:
        c = self._need_cluster()
        if c is None:
            return
        replica = self._need_replica(c, "no replica to forward to")
        if replica is not None:
            self._in_worker(forwards.open_port_forward(self.app, c, replica))

    def action_upload(self) -> None:
        c = self._need_cluster()
        if c is not None and (replica := self._need_replica(c, "no replica")) is not None:
            self._in_worker(copy_files.open_upload(self.app, c, replica))

    def action_download(self) -> None:
        c = self._need_cluster()
        if c is not None and (replica := self._need_replica(c, "no replica")) is not None:
            self._in_worker(copy_files.open_download(self.app, c, replica))

    def action_forwards(self) -> None:
        self._in_worker(forwards.open_forwards(self.app, self.current_cluster()))

    def action_logs(self) -> None:
        c = self._need_cluster()
        if c is None:
            return
        replica = self._need_replica(c, "no replicas to show logs of")
        if replica is not None:
            self.post_message(OpenLogs(str(c["id"]), replica))
