"""GPU health as the dashboard and the CLI show it: words and symbols for verdicts,
roll-ups of a cluster's or a replica's GPUs and the fleet rows (the health alert is one
of the model's alert rules).

No textual here (the model and the CLI import it); the verdict rules themselves are
in `ecocore.gpu_health`, shared with the backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from ecocore.gpu_health import THROTTLE_REASONS, GpuHealth, Verdict, held_for, rank, worst

# Never colour alone: a symbol and a word for every verdict.
SYMBOL = {"ok": "✓", "degraded": "▲", "failing": "✖", "unknown": "?"}
STYLE = {"ok": "green", "degraded": "yellow", "failing": "bold red", "unknown": "dim"}
# The table component level of each verdict (FleetTable's ok/warning/error/dim).
HEALTH_LEVEL = {"ok": "ok", "degraded": "warning", "failing": "error", "unknown": "dim"}
UNKNOWN = "unknown"


def health_rank(level: str | None) -> int:
    return rank(level or "unknown")


def label(level: str | None) -> str:
    lvl = level or "unknown"
    return f"{SYMBOL.get(lvl, '?')} {lvl}"


def gpu_verdict(g: Mapping[str, Any]) -> Verdict:
    h = g.get("health") or {}
    return Verdict(h.get("verdict") or "unknown", h.get("reason"))


def replica_health(rep: Mapping[str, Any]) -> Verdict:
    """The worst verdict of a replica's GPUs (unknown without GPUs)."""
    return worst(gpu_verdict(g) for g in rep.get("gpus") or ())


def cluster_health(c: Mapping[str, Any]) -> tuple[str, str | None, int, int]:
    """(verdict, reason, failing GPUs, degraded GPUs) from a cluster's GPU summary."""
    h = (c.get("gpu_summary") or {}).get("health") or {}
    return (
        h.get("verdict") or "unknown",
        h.get("reason"),
        int(h.get("failing") or 0),
        int(h.get("degraded") or 0),
    )


# -- readings in words (unknown, never 0) ----------------------------------------------


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return UNKNOWN
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value}{unit}"


fmt_duration = held_for  # one formatting of held times, the rules' own


def throttle_words(throttle: Mapping[str, float] | None) -> str:
    if throttle is None:
        return UNKNOWN
    active = [r for r in THROTTLE_REASONS if r in throttle]
    if not active:
        return "none"
    return ", ".join(f"{r.replace('_', ' ')} {fmt_duration(throttle[r])}" for r in active)


def health_lines(health: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """(label, value) pairs of every reading, for the detail view and `ecotui gpus NAME`."""
    d = dict(health or {})
    h = GpuHealth.from_json(d)
    out: list[tuple[str, str]] = [
        ("verdict", label(d.get("verdict"))),
        ("reason", d.get("reason") or "—"),
    ]
    if h.xid_events is None:
        out.append(("XID events", UNKNOWN))
    elif not h.xid_events:
        out.append(("XID events", "none"))
    else:
        for e in h.xid_events[-5:]:
            when = (
                datetime.fromtimestamp(e.at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
                if e.at is not None
                else "time unknown"
            )
            out.append(("XID event", f"{e.code} at {when}: {e.meaning}"))
    out += [
        (
            "ECC single-bit",
            f"volatile {fmt(h.ecc_sbe_volatile)}, aggregate {fmt(h.ecc_sbe_aggregate)}",
        ),
        (
            "ECC double-bit",
            f"volatile {fmt(h.ecc_dbe_volatile)}, aggregate {fmt(h.ecc_dbe_aggregate)}",
        ),
        (
            "retired pages",
            f"single-bit {fmt(h.retired_pages_sbe)}, double-bit "
            f"{fmt(h.retired_pages_dbe)}, pending {fmt(h.retired_pages_pending)}",
        ),
        (
            "row remapping",
            f"correctable {fmt(h.remap_correctable)}, uncorrectable "
            f"{fmt(h.remap_uncorrectable)}, pending {fmt(h.remap_pending)}, "
            f"failed {fmt(h.remap_failed)}",
        ),
        ("throttling", throttle_words(h.throttle)),
        (
            "clocks",
            f"SM {fmt(h.sm_clock_mhz, ' MHz')} (max {fmt(h.sm_clock_max_mhz, ' MHz')}), "
            f"memory {fmt(h.mem_clock_mhz, ' MHz')}",
        ),
        (
            "PCIe",
            f"gen {fmt(h.pcie_gen)} of {fmt(h.pcie_gen_max)}, width {_lanes(h.pcie_width)} of "
            f"{_lanes(h.pcie_width_max)}, replays {fmt(h.pcie_replays)}",
        ),
    ]
    if h.nvlink_links is None and h.nvlink_errors() is None:
        out.append(("NVLink", UNKNOWN))
    else:
        out.append(
            (
                "NVLink",
                f"{fmt(h.nvlink_links)} links, CRC {fmt(h.nvlink_crc_errors)}, "
                f"replay {fmt(h.nvlink_replay_errors)}, recovery "
                f"{fmt(h.nvlink_recovery_errors)}",
            )
        )
    if h.mig_mode is None:
        out.append(("MIG", UNKNOWN))
    elif not h.mig_mode:
        out.append(("MIG", "disabled"))
    else:
        inst = h.mig_instances or ()
        parts = [
            f"GI {fmt(m.gpu_instance)}"
            + (f" {m.profile}" if m.profile else "")
            + (f" {m.memory_total_mib} MiB" if m.memory_total_mib is not None else "")
            for m in inst
        ]
        out.append(
            (
                "MIG",
                f"enabled, {len(inst)} instance(s)" + (": " + "; ".join(parts) if parts else ""),
            )
        )
    if h.processes is None:
        out.append(("processes", UNKNOWN))
    elif not h.processes:
        out.append(("processes", "none"))
    else:
        for p in h.processes:
            out.append(
                (
                    "process",
                    f"pid {p.pid} {p.name or '?'} {fmt(p.used_memory_mib, ' MiB')}"
                    f" in {p.replica or 'replica unknown'}",
                )
            )
    return out


def _lanes(width: int | None) -> str:
    return UNKNOWN if width is None else f"x{width}"


def summarize(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts = {lvl: 0 for lvl in ("ok", "degraded", "failing", "unknown")}
    for r in rows:
        lvl = ((r.get("health") or {}).get("verdict")) or "unknown"
        counts[lvl] = counts.get(lvl, 0) + 1
    return counts
