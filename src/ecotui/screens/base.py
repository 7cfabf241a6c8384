"""What every dashboard screen shares: status line, alerts, key bar, actions on a cluster.

The app's repaint timer calls `refresh_view(changes, now, second)` on the
top-most dashboard screen only; a screen that comes back into view repaints in
full from the model (`full_refresh`), so hidden screens cost nothing.
Actions on a cluster open the dialogs and shell screens written elsewhere,
imported when the key is pressed.
"""

from __future__ import annotations

import importlib
import inspect
from datetime import datetime
from typing import TYPE_CHECKING, Any

from textual.app import ComposeResult
from textual.screen import Screen

from ecotui.model import Changes
from ecotui.model.panels import alerts_view, status_view
from ecotui.screens.command_line import CommandLine
from ecotui.widgets.alert_bar import AlertBar
from ecotui.widgets.keybar import KeyBar
from ecotui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    from ecotui.app import EcoApp


class DashboardScreen(Screen):
    """Base of the clusters, cluster, logs and account views."""

    where = ""
    alert_cluster: str | None = None

    @property
    def eco(self) -> EcoApp:
        return self.app  # type: ignore[return-value]

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
    def _call_external(self, module: str, fn: str, *args: Any) -> None:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                self.notify(f"{fn.replace('open_', '').replace('_', ' ')} is not available in this "
                            "build", severity="error")
                return
            raise
        func = getattr(mod, fn, None)
        if func is None:
            self.notify(f"{fn} is not available in this build", severity="error")
            return
        result = func(self.app, *args)
        if inspect.isawaitable(result):
            self.run_worker(result, group="dialog")  # type: ignore[arg-type]

    def _need_cluster(self) -> dict[str, Any] | None:
        c = self.current_cluster()
        if c is None:
            self.notify("No cluster selected", severity="warning")
        return c

    def action_launch(self) -> None:
        self._call_external("ecotui.dialogs", "open_launch")

    def _cluster_dialog(self, fn: str) -> None:
        c = self._need_cluster()
        if c is not None:
            self._call_external("ecotui.dialogs", fn, c)

    def action_scale(self) -> None:
        self._cluster_dialog("open_scale")

    def action_extend(self) -> None:
        self._cluster_dialog("open_extend")

    def action_endpoint(self) -> None:
        self._cluster_dialog("open_endpoint")

    def action_stop(self) -> None:
        self._cluster_dialog("open_stop")

    def action_resume(self) -> None:
        self._cluster_dialog("open_resume")

    def action_terminate(self) -> None:
        self._cluster_dialog("open_terminate")

    def action_restart(self) -> None:
        c = self._need_cluster()
        if c is not None:
            self._call_external("ecotui.dialogs", "open_restart", c, self.selected_replica())

    def action_shell(self) -> None:
        c = self._need_cluster()
        if c is None:
            return
        replica = self.current_replica()
        if replica is None:
            self.notify(f"{c.get('name')} has no replica to open a shell in", severity="warning")
            return
        self._call_external("ecotui.screens.shells", "open_shell", c, replica)

    def action_shells(self) -> None:
        self._call_external("ecotui.screens.shells", "open_shells_view")

    def action_nvidia_smi(self) -> None:
        c = self._need_cluster()
        if c is not None:
            self._call_external("ecotui.screens.gpu_compare", "open_gpu_compare", c)

    def action_run_everywhere(self) -> None:
        c = self._need_cluster()
        if c is not None:
            self._call_external("ecotui.screens.run_everywhere", "open_run_everywhere", c)

    def action_port_forward(self) -> None:
        c = self._need_cluster()
        if c is None:
            return
        replica = self.current_replica()
        if replica is None:
            self.notify(f"{c.get('name')} has no replica to forward to", severity="warning")
            return
        self._call_external("ecotui.screens.forwards", "open_port_forward", c, replica)

    def _replica_tool(self, fn: str) -> None:
        c = self._need_cluster()
        if c is None:
            return
        replica = self.current_replica()
        if replica is None:
            self.notify(f"{c.get('name')} has no replica", severity="warning")
            return
        self._call_external("ecotui.screens.copy_files", fn, c, replica)

    def action_upload(self) -> None:
        self._replica_tool("open_upload")

    def action_download(self) -> None:
        self._replica_tool("open_download")

    def action_forwards(self) -> None:
        self._call_external("ecotui.screens.forwards", "open_forwards", self.current_cluster())

    def action_logs(self) -> None:
        c = self._need_cluster()
        if c is None:
            return
        replica = self.current_replica()
        if replica is None:
            self.notify(f"{c.get('name')} has no replicas to show logs of", severity="warning")
            return
        from ecotui.screens.logs import LogsScreen

        self.app.push_screen(LogsScreen(str(c["id"]), replica))
