"""`nvidia-smi` in every replica of a cluster, side by side (the dashboard's `N`).

A use of run-everywhere (`ecotui.tools.runner`): each replica runs `nvidia-smi`
through a one-shot exec (api.md, "Exec"); the outputs are shown in columns as
they come back, the title says which replicas agree, and `f` shows the folded
report (the same as `ecotui run NAME -- nvidia-smi`). A replica where the
command fails says exactly how: not installed (exit 127 and the shell's
message), another exit code with its stderr, or why the exec could not run.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import BindingType
from textual.containers import HorizontalScroll, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Static

from ecotui.client.exec import CommandResult
from ecotui.client.rest import ApiRefusal, BackendUnreachable, EcoClient
from ecotui.host import client_host
from ecotui.keymap import GPU_COMPARE_VIEW
from ecotui.screens.run_everywhere import RunScreen
from ecotui.text import visible, visible_line
from ecotui.tools.fold import ReplicaOutcome, fold, heading
from ecotui.tools.runner import run_one
from ecotui.widgets.keybar import KeyBar

COMMAND = ["nvidia-smi"]


def describe(result: CommandResult) -> tuple[str, str]:
    """(one line saying how it went, the text to show)."""
    out = result.stdout.decode("utf-8", "replace")
    err = result.stderr.decode("utf-8", "replace")
    if result.error is not None:
        return f"could not run nvidia-smi: {result.error}", (out + err).rstrip()
    if result.exit_code == 0:
        return "exit code 0", out.rstrip()
    if result.exit_code == 127:
        return (
            "nvidia-smi is not installed in this replica (exit code 127)",
            (err or out).rstrip() or "command not found",
        )
    return f"nvidia-smi failed with exit code {result.exit_code}", (out + err).rstrip()


class ReplicaColumn(Vertical):
    DEFAULT_CSS = """
    ReplicaColumn { width: auto; min-width: 40; max-width: 100; height: 1fr; margin-right: 1;
                    border: round $primary; }
    ReplicaColumn > .title { height: 1; text-style: bold; }
    ReplicaColumn > .outcome { height: auto; color: $text-muted; }
    ReplicaColumn > .outcome.-failed { color: $error; text-style: bold; }
    ReplicaColumn > VerticalScroll { height: 1fr; width: auto; }
    ReplicaColumn .output { width: auto; text-wrap: nowrap; }
    """

    def __init__(self, replica: str, node: str | None) -> None:
        super().__init__()
        self.replica = replica
        self.node = node
        self.outcome = "running nvidia-smi…"
        self.output = ""
        self.failed = False

    def compose(self) -> ComposeResult:
        yield Static(Text(visible(f"{self.replica} · node {self.node or '?'}")), classes="title")
        yield Static(Text(self.outcome), classes="outcome")
        with VerticalScroll():
            yield Static(Text(self.output), classes="output")

    def show(self, outcome: str, output: str, failed: bool) -> None:
        self.outcome, self.output, self.failed = outcome, output, failed
        try:
            o = self.query_one(".outcome", Static)
        except NoMatches:  # not composed yet: compose() shows the values
            return
        o.update(Text(outcome))
        o.set_class(failed, "-failed")
        self.query_one(".output", Static).update(Text(output, no_wrap=True))


class GpuCompareScreen(Screen[None]):
    """The outputs of `nvidia-smi` in every replica of one cluster."""

    BINDINGS: ClassVar[list[BindingType]] = [*GPU_COMPARE_VIEW]
    DEFAULT_CSS = """
    GpuCompareScreen #gpu-title { height: 1; background: $panel; padding: 0 1; }
    GpuCompareScreen #columns { height: 1fr; }
    """

    def __init__(
        self, client: EcoClient, cluster: dict[str, Any], *, timeout: float = 30.0
    ) -> None:
        super().__init__()
        self.client = client
        self.cluster = cluster
        self.cluster_id = str(cluster.get("id"))
        self.timeout = timeout
        self.columns: dict[str, ReplicaColumn] = {}
        self.outcomes: list[ReplicaOutcome] = []
        self.done = asyncio.Event()

    def compose(self) -> ComposeResult:
        yield Static(
            Text(visible(f"nvidia-smi in every replica of {self.cluster.get('name')}")),
            id="gpu-title",
        )
        yield HorizontalScroll(id="columns")
        yield KeyBar()

    def on_mount(self) -> None:
        self.run_all()

    def action_rerun(self) -> None:
        self.run_all()

    def action_folded(self) -> None:
        self.app.push_screen(RunScreen(self.client, self.cluster, COMMAND, timeout=self.timeout))

    def agreement(self) -> str:
        """Which replicas gave the same output (the majority first)."""
        groups = fold(self.outcomes)
        if not groups:
            return ""
        if len(groups) == 1:
            return f"the same in all {len(self.outcomes)} replicas"
        return f"{len(groups)} different outputs; most common in {heading(groups[0].names)}"

    @work(group="nvidia-smi", exclusive=True, exit_on_error=False)
    async def run_all(self) -> None:
        self.done.clear()
        states = self.cluster.get("replica_states") or []
        try:
            fresh = await self.client.cluster(self.cluster_id)
            states = [s.model_dump(mode="json") for s in fresh.replica_states] or states
        except (ApiRefusal, BackendUnreachable):
            pass
        box = self.query_one("#columns", HorizontalScroll)
        await box.remove_children()
        self.columns = {}
        if not states:
            await box.mount(Static("This cluster has no replicas."))
            self.done.set()
            return
        for r in states:
            col = ReplicaColumn(str(r.get("name")), r.get("node"))
            self.columns[col.replica] = col
        await box.mount_all(list(self.columns.values()))

        async def one(col: ReplicaColumn) -> ReplicaOutcome:
            o = await run_one(
                self.client, self.cluster_id, col.replica, COMMAND, timeout=self.timeout
            )
            result = CommandResult(
                o.stdout,
                o.stderr,
                o.exit_code,
                f"no answer within {self.timeout:g} s" if o.timed_out else o.error,
            )
            outcome, text = describe(result)
            # Replica output: shown, never obeyed (an escape sequence stays visible text).
            text = "\n".join(visible_line(line) for line in text.split("\n"))
            col.show(visible(outcome), text, not result.ok)
            return o

        self.outcomes = list(await asyncio.gather(*(one(c) for c in self.columns.values())))
        self.query_one("#gpu-title", Static).update(
            Text(f"nvidia-smi in every replica of {self.cluster.get('name')}: {self.agreement()}")
        )
        self.done.set()


async def open_gpu_compare(app: App[Any], cluster: dict[str, Any]) -> GpuCompareScreen:
    """`N`: run nvidia-smi in every replica of the cluster and compare."""
    screen = GpuCompareScreen(client_host(app).client, cluster)
    await app.push_screen(screen)
    return screen
