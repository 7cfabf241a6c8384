"""GPU health on the backend: NVML (nvidia-ml-py's own functions patched to return
values recorded from an A100-SXM4-80GB with MIG on, see tests/data/gpu), XIDs through
NVML's event API, the simulation, and the hub's tracking (throttle durations, XID log,
NVLink window, verdict history, summaries)."""

from __future__ import annotations

import types
from datetime import UTC, datetime, timedelta

import pynvml
import pytest

from ecocore.clock import FakeClock
from ecocore.gpu_health import NVLINK_WINDOW_S, GpuHealth, XidEvent
from ecolink.runtime.base import GpuReading, ReplicaTelemetry, RuntimeInfo
from ecolink.telemetry import NvmlSource, SyntheticSource, TelemetryHub
from ecolink.telemetry_health import HealthTracker

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MIB = 1024 * 1024
UUID = "GPU-1f027ee8-6e1e-2b8c-0108-3d370e5f0418"


@pytest.fixture
def recorded(monkeypatch):
    """pynvml's functions patched to answer as one A100 did (values of the capture)."""
    events: list[types.SimpleNamespace] = []

    def unsupported(*a):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def wait(_set, timeout_ms):
        assert timeout_ms == 0, "reads must never block on the event set"
        if not events:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)
        return events.pop(0)

    mig_handles = {f"mig{i}": 3 + i for i in range(4)}
    values = {
        "nvmlInit": lambda: None,
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetCount": lambda: 1,
        "nvmlDeviceGetHandleByIndex": lambda i: "gpu0",
        "nvmlDeviceGetName": lambda h: b"NVIDIA A100-SXM4-80GB",
        "nvmlDeviceGetUUID": lambda h: UUID.encode(),
        "nvmlDeviceGetMemoryInfo": lambda h: types.SimpleNamespace(
            total=(19968 if h in mig_handles else 81920) * MIB, used=50 * MIB
        ),
        "nvmlDeviceGetEnforcedPowerLimit": lambda h: 500_000,
        "nvmlDeviceGetUtilizationRates": lambda h: types.SimpleNamespace(gpu=0, memory=0),
        "nvmlDeviceGetTemperature": lambda h, kind: 27,
        "nvmlDeviceGetPowerUsage": lambda h: 67_030,
        "nvmlDeviceGetTotalEccErrors": lambda h, kind, counter: 0,
        "nvmlDeviceGetRetiredPages": unsupported,  # N/A in the capture
        "nvmlDeviceGetRetiredPagesPendingStatus": unsupported,
        "nvmlDeviceGetRemappedRows": lambda h: (0, 0, 0, 0),
        "nvmlDeviceGetCurrentClocksEventReasons": lambda h: 0x1,  # idle
        "nvmlDeviceGetClockInfo": lambda h, kind: {1: 1275, 2: 1593}[kind],
        "nvmlDeviceGetMaxClockInfo": lambda h, kind: 1410,
        "nvmlDeviceGetCurrPcieLinkGeneration": lambda h: 4,
        "nvmlDeviceGetMaxPcieLinkGeneration": lambda h: 4,
        "nvmlDeviceGetCurrPcieLinkWidth": lambda h: 16,
        "nvmlDeviceGetMaxPcieLinkWidth": lambda h: 16,
        "nvmlDeviceGetPcieReplayCounter": lambda h: 0,
        "nvmlDeviceGetNvLinkState": lambda h, link: (
            pynvml.NVML_FEATURE_ENABLED if link < 12 else unsupported()
        ),
        "nvmlDeviceGetNvLinkErrorCounter": lambda h, link, kind: 1 if (link, kind) == (2, 2) else 0,
        "nvmlDeviceGetMigMode": lambda h: (pynvml.NVML_DEVICE_MIG_ENABLE,) * 2,
        "nvmlDeviceGetMaxMigDeviceCount": lambda h: 7,
        "nvmlDeviceGetMigDeviceHandleByIndex": lambda h, i: f"mig{i}" if i < 4 else unsupported(),
        "nvmlDeviceGetGpuInstanceId": lambda mh: mig_handles[mh],
        "nvmlDeviceGetComputeInstanceId": lambda mh: 0,
        "nvmlDeviceGetComputeRunningProcesses": lambda h: [
            types.SimpleNamespace(pid=4242, usedGpuMemory=12 * MIB),
            types.SimpleNamespace(pid=4343, usedGpuMemory=None),
        ],
        "nvmlEventSetCreate": lambda: "set",
        "nvmlDeviceRegisterEvents": lambda h, kinds, s: None,
        "nvmlEventSetWait_v2": wait,
        "nvmlEventSetFree": lambda s: None,
    }
    for name, fn in values.items():
        monkeypatch.setattr(pynvml, name, fn)
    monkeypatch.setattr(
        "ecolink.telemetry_health._replica_of_pid", lambda pid: {4242: "web-0"}.get(pid)
    )
    monkeypatch.setattr("ecolink.telemetry_health._proc_name", lambda pid: "python")

    def xid(code: int) -> None:
        events.append(
            types.SimpleNamespace(
                eventType=pynvml.nvmlEventTypeXidCriticalError, eventData=code, device="gpu0"
            )
        )

    return xid


def read(src: NvmlSource, now=T0) -> GpuReading:
    (g,) = src.read("c/web-0", "A100", [0], active=True, now=now)
    return g


def test_nvml_reads_every_health_field(recorded):
    src = NvmlSource()
    g = read(src)
    h = g.health
    assert (g.uuid, g.memory_total_mib, g.power_w) == (UUID, 81920, 67.0)
    assert (h.ecc_sbe_volatile, h.ecc_dbe_volatile, h.ecc_sbe_aggregate, h.ecc_dbe_aggregate) == (
        0,
        0,
        0,
        0,
    )
    assert h.retired_pages_sbe is None and h.retired_pages_pending is None  # unsupported
    assert (h.remap_pending, h.remap_failed) == (False, False)
    assert h.throttle == {"idle": 0.0}
    assert (h.sm_clock_mhz, h.sm_clock_max_mhz, h.mem_clock_mhz) == (1275, 1410, 1593)
    assert (h.pcie_gen, h.pcie_width, h.pcie_width_max, h.pcie_replays) == (4, 16, 16, 0)
    assert (h.nvlink_links, h.nvlink_crc_errors, h.nvlink_replay_errors) == (12, 1, 0)
    assert h.mig_mode is True
    assert [(m.gpu_instance, m.memory_total_mib) for m in h.mig_instances] == [
        (3, 19968),
        (4, 19968),
        (5, 19968),
        (6, 19968),
    ]
    assert [(p.pid, p.used_memory_mib, p.replica) for p in h.processes] == [
        (4242, 12, "web-0"),
        (4343, None, None),
    ]
    assert h.xid_events == ()
    src.close()


def test_nvml_xid_events_arrive_once_with_their_time(recorded):
    src = NvmlSource()
    read(src)
    recorded(79)
    later = T0 + timedelta(seconds=5)
    h = read(src, later).health
    assert h.xid_events == (XidEvent(79, later.timestamp()),)
    assert read(src, later + timedelta(seconds=1)).health.xid_events == ()


def test_nvml_without_event_support_says_unknown(recorded, monkeypatch):
    def no_events():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    monkeypatch.setattr(pynvml, "nvmlEventSetCreate", no_events)
    assert read(NvmlSource()).health.xid_events is None


def reading(h: GpuHealth, uuid: str = "GPU-a") -> GpuReading:
    return GpuReading(0, uuid, "H100", 50.0, 1, 2, 60.0, 300.0, 700.0, health=h)


def test_tracker_counts_how_long_each_throttle_reason_holds():
    tr = HealthTracker()
    t = 1_000.0
    g = tr.apply(reading(GpuHealth(throttle={"thermal": 0.0})), t)
    assert g.health.throttle == {"thermal": 0.0} and g.verdict.level == "ok"
    g = tr.apply(reading(GpuHealth(throttle={"thermal": 0.0, "power_cap": 0.0})), t + 299)
    assert g.health.throttle == {"thermal": 299.0, "power_cap": 0.0}
    g = tr.apply(reading(GpuHealth(throttle={"thermal": 0.0})), t + 300)
    assert g.verdict.level == "degraded" and "thermal throttling for 5m00s" in g.verdict.reason
    g = tr.apply(reading(GpuHealth(throttle={})), t + 301)
    assert g.health.throttle == {} and g.verdict.level == "ok"
    assert [level for _, level, _ in tr.history("GPU-a")] == ["ok", "degraded", "ok"]


def test_tracker_keeps_the_xid_log_and_dedups_the_last_xid_of_dcgm():
    tr = HealthTracker()
    g = tr.apply(reading(GpuHealth(xid_events=(XidEvent(79, None),))), 5_000.0)
    assert g.health.xid_events == (XidEvent(79, 5_000.0),)
    assert g.verdict.level == "failing"
    # The exporter keeps reporting the same last XID: still one event, first seen at 5000.
    g = tr.apply(reading(GpuHealth(xid_events=(XidEvent(79, None),))), 5_010.0)
    assert g.health.xid_events == (XidEvent(79, 5_000.0),)
    # An hour later the GPU is no longer failing for it, and the event is still listed.
    g = tr.apply(reading(GpuHealth(xid_events=(XidEvent(79, None),))), 5_000.0 + 3601)
    assert g.verdict.level == "ok" and len(g.health.xid_events) == 1


def test_tracker_sees_nvlink_errors_rise_within_the_window():
    tr = HealthTracker()
    h = GpuHealth(nvlink_links=18, nvlink_crc_errors=5)
    assert tr.apply(reading(h), 0.0).verdict.level == "ok"
    rising = GpuHealth(nvlink_links=18, nvlink_crc_errors=9)
    assert tr.apply(reading(rising), 60.0).verdict.reason == "NVLink errors rising (+4)"
    # Once the rise is older than the window, a steady count is ok again.
    assert tr.apply(reading(rising), 60.0 + NVLINK_WINDOW_S + 1).verdict.level == "ok"


def test_synthetic_health_is_labelled_plausible_and_sometimes_sick():
    src = SyntheticSource(seed=3)
    levels = []
    tr = HealthTracker()
    # Two reads five minutes apart (one ten-minute spell): throttling that holds degrades.
    for at in (T0 + timedelta(seconds=1800), T0 + timedelta(seconds=2100)):
        levels = []
        for k in range(400):
            for g in src.read(f"c/web-{k}", "H100-80GB", range(8), active=True, now=at):
                h = g.health
                assert h.ecc_dbe_volatile == 0 and h.nvlink_links == 18
                assert [p.replica for p in h.processes] == [f"web-{k}"]
                levels.append(tr.apply(g, at.timestamp()).verdict.level)
    assert levels.count("ok") > 0.9 * len(levels)
    assert levels.count("degraded") > 0
    assert levels.count("failing") > 0
    assert src.kind == "simulated"


class FakeRuntime:
    info = RuntimeInfo(name="local", telemetry="simulated")

    def __init__(self, gpus):
        self.gpus = gpus

    async def telemetry(self, cid):
        return [ReplicaTelemetry("web-0", "simulated", tuple(self.gpus))]


async def test_hub_serves_verdicts_summary_and_history():
    clock = FakeClock(T0)
    rt = FakeRuntime(
        [reading(GpuHealth(throttle={}), "GPU-a"), reading(GpuHealth(ecc_dbe_volatile=1), "GPU-b")]
    )
    hub = TelemetryHub(rt, clock)  # type: ignore[arg-type]
    hub.track("c1")
    await hub.sample_once()
    s = hub.summary("c1")
    assert s["health"] == {
        "verdict": "failing",
        "reason": "1 double-bit ECC error(s)",
        "failing": 1,
        "degraded": 0,
    }
    from ecolink.runtime.base import ReplicaState

    (rep,) = hub.replicas_json("c1", [ReplicaState("web-0", 0, "Running", True, 0, None, None)])
    assert [g["health"]["verdict"] for g in rep["gpus"]] == ["ok", "failing"]
    assert rep["gpus"][0]["health"]["pcie_replays"] is None
    m = hub.metrics("c1", None)
    gpus = {g["uuid"]: g for g in m["replicas"][0]["gpus"]}
    assert gpus["GPU-b"]["health"] == [
        ["2026-03-01T12:00:00Z", "failing", "1 double-bit ECC error(s)"]
    ]
