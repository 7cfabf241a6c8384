"""GPU telemetry: the NVML and synthetic sources, and the hub's sampling, history,
metrics, summaries and listeners."""

from __future__ import annotations

import asyncio
import types
from datetime import UTC, datetime, timedelta

import pytest

from ecocore.clock import FakeClock
from ecocore.gpu_health import GpuHealth
from ecolink.runtime.base import GpuReading, ReplicaState, ReplicaTelemetry, RuntimeInfo
from ecolink.telemetry import NvmlSource, SyntheticSource, TelemetryHub, _Ring, detect_source

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# --------------------------------------------------------------------------- sources


def fake_nvml(n: int = 2, fail_power: bool = False) -> types.SimpleNamespace:
    class NVMLError(Exception):
        pass

    calls = {"name": 0}

    def name(h):
        calls["name"] += 1
        return f"NVIDIA H100 80GB HBM3 #{h}".encode()

    def power(h):
        if fail_power:
            raise NVMLError("not supported")
        return 250_000 + h * 1000

    return types.SimpleNamespace(
        NVMLError=NVMLError,
        NVML_TEMPERATURE_GPU=0,
        calls=calls,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: n,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=name,
        nvmlDeviceGetUUID=lambda h: f"GPU-{h:04d}",
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(
            total=80 * 1024**3, used=(10 + h) * 1024**3
        ),
        nvmlDeviceGetEnforcedPowerLimit=lambda h: 700_000,
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=40 + h, memory=5),
        nvmlDeviceGetTemperature=lambda h, kind: 50 + h,
        nvmlDeviceGetPowerUsage=power,
    )


def test_nvml_source_reads_real_fields():
    nvml = fake_nvml(2)
    src = NvmlSource(nvml)
    assert src.kind == "nvml" and src.device_count() == 2
    (g,) = src.read("c/r-0", "H100", [1], active=True, now=T0)
    assert g == GpuReading(
        index=1,
        uuid="GPU-0001",
        name="NVIDIA H100 80GB HBM3 #1",
        utilization=41.0,
        memory_used_mib=11 * 1024,
        memory_total_mib=80 * 1024,
        temperature_c=51.0,
        power_w=251.0,
        power_limit_w=700.0,
        # A driver that offers none of the health calls: every health field unknown.
        health=GpuHealth(),
    )
    # Static fields are read once per device; out-of-range indices are skipped.
    src.read("c/r-0", "H100", [0, 1, 5], active=True, now=T0)
    assert nvml.calls["name"] == 2


def test_nvml_unsupported_reading_is_zero_not_an_error():
    src = NvmlSource(fake_nvml(1, fail_power=True))
    (g,) = src.read("k", "H100", [0], active=True, now=T0)
    assert g.power_w == 0.0 and g.utilization == 40.0


def test_detect_falls_back_to_simulated(monkeypatch):
    monkeypatch.setenv("ECOLINK_TELEMETRY", "simulated")
    assert detect_source().kind == "simulated"


def test_synthetic_is_deterministic_and_plausible():
    a, b, other = SyntheticSource(3), SyntheticSource(3), SyntheticSource(4)
    ra = a.read("c1/web-0", "H100-80GB", [0, 1], active=True, now=T0)
    assert ra == b.read("c1/web-0", "H100-80GB", [0, 1], active=True, now=T0)
    assert ra != other.read("c1/web-0", "H100-80GB", [0, 1], active=True, now=T0)
    assert ra[0].uuid != ra[1].uuid and ra[0].uuid.startswith("GPU-sim-")
    series = [
        a.read("c1/web-0", "H100-80GB", [0], active=True, now=T0 + timedelta(seconds=s))[0]
        for s in range(600)
    ]
    utils = [g.utilization for g in series]
    assert all(0 <= u <= 100 for u in utils)
    assert max(utils) - min(utils) > 10  # it moves
    assert all(g.memory_total_mib == 81559 and g.power_limit_w == 700 for g in series)
    assert all(0 < g.memory_used_mib < g.memory_total_mib for g in series)
    assert all(25 < g.temperature_c < 90 and 0 < g.power_w <= 700 for g in series)
    # Hotter when busier.
    busy = max(series, key=lambda g: g.utilization)
    calm = min(series, key=lambda g: g.utilization)
    assert busy.power_w > calm.power_w and busy.temperature_c > calm.temperature_c
    idle = a.read("c1/web-0", "H100-80GB", [0], active=False, now=T0)[0]
    assert idle.utilization == 0 and idle.memory_used_mib == 0


# --------------------------------------------------------------------------- hub


class FakeRuntime:
    info = RuntimeInfo(name="local", telemetry="simulated")

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.src = SyntheticSource(1)
        self.replicas = {"c1": ["web-0", "web-1"], "c2": ["x-0"]}
        self.calls = 0
        self.fail = False

    async def telemetry(self, cid):
        self.calls += 1
        if self.fail:
            raise RuntimeError("down")
        return [
            ReplicaTelemetry(
                r,
                "simulated",
                self.src.read(f"{cid}/{r}", "H100", [0, 1], active=True, now=self.clock.now()),
            )
            for r in self.replicas.get(cid, [])
        ]


async def test_history_is_bounded_and_metrics_since():
    clock = FakeClock(T0)
    rt = FakeRuntime(clock)
    hub = TelemetryHub(rt, clock, interval_s=1.0, history_s=60)
    hub.track("c1")
    for _ in range(100):
        await hub.sample_once()
        clock.advance(1)
    m = hub.metrics("c1", None)
    assert m["interval_s"] == 1.0 and m["telemetry"] == "simulated"
    assert [r["name"] for r in m["replicas"]] == ["web-0", "web-1"]
    samples = m["replicas"][0]["gpus"][0]["samples"]
    # At least the whole history window, never more than its capacity.
    assert 60 <= len(samples) <= 62
    assert samples[-1][0] == "2026-03-01T12:01:39Z"
    times = [s[0] for s in samples]
    assert times == sorted(times)
    # Values match what the runtime reported at that time.
    g = rt.src.read("c1/web-0", "H100", [0], active=True, now=T0 + timedelta(seconds=99))[0]
    assert samples[-1][1:] == [g.utilization, g.memory_used_mib, g.temperature_c, g.power_w]
    since = hub.metrics("c1", T0 + timedelta(seconds=95))
    assert [s[0] for s in since["replicas"][0]["gpus"][0]["samples"]] == [
        f"2026-03-01T12:01:{s}Z" for s in range(36, 40)
    ]


def test_ring_memory_is_compact():
    ring = _Ring(3602)
    size = sum(a.itemsize * len(a) for a in (ring.t, ring.util, ring.mem, ring.temp, ring.power))
    assert size <= 3602 * 32  # about 24-28 bytes a sample, no per-sample objects


async def test_summary_replicas_json_and_listeners():
    clock = FakeClock(T0)
    rt = FakeRuntime(clock)
    hub = TelemetryHub(rt, clock)
    seen = []
    hub.add_listener(seen.append)
    hub.track("c1")
    hub.track("c2")
    await hub.sample_once()
    assert sorted(seen) == ["c1", "c2"]
    s = hub.summary("c1")
    utils = [g.utilization for rt_ in hub.latest("c1") for g in rt_.gpus]
    assert s["gpus"] == 4 and s["telemetry"] == "simulated"
    assert s["mean_utilization"] == round(sum(utils) / 4, 1)
    assert s["idle_gpus"] == sum(u < 5 for u in utils)
    states = [ReplicaState("web-0", 0, "Running", True), ReplicaState("web-9", 9, "Pending", False)]
    rows = hub.replicas_json("c1", states)
    assert rows[0]["name"] == "web-0" and len(rows[0]["gpus"]) == 2
    assert rows[0]["gpus"][0]["uuid"].startswith("GPU-sim-")
    assert rows[0]["telemetry"] == "simulated" and rows[0]["shared"] is False
    assert rows[1]["gpus"] == [] and rows[1]["telemetry"] == "simulated"
    # A failing runtime keeps the last readings.
    rt.fail = True
    await hub.sample_once()
    assert hub.summary("c1")["gpus"] == 4
    hub.untrack("c1")
    assert hub.summary("c1")["gpus"] == 0 and hub.metrics("c1", None)["replicas"] == []


async def test_removed_replica_history_expires():
    clock = FakeClock(T0)
    rt = FakeRuntime(clock)
    hub = TelemetryHub(rt, clock, interval_s=1.0, history_s=10)
    hub.track("c1")
    await hub.sample_once()
    rt.replicas["c1"] = ["web-0"]
    for _ in range(5):
        clock.advance(1)
        await hub.sample_once()
    # Still within the window: the scaled-away replica's graph is kept.
    assert [r["name"] for r in hub.metrics("c1", None)["replicas"]] == ["web-0", "web-1"]
    for _ in range(10):
        clock.advance(1)
        await hub.sample_once()
    assert [r["name"] for r in hub.metrics("c1", None)["replicas"]] == ["web-0"]


async def test_loop_samples_every_interval():
    clock = FakeClock(T0)
    rt = FakeRuntime(clock)
    hub = TelemetryHub(rt, clock, interval_s=0.05)
    await hub.start()
    try:
        hub.track("c1")
        await asyncio.sleep(0.5)
    finally:
        await hub.stop()
    assert 6 <= rt.calls <= 14
    calls = rt.calls
    await asyncio.sleep(0.15)
    assert rt.calls == calls  # stopped means stopped


@pytest.mark.parametrize("n", [1, 3])
def test_nvml_count(n):
    assert NvmlSource(fake_nvml(n)).device_count() == n
