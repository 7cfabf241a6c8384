"""The ecotui dashboard app: wiring of the watch feed, the view model and the screens.

Data flow: a worker reads the watch feed and folds each frame into the
`DashboardModel`; a timer at the repaint rate (`refresh_hz`) hands what changed
to the top-most dashboard screen inside `batch_update()`, sends the watch focus
(the clusters on screen) when it changes, and raises a notification for each
new alert. REST reads and writes happen in workers too; event handlers never
do IO. Screens and dialogs see the app through `ecotui.host` (`EcoHost`:
client, model, clock, tz) and ask for other views with its messages
(`OpenCluster`, `OpenLogs`, `OpenView`), handled here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from datetime import tzinfo
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import BindingType
from textual.command import CommandPalette, SearchIcon
from textual.css.query import NoMatches
from textual.screen import Screen

from ecotui.client.rest import EcoClient
from ecotui.client.watch import FrameSource, WatchClient
from ecotui.host import OpenCluster, OpenLogs, OpenShell, OpenView
from ecotui.keymap import GLOBAL, key_label
from ecotui.model import Alert, Clock, DashboardModel, SystemClock
from ecotui.screens.account import AccountScreen
from ecotui.screens.base import DashboardScreen
from ecotui.screens.cluster import ClusterScreen
from ecotui.screens.clusters import ClustersScreen
from ecotui.screens.gpus import GpusScreen
from ecotui.screens.help import HelpScreen
from ecotui.screens.logs import LogsScreen
from ecotui.text import visible

DARK_THEME = "textual-dark"
LIGHT_THEME = "textual-light"


class EcoApp(App[None]):
    """The live dashboard for one backend and one API key."""

    TITLE = "ecotui"
    CSS_PATH = "app.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [*GLOBAL]
    NOTIFICATION_TIMEOUT = 8

    def __init__(
        self,
        connection: Any = None,
        *,
        refresh_hz: float = 4.0,
        clock: Clock | None = None,
        client: EcoClient | None = None,
        frame_source: FrameSource | None = None,
        tz: tzinfo | None = None,
        export_dir: Path | None = None,
        theme: str | None = None,
    ) -> None:
        super().__init__()
        self.clock: Clock = clock or SystemClock()
        self.tz = tz  # None: the machine's local time zone
        self.refresh_hz = max(0.5, float(refresh_hz))
        self.export_dir = export_dir
        self.model = DashboardModel(self.clock)
        url = getattr(connection, "url", None)
        key = getattr(connection, "key", None) or getattr(connection, "api_key", None)
        if client is None:
            if url is None or key is None:
                raise ValueError("EcoApp needs a connection (url and key) or a client")
            client = EcoClient(url, key)
        self.client = client
        if frame_source is None:
            frame_source = WatchClient(client.base_url, client.api_key, clock=self.clock)
        #: Where the watch frames come from (the backend's watch feed, or a replay).
        self.feed: FrameSource = frame_source
        self._sent_focus: frozenset[str] | None = None
        self._last_second: int | None = None
        self._first_snapshot_notified = False
        self.paints = 0
        if theme:
            self.theme = theme

    def get_default_screen(self) -> Screen[Any]:
        return ClustersScreen()

    # -- lifecycle -------------------------------------------------------------------
    def on_mount(self) -> None:
        self.run_watch()
        self.set_interval(1.0 / self.refresh_hz, self._tick, name="repaint")

    async def on_unmount(self) -> None:
        with contextlib.suppress(Exception):
            await self.feed.close()
        with contextlib.suppress(Exception):
            await self.client.aclose()

    @work(group="watch", exclusive=True)
    async def run_watch(self) -> None:
        """Fold every watch frame into the model (no painting here)."""
        model = self.model
        count = 0
        async for frame in self.feed.frames():
            model.apply(frame)
            kind = frame.type
            if kind == "snapshot":
                if model.snapshots > 1:
                    self._restore_history()
                self.repaint_now()  # first paint as soon as the data is here
            elif kind == "connection":
                self.repaint_now()
            count += 1
            if count % 256 == 0:
                await asyncio.sleep(0)  # a burst must not starve input handling

    def _restore_history(self) -> None:
        """After a reconnect: refetch what the gap lost (GPU history, events)."""
        for screen in self.screen_stack:
            if isinstance(screen, ClusterScreen):
                screen.load_history()

    # -- repaint -------------------------------------------------------------------
    def _tick(self) -> None:
        now = self.clock.now()
        self.model.tick(now)
        sec = int(now.timestamp())
        second = sec != self._last_second
        self._last_second = sec
        self._paint(second)

    def repaint_now(self) -> None:
        """Paint what changed without waiting for the timer (after a key, a snapshot)."""
        self._paint(False)

    def _paint(self, second: bool) -> None:
        now = self.clock.now()
        changes = self.model.take_changes()
        self._notify_alerts(self.model.take_new_alerts())
        screen = self.dashboard_screen()
        if screen is not None and screen.ready and (changes or second):
            try:
                with self.batch_update():
                    screen.refresh_view(changes, now, second)
            except NoMatches:
                return  # the screen is being torn down (app exit)
            self.paints += 1
        self.focus_changed()

    def dashboard_screen(self) -> DashboardScreen | None:
        """The top-most dashboard screen (it may sit under a dialog)."""
        for screen in reversed(self.screen_stack):
            if isinstance(screen, DashboardScreen):
                return screen
        return None

    def focus_changed(self) -> None:
        """Send the watch focus when the clusters on screen changed."""
        screen = self.dashboard_screen()
        if screen is None or not screen.ready:
            return
        try:
            ids = frozenset(screen.wanted_focus())
            history = screen.wanted_history()
        except NoMatches:
            return
        self.model.set_focus(ids, history)
        if ids != self._sent_focus:
            self._sent_focus = ids
            self._send_focus(sorted(ids))

    @work(group="focus", exclusive=True)
    async def _send_focus(self, ids: list[str]) -> None:
        await self.feed.focus(ids)

    def _notify_alerts(self, alerts: list[Alert]) -> None:
        if not alerts:
            return
        if not self._first_snapshot_notified and len(alerts) > 2:
            # On start, one summary instead of a wall of toasts.
            self._first_snapshot_notified = True
            errors = sum(1 for a in alerts if a.level == "error")
            self.notify(
                "; ".join(a.message for a in alerts[:3]) + (" …" if len(alerts) > 3 else ""),
                title=f"{len(alerts)} alerts ({errors} errors)",
                severity="error" if errors else "warning",
            )
            return
        self._first_snapshot_notified = True
        for a in alerts:
            self.notify(
                a.message, title=a.title, severity="error" if a.level == "error" else "warning"
            )

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: Any = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """A toast. Its text often holds names and reasons from the backend: never
        read as markup, control characters shown (`ecotui.text.visible`)."""
        text = "\n".join(visible(line) for line in str(message).split("\n"))
        super().notify(text, title=visible(title), severity=severity, timeout=timeout, markup=False)

    # -- navigation ------------------------------------------------------------------
    def open_cluster(self, cluster_id: str) -> None:
        self.push_screen(ClusterScreen(cluster_id))

    def on_open_cluster(self, message: OpenCluster) -> None:
        self.open_cluster(message.cluster_id)

    def on_open_logs(self, message: OpenLogs) -> None:
        self.push_screen(LogsScreen(message.cluster_id, message.replica))

    def on_open_view(self, message: OpenView) -> None:
        if message.view == "shells":
            self.open_shells()
            return
        {"help": self.action_help, "account": self.action_account, "gpus": self.action_show_gpus}[
            message.view
        ]()

    # The shells (and the terminal emulator under them) are imported on first use: a
    # dashboard that opens no shell never loads them (about 3.5 MiB at start).
    @work(group="shells")
    async def open_shells(self) -> None:
        from ecotui.screens import shells

        await shells.open_shells_view(self)

    @work(group="shells")
    async def on_open_shell(self, message: OpenShell) -> None:
        from ecotui.screens import shells

        await shells.open_shell(self, message.cluster, message.replica)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_account(self) -> None:
        if not isinstance(self.screen, AccountScreen):
            self.push_screen(AccountScreen())

    def action_show_gpus(self) -> None:
        """The fleet GPU view (`:gpus`): every GPU across all clusters, worst first."""
        if not isinstance(self.screen, GpusScreen):
            self.push_screen(GpusScreen())

    def action_command_line(self) -> None:
        screen = self.screen
        if isinstance(screen, DashboardScreen):
            screen.open_command_line()

    async def action_back(self) -> None:
        screen = self.screen
        if isinstance(screen, DashboardScreen) and (
            screen.close_command_line() or screen.handle_back()
        ):
            return
        if len(self.screen_stack) > 1:
            self.pop_screen()

    def action_toggle_theme(self) -> None:
        self.theme = LIGHT_THEME if self.current_theme.dark else DARK_THEME

    # -- command palette ---------------------------------------------------------------
    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        seen: set[str] = set()
        for active in screen.active_bindings.values():
            b = active.binding
            if not b.description or b.action in seen or b.action == "app.command_palette":
                continue
            seen.add(b.action)
            yield SystemCommand(
                f"{b.description[0].upper()}{b.description[1:]}",
                f"key {key_label(b)}",
                partial(self._run_from_palette, b.action, active.node),
            )
        yield from super().get_system_commands(screen)

    def on_command_palette_opened(self, event: CommandPalette.Opened) -> None:
        # The default icon is an emoji whose width terminals disagree on: a plain
        # character instead.
        for palette in self.screen_stack:
            if isinstance(palette, CommandPalette):
                for icon in palette.query(SearchIcon):
                    icon.icon = "›"

    def _run_from_palette(self, action: str, node: Any) -> None:
        self.call_later(self.run_action, action, node)


def run_app(connection: Any, refresh_hz: float = 4.0) -> None:
    """Run the dashboard in this terminal until the user quits."""
    EcoApp(connection, refresh_hz=refresh_hz).run()
