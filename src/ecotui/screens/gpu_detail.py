"""One GPU in full: every health reading (unknown where the source cannot say), the
verdict and why, the processes with the replica that runs them, and its history
(utilisation and temperature over the last hour, every change of verdict)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import VerticalScroll
from textual.widgets import Static

from ecotui.gpu_health import STYLE, gpu_verdict, health_lines, health_rank
from ecotui.keymap import GPU_DETAIL_VIEW
from ecotui.screens.base import DashboardScreen
from ecotui.wording import sparkline

RELOAD_S = 3.0


def open_worst_gpu(app: Any, cluster: dict[str, Any], replica: dict[str, Any]) -> bool:
    """Open the detail of the replica's worst GPU (False when it reports none)."""
    gpus = list(replica.get("gpus") or ())
    if not gpus:
        return False
    g = max(gpus, key=lambda x: (health_rank(gpu_verdict(x).level), -int(x.get("index") or 0)))
    app.push_screen(
        GpuDetailScreen(
            str(cluster.get("id")),
            str(replica.get("name")),
            int(g.get("index") or 0),
            initial={**g, "cluster": cluster.get("name")},
        )
    )
    return True


class GpuDetailScreen(DashboardScreen):
    """Health and history of one GPU of one replica."""

    where = "GPU"
    BINDINGS: ClassVar[list[BindingType]] = [*GPU_DETAIL_VIEW]

    DEFAULT_CSS = """
    GpuDetailScreen #gpu-body { height: 1fr; padding: 0 1; }
    GpuDetailScreen #gpu-head { height: auto; text-style: bold; }
    GpuDetailScreen #gpu-health { height: auto; }
    GpuDetailScreen #gpu-history { height: auto; margin-top: 1; }
    """

    def __init__(
        self,
        cluster_id: str,
        replica: str,
        index: int,
        *,
        initial: dict[str, Any] | None = None,
        autoload: bool = True,
    ) -> None:
        super().__init__()
        self.cluster_id = cluster_id
        self.replica = replica
        self.index = index
        self.gpu: dict[str, Any] = dict(initial or {})
        self.samples: list[list[Any]] = []
        self.transitions: list[list[Any]] = []
        self._autoload = autoload
        # The readings come from the replicas route: the watch feed's frames carry the
        # verdict and its reason only, so until the first answer the rest is "loading".
        self.readings_loaded = not autoload

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="gpu-body"):
            yield Static("", id="gpu-head")
            yield Static("", id="gpu-health")
            yield Static("history: loading …", id="gpu-history")

    def on_mount(self) -> None:
        super().on_mount()
        self.render_gpu()
        if self._autoload:
            self.load()
            self.set_interval(RELOAD_S, self.load, name="gpu-reload")

    @work(group="gpu-detail", exclusive=True)
    async def load(self) -> None:
        client = self.eco.client
        try:
            reps = await client.replicas(self.cluster_id)
            metrics = await client.metrics(self.cluster_id)
        except Exception as exc:
            self.notify(
                f"cannot read GPU {self.index} of {self.replica}: {exc}", severity="warning"
            )
            return
        rep = next((r for r in reps if r.name == self.replica), None)
        g = next((x for x in rep.gpus if x.index == self.index), None) if rep else None
        if g is not None:
            # The row shown holds the fleet list's fields too (cluster, idle cost).
            self.gpu.update(g.model_dump(exclude_unset=True))
        self.readings_loaded = True
        for r in metrics.replicas:
            if r.name != self.replica:
                continue
            for mg in r.gpus:
                if mg.index == self.index:
                    self.samples = list(mg.samples)
                    self.transitions = list(mg.health)
        self.render_gpu()

    def set_history(self, samples: list[list[Any]], transitions: list[list[Any]]) -> None:
        self.samples, self.transitions = samples, transitions
        self.render_gpu()

    def render_gpu(self) -> None:
        if not self.is_attached:
            return
        g = self.gpu
        name = (
            g.get("cluster")
            or (self.eco.model.clusters.get(self.cluster_id) or {}).get("name")
            or self.cluster_id
        )
        head = Text.assemble(
            (f"{name} / {self.replica} / GPU {self.index}", "bold"),
            f"  {g.get('name') or ''}  {g.get('uuid') or ''}\n",
            f"util {float(g.get('utilization') or 0):.0f}%  mem "
            f"{(g.get('memory_used_mib') or 0) / 1024:.1f}/{(g.get('memory_total_mib') or 0) / 1024:.0f} GiB"
            f"  temp {float(g.get('temperature_c') or 0):.0f}°C  power "
            f"{float(g.get('power_w') or 0):.0f} W",
        )
        self.query_one("#gpu-head", Static).update(head)
        health = g.get("health") or {}
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        verdict = health.get("verdict") or "unknown"
        lines = health_lines(health)
        if not self.readings_loaded and set(health) <= {"verdict", "reason"}:
            lines = lines[:2] + [("readings", "loading …")]
        for key, value in lines:
            style = (
                STYLE.get(verdict, "")
                if key in ("verdict", "reason")
                else ("dim" if value.startswith("unknown") else "")
            )
            table.add_row(key, Text(value, style=style))
        self.query_one("#gpu-health", Static).update(table)
        hist = Text()
        width = max(10, (self.size.width or 80) - 20)
        utils = [float(s[1]) for s in self.samples if len(s) > 1 and s[1] is not None]
        temps = [float(s[3]) for s in self.samples if len(s) > 3 and s[3] is not None]
        if utils:
            hist.append(
                f"util  {sparkline(utils[-width:], min(width, len(utils)))} now {utils[-1]:.0f}%\n"
            )
            hist.append(
                f"temp  {sparkline(temps[-width:], min(width, len(temps)))} "
                f"max {max(temps):.0f}°C\n"
            )
        else:
            hist.append("no samples yet\n", style="dim")
        hist.append("verdict changes:", style="bold")
        if not self.transitions:
            hist.append(" none recorded\n", style="dim")
        else:
            hist.append("\n")
            for t, level, reason in self.transitions[-8:]:
                hist.append(f"  {t}  ")
                hist.append(str(level), style=STYLE.get(str(level), ""))
                hist.append(f"  {reason or ''}\n")
        self.query_one("#gpu-history", Static).update(hist)

    def full_refresh(self, now: datetime) -> None:
        super().full_refresh(now)
        self.render_gpu()

    # -- actions -------------------------------------------------------------------
    def current_cluster(self) -> dict[str, Any] | None:
        c = self.eco.model.clusters.get(self.cluster_id)
        return c if c is not None else {"id": self.cluster_id, "name": self.gpu.get("cluster")}

    def selected_replica(self) -> str | None:
        return self.replica

    def current_replica(self) -> str | None:
        return self.replica

    def action_reload(self) -> None:
        self.load()
