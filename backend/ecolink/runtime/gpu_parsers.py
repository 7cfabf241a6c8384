"""Health readings from the outputs a replica or a node gives: `nvidia-smi -q -x` and the
DCGM exporter's `DCGM_FI_DEV_*` fields. Nothing is invented: a field the output does not
carry (or carries as `N/A`) is None.
"""

from __future__ import annotations

import dataclasses
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping

from ecocore.gpu_health import (
    GpuHealth,
    GpuProcess,
    MigInstance,
    XidEvent,
    throttle_from_mask,
)
from ecolink.runtime.base import GpuReading

NVIDIA_SMI_XML_COMMAND = ("nvidia-smi", "-q", "-x")

_NUM = re.compile(r"-?\d+(?:\.\d+)?")


def _num(text: str | None) -> float | None:
    """`45 C`, `23034 MiB`, `16x`, `27.22 W` -> the number; `N/A`, `[Not Supported]` -> None."""
    if text is None:
        return None
    m = _NUM.search(text)
    if m is None:
        return None
    v = float(m.group())
    return v if math.isfinite(v) else None


def _int(text: str | None) -> int | None:
    v = _num(text)
    return None if v is None else int(v)


def _yes(text: str | None) -> bool | None:
    t = (text or "").strip().lower()
    if t in ("yes", "enabled", "active"):
        return True
    if t in ("no", "disabled", "not active"):
        return False
    return None


def _find(el: ET.Element, *paths: str) -> str | None:
    for p in paths:
        node = el.find(p)
        if node is not None and node.text is not None and node.text.strip():
            return node.text.strip()
    return None


def _sum(*vals: int | None) -> int | None:
    if all(v is None for v in vals):
        return None
    return sum(v or 0 for v in vals)


# nvidia-smi's throttle (clocks event) reason names -> ours.
_SMI_THROTTLE = {
    "gpu_idle": "idle",
    "applications_clocks_setting": "applications_clocks",
    "sw_power_cap": "power_cap",
    "hw_slowdown": "hw_slowdown",
    "hw_thermal_slowdown": "thermal",
    "sw_thermal_slowdown": "thermal",
    "hw_power_brake_slowdown": "power_brake",
    "sync_boost": "sync_boost",
}


def _throttle(gpu: ET.Element) -> dict[str, float] | None:
    block = gpu.find("clocks_event_reasons")
    prefix = "clocks_event_reason_"
    if block is None:
        block = gpu.find("clocks_throttle_reasons")
        prefix = "clocks_throttle_reason_"
    if block is None:
        return None
    active: dict[str, float] = {}
    seen = False
    for child in block:
        name = _SMI_THROTTLE.get(child.tag.removeprefix(prefix))
        state = _yes(child.text)
        if name is None or state is None:
            continue
        seen = True
        if state:
            active[name] = 0.0
    return active if seen else None


def _ecc(block: ET.Element | None) -> tuple[int | None, int | None]:
    """(single-bit, double-bit) from a `volatile` or `aggregate` block of any generation."""
    if block is None:
        return None, None
    sbe = _sum(
        _int(_find(block, "single_bit/total")),
        _int(_find(block, "dram_correctable")),
        _int(_find(block, "sram_correctable")),
    )
    dbe = _sum(
        _int(_find(block, "double_bit/total")),
        _int(_find(block, "dram_uncorrectable")),
        _int(_find(block, "sram_uncorrectable")),
        _int(_find(block, "sram_uncorrectable_parity")),
        _int(_find(block, "sram_uncorrectable_secded")),
    )
    return sbe, dbe


def _health_from_smi(gpu: ET.Element) -> GpuHealth:
    sbe_v, dbe_v = _ecc(gpu.find("ecc_errors/volatile"))
    sbe_a, dbe_a = _ecc(gpu.find("ecc_errors/aggregate"))
    mig = _find(gpu, "mig_mode/current_mig")
    mig_on = _yes(mig)
    instances: tuple[MigInstance, ...] | None = None
    if mig_on:
        instances = tuple(
            MigInstance(
                gpu_instance=_int(_find(d, "gpu_instance_id")),
                compute_instance=_int(_find(d, "compute_instance_id")),
                profile=None,
                memory_total_mib=_int(_find(d, "fb_memory_usage/total")),
            )
            for d in gpu.findall("mig_devices/mig_device")
        )
    elif mig_on is False:
        instances = ()
    procs_el = gpu.find("processes")
    processes: tuple[GpuProcess, ...] | None = None
    if procs_el is not None:
        processes = tuple(
            GpuProcess(
                pid=int(pid),
                name=_find(p, "process_name"),
                used_memory_mib=_int(_find(p, "used_memory")),
            )
            for p in procs_el.findall("process_info")
            if (pid := _int(_find(p, "pid"))) is not None
        )
    return GpuHealth(
        xid_events=None,  # nvidia-smi -q does not list XIDs
        ecc_sbe_volatile=sbe_v,
        ecc_dbe_volatile=dbe_v,
        ecc_sbe_aggregate=sbe_a,
        ecc_dbe_aggregate=dbe_a,
        retired_pages_sbe=_int(
            _find(gpu, "retired_pages/multiple_single_bit_retirement/retired_count")
        ),
        retired_pages_dbe=_int(_find(gpu, "retired_pages/double_bit_retirement/retired_count")),
        retired_pages_pending=_yes(_find(gpu, "retired_pages/pending_retirement")),
        remap_correctable=_int(_find(gpu, "remapped_rows/remapped_row_corr")),
        remap_uncorrectable=_int(_find(gpu, "remapped_rows/remapped_row_unc")),
        remap_pending=_yes(_find(gpu, "remapped_rows/remapped_row_pending")),
        remap_failed=_yes(_find(gpu, "remapped_rows/remapped_row_failure")),
        throttle=_throttle(gpu),
        sm_clock_mhz=_int(_find(gpu, "clocks/sm_clock")),
        sm_clock_max_mhz=_int(_find(gpu, "max_clocks/sm_clock")),
        mem_clock_mhz=_int(_find(gpu, "clocks/mem_clock")),
        pcie_gen=_int(_find(gpu, "pci/pci_gpu_link_info/pcie_gen/current_link_gen")),
        pcie_gen_max=_int(_find(gpu, "pci/pci_gpu_link_info/pcie_gen/max_link_gen")),
        pcie_width=_int(_find(gpu, "pci/pci_gpu_link_info/link_widths/current_link_width")),
        pcie_width_max=_int(_find(gpu, "pci/pci_gpu_link_info/link_widths/max_link_width")),
        pcie_replays=_int(_find(gpu, "pci/replay_counter")),
        nvlink_links=None,  # `nvidia-smi -q` has no NVLink counters
        nvlink_crc_errors=None,
        nvlink_replay_errors=None,
        nvlink_recovery_errors=None,
        mig_mode=mig_on,
        mig_instances=instances,
        processes=processes,
    )


def with_process_owner(g: GpuReading, replica: str) -> GpuReading:
    """nvidia-smi ran inside `replica`: the processes it lists on its GPUs are the replica's."""
    h = g.health
    if h is None or not h.processes:
        return g
    procs = tuple(dataclasses.replace(p, replica=replica) for p in h.processes)
    return dataclasses.replace(g, health=dataclasses.replace(h, processes=procs))


class NvidiaSmiXmlError(ValueError):
    pass


def parse_nvidia_smi_xml(text: str) -> list[GpuReading]:
    """Readings (with health) of every GPU in an `nvidia-smi -q -x` report."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise NvidiaSmiXmlError(f"nvidia-smi -q -x printed no XML report: {e}") from None
    if root.tag != "nvidia_smi_log":
        raise NvidiaSmiXmlError(f"not an nvidia-smi report (root <{root.tag}>)")
    out = []
    for i, gpu in enumerate(root.findall("gpu")):
        used = _int(_find(gpu, "fb_memory_usage/used"))
        total = _int(_find(gpu, "fb_memory_usage/total"))
        out.append(
            GpuReading(
                index=i,
                uuid=_find(gpu, "uuid") or f"gpu-{i}",
                name=_find(gpu, "product_name") or "",
                utilization=_num(_find(gpu, "utilization/gpu_util")) or 0.0,
                memory_used_mib=used or 0,
                memory_total_mib=total or 0,
                temperature_c=_num(_find(gpu, "temperature/gpu_temp")) or 0.0,
                power_w=_num(
                    _find(
                        gpu,
                        "gpu_power_readings/power_draw",
                        "gpu_power_readings/instant_power_draw",
                        "gpu_power_readings/average_power_draw",
                        "power_readings/power_draw",
                    )
                )
                or 0.0,
                power_limit_w=_num(
                    _find(
                        gpu,
                        "gpu_power_readings/current_power_limit",
                        "power_readings/enforced_power_limit",
                        "power_readings/power_limit",
                    )
                )
                or 0.0,
                health=_health_from_smi(gpu),
            )
        )
    return out


# -------------------------------------------------------------------------- DCGM exporter

# DCGM field -> GpuHealth field (counts).
DCGM_HEALTH_FIELDS: Mapping[str, str] = {
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": "ecc_sbe_volatile",
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": "ecc_dbe_volatile",
    "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL": "ecc_sbe_aggregate",
    "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL": "ecc_dbe_aggregate",
    "DCGM_FI_DEV_RETIRED_SBE": "retired_pages_sbe",
    "DCGM_FI_DEV_RETIRED_DBE": "retired_pages_dbe",
    "DCGM_FI_DEV_RETIRED_PENDING": "retired_pages_pending",
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": "remap_correctable",
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": "remap_uncorrectable",
    "DCGM_FI_DEV_ROW_REMAP_PENDING": "remap_pending",
    "DCGM_FI_DEV_ROW_REMAP_FAILURE": "remap_failed",
    "DCGM_FI_DEV_SM_CLOCK": "sm_clock_mhz",
    "DCGM_FI_DEV_MAX_SM_CLOCK": "sm_clock_max_mhz",
    "DCGM_FI_DEV_MEM_CLOCK": "mem_clock_mhz",
    "DCGM_FI_DEV_PCIE_LINK_GEN": "pcie_gen",
    "DCGM_FI_DEV_PCIE_MAX_LINK_GEN": "pcie_gen_max",
    "DCGM_FI_DEV_PCIE_LINK_WIDTH": "pcie_width",
    "DCGM_FI_DEV_PCIE_MAX_LINK_WIDTH": "pcie_width_max",
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": "pcie_replays",
    "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL": "nvlink_crc_errors",
    "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL": "nvlink_crc_errors",
    "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL": "nvlink_replay_errors",
    "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL": "nvlink_recovery_errors",
}
DCGM_XID = "DCGM_FI_DEV_XID_ERRORS"
DCGM_THROTTLE = ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "DCGM_FI_DEV_CLOCKS_EVENT_REASONS")
_BOOLS = {"retired_pages_pending", "remap_pending", "remap_failed"}


def dcgm_health(values: Mapping[str, float], labels: Mapping[str, str]) -> GpuHealth:
    """One GPU's health from its DCGM fields (`values`: field name -> sample value) and
    the labels of its samples (MIG instance labels)."""
    kw: dict[str, object] = {}
    for fname, attr in DCGM_HEALTH_FIELDS.items():
        if fname not in values:
            continue
        v = values[fname]
        if not math.isfinite(v) or v >= 9.2e18:  # DCGM's "blank" sentinels
            continue
        if attr in _BOOLS:
            kw[attr] = bool(v)
        elif attr in kw:  # CRC flit + data errors
            kw[attr] = int(kw[attr]) + int(v)  # type: ignore[call-overload]
        else:
            kw[attr] = int(v)
    if DCGM_XID in values:
        code = int(values[DCGM_XID])
        # The exporter reports the last XID only, and not when it happened.
        kw["xid_events"] = (XidEvent(code, None),) if code > 0 else ()
    for name in DCGM_THROTTLE:
        if name in values:
            kw["throttle"] = {r: 0.0 for r in throttle_from_mask(int(values[name]))}
    if labels.get("GPU_I_ID") not in (None, ""):
        kw["mig_mode"] = True
        kw["mig_instances"] = (
            MigInstance(
                gpu_instance=_int(labels.get("GPU_I_ID")),
                compute_instance=None,
                profile=labels.get("GPU_I_PROFILE") or None,
                memory_total_mib=None,
            ),
        )
    return GpuHealth(**kw)  # type: ignore[arg-type]
