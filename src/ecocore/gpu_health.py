"""GPU health: the readings, the documented meaning of XID codes, and the verdict rules.

Pure: no IO, no clock, no framework. The backend builds `GpuHealth` readings from
NVML, the DCGM exporter or `nvidia-smi -q -x`, and calls `evaluate` once per sample;
the dashboard and the CLI read the JSON form back with `GpuHealth.from_json`.

A field a source cannot give is `None` ("unknown"), never 0.

## Verdict rules (one GPU)

failing, when any of:
- an XID in `FAILING_XIDS` was logged within the last `XID_HOLD_S` seconds
  (48 double-bit ECC, 63/64 row-remap or page-retirement event/failure,
  74 NVLink error, 79 fallen off the bus, 92 high single-bit ECC rate,
  94/95 contained/uncontained ECC error);
- any double-bit (uncorrectable) ECC error in the volatile count;
- a failed row remap.

degraded, when any of (and none of the above):
- thermal or hardware slowdown throttling held for `THROTTLE_SUSTAINED_S` or longer;
- a row remap pending (the GPU needs a reset to apply it), or a page retirement pending;
- NVLink CRC, replay or recovery counters rose during the last `NVLINK_WINDOW_S`;
- PCIe replays rose by `PCIE_REPLAY_RISE` or more during the last `NVLINK_WINDOW_S`;
- any other XID not caused by the application (`APPLICATION_XIDS`) within `XID_HOLD_S`.

unknown, when the source gave no health field at all; ok otherwise.

Not verdicts (shown, never judged): a PCIe link below its maximum generation or width
(boards and hosts downshift at idle, and many cloud hosts wire x8 slots), single-bit
ECC counts, power-cap and sync-boost throttling, idle clocks.

A replica, a cluster or the fleet takes the worst verdict of its GPUs
(failing > degraded > unknown > ok); its reason is the reason of its worst GPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

Level = Literal["ok", "degraded", "failing", "unknown"]
LEVELS: tuple[Level, ...] = ("ok", "unknown", "degraded", "failing")  # by severity
_RANK: dict[str, int] = {lvl: i for i, lvl in enumerate(LEVELS)}

# -- thresholds (seconds unless said otherwise)
XID_HOLD_S = 3600.0
THROTTLE_SUSTAINED_S = 300.0
NVLINK_WINDOW_S = 600.0
PCIE_REPLAY_RISE = 100

# XIDs that mean the GPU (or its memory, or its link) is broken: drain and reset it.
FAILING_XIDS = frozenset({48, 63, 64, 74, 79, 92, 94, 95})
# XIDs that an application's own bug causes; they say nothing about the GPU.
APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68})

# The documented meaning of the XIDs an operator meets most (NVIDIA's XID catalogue).
XID_MEANINGS: Mapping[int, str] = {
    8: "GPU stopped processing (driver timeout)",
    13: "graphics engine exception (usually the application)",
    31: "GPU memory page fault (usually the application)",
    32: "invalid or corrupted push buffer stream",
    38: "driver firmware error",
    43: "GPU stopped processing (application error)",
    44: "graphics engine fault during context switch",
    45: "preemptive cleanup after previous errors",
    48: "double-bit ECC error",
    56: "display engine error",
    57: "error programming video memory interface",
    61: "internal micro-controller breakpoint/warning",
    62: "internal micro-controller halt",
    63: "ECC page retirement or row remapping recorded",
    64: "ECC page retirement or row remapping failure",
    68: "video processor exception",
    69: "graphics engine class error",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    92: "high single-bit ECC error rate",
    94: "contained ECC error",
    95: "uncontained ECC error",
    109: "context switch timeout",
    119: "GSP RPC timeout",
    120: "GSP error",
    121: "C2C link corrected error",
    123: "SPDM failure",
    140: "unrecovered ECC error",
    143: "GPU initialization failure",
    145: "NVLink recovery/link training error",
    149: "NVLink internal error",
    154: "GPU recovery action changed",
}

THROTTLE_REASONS = (
    "power_cap",
    "thermal",
    "hw_slowdown",
    "sync_boost",
    "idle",
    "applications_clocks",
    "power_brake",
)
SUSTAINED_REASONS = ("thermal", "hw_slowdown", "power_brake")

# NVML's clocks-event (throttle) reason bits, as DCGM's field reports them too.
THROTTLE_BITS: Mapping[int, str] = {
    0x1: "idle",
    0x2: "applications_clocks",
    0x4: "power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "thermal",  # software thermal slowdown
    0x40: "thermal",  # hardware thermal slowdown
    0x80: "power_brake",
}


def xid_meaning(code: int) -> str:
    return XID_MEANINGS.get(code, "see NVIDIA's XID catalogue")


def throttle_from_mask(mask: int) -> tuple[str, ...]:
    """Active reasons, in `THROTTLE_REASONS` order, from NVML's bit mask."""
    active = {name for bit, name in THROTTLE_BITS.items() if mask & bit}
    return tuple(r for r in THROTTLE_REASONS if r in active)


@dataclass(frozen=True)
class XidEvent:
    code: int
    at: float | None  # seconds since the epoch; None: the source does not say when

    @property
    def meaning(self) -> str:
        return xid_meaning(self.code)


@dataclass(frozen=True)
class MigInstance:
    gpu_instance: int | None
    compute_instance: int | None
    profile: str | None
    memory_total_mib: int | None


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    name: str | None
    used_memory_mib: int | None
    replica: str | None = None


@dataclass(frozen=True)
class GpuHealth:
    """Health readings of one GPU. Every field may be None: the source cannot give it."""

    xid_events: tuple[XidEvent, ...] | None = None
    ecc_sbe_volatile: int | None = None
    ecc_dbe_volatile: int | None = None
    ecc_sbe_aggregate: int | None = None
    ecc_dbe_aggregate: int | None = None
    retired_pages_sbe: int | None = None
    retired_pages_dbe: int | None = None
    retired_pages_pending: bool | None = None
    remap_correctable: int | None = None
    remap_uncorrectable: int | None = None
    remap_pending: bool | None = None
    remap_failed: bool | None = None
    # Active throttle reasons -> seconds each has held (the backend counts them).
    throttle: Mapping[str, float] | None = None
    sm_clock_mhz: int | None = None
    sm_clock_max_mhz: int | None = None
    mem_clock_mhz: int | None = None
    pcie_gen: int | None = None
    pcie_gen_max: int | None = None
    pcie_width: int | None = None
    pcie_width_max: int | None = None
    pcie_replays: int | None = None
    nvlink_links: int | None = None
    nvlink_crc_errors: int | None = None
    nvlink_replay_errors: int | None = None
    nvlink_recovery_errors: int | None = None
    mig_mode: bool | None = None
    mig_instances: tuple[MigInstance, ...] | None = None
    processes: tuple[GpuProcess, ...] | None = None

    def known(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))

    def nvlink_errors(self) -> int | None:
        parts = (self.nvlink_crc_errors, self.nvlink_replay_errors, self.nvlink_recovery_errors)
        if all(p is None for p in parts):
            return None
        return sum(p or 0 for p in parts)

    # -- the wire form (API, watch frames, CLI --json)
    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "xid_events":
                v = (
                    None
                    if v is None
                    else [{"code": e.code, "at": e.at, "meaning": e.meaning} for e in v]
                )
            elif f.name == "mig_instances":
                v = None if v is None else [m.__dict__.copy() for m in v]
            elif f.name == "processes":
                v = None if v is None else [p.__dict__.copy() for p in v]
            elif f.name == "throttle":
                v = None if v is None else {k: round(float(s), 1) for k, s in v.items()}
            out[f.name] = v
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> GpuHealth:
        if not d:
            return cls()
        kw: dict[str, Any] = {}
        for f in fields(cls):
            v = d.get(f.name)
            if v is None:
                kw[f.name] = None
            elif f.name == "xid_events":
                kw[f.name] = tuple(XidEvent(int(e["code"]), e.get("at")) for e in v)
            elif f.name == "mig_instances":
                kw[f.name] = tuple(
                    MigInstance(
                        m.get("gpu_instance"),
                        m.get("compute_instance"),
                        m.get("profile"),
                        m.get("memory_total_mib"),
                    )
                    for m in v
                )
            elif f.name == "processes":
                kw[f.name] = tuple(
                    GpuProcess(
                        int(p["pid"]), p.get("name"), p.get("used_memory_mib"), p.get("replica")
                    )
                    for p in v
                )
            elif f.name == "throttle":
                kw[f.name] = {str(k): float(s) for k, s in v.items()}
            else:
                kw[f.name] = v
        return cls(**kw)


@dataclass(frozen=True)
class Verdict:
    level: Level
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"verdict": self.level, "reason": self.reason}


def evaluate(
    h: GpuHealth | None,
    now: float,
    *,
    nvlink_errors_before: int | None = None,
    pcie_replays_before: int | None = None,
) -> Verdict:
    """The verdict of one GPU at `now` (seconds since the epoch).

    `nvlink_errors_before` / `pcie_replays_before`: the same counters as read
    `NVLINK_WINDOW_S` ago (or the oldest reading since), None when unknown."""
    if h is None or not h.known():
        return Verdict("unknown", "no health readings from this source")
    failing: list[str] = []
    degraded: list[str] = []
    for e in h.xid_events or ():
        recent = e.at is None or now - e.at <= XID_HOLD_S
        if not recent:
            continue
        if e.code in FAILING_XIDS:
            failing.append(f"XID {e.code}: {e.meaning}")
        elif e.code not in APPLICATION_XIDS:
            degraded.append(f"XID {e.code}: {e.meaning}")
    if h.ecc_dbe_volatile:
        failing.append(f"{h.ecc_dbe_volatile} double-bit ECC error(s)")
    if h.remap_failed:
        failing.append("row remapping failed")
    for reason in SUSTAINED_REASONS:
        held = (h.throttle or {}).get(reason)
        if held is not None and held >= THROTTLE_SUSTAINED_S:
            label = reason.replace("_", " ")
            degraded.append(f"{label} throttling for {held_for(held)}")
    if h.remap_pending:
        degraded.append("row remap pending (needs a GPU reset)")
    if h.retired_pages_pending:
        degraded.append("page retirement pending (needs a GPU reset)")
    nv = h.nvlink_errors()
    if nv is not None and nvlink_errors_before is not None and nv > nvlink_errors_before:
        degraded.append(f"NVLink errors rising (+{nv - nvlink_errors_before})")
    if (
        h.pcie_replays is not None
        and pcie_replays_before is not None
        and h.pcie_replays - pcie_replays_before >= PCIE_REPLAY_RISE
    ):
        degraded.append(f"PCIe replays rising (+{h.pcie_replays - pcie_replays_before})")
    if failing:
        return Verdict("failing", "; ".join(failing))
    if degraded:
        return Verdict("degraded", "; ".join(degraded))
    return Verdict("ok")


def worst(verdicts: Iterable[Verdict]) -> Verdict:
    """Roll GPUs up to a replica, a cluster or the fleet: the worst verdict wins.
    No GPUs at all: unknown."""
    best: Verdict | None = None
    for v in verdicts:
        if best is None or _RANK[v.level] > _RANK[best.level]:
            best = v
    return best if best is not None else Verdict("unknown", "no GPUs")


def rank(level: str) -> int:
    """Severity for sorting: higher is worse."""
    return _RANK.get(level, _RANK["unknown"])


def held_for(s: float) -> str:
    """How long a condition has held, compact: "42s", "3m05s", "1h02m"."""
    s = int(s)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


BRIEF_KEYS = ("verdict", "reason")


def brief_replicas(replicas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replicas as the watch feed sends them every second: each GPU's health cut to its
    verdict and reason (copies; the replicas given are left whole). The full readings
    are on the replicas route, which the GPU detail reads."""
    out = []
    for r in replicas:
        gpus = r.get("gpus")
        if not gpus:
            out.append(r)
            continue
        out.append(
            {
                **r,
                "gpus": [
                    {**g, "health": {k: g["health"].get(k) for k in BRIEF_KEYS}}
                    if isinstance(g.get("health"), dict)
                    else g
                    for g in gpus
                ],
            }
        )
    return out
