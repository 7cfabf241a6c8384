"""GPU telemetry: where readings come from, and the hub that samples and keeps them.

Sources (used by the local runtime):
- `NvmlSource`: real readings through NVML (nvidia-ml-py) for the GPUs of this machine.
- `SyntheticSource`: plausible, deterministic (seedable) readings for machines without
  GPUs; everything it produces is labelled "simulated" so no view passes it off as real.

`TelemetryHub` samples every tracked cluster through `Runtime.telemetry()` once per
interval, keeps a bounded history per GPU in compact arrays (at least an hour), and
answers the replicas, metrics and summary shapes of the API.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import re
from array import array
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from ecocore.clock import Clock
from ecocore.gpu_health import worst
from ecolink.runtime.base import (
    GpuReading,
    ReplicaState,
    ReplicaTelemetry,
    Runtime,
    TelemetrySource,
)
from ecolink.telemetry_health import HealthTracker, XidWatcher, nvml_health, synthetic_health

log = logging.getLogger(__name__)

# A GPU below this utilisation counts as idle in summaries.
IDLE_UTILIZATION = 5.0


# --------------------------------------------------------------------------- sources


class GpuSource(abc.ABC):
    """Where a runtime gets GPU readings."""

    kind: TelemetrySource

    @abc.abstractmethod
    def device_count(self) -> int | None:
        """Physical GPUs to partition among replicas; None: every replica gets its
        own virtual GPUs (simulated)."""

    @abc.abstractmethod
    def read(
        self,
        replica_key: str,
        gpu_type: str,
        indices: Sequence[int],
        *,
        active: bool,
        now: datetime,
    ) -> tuple[GpuReading, ...]:
        """Readings for the GPUs `indices` given to one replica. `replica_key`
        identifies the replica (simulations derive their values from it); `active`
        is False while the replica's process is not running."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the source (NVML shutdown)."""


class NvmlSource(GpuSource):
    """Real readings from NVML. `nvml` may be given (tests pass a stand-in module)."""

    kind: TelemetrySource = "nvml"

    def __init__(self, nvml: Any = None) -> None:
        if nvml is None:
            import pynvml  # nvidia-ml-py

            nvml = pynvml
        self._nvml = nvml
        nvml.nvmlInit()
        self._count = int(nvml.nvmlDeviceGetCount())
        self._static: dict[int, tuple[Any, str, str, int, float]] = {}
        self._xids: XidWatcher | None = None
        self._pending_xids: dict[str, list[Any]] = {}

    def _xid_events(self, uuid: str, now: datetime) -> tuple[Any, ...] | None:
        """XIDs logged for `uuid` since the last read (None: no XID events here)."""
        if self._xids is None:
            handles = {self._device(i)[2]: self._device(i)[0] for i in range(self._count)}
            self._xids = XidWatcher(self._nvml, handles)
        for u, e in self._xids.drain(now.timestamp()):
            self._pending_xids.setdefault(u, []).append(e)
        if uuid not in self._xids.supported:
            return None
        return tuple(self._pending_xids.pop(uuid, ()))

    def device_count(self) -> int | None:
        return self._count

    def _device(self, index: int) -> tuple[Any, str, str, int, float]:
        # Name, UUID, total memory and power limit do not change: read them once.
        cached = self._static.get(index)
        if cached is not None:
            return cached
        n = self._nvml
        handle = n.nvmlDeviceGetHandleByIndex(index)
        name = _text(n.nvmlDeviceGetName(handle))
        uuid = _text(n.nvmlDeviceGetUUID(handle))
        total = int(n.nvmlDeviceGetMemoryInfo(handle).total) // (1024 * 1024)
        limit = self._try(lambda: n.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0, 0.0)
        cached = (handle, name, uuid, total, float(limit))
        self._static[index] = cached
        return cached

    def _try(self, fn: Callable[[], Any], default: Any) -> Any:
        # Some readings are unsupported on some boards (power on older parts, ...).
        try:
            return fn()
        except Exception:  # pynvml.NVMLError and friends
            return default

    def read(
        self,
        replica_key: str,
        gpu_type: str,
        indices: Sequence[int],
        *,
        active: bool,
        now: datetime,
    ) -> tuple[GpuReading, ...]:
        return tuple(self._reading(i, now) for i in indices if i < self._count)

    def _reading(self, index: int, now: datetime) -> GpuReading:
        n = self._nvml
        handle, name, uuid, total, limit = self._device(index)
        util = self._try(lambda: float(n.nvmlDeviceGetUtilizationRates(handle).gpu), 0.0)
        used = self._try(lambda: int(n.nvmlDeviceGetMemoryInfo(handle).used) // (1024 * 1024), 0)
        temp = self._try(
            lambda: float(n.nvmlDeviceGetTemperature(handle, n.NVML_TEMPERATURE_GPU)), 0.0
        )
        power = self._try(lambda: n.nvmlDeviceGetPowerUsage(handle) / 1000.0, 0.0)
        health = nvml_health(n, handle)
        health = dataclasses.replace(health, xid_events=self._xid_events(uuid, now))
        return GpuReading(
            index=index,
            uuid=uuid,
            name=name,
            utilization=round(util, 1),
            memory_used_mib=used,
            memory_total_mib=total,
            temperature_c=round(temp, 1),
            power_w=round(float(power), 1),
            power_limit_w=round(limit, 1),
            health=health,
        )

    def close(self) -> None:
        if self._xids is not None:
            self._xids.close()
        with contextlib.suppress(Exception):
            self._nvml.nvmlShutdown()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# Board figures for plausible simulations: (memory MiB, power limit W, idle W).
_BOARDS = [
    (re.compile(r"h200", re.I), 143771, 700.0, 75.0),
    (re.compile(r"h100", re.I), 81559, 700.0, 70.0),
    (re.compile(r"a100.*40", re.I), 40960, 400.0, 55.0),
    (re.compile(r"a100", re.I), 81920, 400.0, 55.0),
    (re.compile(r"l40", re.I), 46068, 350.0, 35.0),
    (re.compile(r"a10", re.I), 23028, 150.0, 20.0),
    (re.compile(r"l4", re.I), 23034, 72.0, 16.0),
    (re.compile(r"t4", re.I), 15360, 70.0, 10.0),
]


def _board(gpu_type: str) -> tuple[int, float, float]:
    for pattern, mem, limit, idle in _BOARDS:
        if pattern.search(gpu_type):
            return mem, limit, idle
    m = re.search(r"(\d+)\s*G", gpu_type, re.I)
    mem = int(m.group(1)) * 1024 if m else 24576
    return mem, 300.0, 30.0


class SyntheticSource(GpuSource):
    """Plausible readings without GPUs. Deterministic: a function of (seed, replica,
    GPU index, whole second), so two sources with the same seed agree."""

    kind: TelemetrySource = "simulated"

    def __init__(self, seed: int | str = 0) -> None:
        self._seed = str(seed)

    def device_count(self) -> int | None:
        return None

    def _unit(self, *parts: object) -> float:
        """A uniform number in [0, 1) from its arguments."""
        h = hashlib.blake2b(
            "|".join((self._seed, *map(str, parts))).encode(), digest_size=8
        ).digest()
        return int.from_bytes(h, "big") / 2**64

    def read(
        self,
        replica_key: str,
        gpu_type: str,
        indices: Sequence[int],
        *,
        active: bool,
        now: datetime,
    ) -> tuple[GpuReading, ...]:
        mem_total, limit, idle_w = _board(gpu_type)
        t = math.floor(now.timestamp())
        out = []
        for index in indices:
            # Each GPU gets its own load level, period and phase, plus per-second noise.
            base = 25 + 60 * self._unit(replica_key, index, "base")
            period = 60 + 540 * self._unit(replica_key, index, "period")
            phase = 2 * math.pi * self._unit(replica_key, index, "phase")
            noise = (self._unit(replica_key, index, t) - 0.5) * 16
            if active:
                util = base + 20 * math.sin(2 * math.pi * t / period + phase) + noise
                util = min(100.0, max(0.0, util))
            else:
                util = 0.0
            load = util / 100
            mem_base = 0.15 + 0.6 * self._unit(replica_key, index, "mem")
            mem_used = int(mem_total * (mem_base * (0.8 + 0.2 * load))) if active else 0
            temp = 31 + 50 * load + (self._unit(replica_key, index, t, "t") - 0.5) * 2
            power = idle_w + (limit - idle_w) * load * 0.92
            uuid = hashlib.blake2b(
                f"{self._seed}|{replica_key}|{index}".encode(), digest_size=16
            ).hexdigest()
            out.append(
                GpuReading(
                    index=index,
                    uuid=f"GPU-sim-{uuid[:8]}-{uuid[8:12]}-{uuid[12:16]}-{uuid[16:20]}-{uuid[20:32]}",
                    name=gpu_type,
                    utilization=round(util, 1),
                    memory_used_mib=mem_used,
                    memory_total_mib=mem_total,
                    temperature_c=round(temp, 1),
                    power_w=round(power, 1),
                    power_limit_w=limit,
                    health=synthetic_health(
                        self._unit,
                        replica_key,
                        replica_key.rpartition("/")[2],
                        index,
                        t,
                        active=active,
                        util=util,
                        mem_used=mem_used,
                        gpu_type=gpu_type,
                    ),
                )
            )
        return tuple(out)


def detect_source(seed: int | str = 0) -> GpuSource:
    """NVML where it works and sees at least one GPU, else the labelled simulation.
    `ECOLINK_TELEMETRY=simulated` forces the simulation."""
    if os.environ.get("ECOLINK_TELEMETRY", "").lower() != "simulated":
        try:
            source = NvmlSource()
            if (source.device_count() or 0) > 0:
                return source
            source.close()
        except Exception as exc:  # no driver, no library
            log.debug("NVML unavailable: %s", exc)
    return SyntheticSource(seed)


# --------------------------------------------------------------------------- history


class _Ring:
    """A fixed-capacity ring of samples in compact typed arrays (about 24 bytes each)."""

    __slots__ = ("cap", "n", "head", "t", "util", "mem", "temp", "power")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.n = 0
        self.head = 0  # next write position
        self.t = array("d", bytes(8 * cap))
        self.util = array("f", bytes(4 * cap))
        self.mem = array("l", [0]) * cap
        self.temp = array("f", bytes(4 * cap))
        self.power = array("f", bytes(4 * cap))

    def append(self, t: float, r: GpuReading) -> None:
        i = self.head
        self.t[i] = t
        self.util[i] = r.utilization
        self.mem[i] = r.memory_used_mib
        self.temp[i] = r.temperature_c
        self.power[i] = r.power_w
        self.head = (i + 1) % self.cap
        self.n = min(self.n + 1, self.cap)

    def newest_t(self) -> float | None:
        return self.t[(self.head - 1) % self.cap] if self.n else None

    def since(self, after: float | None) -> Iterable[int]:
        start = (self.head - self.n) % self.cap
        for k in range(self.n):
            i = (start + k) % self.cap
            if after is None or self.t[i] > after:
                yield i


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TelemetryHub:
    """Samples tracked clusters every `interval_s` and keeps `history_s` of history."""

    def __init__(
        self, runtime: Runtime, clock: Clock, interval_s: float = 1.0, history_s: float = 3600
    ) -> None:
        self.runtime = runtime
        self.clock = clock
        self.interval_s = interval_s
        self.history_s = history_s
        # One slot more than the hour so a full hour is always there.
        self._cap = int(math.ceil(history_s / interval_s)) + 2
        self._tracked: set[str] = set()
        self._latest: dict[str, list[ReplicaTelemetry]] = {}
        # cluster -> replica -> gpu uuid -> (index, ring)
        self._hist: dict[str, dict[str, dict[str, tuple[int, _Ring]]]] = {}
        self._listeners: list[Callable[[str], Any]] = []
        self.health = HealthTracker()
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    # -- lifecycle
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="telemetry-hub")

    async def stop(self) -> None:
        task, self._task = self._task, None
        for t in [task, *self._pending]:
            if t is not None:
                t.cancel()
        for t in [task, *self._pending]:
            if t is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        self._pending.clear()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                await self.sample_once()
            except Exception:  # never let one bad round end sampling
                log.exception("telemetry round failed")
            next_at += self.interval_s
            delay = next_at - loop.time()
            if delay < 0:  # fell behind: skip rounds rather than burst
                next_at = loop.time()
                delay = 0
            await asyncio.sleep(delay)

    # -- tracking
    def track(self, cluster_id: str) -> None:
        if cluster_id in self._tracked:
            return
        self._tracked.add(cluster_id)
        if self._task is not None:
            # Sample at once so a new cluster has readings before the next round.
            t = asyncio.get_running_loop().create_task(self._sample_and_notify(cluster_id))
            self._pending.add(t)
            t.add_done_callback(self._pending.discard)

    def untrack(self, cluster_id: str) -> None:
        self._tracked.discard(cluster_id)
        self._latest.pop(cluster_id, None)
        gone = self._hist.pop(cluster_id, None) or {}
        self.health.forget({uuid for gpus in gone.values() for uuid in gpus})

    def add_listener(self, callback: Callable[[str], Any]) -> None:
        self._listeners.append(callback)

    # -- sampling
    async def sample_once(self) -> None:
        """One round over every tracked cluster (the loop calls this; tests may too)."""
        for cid in list(self._tracked):
            await self._sample_and_notify(cid)

    async def _sample_and_notify(self, cid: str) -> None:
        try:
            readings = await self.runtime.telemetry(cid)
        except Exception as exc:  # runtime unavailable: keep the last readings
            log.debug("telemetry for %s failed: %s", cid, exc)
            return
        if cid not in self._tracked:
            return
        self._record(cid, readings)
        for cb in list(self._listeners):
            try:
                cb(cid)
            except Exception:
                log.exception("telemetry listener failed")

    def _record(self, cid: str, readings: list[ReplicaTelemetry]) -> None:
        now = self.clock.now().timestamp()
        readings = [
            dataclasses.replace(rt, gpus=tuple(self.health.apply(g, now) for g in rt.gpus))
            for rt in readings
        ]
        self._latest[cid] = readings
        hist = self._hist.setdefault(cid, {})
        for rt in readings:
            gpus = hist.setdefault(rt.replica, {})
            for g in rt.gpus:
                entry = gpus.get(g.uuid)
                if entry is None:
                    entry = (g.index, _Ring(self._cap))
                    gpus[g.uuid] = entry
                entry[1].append(now, g)
        # Forget replicas (and GPUs) whose newest sample is older than the history.
        horizon = now - self.history_s
        for replica in list(hist):
            gpus = hist[replica]
            for uuid in list(gpus):
                newest = gpus[uuid][1].newest_t()
                if newest is None or newest < horizon:
                    del gpus[uuid]
                    self.health.forget({uuid})
            if not gpus:
                del hist[replica]

    # -- answers
    def latest(self, cluster_id: str) -> list[ReplicaTelemetry]:
        return list(self._latest.get(cluster_id, []))

    def _source(self) -> TelemetrySource:
        return self.runtime.info.telemetry

    def replicas_json(
        self, cluster_id: str, states: Sequence[ReplicaState]
    ) -> list[dict[str, object]]:
        by_name = {rt.replica: rt for rt in self._latest.get(cluster_id, [])}
        out = []
        for st in states:
            d = st.as_json()
            rt = by_name.get(st.name)
            d["gpus"] = [g.as_json() for g in rt.gpus] if rt else []
            d["telemetry"] = rt.source if rt else self._source()
            d["shared"] = bool(rt.shared) if rt else False
            d["telemetry_note"] = getattr(rt, "note", None) if rt else None
            out.append(d)
        return out

    def metrics(self, cluster_id: str, since: datetime | None) -> dict[str, object]:
        after = since.timestamp() if since is not None else None
        replicas = []
        for replica, gpus in sorted(self._hist.get(cluster_id, {}).items(), key=_replica_order):
            gl = []
            for uuid, (index, ring) in sorted(gpus.items(), key=lambda kv: kv[1][0]):
                samples = [
                    [
                        _rfc3339(ring.t[i]),
                        round(ring.util[i], 1),
                        int(ring.mem[i]),
                        round(ring.temp[i], 1),
                        round(ring.power[i], 1),
                    ]
                    for i in ring.since(after)
                ]
                health = [
                    [_rfc3339(t), level, reason]
                    for t, level, reason in self.health.history(uuid)
                    if after is None or t > after
                ]
                gl.append({"index": index, "uuid": uuid, "samples": samples, "health": health})
            replicas.append({"name": replica, "gpus": gl})
        return {
            "interval_s": self.interval_s,
            "telemetry": self._source(),
            "replicas": replicas,
        }

    def summary(self, cluster_id: str) -> dict[str, object]:
        readings = self._latest.get(cluster_id, [])
        utils = [g.utilization for rt in readings for g in rt.gpus]
        source = readings[0].source if readings else self._source()
        verdicts = [g.verdict for rt in readings for g in rt.gpus if g.verdict is not None]
        overall = worst(verdicts)
        return {
            "health": {
                "verdict": overall.level,
                "reason": overall.reason,
                "failing": sum(1 for v in verdicts if v.level == "failing"),
                "degraded": sum(1 for v in verdicts if v.level == "degraded"),
            },
            "gpus": len(utils),
            "mean_utilization": round(sum(utils) / len(utils), 1) if utils else 0.0,
            "idle_gpus": sum(1 for u in utils if u < IDLE_UTILIZATION),
            "telemetry": source,
            "shared": any(rt.shared for rt in readings),
        }


def _replica_order(item: tuple[str, object]) -> tuple[str, int]:
    # "name-10" after "name-9".
    name = item[0]
    head, _, tail = name.rpartition("-")
    return (head, int(tail)) if tail.isdigit() else (name, -1)
