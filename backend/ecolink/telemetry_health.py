"""GPU health from NVML and from the simulation, and the tracker that turns
readings over time into verdicts (durations, XID log, counter baselines, history).

The verdict rules themselves are pure and live in `ecocore.gpu_health`.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ecocore.gpu_health import (
    NVLINK_WINDOW_S,
    XID_HOLD_S,
    GpuHealth,
    GpuProcess,
    MigInstance,
    Verdict,
    XidEvent,
    evaluate,
    throttle_from_mask,
)
from ecolink.runtime.base import GpuReading

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- NVML


# NVML's constants (as nvidia-ml-py names them), for stand-ins that lack them.
_NVML_CONSTANTS = {
    "NVML_MEMORY_ERROR_TYPE_CORRECTED": 0,
    "NVML_MEMORY_ERROR_TYPE_UNCORRECTED": 1,
    "NVML_VOLATILE_ECC": 0,
    "NVML_AGGREGATE_ECC": 1,
    "NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS": 0,
    "NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR": 1,
    "NVML_FEATURE_ENABLED": 1,
    "NVML_CLOCK_SM": 1,
    "NVML_CLOCK_MEM": 2,
    "NVML_NVLINK_ERROR_DL_REPLAY": 0,
    "NVML_NVLINK_ERROR_DL_RECOVERY": 1,
    "NVML_NVLINK_ERROR_DL_CRC_FLIT": 2,
    "NVML_NVLINK_ERROR_DL_CRC_DATA": 3,
    "NVML_DEVICE_MIG_ENABLE": 1,
}


def _c(n: Any, name: str) -> int:
    return int(getattr(n, name, _NVML_CONSTANTS[name]))


def _try(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:  # NVMLError_NotSupported and friends: unknown, not zero
        return None


def _replica_of_pid(pid: int) -> str | None:
    """The local runtime marks every replica process (`rid.cluster.replica.token`)."""
    from ecolink.runtime.local.proc import marker_of

    m = marker_of(pid)
    parts = m.split(".") if m else []
    return parts[-2] if len(parts) >= 4 else None


def _proc_name(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() or None
    except OSError:
        return None


def nvml_health(
    n: Any,
    handle: Any,
    *,
    owner_of: Callable[[int], str | None] | None = None,
    name_of: Callable[[int], str | None] | None = None,
) -> GpuHealth:
    """Everything NVML tells about one GPU's health (XIDs come from `XidWatcher`).
    `owner_of` maps a pid to the replica that runs it (default: the local runtime's
    process marker); `name_of` names a pid (default: /proc/PID/comm)."""
    owner_of = owner_of or _replica_of_pid
    name_of = name_of or _proc_name

    def ecc(kind: int, counter: int) -> int | None:
        v = _try(lambda: n.nvmlDeviceGetTotalEccErrors(handle, kind, counter))
        return None if v is None else int(v)

    def retired(cause: int) -> int | None:
        v = _try(lambda: n.nvmlDeviceGetRetiredPages(handle, cause))
        return None if v is None else len(v)

    pending = _try(lambda: n.nvmlDeviceGetRetiredPagesPendingStatus(handle))
    remap = _try(lambda: n.nvmlDeviceGetRemappedRows(handle))
    mask = _try(lambda: n.nvmlDeviceGetCurrentClocksEventReasons(handle))
    if mask is None:
        mask = _try(lambda: n.nvmlDeviceGetCurrentClocksThrottleReasons(handle))
    links = crc = replay = recovery = None
    for link in range(int(getattr(n, "NVML_NVLINK_MAX_LINKS", 18))):
        state = _try(lambda link: n.nvmlDeviceGetNvLinkState(handle, link), link)
        if state is None:
            continue
        links = (links or 0) + (1 if state else 0)
        if not state:
            continue

        def counter(kind: int, link: int = link) -> int:
            return int(_try(lambda: n.nvmlDeviceGetNvLinkErrorCounter(handle, link, kind)) or 0)

        crc = (
            (crc or 0)
            + counter(_c(n, "NVML_NVLINK_ERROR_DL_CRC_FLIT"))
            + counter(_c(n, "NVML_NVLINK_ERROR_DL_CRC_DATA"))
        )
        replay = (replay or 0) + counter(_c(n, "NVML_NVLINK_ERROR_DL_REPLAY"))
        recovery = (recovery or 0) + counter(_c(n, "NVML_NVLINK_ERROR_DL_RECOVERY"))
    mig = _try(lambda: n.nvmlDeviceGetMigMode(handle))
    mig_on = None if mig is None else bool(mig[0] == _c(n, "NVML_DEVICE_MIG_ENABLE"))
    instances: tuple[MigInstance, ...] | None = () if mig_on is False else None
    if mig_on:
        found = []
        for i in range(int(_try(lambda: n.nvmlDeviceGetMaxMigDeviceCount(handle)) or 0)):
            mh = _try(lambda i: n.nvmlDeviceGetMigDeviceHandleByIndex(handle, i), i)
            if mh is None:
                continue
            mem = _try(lambda mh: n.nvmlDeviceGetMemoryInfo(mh).total, mh)
            found.append(
                MigInstance(
                    gpu_instance=_try(lambda mh: int(n.nvmlDeviceGetGpuInstanceId(mh)), mh),
                    compute_instance=_try(lambda mh: int(n.nvmlDeviceGetComputeInstanceId(mh)), mh),
                    profile=None,
                    memory_total_mib=None if mem is None else int(mem) // (1024 * 1024),
                )
            )
        instances = tuple(found)
    procs = _try(lambda: n.nvmlDeviceGetComputeRunningProcesses(handle))
    processes = None
    if procs is not None:
        processes = tuple(
            GpuProcess(
                pid=int(p.pid),
                name=name_of(int(p.pid)),
                used_memory_mib=(
                    None
                    if getattr(p, "usedGpuMemory", None) is None
                    else int(p.usedGpuMemory) // (1024 * 1024)
                ),
                replica=owner_of(int(p.pid)),
            )
            for p in procs
        )

    def clock(kind: int, fn: str = "nvmlDeviceGetClockInfo") -> int | None:
        v = _try(lambda: getattr(n, fn)(handle, kind))
        return None if v is None else int(v)

    def num(fn: str) -> int | None:
        v = _try(lambda: getattr(n, fn)(handle))
        return None if v is None else int(v)

    return GpuHealth(
        xid_events=None,  # filled in by the XID watcher
        ecc_sbe_volatile=ecc(_c(n, "NVML_MEMORY_ERROR_TYPE_CORRECTED"), _c(n, "NVML_VOLATILE_ECC")),
        ecc_dbe_volatile=ecc(
            _c(n, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED"), _c(n, "NVML_VOLATILE_ECC")
        ),
        ecc_sbe_aggregate=ecc(
            _c(n, "NVML_MEMORY_ERROR_TYPE_CORRECTED"), _c(n, "NVML_AGGREGATE_ECC")
        ),
        ecc_dbe_aggregate=ecc(
            _c(n, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED"), _c(n, "NVML_AGGREGATE_ECC")
        ),
        retired_pages_sbe=retired(
            _c(n, "NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS")
        ),
        retired_pages_dbe=retired(_c(n, "NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR")),
        retired_pages_pending=None if pending is None else pending == _c(n, "NVML_FEATURE_ENABLED"),
        remap_correctable=None if remap is None else int(remap[0]),
        remap_uncorrectable=None if remap is None else int(remap[1]),
        remap_pending=None if remap is None else bool(remap[2]),
        remap_failed=None if remap is None else bool(remap[3]),
        throttle=None if mask is None else {r: 0.0 for r in throttle_from_mask(int(mask))},
        sm_clock_mhz=clock(_c(n, "NVML_CLOCK_SM")),
        sm_clock_max_mhz=clock(_c(n, "NVML_CLOCK_SM"), "nvmlDeviceGetMaxClockInfo"),
        mem_clock_mhz=clock(_c(n, "NVML_CLOCK_MEM")),
        pcie_gen=num("nvmlDeviceGetCurrPcieLinkGeneration"),
        pcie_gen_max=num("nvmlDeviceGetMaxPcieLinkGeneration"),
        pcie_width=num("nvmlDeviceGetCurrPcieLinkWidth"),
        pcie_width_max=num("nvmlDeviceGetMaxPcieLinkWidth"),
        pcie_replays=num("nvmlDeviceGetPcieReplayCounter"),
        nvlink_links=links,
        nvlink_crc_errors=crc,
        nvlink_replay_errors=replay,
        nvlink_recovery_errors=recovery,
        mig_mode=mig_on,
        mig_instances=instances,
        processes=processes,
    )


class XidWatcher:
    """XIDs through NVML's event API: registers every GPU for critical-XID events and
    drains the event set without blocking on each read."""

    def __init__(self, n: Any, handles: Mapping[str, Any]) -> None:
        self._n = n
        self._set: Any = None
        self.supported: set[str] = set()
        try:
            self._set = n.nvmlEventSetCreate()
        except Exception as e:
            log.debug("NVML events unavailable: %s", e)
            return
        for uuid, h in handles.items():
            try:
                n.nvmlDeviceRegisterEvents(h, n.nvmlEventTypeXidCriticalError, self._set)
                self.supported.add(uuid)
            except Exception as e:  # not supported on this board
                log.debug("no XID events for %s: %s", uuid, e)

    def drain(self, now: float, limit: int = 256) -> list[tuple[str, XidEvent]]:
        if self._set is None:
            return []
        n, out = self._n, []
        for _ in range(limit):
            try:
                data = n.nvmlEventSetWait_v2(self._set, 0)
            except Exception:  # NVMLError_Timeout: nothing waiting
                break
            if int(getattr(data, "eventType", 0)) != int(n.nvmlEventTypeXidCriticalError):
                continue
            uuid = _try(lambda d: n.nvmlDeviceGetUUID(d.device), data)
            if uuid is None:
                continue
            uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
            out.append((uuid, XidEvent(int(data.eventData), now)))
        return out

    def close(self) -> None:
        if self._set is not None:
            with contextlib.suppress(Exception):
                self._n.nvmlEventSetFree(self._set)
            self._set = None


# --------------------------------------------------------------------------- simulation

_SIM_XIDS = (13, 31, 43, 79, 48, 94, 63)


def synthetic_health(
    unit: Callable[..., float],
    replica_key: str,
    replica: str,
    index: int,
    t: int,
    *,
    active: bool,
    util: float,
    mem_used: int,
    gpu_type: str,
) -> GpuHealth:
    """Plausible health for a simulated GPU: mostly healthy; now and then a GPU is
    thermally throttled for a while (about 1 in 40 ten-minute spells) or logs an XID
    (about 1 in 150 GPU-hours, application XIDs far more often than fatal ones)."""
    spell = t // 600
    thermal = active and unit(replica_key, index, spell, "thermal") < 0.025
    hour = t // 3600
    xids: list[XidEvent] = []
    if unit(replica_key, index, hour, "xid") < 1 / 150:
        at = hour * 3600 + int(3600 * unit(replica_key, index, hour, "xid-at"))
        if at <= t:
            code = _SIM_XIDS[int(unit(replica_key, index, hour, "xid-code") ** 2 * len(_SIM_XIDS))]
            xids.append(XidEvent(code, float(at)))
    throttle: dict[str, float] = {}
    if not active or util < 5:
        throttle["idle"] = 0.0
    if thermal:
        throttle["thermal"] = 0.0
    links = (
        18
        if "h100" in gpu_type.lower() or "h200" in gpu_type.lower()
        else (12 if "a100" in gpu_type.lower() else None)
    )
    max_sm = 1980 if links == 18 else 1410 if links == 12 else 2040
    sm = int(max_sm * (0.7 if thermal else 1.0)) if active and util >= 5 else 210
    return GpuHealth(
        xid_events=tuple(xids),
        ecc_sbe_volatile=0,
        ecc_dbe_volatile=0,
        ecc_sbe_aggregate=0,
        ecc_dbe_aggregate=0,
        retired_pages_sbe=0,
        retired_pages_dbe=0,
        retired_pages_pending=False,
        remap_correctable=0,
        remap_uncorrectable=0,
        remap_pending=False,
        remap_failed=False,
        throttle=throttle,
        sm_clock_mhz=sm,
        sm_clock_max_mhz=max_sm,
        mem_clock_mhz=1593 if links else 6251,
        pcie_gen=5 if links == 18 else 4,
        pcie_gen_max=5 if links == 18 else 4,
        pcie_width=16,
        pcie_width_max=16,
        pcie_replays=0,
        nvlink_links=links,
        nvlink_crc_errors=0 if links else None,
        nvlink_replay_errors=0 if links else None,
        nvlink_recovery_errors=0 if links else None,
        mig_mode=False,
        mig_instances=(),
        processes=(
            (
                GpuProcess(
                    pid=1000 + index, name="python", used_memory_mib=mem_used, replica=replica
                ),
            )
            if active and mem_used
            else ()
        ),
    )


# --------------------------------------------------------------------------- tracking


@dataclass
class _GpuTrack:
    since: dict[str, float] = field(default_factory=dict)  # throttle reason -> held since
    xids: deque[XidEvent] = field(default_factory=lambda: deque(maxlen=50))
    counters: deque[tuple[float, int | None, int | None]] = field(default_factory=deque)
    verdict: Verdict | None = None
    history: deque[tuple[float, str, str | None]] = field(default_factory=lambda: deque(maxlen=100))


class HealthTracker:
    """Per GPU (by UUID): how long each throttle reason has held, the XID log (merged
    across reads; sources that only know the last XID get the time it was first seen),
    the NVLink/PCIe counters of the last window, the verdict and its transitions."""

    def __init__(self) -> None:
        self._gpus: dict[str, _GpuTrack] = {}

    def apply(
        self, g: GpuReading, now: float, extra_xids: list[XidEvent] | None = None
    ) -> GpuReading:
        tr = self._gpus.setdefault(g.uuid, _GpuTrack())
        h = g.health
        if h is not None:
            h = self._track(tr, h, now, extra_xids)
        nv = h.nvlink_errors() if h is not None else None
        px = h.pcie_replays if h is not None else None
        tr.counters.append((now, nv, px))
        while tr.counters and now - tr.counters[0][0] > NVLINK_WINDOW_S:
            tr.counters.popleft()
        before = tr.counters[0]
        verdict = evaluate(h, now, nvlink_errors_before=before[1], pcie_replays_before=before[2])
        if tr.verdict is None or tr.verdict != verdict:
            tr.history.append((now, verdict.level, verdict.reason))
        tr.verdict = verdict
        return replace(g, health=h, verdict=verdict)

    def _track(
        self, tr: _GpuTrack, h: GpuHealth, now: float, extra: list[XidEvent] | None
    ) -> GpuHealth:
        throttle = None
        if h.throttle is not None:
            for r in list(tr.since):
                if r not in h.throttle:
                    del tr.since[r]
            throttle = {r: now - tr.since.setdefault(r, now) for r in h.throttle}
        events = list(h.xid_events or ()) + list(extra or ())
        for e in events:
            if e.at is None:
                # The last XID only: a new event when the code changes.
                if tr.xids and tr.xids[-1].code == e.code:
                    continue
                tr.xids.append(XidEvent(e.code, now))
            elif not any(x.code == e.code and x.at == e.at for x in tr.xids):
                tr.xids.append(e)
        xid_known = h.xid_events is not None or extra is not None
        xids = tuple(x for x in tr.xids if x.at is not None and now - x.at <= 24 * XID_HOLD_S)
        return replace(
            h,
            throttle=throttle,
            xid_events=xids if xid_known or tr.xids else None,
        )

    def history(self, uuid: str) -> list[tuple[float, str, str | None]]:
        tr = self._gpus.get(uuid)
        return list(tr.history) if tr else []

    def forget(self, uuids: set[str]) -> None:
        for u in uuids:
            self._gpus.pop(u, None)
