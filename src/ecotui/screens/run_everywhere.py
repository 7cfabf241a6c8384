"""Run one command on every ready replica of a cluster, the output folded (`!`).

A prompt asks for the command; the panel shows each distinct output once,
headed by the replicas that gave it (`demo-0..5,7 (7 replicas)`), the others
as a diff against the majority, then every replica's exit status: the same
report as `ecotui run` (`ecotui.tools.fold`).
"""

from __future__ import annotations

import shlex
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Input, Static

from ecocore.wire import ClusterOut
from ecotui.client.rest import ApiRefusal, BackendUnreachable, ClusterArg, EcoClient, as_cluster
from ecotui.host import client_host
from ecotui.keymap import RUN_VIEW
from ecotui.tools.fold import ReplicaOutcome, render
from ecotui.tools.runner import ready_replicas, run_everywhere
from ecotui.widgets.controls import EcoInput
from ecotui.widgets.keybar import KeyBar


def styled(report: str) -> Text:
    """The folded report with headers, diff lines and failures coloured."""
    text = Text()
    for line in report.splitlines():
        style = ""
        if line.startswith("=== "):
            style = "bold"
        elif line.startswith(("+++", "---")):
            style = "bold dim"
        elif line.startswith("+"):
            style = "green"
        elif line.startswith("-"):
            style = "red"
        elif line.startswith("@@"):
            style = "cyan"
        elif line.startswith(("exit ", "timed out", "failed")) and not line.startswith("exit 0:"):
            style = "bold red"
        text.append(line + "\n", style=style)
    return text


class CommandPrompt(ModalScreen[list[str] | None]):
    """Asks for the command line (split like a shell would)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]
    DEFAULT_CSS = """
    CommandPrompt { align: center middle; }
    CommandPrompt > Vertical { width: 70; height: auto; border: round $primary;
                               background: $surface; padding: 0 1; }
    CommandPrompt .error { color: $error; height: auto; }
    """

    def __init__(self, cluster_name: str, replicas: int, initial: str = "") -> None:
        super().__init__()
        self.cluster_name = cluster_name
        self.replicas = replicas
        self.initial = initial

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                f"Run on every ready replica of {self.cluster_name} ({self.replicas} ready):"
            )
            yield EcoInput(value=self.initial, placeholder="nvidia-smi -L", id="command")
            yield Static("", classes="error")

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        try:
            words = shlex.split(event.value)
        except ValueError as exc:
            self.query_one(".error", Static).update(f"cannot read the command: {exc}")
            return
        if not words:
            self.query_one(".error", Static).update("type a command, or esc to cancel")
            return
        self.dismiss(words)

    def action_cancel(self) -> None:
        self.dismiss(None)


class RunScreen(Screen[None]):
    """The folded result of one command on every ready replica of a cluster."""

    BINDINGS: ClassVar[list[BindingType]] = [*RUN_VIEW]
    DEFAULT_CSS = """
    RunScreen #run-title { height: 1; background: $panel; padding: 0 1; }
    RunScreen #run-output { height: 1fr; padding: 0 1; }
    RunScreen #run-report { width: auto; text-wrap: nowrap; }
    """

    def __init__(
        self,
        client: EcoClient,
        cluster: ClusterArg,
        command: list[str],
        *,
        timeout: float | None = 60.0,
    ) -> None:
        super().__init__()
        self.client = client
        self.cluster: ClusterOut = as_cluster(cluster)
        self.cluster_id = self.cluster.id
        self.command = command
        self.timeout = timeout
        self.outcomes: list[ReplicaOutcome] = []
        self.report = ""

    def compose(self) -> ComposeResult:
        yield Static("", id="run-title")
        with VerticalScroll(id="run-output"):
            yield Static("running…", id="run-report")
        yield KeyBar()

    def on_mount(self) -> None:
        self.run_all()

    def _title(self, extra: str) -> None:
        self.query_one("#run-title", Static).update(
            Text(f"{shlex.join(self.command)} on {self.cluster.name}: {extra}", no_wrap=True)
        )

    def action_rerun(self) -> None:
        self.run_all()

    def action_ask(self) -> None:
        self.app.push_screen(
            CommandPrompt(
                self.cluster.name,
                len(ready_replicas(self.cluster)),
                shlex.join(self.command),
            ),
            self._asked,
        )

    def _asked(self, words: list[str] | None) -> None:
        if words:
            self.command = words
            self.run_all()

    @work(group="run-everywhere", exclusive=True, exit_on_error=False)
    async def run_all(self) -> None:
        try:
            self.cluster = await self.client.cluster(self.cluster_id)
        except (ApiRefusal, BackendUnreachable) as exc:
            self._title("cannot run")
            self.query_one("#run-report", Static).update(Text(str(exc)))
            return
        targets = ready_replicas(self.cluster)
        if not targets:
            self._title("no ready replica")
            self.query_one("#run-report", Static).update(
                Text(f"{self.cluster.name} has no ready replica ({self.cluster.status}).")
            )
            return
        self._title(f"running on {len(targets)} replicas…")
        self.outcomes = await run_everywhere(
            self.client, self.cluster_id, targets, self.command, timeout=self.timeout
        )
        self.report = render(self.outcomes)
        ok = sum(o.ok for o in self.outcomes)
        self._title(f"{ok} of {len(self.outcomes)} replicas exited 0")
        self.query_one("#run-report", Static).update(styled(self.report))


async def open_run_everywhere(
    app: App[Any], cluster: ClusterArg, command: list[str] | None = None
) -> None:
    """`!`: ask for a command (unless given), then show the folded result."""
    client = client_host(app).client
    cluster = as_cluster(cluster)

    def start(words: list[str] | None) -> None:
        if words:
            app.push_screen(RunScreen(client, cluster, words))

    if command:
        start(command)
        return
    await app.push_screen(CommandPrompt(cluster.name, len(ready_replicas(cluster))), start)
