"""Replica shells inside the dashboard: tabs of kept sessions, a split view, broadcast.

Every shell is a kept session of the backend (api.md, "Kept sessions"):
created with `POST .../sessions`, shown by attaching to it over WebSocket.
Leaving a shell (closing its tab with `d`, leaving the view, losing the
connection) detaches: the session goes on in the backend, and attaching again
replays its kept output and continues. A session whose process exited says so
with its exit code; one ended by a backend restart says that; both offer a new
shell on Enter.

The view is one screen per app, installed under the name "shells", so shells
keep running (and their screens keep updating) while the dashboard shows
something else. Keys while a terminal has focus all go to the shell, except
`ctrl+]`, which gives them back to this screen (`ecotui.keymap.SHELLS_VIEW`).

Entry points for the dashboard's keys: `open_shell(app, cluster, replica)`
(`s`), `open_shells_view(app)` (`S`); `N` opens `gpu_compare`. The app must
be an `ecotui.host.DialogHost`: a `client` (an `EcoClient`), and the clock and
zone of the extend dialog (`e`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from pydantic import ValidationError
from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Input, Label, OptionList, Select, Static, Tab, Tabs
from textual.widgets.option_list import Option

from ecocore.wire import ClusterOut, ReplicaOut, SessionOut
from ecotui import dialogs
from ecotui.client.exec import ExecConnection, attach_session
from ecotui.client.rest import ApiRefusal, BackendUnreachable, ClusterArg, EcoClient, as_cluster
from ecotui.host import client_host
from ecotui.keymap import RELEASE_KEY_DISPLAY, SHELLS_VIEW
from ecotui.screens.recordings import open_recordings
from ecotui.screens.shell_tools import start_recording, stop_recording, tab_label
from ecotui.widgets.controls import EcoInput, EcoOptionList
from ecotui.widgets.keybar import KeyBar
from ecotui.widgets.terminal import TerminalView

ENDED_STATES = ("exited", "ended", "error")
_ids = itertools.count(1)


def _gpu_words(replica: ReplicaOut) -> str:
    if not replica.gpus:
        return "no GPUs"
    parts = [f"{g.index}:{g.name} {g.utilization:.0f}%" for g in replica.gpus]
    suffix = " (simulated)" if replica.telemetry == "simulated" else ""
    return f"GPUs {', '.join(parts)}{suffix}"


# Why a kept session ended, in words (the API's `ended_reason`).
_ENDED = {
    "backend_restart": "by a backend restart",
    "instance_gone": "with the backend instance that held it (it stopped or was lost)",
    "deleted": "(ended by its owner)",
}


class ReplicaPick(NamedTuple):
    name: str
    ready: bool
    node: str | None


@dataclass(frozen=True, slots=True)
class PickChoice:
    """What the picker offers of a cluster: its name and its replicas, ready or not."""

    id: str
    name: str
    replicas: tuple[ReplicaPick, ...]
    cluster: ClusterArg  # what a shell is then opened with

    @classmethod
    def of(cls, c: ClusterArg) -> PickChoice:
        """From the REST answer, or from a record or description of the cluster (the
        picker needs its id, name and replicas only)."""
        if isinstance(c, ClusterOut):
            picks = tuple(ReplicaPick(r.name, r.ready, r.node) for r in c.replica_states)
            return cls(c.id, c.name or c.id, picks, c)
        cid = str(c.get("id"))
        picks = tuple(
            ReplicaPick(str(r.get("name")), bool(r.get("ready")), _text_or_none(r.get("node")))
            for r in c.get("replica_states") or ()
        )
        return cls(cid, str(c.get("name") or cid), picks, c)

    def node_of(self, replica: str) -> str | None:
        return next((r.node for r in self.replicas if r.name == replica), None)


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _as_cluster_or_none(cluster: ClusterArg) -> ClusterOut | None:
    try:
        return as_cluster(cluster)
    except ValidationError:
        return None


class ShellPane(Vertical):
    """One kept session: its header, its terminal and what became of it."""

    DEFAULT_CSS = """
    ShellPane { width: 1fr; height: 1fr; }
    ShellPane > .shell-header { height: 1; background: $boost; padding: 0 1; text-wrap: nowrap; }
    ShellPane > .shell-status { height: 1; padding: 0 1; display: none; background: $warning 30%; }
    ShellPane > .shell-status.-shown { display: block; }
    ShellPane.-broadcast > .shell-header { background: $error; color: $text; text-style: bold; }
    ShellPane.-broadcast > TerminalView { border-left: thick $error; }
    ShellPane.-focused > .shell-header { text-style: bold; }
    """

    def __init__(
        self,
        client: EcoClient,
        cluster: ClusterArg,
        replica: str,
        *,
        command: list[str] | str | None = None,
        sid: str | None = None,
        scrollback: int = 10_000,
    ) -> None:
        self.pane_id = f"shell-{next(_ids)}"
        super().__init__(id=self.pane_id)
        self.client = client
        target = PickChoice.of(cluster)
        self.cluster_id = target.id
        self.cluster_name = target.name
        # The cluster as last read, for the reservation clock and the extend dialog (a
        # partial description waits for the header's read of it).
        self.cluster_info: ClusterOut | None = _as_cluster_or_none(cluster)
        self.replica = replica
        self.command = command
        self.sid = sid
        self.node: str | None = target.node_of(replica)
        self.gpus = ""
        self.state = "connecting"
        self.detail = ""
        self.exit_code: int | None = None
        self.ended_reason: str | None = None
        self.attaches = 0  # successful attaches (1 + reattaches)
        self.broadcasting = False
        self.recorder: Any = None  # an asciicast writer while `r` records (shell_tools)
        self._conn: ExecConnection | None = None
        self._outq: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._leaving = False
        self.view = TerminalView(scrollback=scrollback)

    @property
    def label(self) -> str:
        mark = {
            "exited": " ✕",
            "ended": " ✕",
            "error": " !",
            "reconnecting": " …",
            "connecting": " …",
        }.get(self.state, "")
        return f"{'◉ ' if self.broadcasting else ''}{self.cluster_name}/{self.replica}{mark}"

    def compose(self) -> ComposeResult:
        yield Static("", classes="shell-header")
        yield self.view
        yield Static("", classes="shell-status")

    def on_mount(self) -> None:
        self.view.input_sink = self._input
        self.view.resize_sink = self._resize
        self._show()
        self.run_session()
        self.load_header()
        self.set_interval(10.0, self.load_header)
        self.set_interval(1.0, self._show)  # the reservation clock on the tab

    # -- what the pane shows ------------------------------------------------------------------
    def header_text(self) -> str:
        parts = [f"{self.cluster_name} / {self.replica}", f"node {self.node or '?'}"]
        if self.gpus:
            parts.append(self.gpus)
        if self.sid:
            parts.append(f"session {self.sid}")
        if self.broadcasting:
            parts.insert(0, "BROADCAST")
        if self.recorder is not None:
            parts.insert(0, "● REC")
        return " · ".join(parts)

    def status_text(self) -> str:
        if self.state == "connecting":
            return "connecting…"
        if self.state == "reconnecting":
            return f"connection lost ({self.detail}); reattaching…"
        if self.state == "exited":
            code = "unknown" if self.exit_code is None else str(self.exit_code)
            return f"process exited with code {code}; press Enter for a new shell"
        if self.state == "ended":
            why = _ENDED.get(self.ended_reason or "", f"({self.ended_reason or 'gone'})")
            return f"session ended {why}; press Enter for a new shell"
        if self.state == "error":
            return f"{self.detail}; press Enter to try again"
        return ""

    def _show(self) -> None:
        try:
            header = self.query_one(".shell-header", Static)
            status = self.query_one(".shell-status", Static)
        except NoMatches:  # not composed yet
            return
        header.update(Text(self.header_text(), no_wrap=True))
        text = self.status_text()
        status.update(Text(text))
        status.set_class(bool(text), "-shown")
        self.set_class(self.broadcasting, "-broadcast")
        screen = self.screen if self.is_attached else None
        if isinstance(screen, ShellsScreen):
            screen.pane_changed(self)

    def _set_state(self, state: str, detail: str = "") -> None:
        self.state = state
        self.detail = detail
        self._show()

    @work(group="header", exclusive=True, exit_on_error=False)
    async def load_header(self) -> None:
        with contextlib.suppress(ApiRefusal, BackendUnreachable):
            self.cluster_info = await self.client.cluster(self.cluster_id)
        try:
            replicas = await self.client.replicas(self.cluster_id)
        except (ApiRefusal, BackendUnreachable):
            return
        for r in replicas:
            if r.name == self.replica:
                self.node = r.node or self.node
                self.gpus = _gpu_words(r)
                self._show()
                return

    # -- input to the session -------------------------------------------------------------------
    def _input(self, data: bytes) -> None:
        if self.state in ENDED_STATES:
            if b"\r" in data:
                self.new_session()
            return
        self._outq.put_nowait(("stdin", data))

    def _resize(self, cols: int, rows: int) -> None:
        self._outq.put_nowait(("resize", (cols, rows)))
        if self.recorder is not None:
            self.recorder.resize(cols, rows)

    async def _sender(self, conn: ExecConnection) -> None:
        while True:
            kind, value = await self._outq.get()
            try:
                if kind == "stdin":
                    await conn.send_stdin(value)
                else:
                    await conn.resize(*value)
            except Exception:
                # Lost with the connection: put it back for the next attach.
                self._outq.put_nowait((kind, value))
                return

    # -- the session ------------------------------------------------------------------------------
    def new_session(self) -> None:
        """A fresh session on the same replica and command (after the last one ended)."""
        self.sid = None
        self.exit_code = None
        self.ended_reason = None
        self.view.reset_terminal()
        self._set_state("connecting")
        self.run_session()

    @work(group="session", exclusive=True, exit_on_error=False)
    async def run_session(self) -> None:
        try:
            await self._session_loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # shown in the pane, never a crash of the dashboard
            self._set_state("error", f"the shell failed: {exc!r}")

    async def _session_loop(self) -> None:
        backoff = 0.25
        while not self._leaving:
            if self.sid is None:
                term = self.view.term
                try:
                    info = await self.client.create_session(
                        self.cluster_id,
                        self.replica,
                        command=self.command,
                        tty=True,
                        width=term.cols,
                        height=term.rows,
                    )
                except (ApiRefusal, BackendUnreachable) as exc:
                    self._set_state("error", f"could not open a shell in {self.replica}: {exc}")
                    return
                self.sid = info.id
            try:
                conn = await attach_session(self.client, self.cluster_id, self.sid)
            except ApiRefusal as exc:
                if exc.status == 404:
                    await self._learn_end()
                    return
                self._set_state("reconnecting", str(exc))
                await asyncio.sleep(backoff)
                backoff = min(5.0, backoff * 2)
                continue
            except BackendUnreachable:
                self._set_state("reconnecting", "the backend cannot be reached")
                await asyncio.sleep(backoff)
                backoff = min(5.0, backoff * 2)
                continue
            backoff = 0.25
            self.attaches += 1
            # The kept output is replayed from its start: draw it on a blank terminal.
            self.view.reset_terminal()
            self._conn = conn
            self._set_state("live")
            term = self.view.term
            self._outq.put_nowait(("resize", (term.cols, term.rows)))
            sender = asyncio.create_task(self._sender(conn))
            replay = conn.replay_bytes  # the first bytes are kept output, shown again
            try:
                async for _channel, data in conn.frames():
                    if replay > 0:
                        old, data = data[:replay], data[replay:]
                        replay -= len(old)
                        self.view.feed(old, replay=True)
                        if not data:
                            continue
                    self.view.feed(data)
                    if self.recorder is not None:
                        self.recorder.output(data)
            finally:
                sender.cancel()
                with contextlib.suppress(BaseException):
                    await sender
                self._conn = None
                await conn.close()
            status = conn.status
            if status is not None:
                self.exit_code = 0 if status.success else status.exit_code
                self._set_state("exited")
                return
            if self._leaving:
                return
            why = "too far behind" if conn.close_code == 4008 else "closed"
            self._set_state("reconnecting", why)
            await asyncio.sleep(backoff)

    async def _learn_end(self) -> None:
        """The session is gone: find out why from the sessions list."""
        try:
            sessions = await self.client.sessions(self.cluster_id)
        except (ApiRefusal, BackendUnreachable) as exc:
            self._set_state("ended", f"unknown: {exc}")
            return
        for s in sessions:
            if s.id == self.sid:
                reason = s.ended_reason
                if reason == "exited" or (reason is None and s.exited):
                    self.exit_code = s.exit_code
                    self._set_state("exited")
                else:
                    self.ended_reason = reason or "ended"
                    self._set_state("ended")
                return
        self.ended_reason = "gone"
        self._set_state("ended")

    async def detach(self) -> None:
        """Leave the session running in the backend."""
        self._leaving = True
        stop_recording(self)
        self.workers.cancel_group(self, "session")
        if self._conn is not None:
            await self._conn.close()

    async def end(self) -> None:
        """End the session in the backend (DELETE)."""
        self._leaving = True
        if self.sid is not None and self.state not in ENDED_STATES:
            with contextlib.suppress(ApiRefusal, BackendUnreachable):
                await self.client.end_session(self.cluster_id, self.sid)
        await self.detach()


class ShellPicker(ModalScreen[dict[str, Any] | None]):
    """Choose a cluster, a replica and a command, or a running session to attach to.

    Fits 80x24: one row per field, the sessions list scrolls, the buttons stay
    in view. Enter opens what has focus: the highlighted session in the list,
    else a new shell with the fields (on a Select, Enter opens its list)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]
    DEFAULT_CSS = """
    ShellPicker { align: center middle; }
    ShellPicker > Vertical { width: 80; max-width: 100%; height: auto; max-height: 100%;
                             border: round $accent; background: $surface; padding: 0 1; }
    ShellPicker .picker-row { height: 1; margin-top: 1; }
    ShellPicker .picker-row > Label { width: 9; }
    ShellPicker .picker-row > Select, ShellPicker .picker-row > Input { width: 1fr; }
    ShellPicker #sessions-label { margin-top: 1; }
    ShellPicker OptionList { height: auto; max-height: 6; }
    ShellPicker #picker-buttons { height: 1; margin-top: 1; }
    ShellPicker #picker-buttons Button { margin-right: 2; }
    """

    def __init__(
        self,
        client: EcoClient,
        clusters: list[ClusterArg],
        cluster_id: str | None = None,
        replica: str | None = None,
        open_sids: set[str] | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.clusters = {c.id: c for c in map(PickChoice.of, clusters)}
        self.cluster_id = cluster_id or (next(iter(self.clusters)) if self.clusters else None)
        self.replica = replica
        self.sessions: list[SessionOut] = []
        self.open_sids = open_sids or set()  # sessions already shown in a tab

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(
                "[b]Open a shell[/b]  [dim]enter: open · tab: next field · esc: cancel[/dim]"
            )
            with Horizontal(classes="picker-row"):
                yield Label("cluster")
                yield Select(
                    [(c.name, cid) for cid, c in self.clusters.items()],
                    value=self.cluster_id or Select.BLANK,
                    allow_blank=False,
                    id="cluster",
                    compact=True,
                )
            with Horizontal(classes="picker-row"):
                yield Label("replica")
                options = self._replica_options()
                yield Select(
                    options or [("no replica", "")], allow_blank=False, id="replica", compact=True
                )
            with Horizontal(classes="picker-row"):
                yield Label("command")
                yield EcoInput(
                    placeholder="empty: a login shell (bash, else sh)", id="command", compact=True
                )
            yield Label("or attach to a running session:", id="sessions-label")
            yield EcoOptionList(id="sessions")
            with Horizontal(id="picker-buttons"):
                yield Button("Open", variant="primary", id="open", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        self._fill_replicas()
        self.load_sessions()
        self.query_one("#command", Input).focus()

    def _states(self) -> tuple[ReplicaPick, ...]:
        c = self.clusters.get(self.cluster_id or "")
        return c.replicas if c is not None else ()

    def _replica_options(self) -> list[tuple[str, str]]:
        return [(f"{r.name}{'' if r.ready else ' (not ready)'}", r.name) for r in self._states()]

    def _fill_replicas(self) -> None:
        states = self._states()
        options = self._replica_options()
        sel = self.query_one("#replica", Select)
        sel.set_options(options or [("no replica", "")])
        names = [o[1] for o in options]
        pick = (
            self.replica
            if self.replica in names
            else (
                next(
                    (r.name for r in states if r.ready),
                    names[0] if names else None,
                )
            )
        )
        if pick is not None:
            sel.value = pick

    @on(Select.Changed, "#cluster")
    def _cluster_changed(self, event: Select.Changed) -> None:
        if event.value is not Select.BLANK and str(event.value) != self.cluster_id:
            self.cluster_id = str(event.value)
            self.replica = None
            self._fill_replicas()
            self.load_sessions()

    @work(group="sessions", exclusive=True, exit_on_error=False)
    async def load_sessions(self) -> None:
        ol = self.query_one("#sessions", OptionList)
        ol.clear_options()
        if not self.cluster_id:
            return
        try:
            sessions = await self.client.sessions(self.cluster_id)
        except (ApiRefusal, BackendUnreachable):
            return
        self.sessions = [s for s in sessions if not s.exited and not s.ended_reason]
        for s in self.sessions:
            cmd = " ".join(s.command) or "shell"
            where = "open in a tab" if s.id in self.open_sids else f"{s.attached} attached"
            ol.add_option(Option(Text(f"{s.replica}: {cmd}  (session {s.id}, {where})"), id=s.id))
        if self.sessions:
            ol.highlighted = 0  # Enter on the list takes the first one; Down moves from there

    def _choice(self) -> dict[str, Any] | None:
        if not self.cluster_id:
            return None
        replica = self.query_one("#replica", Select).value
        if replica is Select.BLANK or not replica:
            return None
        command = self.query_one("#command", Input).value.strip()
        return {
            "cluster": self.clusters[self.cluster_id].cluster,
            "replica": str(replica),
            "command": command or None,
            "sid": None,
        }

    @on(Input.Submitted, "#command")
    @on(Button.Pressed, "#open")
    def _open(self) -> None:
        choice = self._choice()
        if choice is None:
            self.notify("Pick a cluster and a replica", severity="warning")
            return
        self.dismiss(choice)

    @on(OptionList.OptionSelected, "#sessions")
    def _attach_session(self, event: OptionList.OptionSelected) -> None:
        sid = event.option.id
        s = next((x for x in self.sessions if x.id == sid), None)
        if s is None or not self.cluster_id:
            return
        self.dismiss(
            {
                "cluster": self.clusters[self.cluster_id].cluster,
                "replica": s.replica,
                "command": s.command,
                "sid": sid,
            }
        )

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class ShellsScreen(Screen[None]):
    """Tabs of shell sessions across replicas and clusters."""

    BINDINGS: ClassVar[list[BindingType]] = [*SHELLS_VIEW]
    DEFAULT_CSS = """
    ShellsScreen #shells-title { height: 1; background: $panel; padding: 0 1; }
    ShellsScreen #broadcast-banner { height: 1; background: $error; color: $text; text-style: bold;
                                     padding: 0 1; display: none; }
    ShellsScreen #broadcast-banner.-shown { display: block; }
    ShellsScreen #shell-search { height: 1; border: none; padding: 0 1; display: none; }
    ShellsScreen #shell-search.-shown { display: block; }
    ShellsScreen #panes { height: 1fr; }
    ShellsScreen #panes ShellPane { display: none; }
    ShellsScreen #panes ShellPane.-visible { display: block; }
    ShellsScreen #panes.-split ShellPane.-visible { width: 1fr; }
    ShellsScreen #panes.-split ShellPane.-divider { border-left: outer $accent; }
    ShellsScreen #shells-empty { height: 1fr; content-align: center middle; color: $text-muted; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.panes: dict[str, ShellPane] = {}
        self.order: list[str] = []
        self.active: str | None = None
        self.split = False
        self.broadcast_cluster: str | None = None

    @property
    def client(self) -> EcoClient:
        return client_host(self.app).client

    def compose(self) -> ComposeResult:
        yield Static(
            Text(f"shells · keys go to the shell; {RELEASE_KEY_DISPLAY} gives them back"),
            id="shells-title",
        )
        yield Tabs(id="shell-tabs")
        yield Static("", id="broadcast-banner")
        yield EcoInput(
            placeholder="search the scrollback (enter: newest match, esc: close)", id="shell-search"
        )
        yield Static("No shells open: press o to open one", id="shells-empty")
        yield Horizontal(id="panes")
        yield KeyBar()

    # -- panes ------------------------------------------------------------------------------
    @property
    def active_pane(self) -> ShellPane | None:
        return self.panes.get(self.active or "")

    def panes_of(self, cluster_id: str) -> list[ShellPane]:
        return [self.panes[k] for k in self.order if self.panes[k].cluster_id == cluster_id]

    def pane_of_session(self, sid: str | None) -> ShellPane | None:
        """The tab already showing kept session `sid`, if one does."""
        if sid is None:
            return None
        return next(
            (p for p in self.panes.values() if p.sid == sid and p.state not in ENDED_STATES), None
        )

    async def add_session(
        self,
        cluster: ClusterArg,
        replica: str,
        *,
        command: list[str] | str | None = None,
        sid: str | None = None,
        focus: bool = True,
    ) -> ShellPane:
        """A tab for a new session, or for kept session `sid`; a session already in a
        tab is not opened twice (keys would reach it twice): that tab is focused."""
        open_already = self.pane_of_session(sid)
        if open_already is not None:
            self.activate(open_already.pane_id, focus_terminal=focus)
            self.notify(f"Session {sid} is already open in a tab: focused it")
            return open_already
        pane = ShellPane(self.client, cluster, replica, command=command, sid=sid)
        return await self.add_pane(pane, focus=focus)

    async def add_pane(self, pane: ShellPane, *, focus: bool = True) -> ShellPane:
        self.panes[pane.pane_id] = pane
        self.order.append(pane.pane_id)
        await self.query_one("#panes", Horizontal).mount(pane)
        tabs = self.query_one("#shell-tabs", Tabs)
        await tabs.add_tab(Tab(pane.label, id=pane.pane_id))
        if self.broadcast_cluster == pane.cluster_id:
            self._hook(pane)
        if focus or self.active is None:
            self.activate(pane.pane_id, focus_terminal=focus)
        self._layout()
        return pane

    def activate(self, pane_id: str, *, focus_terminal: bool = False) -> None:
        if pane_id not in self.panes:
            return
        self.active = pane_id
        tabs = self.query_one("#shell-tabs", Tabs)
        if tabs.active != pane_id:
            tabs.active = pane_id
        self._layout()
        if focus_terminal:
            self.panes[pane_id].view.focus()

    def _visible(self) -> list[str]:
        if self.active is None:
            return []
        if not self.split or len(self.order) < 2:
            return [self.active]
        i = self.order.index(self.active)
        return [self.active, self.order[(i + 1) % len(self.order)]]

    def _layout(self) -> None:
        visible = self._visible()
        # Side by side, the right pane (the later one on screen) draws a divider.
        right = max(visible, key=self.order.index) if len(visible) > 1 else None
        for pid, pane in self.panes.items():
            pane.set_class(pid in visible, "-visible")
            pane.set_class(pid == self.active, "-focused")
            pane.set_class(pid == right, "-divider")
            self.pane_changed(pane)
        self.query_one("#panes").set_class(self.split and len(visible) > 1, "-split")
        self.query_one("#shells-empty").display = not self.panes

    def pane_changed(self, pane: ShellPane) -> None:
        with contextlib.suppress(Exception):
            tab = self.query_one("#shell-tabs", Tabs).query_one(f"#{pane.pane_id}", Tab)
            tab.label = tab_label(pane, active=pane.pane_id == self.active)

    async def remove_pane(self, pane: ShellPane) -> None:
        pid = pane.pane_id
        if pid not in self.panes:
            return
        i = self.order.index(pid)
        del self.panes[pid]
        self.order.remove(pid)
        await self.query_one("#shell-tabs", Tabs).remove_tab(pid)
        await pane.remove()
        if self.active == pid:
            self.active = self.order[min(i, len(self.order) - 1)] if self.order else None
            if self.active:
                self.activate(self.active)
        if self.broadcast_cluster and not self.panes_of(self.broadcast_cluster):
            self._broadcast_off()
        self._layout()

    @on(Tabs.TabActivated, "#shell-tabs")
    def _tab_activated(self, event: Tabs.TabActivated) -> None:
        if event.tab.id and event.tab.id in self.panes and event.tab.id != self.active:
            self.active = event.tab.id
            self._layout()

    @on(TerminalView.Released)
    def _released(self, event: TerminalView.Released) -> None:
        event.stop()
        self.query_one("#shell-tabs", Tabs).focus()

    @on(TerminalView.TitleChanged)
    def _title(self, event: TerminalView.TitleChanged) -> None:
        event.stop()

    @on(TerminalView.Bell)
    def _bell(self, event: TerminalView.Bell) -> None:
        event.stop()
        self.app.bell()

    # -- actions ----------------------------------------------------------------------------
    def action_focus_terminal(self) -> None:
        pane = self.active_pane
        if pane is not None:
            pane.view.focus()

    def action_next_tab(self) -> None:
        self._step_tab(1)

    def action_previous_tab(self) -> None:
        self._step_tab(-1)

    def _step_tab(self, step: int) -> None:
        if not self.order or self.active is None:
            return
        i = (self.order.index(self.active) + step) % len(self.order)
        self.activate(self.order[i])

    def action_toggle_split(self) -> None:
        self.split = not self.split
        self._layout()

    def action_other_pane(self) -> None:
        visible = self._visible()
        if len(visible) == 2:
            self.panes[visible[1]].view.focus()
        elif self.active_pane is not None:
            self.active_pane.view.focus()

    async def action_detach(self) -> None:
        pane = self.active_pane
        if pane is None:
            return
        await pane.detach()
        await self.remove_pane(pane)
        if pane.sid and pane.state not in ENDED_STATES:
            self.notify(
                f"Detached from {pane.replica}: the session keeps running (o to attach again)"
            )

    def action_toggle_record(self) -> None:
        pane = self.active_pane
        if pane is None:
            return
        if pane.recorder is not None:
            path = stop_recording(pane)
            self.notify(f"Recording saved: {path}")
        else:
            try:
                path = start_recording(pane)
            except OSError as exc:
                self.notify(f"Cannot record: {exc}", severity="error")
                return
            self.notify(f"Recording {pane.cluster_name}/{pane.replica} to {path}")
        pane._show()

    def action_recordings(self) -> None:
        self.run_worker(open_recordings(self.app), group="recordings")

    def action_extend(self) -> None:
        pane = self.active_pane
        if pane is None:
            return
        if pane.cluster_info is None:
            self.notify("The cluster is still being read; try again", severity="warning")
            return
        dialogs.open_extend(self.app, pane.cluster_info, lambda _result: pane.load_header())

    async def action_end_session(self) -> None:
        pane = self.active_pane
        if pane is None:
            return
        await pane.end()
        await self.remove_pane(pane)

    def action_open_picker(self) -> None:
        self.open_picker()

    @work(group="picker", exclusive=True, exit_on_error=False)
    async def open_picker(self, cluster_id: str | None = None, replica: str | None = None) -> None:
        try:
            await self._pick(cluster_id, replica)
        except Exception as exc:
            self.notify(f"Cannot open a shell: {exc}", severity="error")

    async def _pick(self, cluster_id: str | None, replica: str | None) -> None:
        try:
            clusters = await self.client.clusters()
        except (ApiRefusal, BackendUnreachable) as exc:
            self.notify(f"Cannot list clusters: {exc}", severity="error")
            return
        live: list[ClusterArg] = [
            c for c in clusters if c.status not in ("terminated", "terminating")
        ]
        if not live:
            self.notify("No cluster to open a shell in", severity="warning")
            return
        if cluster_id is None and self.active_pane is not None:
            cluster_id = self.active_pane.cluster_id
        open_sids = {p.sid for p in self.panes.values() if p.sid and p.state not in ENDED_STATES}
        choice = await self.app.push_screen_wait(
            ShellPicker(self.client, live, cluster_id, replica, open_sids)
        )
        if choice:
            await self.add_session(
                choice["cluster"],
                choice["replica"],
                command=choice.get("command"),
                sid=choice.get("sid"),
            )

    # -- broadcast --------------------------------------------------------------------------
    def _hook(self, pane: ShellPane) -> None:
        pane.broadcasting = True
        pane.view.user_input_hook = lambda data, cid=pane.cluster_id: self._broadcast(cid, data)
        pane._show()

    def _broadcast(self, cluster_id: str, data: bytes) -> bool:
        if self.broadcast_cluster != cluster_id:
            return False
        # Once per session, however many tabs show it (a tab still connecting has no
        # session id yet: it counts as its own).
        reached: set[str] = set()
        for pane in self.panes_of(cluster_id):
            key = pane.sid or pane.pane_id
            if pane.state not in ENDED_STATES and key not in reached:
                reached.add(key)
                pane.view.deliver(data)
        return True

    async def action_toggle_broadcast(self) -> None:
        pane = self.active_pane
        if pane is None:
            self.notify("Open a shell first (o)", severity="warning")
            return
        if self.broadcast_cluster == pane.cluster_id:
            self._broadcast_off()
            return
        if self.broadcast_cluster is not None:
            self._broadcast_off()
        await self.broadcast_on(pane.cluster_id, pane.command)

    async def broadcast_on(self, cluster_id: str, command: list[str] | str | None = None) -> None:
        """Type once into every ready replica of the cluster: opens the missing shells
        (running `command`, the command of the shell broadcast was started from)."""
        try:
            cluster = await self.client.cluster(cluster_id)
        except (ApiRefusal, BackendUnreachable) as exc:
            self.notify(f"Cannot read the cluster: {exc}", severity="error")
            return
        self.broadcast_cluster = cluster_id
        have = {p.replica for p in self.panes_of(cluster_id) if p.state not in ENDED_STATES}
        opened: list[str] = []
        for r in cluster.replica_states:
            name = r.name
            if r.ready and name not in have:
                await self.add_session(cluster, name, command=command, focus=False)
                opened.append(name)
        for p in self.panes_of(cluster_id):
            self._hook(p)
        n = len(
            {p.sid or p.pane_id for p in self.panes_of(cluster_id) if p.state not in ENDED_STATES}
        )
        banner = self.query_one("#broadcast-banner", Static)
        new = f"; opened new shells in {', '.join(opened)}" if opened else ""
        banner.update(
            Text(
                f"BROADCAST ON: what you type in a shell of {cluster.name} goes to "
                f"all {n} of its sessions{new} (b: off)"
            )
        )
        banner.add_class("-shown")
        if opened:
            self.notify(
                f"Broadcast opened {len(opened)} new shell{'s' if len(opened) > 1 else ''} "
                f"to reach every ready replica: {', '.join(opened)}"
            )

    def _broadcast_off(self) -> None:
        cid = self.broadcast_cluster
        self.broadcast_cluster = None
        if cid is not None:
            for p in self.panes_of(cid):
                p.broadcasting = False
                p.view.user_input_hook = None
                p._show()
        self.query_one("#broadcast-banner", Static).remove_class("-shown")

    # -- scrollback, search, copy ---------------------------------------------------------
    def _view(self) -> TerminalView | None:
        pane = self.active_pane
        return pane.view if pane is not None else None

    def action_page_up(self) -> None:
        if (v := self._view()) is not None:
            v.page_up()

    def action_page_down(self) -> None:
        if (v := self._view()) is not None:
            v.page_down()

    def action_scroll_top(self) -> None:
        if (v := self._view()) is not None:
            v.scroll_to_top()

    def action_scroll_bottom(self) -> None:
        if (v := self._view()) is not None:
            v.scroll_to_bottom()

    def action_search(self) -> None:
        box = self.query_one("#shell-search", Input)
        box.add_class("-shown")
        box.focus()

    @on(Input.Submitted, "#shell-search")
    def _search(self, event: Input.Submitted) -> None:
        v = self._view()
        box = self.query_one("#shell-search", Input)
        box.remove_class("-shown")
        self.query_one("#shell-tabs", Tabs).focus()
        if v is None or not event.value:
            return
        if v.search(event.value):
            self.notify(f"{v.match_count} matches of {event.value!r} (n older, N newer)")
        else:
            self.notify(f"No match for {event.value!r}", severity="warning")

    def handle_back(self) -> bool:
        box = self.query_one("#shell-search", Input)
        if box.has_class("-shown"):
            box.remove_class("-shown")
            self.query_one("#shell-tabs", Tabs).focus()
            return True
        return False

    def action_next_match(self) -> None:
        if (v := self._view()) is not None:
            v.search_next(backwards=True)

    def action_previous_match(self) -> None:
        if (v := self._view()) is not None:
            v.search_next(backwards=False)

    def action_copy_selection(self) -> None:
        if (v := self._view()) is not None:
            text = v.copy_selection()
            self.notify(
                "Copied the selection" if text else "Nothing selected (drag with the mouse)"
            )

    def action_copy_screen(self) -> None:
        if (v := self._view()) is not None and v.copy_screen():
            self.notify("Copied the screen")


# -- entry points for the dashboard ----------------------------------------------------------
def shells_screen(app: App[Any]) -> ShellsScreen:
    """The app's one shells screen (installed on first use, so shells outlive leaving it)."""
    if not app.is_screen_installed("shells"):
        app.install_screen(ShellsScreen(), name="shells")
    screen = app.get_screen("shells")
    assert isinstance(screen, ShellsScreen)
    return screen


async def _show(app: App[Any]) -> ShellsScreen:
    screen = shells_screen(app)
    if app.screen is not screen:
        if screen in app.screen_stack:
            while app.screen is not screen:
                app.pop_screen()
        else:
            await app.push_screen(screen)
    return screen


async def open_shells_view(app: App[Any]) -> ShellsScreen:
    """`S`: the shells view (tabs); with none open, the picker."""
    screen = await _show(app)
    if not screen.panes:
        screen.open_picker()
    return screen


async def open_shell(
    app: App[Any],
    cluster: ClusterArg,
    replica: str | None = None,
    *,
    command: list[str] | str | None = None,
) -> ShellPane | None:
    """`s`: a new shell in `replica` (None: the cluster's first ready replica)."""
    cluster = as_cluster(cluster)
    if replica is None:
        states = cluster.replica_states
        pick = next((r for r in states if r.ready), states[0] if states else None)
        if pick is None:
            app.notify(f"{cluster.name} has no replica to open a shell in", severity="warning")
            return None
        replica = pick.name
    screen = await _show(app)
    return await screen.add_session(cluster, replica, command=command)
