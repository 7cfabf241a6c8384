"""Port-forwards opened from the dashboard (`F` on a replica) and their list (`W`).

A forward listens on 127.0.0.1 (the local port chosen, or a free one) and
carries each connection to the replica's port over its own WebSocket
(`ecotui.tools.portforward`); it lives as long as the dashboard. The cluster
view shows its cluster's forwards with their traffic; the forwards list ends
one with `x`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from ecotui.client.rest import EcoClient
from ecotui.host import client_host
from ecotui.keymap import FORWARDS_VIEW
from ecotui.tools.copy import human_bytes
from ecotui.tools.portforward import Forward, ForwardError
from ecotui.widgets.controls import EcoInput, EcoOptionList


@dataclass
class ForwardEntry:
    forward: Forward
    cluster_id: str
    cluster_name: str
    replica: str
    started: float = field(default_factory=time.monotonic)
    lines: list[str] = field(default_factory=list)  # why connections failed, newest last

    @property
    def key(self) -> str:
        return f"{self.forward.address}:{self.forward.local}"

    def describe(self) -> str:
        f, s = self.forward, self.forward.stats
        text = (
            f"{f.address}:{f.local} → {self.replica}:{f.remote}  "
            f"{s.connections} conn ({s.active} open)  "
            f"in {human_bytes(s.bytes_in)}  out {human_bytes(s.bytes_out)}"
        )
        if s.failures:
            text += f"  {s.failures} failed"
        return text


class ForwardRegistry:
    """The app's forwards (one registry per app)."""

    def __init__(self) -> None:
        self.entries: list[ForwardEntry] = []

    def of(self, cluster_id: str) -> list[ForwardEntry]:
        return [e for e in self.entries if e.cluster_id == cluster_id]

    async def start(
        self,
        client: EcoClient,
        cluster: dict[str, Any],
        replica: str,
        remote: int,
        local: int = 0,
        address: str = "127.0.0.1",
    ) -> ForwardEntry:
        """Check the target, listen, and keep it (ForwardError / OSError when not)."""
        entry: ForwardEntry | None = None

        def line(text: str) -> None:
            if entry is not None:
                entry.lines = [*entry.lines[-19:], text]

        fwd = Forward(client, str(cluster["id"]), remote, local, address, replica, on_line=line)
        await fwd.check()
        await fwd.start()
        entry = ForwardEntry(fwd, str(cluster["id"]), str(cluster.get("name")), replica)
        self.entries.append(entry)
        return entry

    async def end(self, entry: ForwardEntry) -> None:
        if entry in self.entries:
            self.entries.remove(entry)
        await entry.forward.close()

    async def end_all(self) -> None:
        for e in list(self.entries):
            await self.end(e)


def registry(app: App[Any]) -> ForwardRegistry:
    reg = getattr(app, "_eco_forwards", None)
    if reg is None:
        reg = ForwardRegistry()
        app._eco_forwards = reg  # type: ignore[attr-defined]
    return reg


def parse_port(text: str, *, allow_empty: bool) -> int:
    text = text.strip()
    if not text and allow_empty:
        return 0
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError("a port is a number from 1 to 65535")
    return int(text)


class PortForwardPrompt(ModalScreen[tuple[int, int] | None]):
    """Which port of the replica, and which local port (empty: a free one)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]
    DEFAULT_CSS = """
    PortForwardPrompt { align: center middle; }
    PortForwardPrompt > Vertical { width: 60; height: auto; border: round $primary;
                                   background: $surface; padding: 0 1; }
    PortForwardPrompt .error { color: $error; height: auto; }
    """

    def __init__(self, cluster_name: str, replica: str) -> None:
        super().__init__()
        self.cluster_name = cluster_name
        self.replica = replica

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"Forward a port of {self.cluster_name} / {self.replica}")
            yield EcoInput(placeholder="port in the replica, e.g. 8888", id="remote")
            yield EcoInput(placeholder="local port (empty: a free one)", id="local")
            yield Static("", classes="error")

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        if event.input.id == "remote" and not self.query_one("#local", Input).value:
            self.query_one("#local", Input).focus()
        try:
            remote = parse_port(self.query_one("#remote", Input).value, allow_empty=False)
            local = parse_port(self.query_one("#local", Input).value, allow_empty=True)
        except ValueError as exc:
            self.query_one(".error", Static).update(str(exc))
            return
        self.dismiss((remote, local))

    def action_cancel(self) -> None:
        self.dismiss(None)


class ForwardsPanel(Static):
    """The cluster view's list of its active forwards (hidden when there are none)."""

    DEFAULT_CSS = """
    ForwardsPanel { height: auto; max-height: 6; padding: 0 1; display: none;
                    border: round $primary 50%; border-title-color: $foreground; }
    ForwardsPanel.-shown { display: block; }
    """

    def __init__(self, cluster_id: str, **kw: Any) -> None:
        super().__init__("", **kw)
        self.cluster_id = cluster_id
        self.border_title = "Port-forwards (W to list, x there to end)"

    def on_mount(self) -> None:
        self.refresh_rows()
        self.set_interval(1.0, self.refresh_rows)

    def refresh_rows(self) -> None:
        entries = registry(self.app).of(self.cluster_id)
        self.set_class(bool(entries), "-shown")
        self.update(Text("\n".join(e.describe() for e in entries)))


class ForwardsScreen(ModalScreen[None]):
    """Every forward of the dashboard (or of one cluster); `x` ends the highlighted one."""

    BINDINGS: ClassVar[list[BindingType]] = [
        *FORWARDS_VIEW,
        Binding("escape", "dismiss_screen", "close"),
    ]
    DEFAULT_CSS = """
    ForwardsScreen { align: center middle; }
    ForwardsScreen > Vertical { width: 100; max-width: 100%; height: auto; max-height: 100%;
                                border: round $primary; background: $surface; padding: 0 1; }
    ForwardsScreen OptionList { height: auto; max-height: 16; }
    """

    def __init__(self, cluster_id: str | None = None) -> None:
        super().__init__()
        self.cluster_id = cluster_id

    def entries(self) -> list[ForwardEntry]:
        reg = registry(self.app)
        return reg.of(self.cluster_id) if self.cluster_id else list(reg.entries)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Port-forwards · x ends the highlighted one · esc closes")
            yield EcoOptionList(id="forwards")

    def on_mount(self) -> None:
        self.refresh_list()
        self.set_interval(1.0, self.refresh_list)

    def refresh_list(self) -> None:
        ol = self.query_one(OptionList)
        keep = ol.highlighted
        ol.clear_options()
        entries = self.entries()
        if not entries:
            ol.add_option(Option("No port-forwards. F on a replica opens one.", disabled=True))
            return
        for e in entries:
            label = f"{e.cluster_name}: {e.describe()}"
            if e.lines:
                label += f"\n    last problem: {e.lines[-1]}"
            ol.add_option(Option(label, id=e.key))
        ol.highlighted = 0 if keep is None else min(keep, len(entries) - 1)

    async def action_end(self) -> None:
        ol = self.query_one(OptionList)
        if ol.highlighted is None:
            return
        option = ol.get_option_at_index(ol.highlighted)
        for e in self.entries():
            if e.key == option.id:
                await registry(self.app).end(e)
                self.notify(f"Forward {e.key} ended")
        self.refresh_list()

    def action_dismiss_screen(self) -> None:
        self.dismiss(None)


async def open_port_forward(app: App[Any], cluster: dict[str, Any], replica: str) -> None:
    """`F`: ask for the ports, then start the forward and say where it listens."""
    client = client_host(app).client

    async def start(ports: tuple[int, int] | None) -> None:
        if ports is None:
            return
        remote, local = ports
        try:
            entry = await registry(app).start(client, cluster, replica, remote, local)
        except ForwardError as exc:
            app.notify(f"Cannot forward to {replica}:{remote}: {exc}", severity="error")
            return
        except OSError as exc:
            words = "the port is in use" if exc.errno == 98 else (exc.strerror or str(exc))
            app.notify(f"Cannot listen on 127.0.0.1:{local}: {words}", severity="error")
            return
        app.notify(f"Forwarding from {entry.key} -> {replica}:{remote}")

    await app.push_screen(PortForwardPrompt(str(cluster.get("name")), replica), start)


async def open_forwards(app: App[Any], cluster: dict[str, Any] | None = None) -> None:
    """`W`: the forwards list (of this cluster)."""
    await app.push_screen(ForwardsScreen(str(cluster["id"]) if cluster else None))
