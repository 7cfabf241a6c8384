"""The health parsers against real captured outputs (tests/data/gpu, provenance in its
README): `nvidia-smi -q -x` from Ampere (A100 with MIG, A10G), Turing (T4) and Ada (DTD
v13), and DCGM exporter dumps. Unknown stays None, never 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecocore.gpu_health import MigInstance, evaluate
from ecolink.runtime.gpu_parsers import NvidiaSmiXmlError, dcgm_health, parse_nvidia_smi_xml
from ecolink.runtime.kubernetes.telemetry import parse_dcgm

DATA = Path(__file__).resolve().parents[1] / "data" / "gpu"


def smi(name: str):
    (g,) = parse_nvidia_smi_xml((DATA / f"nvidia-smi-{name}.xml").read_text())
    return g


def test_a100_with_mig_instances():
    g = smi("a100-sxm4-v12")
    assert g.name == "NVIDIA A100-SXM4-80GB"
    assert (g.memory_used_mib, g.memory_total_mib, g.temperature_c) == (50, 81920, 27.0)
    assert (g.power_w, g.power_limit_w) == (67.03, 500.0)
    h = g.health
    assert h.mig_mode is True
    assert h.mig_instances == tuple(MigInstance(gi, 0, None, 19968) for gi in (3, 4, 5, 6))
    assert (h.ecc_sbe_volatile, h.ecc_dbe_volatile, h.ecc_dbe_aggregate) == (0, 0, 0)
    # This driver prints N/A for retired pages and row remapping: unknown, not 0.
    assert h.retired_pages_sbe is None and h.retired_pages_pending is None
    assert h.remap_pending is None and h.remap_failed is None
    assert (h.sm_clock_mhz, h.sm_clock_max_mhz, h.mem_clock_mhz) == (1275, 1410, 1593)
    assert (h.pcie_gen, h.pcie_gen_max, h.pcie_width, h.pcie_width_max, h.pcie_replays) == (
        4,
        4,
        16,
        16,
        0,
    )
    assert h.throttle == {}
    # nvidia-smi -q does not carry XIDs or NVLink counters.
    assert h.xid_events is None and h.nvlink_links is None and h.nvlink_crc_errors is None
    assert h.processes == ()


def test_a10g_row_remap_throttle_and_processes():
    h = smi("a10g").health
    assert (h.remap_correctable, h.remap_uncorrectable) == (0, 0)
    assert h.remap_pending is False and h.remap_failed is False
    assert h.throttle == {"idle": 0.0}
    assert (h.pcie_width, h.pcie_width_max, h.pcie_gen) == (8, 16, 1)
    assert [(p.pid, p.name, p.used_memory_mib) for p in h.processes] == [
        (725, "/usr/lib/xorg/Xorg", 22)
    ]
    assert h.mig_mode is None  # N/A on this board


def test_t4_retired_pages_and_processes():
    g = smi("tesla-t4")
    h = g.health
    assert g.name == "Tesla T4" and g.memory_total_mib == 15360
    assert (h.retired_pages_sbe, h.retired_pages_dbe, h.retired_pages_pending) == (0, 0, False)
    assert h.remap_pending is None  # Turing has no row remapper
    assert [(p.pid, p.used_memory_mib) for p in h.processes] == [(675, 22), (5762, 1005)]
    assert (h.sm_clock_mhz, h.mem_clock_mhz) == (585, 5000)


def test_ada_v13_clocks_event_reasons_and_no_ecc():
    g = smi("rtx-4000-sff-ada-v13")
    h = g.health
    assert g.power_w == 8.44  # v13: instant_power_draw
    assert h.throttle == {"idle": 0.0}
    assert h.ecc_sbe_volatile is None and h.ecc_dbe_volatile is None  # ECC N/A
    assert {p.name for p in h.processes} >= {"python", "/usr/bin/code"}


@pytest.mark.parametrize("name", ["a100-sxm4-v12", "a10g", "tesla-t4", "rtx-4000-sff-ada-v13"])
def test_every_real_capture_is_healthy(name):
    h = smi(name).health
    assert evaluate(h, 0.0).level == "ok"


def test_nvidia_smi_xml_errors_are_clear():
    with pytest.raises(NvidiaSmiXmlError, match="no XML report"):
        parse_nvidia_smi_xml("NVIDIA-SMI has failed because it couldn't communicate")
    with pytest.raises(NvidiaSmiXmlError, match="not an nvidia-smi report"):
        parse_nvidia_smi_xml("<other/>")


def dcgm(name: str):
    (gpus,) = parse_dcgm((DATA / name).read_text(), include_unowned=True).values()
    (g,) = gpus
    return g


def test_dcgm_t4_default_counters():
    g = dcgm("dcgm-t4-datadog.txt")
    assert g.uuid == "GPU-20c56d28-0da5-6d26-a36a-e7af1ce2586e" and g.name == "Tesla T4"
    assert (g.memory_total_mib, g.power_w) == (15109, 8.969)
    h = g.health
    assert h.xid_events == ()  # XID 0: none logged
    assert (h.sm_clock_mhz, h.mem_clock_mhz, h.pcie_replays) == (300, 405, 0)
    # The default counters carry no ECC, remap, NVLink error or throttle fields.
    assert h.ecc_dbe_volatile is None and h.remap_failed is None
    assert h.nvlink_crc_errors is None and h.throttle is None


def test_dcgm_t4_throttle_reasons():
    h = dcgm("dcgm-t4-b-datadog.txt").health
    assert h.throttle == {"idle": 0.0}  # DCGM_FI_DEV_CLOCK_THROTTLE_REASONS = 1


def test_dcgm_without_pod_labels_is_left_out_of_replicas():
    text = (DATA / "dcgm-issue138.txt").read_text()
    assert parse_dcgm(text) == {}
    g = dcgm("dcgm-issue138.txt")
    assert (g.utilization, g.temperature_c, g.health.sm_clock_mhz) == (44.0, 55.0, 1530)


def test_dcgm_health_fields_map_to_readings():
    h = dcgm_health(
        {
            "DCGM_FI_DEV_XID_ERRORS": 79,
            "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": 2,
            "DCGM_FI_DEV_ROW_REMAP_PENDING": 1,
            "DCGM_FI_DEV_ROW_REMAP_FAILURE": 0,
            "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL": 3,
            "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL": 4,
            "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": 0x40 | 0x4,
            "DCGM_FI_DEV_MEMORY_TEMP": 9.223372036854776e18,
            "DCGM_FI_DEV_PCIE_LINK_WIDTH": 9.223372036854776e18,
        },
        {"GPU_I_ID": "3", "GPU_I_PROFILE": "2g.20gb"},
    )
    assert [e.code for e in h.xid_events] == [79]
    assert h.ecc_dbe_volatile == 2 and h.remap_pending is True and h.remap_failed is False
    assert h.nvlink_crc_errors == 7
    assert h.throttle == {"power_cap": 0.0, "thermal": 0.0}
    assert h.pcie_width is None  # DCGM's blank value
    assert h.mig_mode is True and h.mig_instances[0].profile == "2g.20gb"
    assert evaluate(h, 0.0).level == "failing"
