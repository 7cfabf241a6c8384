"""Per-GPU history of one cluster: a block sparkline per GPU over a stated time window.

Line API: one line per GPU, drawn only when on screen. Each cell of a sparkline
is a fixed time bucket (`bucket_s`), so the window shown is width x bucket and
is printed in the header; gaps (no samples, e.g. while disconnected and before
history was restored) show as blanks, not as zeros.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.binding import BindingType
from textual.geometry import Size
from textual.reactive import var
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ecotui.keymap import MOVEMENT
from ecotui.panel_views import GpuPanelView, Sample
from ecotui.text import visible
from ecotui.wording import fmt_duration, sparkline

FIXED = 48  # cells used by the label and readings around a sparkline
NAME_WIDTH = 16


class GpuPanel(ScrollView, can_focus=True):
    BINDINGS: ClassVar[list[BindingType]] = [*MOVEMENT]

    COMPONENT_CLASSES = {
        "gpu-panel--header",
        "gpu-panel--label",
        "gpu-panel--spark",
        "gpu-panel--hot",
        "gpu-panel--idle",
        "gpu-panel--dim",
    }

    DEFAULT_CSS = """
    GpuPanel {
        height: 1fr;
        min-height: 5;
        overflow-x: hidden;
        scrollbar-size-vertical: 1;
        border: round $primary 50%;
        border-title-color: $foreground;
        background: $surface;
    }
    GpuPanel:focus { border: heavy $primary; }
    GpuPanel > .gpu-panel--header { color: $foreground 70%; }
    GpuPanel > .gpu-panel--label { color: $foreground 80%; }
    GpuPanel > .gpu-panel--spark { color: $success; }
    GpuPanel > .gpu-panel--hot { color: $warning; }
    GpuPanel > .gpu-panel--idle { color: $foreground 45%; }
    GpuPanel > .gpu-panel--dim { color: $foreground 55%; }
    """

    view: var[GpuPanelView | None] = var(None, always_update=True, init=False)

    def __init__(self, *, bucket_s: int = 5, id: str | None = None) -> None:
        super().__init__(id=id)
        self.bucket_s = bucket_s
        self._lines: list[tuple[str, str, int | None]] = []  # (kind, replica, gpu index)
        self._cache: dict[int, Strip] = {}
        self.title_prefix = "GPUs"
        self.border_title = self.title_prefix

    def watch_view(self, view: GpuPanelView | None) -> None:
        """New samples arrived (or a second passed): rebuild the lines, repaint."""
        if view is None:
            return
        lines: list[tuple[str, str, int | None]] = [("header", "", None)]
        for r in view.replicas:
            gpus = r.get("gpus") or ()
            if not gpus:
                lines.append(("nogpu", r.get("name", ""), None))
            for g in gpus:
                lines.append(("gpu", r.get("name", ""), int(g.get("index", 0))))
        if len(lines) == 1 and view.running:
            for rname, idx in sorted(view.samples):
                lines.append(("gpu", rname, idx))
        if len(lines) == 1:
            lines.append(("empty", "", None))
        self._lines = lines
        self._cache.clear()
        self.virtual_size = Size(self.size.width, len(lines))
        self.border_title = (
            f"{self.title_prefix} · telemetry: {', '.join(view.telemetry) or 'unknown'}"
        )
        self.refresh()

    def _spark_width(self) -> int:
        return max(8, self.scrollable_content_region.width - FIXED)

    def window_label(self) -> str:
        """What the sparklines cover: the window, or less when history is shorter."""
        w = self._spark_width()
        span = w * self.bucket_s
        oldest = None
        view = self.view
        for samples in (view.samples if view is not None else {}).values():
            if samples:
                t = samples[0][0]
                oldest = t if oldest is None else min(oldest, t)
        if view is not None and oldest is not None:
            span = min(span, max(self.bucket_s, int(view.now.timestamp() - oldest)))
        elif oldest is None:
            return f"utilisation ({self.bucket_s} s per cell, no history yet)"
        return f"utilisation, last {fmt_duration(span)} ({self.bucket_s} s per cell)"

    def _buckets(self, samples: Sequence[Sample], width: int) -> list[float | None]:
        if self.view is None:
            return []
        end = self.view.now.timestamp()
        start = end - width * self.bucket_s
        out: list[float | None] = [None] * width
        counts = [0] * width
        sums = [0.0] * width
        for s in reversed(samples):
            t = s[0]
            if t <= start:
                break
            if t > end:
                continue
            k = min(width - 1, int((t - start) / self.bucket_s))
            sums[k] += s[1]
            counts[k] += 1
        for k in range(width):
            if counts[k]:
                out[k] = sums[k] / counts[k]
        return out

    def render_line(self, y: int) -> Strip:
        i = int(self.scroll_y) + y
        width = self.scrollable_content_region.width or self.size.width
        base = self.rich_style
        if i >= len(self._lines):
            return Strip.blank(width, base)
        cached = self._cache.get(i)
        if cached is not None and cached.cell_length == width:
            return cached
        kind, rname, idx = self._lines[i]
        if kind == "header":
            text = f"{'replica':<{NAME_WIDTH}} {'gpu':>3} {self.window_label()}"
            strip = Strip([Segment(text[:width].ljust(width), base + self._st("header"))], width)
        elif kind == "empty":
            status = self.view.status if self.view is not None else "unknown"
            text = (
                "no GPU readings yet"
                if status in ("running", "pending")
                else f"no GPUs: the cluster is {status}"
            )
            strip = Strip([Segment(text[:width].ljust(width), base + self._st("dim"))], width)
        elif kind == "nogpu":
            state = next((r for r in self._replicas() if r.get("name") == rname), {})
            why = state.get("reason") or state.get("phase") or "not running"
            text = f"{_short(rname):<{NAME_WIDTH}}   — no GPUs attached ({visible(why)})"
            strip = Strip([Segment(text[:width].ljust(width), base + self._st("dim"))], width)
        else:
            strip = self._gpu_strip(rname, idx or 0, width, base)
        self._cache[i] = strip
        return strip

    def _replicas(self) -> Sequence[Mapping[str, Any]]:
        return self.view.replicas if self.view is not None else ()

    def _st(self, name: str) -> Style:
        return self.get_component_rich_style(f"gpu-panel--{name}")

    def _gpu_strip(self, rname: str, idx: int, width: int, base: Style) -> Strip:
        hist = (self.view.samples.get((rname, idx)) if self.view is not None else None) or ()
        sw = self._spark_width()
        buckets = self._buckets(hist, sw)
        spark = sparkline(buckets, sw) if buckets else " " * sw
        reading = None
        for r in self._replicas():
            if r.get("name") == rname:
                reading = next(
                    (g for g in r.get("gpus") or () if int(g.get("index", -1)) == idx), None
                )
                break
        if reading is None and hist:
            t, u, mem, temp, power = hist[-1]
            reading = {
                "utilization": u,
                "memory_used_mib": mem,
                "memory_total_mib": 0,
                "temperature_c": temp,
                "power_w": power,
                "power_limit_w": 0,
            }
        if reading:
            u = float(reading.get("utilization") or 0)
            mem = float(reading.get("memory_used_mib") or 0) / 1024
            total = float(reading.get("memory_total_mib") or 0) / 1024
            mem_txt = f"{mem:>3.0f}/{total:.0f}G" if total else f"{mem:>3.0f}G"
            tail = (
                f" {u:>3.0f}% {mem_txt:>8} {float(reading.get('temperature_c') or 0):>3.0f}°C "
                f"{float(reading.get('power_w') or 0):>4.0f}W"
            )
        else:
            u = 0.0
            tail = "   no reading"
        spark_style = "idle" if u < 5 else "hot" if u >= 90 else "spark"
        label = f"{_short(rname):<{NAME_WIDTH}} {idx:>3} "
        segs = [
            Segment(label, base + self._st("label")),
            Segment(spark, base + self._st(spark_style)),
            Segment(tail, base),
        ]
        return Strip(segs).adjust_cell_length(width, base)


def _short(name: str) -> str:
    """A replica's whole name, or its end when longer than the column ("…serve-3")."""
    name = visible(name)
    return name if len(name) <= NAME_WIDTH else "…" + name[-(NAME_WIDTH - 1) :]
