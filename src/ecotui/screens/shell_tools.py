"""What the shells screen adds for replica work: the reservation clock on every
tab (time left, burn rate, spent; amber from 30 minutes left, red from 5), a key
to extend from there (the usual dialog with its cost preview), and recording a
shell to an asciicast v2 file (a key toggles it; the tab and the header show REC).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.text import Text

from ecocore.wire import ClusterOut
from ecotui import costs, wording
from ecotui.tools.asciicast import CastWriter, default_recording_path

AMBER_S = 30 * 60
RED_S = 5 * 60


def clock(cluster: ClusterOut | None, now: datetime) -> tuple[str, str]:
    """(the clock's words, its level: "ok", "amber", "red" or "none")."""
    if cluster is None or not cluster.expires_at:
        return "", "none"
    if cluster.status in ("terminated", "failed", "terminating"):
        return cluster.status, "none"
    left_us = costs.remaining_us(cluster.expires_at, now)
    parts = [f"{wording.duration_text(left_us)} left"]
    try:
        parts.append(f"{wording.usd(costs.usd_to_micros(cluster.burn_rate))}/h")
        parts.append(f"{wording.usd(costs.usd_to_micros(cluster.cost.spent))} spent")
    except costs.MoneyError:
        pass
    left_s = left_us / 1e6
    level = "red" if left_s <= RED_S else "amber" if left_s <= AMBER_S else "ok"
    return " · ".join(parts), level


STYLES = {"ok": "dim", "amber": "bold #d7a000", "red": "bold red", "none": "dim"}


def tab_label(pane: Any, now: datetime | None = None, *, active: bool = False) -> Text:
    """The pane's label, REC when it records, and its cluster's clock; the active tab
    is marked by a glyph (`›`), not by colour alone."""
    text = Text("› " if active else "  ")
    if getattr(pane, "recorder", None) is not None:
        text.append("● REC ", style="bold red")
    text.append(pane.label)
    words, level = clock(getattr(pane, "cluster_info", None), now or datetime.now(UTC))
    if words:
        text.append(" · ")
        text.append(words, style=STYLES[level])
    return text


def start_recording(pane: Any, path: Path | None = None) -> Path:
    """Record what the pane shows from now on (OSError when the file cannot be made)."""
    term = pane.view.term
    path = path or default_recording_path(pane.cluster_name, pane.replica)
    pane.recorder = CastWriter(
        path,
        term.cols,
        term.rows,
        title=f"{pane.cluster_name}/{pane.replica}",
        env={"TERM": "xterm-256color"},
    )
    return path


def stop_recording(pane: Any) -> Path | None:
    rec = pane.recorder
    if rec is None:
        return None
    rec.close()
    pane.recorder = None
    return Path(rec.path)
