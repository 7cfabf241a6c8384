"""GPU telemetry for pods: the DCGM exporter where one runs, else nvidia-smi.

`parse_dcgm` maps the exporter's Prometheus text (parsed with
prometheus-client's parser) to readings per pod by its `pod`/`namespace`
labels; `parse_nvidia_smi` reads `nvidia-smi --query-gpu=... --format=csv,
noheader,nounits`. Neither invents a value: a field the source does not give
is 0 and the reading says where it came from.

`KubeTelemetry` reads them: it keeps the readings of each pod's nvidia-smi and of
the DCGM exporters for a few seconds, and runs at most four nvidia-smi at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpx
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from ecolink.runtime.base import (
    STDERR,
    STDOUT,
    ExecRequest,
    GpuReading,
    HostPort,
    ReplicaState,
    ReplicaTelemetry,
    RuntimeFailure,
    RuntimeInfo,
    RuntimeUnavailable,
)
from ecolink.runtime.gpu_parsers import (
    DCGM_HEALTH_FIELDS,
    DCGM_THROTTLE,
    DCGM_XID,
    NVIDIA_SMI_XML_COMMAND,
    NvidiaSmiXmlError,
    dcgm_health,
    parse_nvidia_smi_xml,
    with_process_owner,
)
from ecolink.runtime.kubernetes import objects as ko
from ecolink.runtime.kubernetes.client import KubeApi
from ecolink.runtime.kubernetes.stream import KubeExecStream

log = logging.getLogger(__name__)


def _health_field(name: str) -> bool:
    return name in DCGM_HEALTH_FIELDS or name == DCGM_XID or name in DCGM_THROTTLE


NVIDIA_SMI_FIELDS = (
    "index",
    "uuid",
    "name",
    "utilization.gpu",
    "memory.used",
    "memory.total",
    "temperature.gpu",
    "power.draw",
    "power.limit",
)
NVIDIA_SMI_COMMAND = (
    "nvidia-smi",
    "--query-gpu=" + ",".join(NVIDIA_SMI_FIELDS),
    "--format=csv,noheader,nounits",
)

# DCGM exporter field names (its default counters).
_DCGM = {
    "DCGM_FI_DEV_GPU_UTIL": "utilization",
    "DCGM_FI_DEV_FB_USED": "memory_used_mib",
    "DCGM_FI_DEV_FB_FREE": "memory_free_mib",
    "DCGM_FI_DEV_GPU_TEMP": "temperature_c",
    "DCGM_FI_DEV_POWER_USAGE": "power_w",
    "DCGM_FI_DEV_POWER_MGMT_LIMIT": "power_limit_w",
    "DCGM_FI_DEV_ENFORCED_POWER_LIMIT": "power_limit_w",
}


def _num(text: str) -> float:
    """nvidia-smi prints `[N/A]` or `[Not Supported]` for missing fields."""
    try:
        value = float(text.strip())
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


def parse_nvidia_smi(output: str) -> list[GpuReading]:
    readings = []
    for line in output.splitlines():
        cols = [c.strip() for c in line.split(",")]
        if len(cols) != len(NVIDIA_SMI_FIELDS):
            continue
        try:
            index = int(cols[0])
        except ValueError:
            continue
        readings.append(
            GpuReading(
                index=index,
                uuid=cols[1],
                name=cols[2],
                utilization=_num(cols[3]),
                memory_used_mib=int(_num(cols[4])),
                memory_total_mib=int(_num(cols[5])),
                temperature_c=_num(cols[6]),
                power_w=_num(cols[7]),
                power_limit_w=_num(cols[8]),
            )
        )
    return readings


def parse_dcgm(
    text: str, *, include_unowned: bool = False
) -> dict[tuple[str, str], list[GpuReading]]:
    """Readings per (namespace, pod) from DCGM exporter metrics. GPUs that no
    pod holds (no `pod` label) are left out."""
    per_gpu: dict[tuple[str, str, str], dict[str, object]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # The parser names counter samples `<family>_total`; DCGM's names are
            # upper case, so a lower-case `_total` is always the parser's.
            name = sample.name.removesuffix("_total")
            field = _DCGM.get(name)
            if field is None and not _health_field(name):
                continue
            labels = sample.labels
            pod = labels.get("pod") or labels.get("exported_pod")
            ns = labels.get("namespace") or labels.get("exported_namespace")
            if not pod or not ns:
                if not include_unowned:
                    continue
                pod, ns = "", ""
            key = (ns, pod, labels.get("UUID") or labels.get("uuid") or labels.get("gpu", ""))
            gpu = per_gpu[key]
            if field is not None:
                gpu[field] = sample.value
            raw = gpu.setdefault("raw", {})
            raw[name] = sample.value  # type: ignore[index]
            gpu["labels"] = labels
            gpu.setdefault("index", labels.get("gpu", "0"))
            gpu.setdefault("name", labels.get("modelName", ""))
    out: dict[tuple[str, str], list[GpuReading]] = defaultdict(list)
    for (ns, pod, uuid), f in per_gpu.items():
        used = int(float(f.get("memory_used_mib", 0) or 0))  # type: ignore[arg-type]
        free = int(float(f.get("memory_free_mib", 0) or 0))  # type: ignore[arg-type]
        index = 0
        with contextlib.suppress(TypeError, ValueError):
            index = int(str(f.get("index")))
        out[(ns, pod)].append(
            GpuReading(
                index=index,
                uuid=uuid,
                name=str(f.get("name", "")),
                utilization=float(f.get("utilization", 0.0)),  # type: ignore[arg-type]
                memory_used_mib=used,
                memory_total_mib=used + free,
                temperature_c=float(f.get("temperature_c", 0.0)),  # type: ignore[arg-type]
                power_w=float(f.get("power_w", 0.0)),  # type: ignore[arg-type]
                power_limit_w=float(f.get("power_limit_w", 0.0)),  # type: ignore[arg-type]
                health=dcgm_health(f.get("raw") or {}, f.get("labels") or {}),  # type: ignore[arg-type]
            )
        )
    for readings in out.values():
        readings.sort(key=lambda g: g.index)
    return dict(out)


DCGM_SELECTORS: Iterable[str] = (
    "app.kubernetes.io/name=dcgm-exporter",
    "app=nvidia-dcgm-exporter",
    "app=dcgm-exporter",
)
DCGM_PORT = 9400


DcgmReadings = dict[tuple[str, str], Any]


class KubeTelemetry:
    """GPU readings of a cluster's running pods, from DCGM where an exporter runs,
    else from nvidia-smi run in each pod. `forward(namespace, pod, port)` reaches an
    exporter; `protocols()` are the exec subprotocols to offer."""

    def __init__(
        self,
        api: KubeApi,
        info: RuntimeInfo,
        forward: Callable[[str, str, int], Awaitable[HostPort]],
        protocols: Callable[[], tuple[str, ...]],
        min_interval_s: float,
    ) -> None:
        self._api = api
        self._info = info
        self._forward = forward
        self._protocols = protocols
        self.min_interval_s = min_interval_s
        self._smi_cache: dict[str, tuple[float, ReplicaTelemetry]] = {}
        self._exec_limit = asyncio.Semaphore(4)
        self.dcgm_cache: tuple[float, DcgmReadings | None] = (0.0, None)

    def forget(self, pod: str) -> None:
        self._smi_cache.pop(pod, None)

    async def read(self, states: list[ReplicaState]) -> list[ReplicaTelemetry]:
        states = [s for s in states if s.phase == "Running"]
        if not states:
            return []
        dcgm = await self._dcgm_readings()
        if dcgm is not None:
            out = []
            for s in states:
                gpus = dcgm.get((self._api.ns, s.name))
                out.append(
                    ReplicaTelemetry(
                        s.name,
                        "dcgm",
                        tuple(gpus or ()),
                        note=None if gpus else "the DCGM exporter reports no GPU for this pod",
                    )
                )
            return out
        return list(await asyncio.gather(*(self._smi(s.name) for s in states)))

    async def _smi(self, pod: str) -> ReplicaTelemetry:
        cached = self._smi_cache.get(pod)
        now = time.monotonic()
        if cached and now - cached[0] < self.min_interval_s:
            return cached[1]
        async with self._exec_limit:
            result = await self._run_smi(pod)
        self._smi_cache[pod] = (time.monotonic(), result)
        return result

    async def _run_smi(self, pod: str) -> ReplicaTelemetry:
        # The full XML report: utilisation and memory as before, plus the health readings.
        req = ExecRequest(command=NVIDIA_SMI_XML_COMMAND, stdout=True, stderr=True)
        try:
            stream = await KubeExecStream.open(
                self._api.target,
                self._api.ns,
                pod,
                ko.CONTAINER,
                req,
                protocols=self._protocols(),
            )
        except (RuntimeFailure, OSError) as e:
            return ReplicaTelemetry(pod, "nvidia-smi", (), note=f"cannot run nvidia-smi: {e}")
        out, err = bytearray(), bytearray()
        try:
            async with asyncio.timeout(15):
                while (frame := await stream.read()) is not None:
                    (out if frame[0] == STDOUT else err if frame[0] == STDERR else out).extend(
                        frame[1]
                    )
                    if len(out) + len(err) > 1 << 20:
                        break
                result = await stream.result()
        except TimeoutError:
            await stream.kill()
            return ReplicaTelemetry(pod, "nvidia-smi", (), note="nvidia-smi did not answer in 15 s")
        finally:
            await stream.kill()
        if result.exit_code != 0:
            detail = (err or out).decode(errors="replace").strip().splitlines()
            why = detail[-1] if detail else (result.message or "")
            if result.exit_code == 127 or "not found" in why or "executable file" in why:
                note = "nvidia-smi is not available in the replica"
            else:
                note = f"nvidia-smi failed (exit code {result.exit_code})"
            return ReplicaTelemetry(pod, "nvidia-smi", (), note=f"{note}: {why}"[:300])
        try:
            gpus = [
                with_process_owner(g, pod)
                for g in parse_nvidia_smi_xml(out.decode(errors="replace"))
            ]
        except NvidiaSmiXmlError as e:
            return ReplicaTelemetry(pod, "nvidia-smi", (), note=str(e)[:300])
        return ReplicaTelemetry(
            pod,
            "nvidia-smi",
            tuple(gpus),
            note=None if gpus else "nvidia-smi reported no GPU",
        )

    async def _dcgm_readings(self) -> DcgmReadings | None:
        """Readings from every DCGM exporter pod, or None where none runs
        (or we may not look). Cached a few seconds."""
        at, cached = self.dcgm_cache
        if time.monotonic() - at < 5:
            return cached
        api = self._api
        exporters: list[tuple[str, str]] = []
        for selector in DCGM_SELECTORS:
            try:
                data = await api.call(api.core.list_pod_for_all_namespaces, label_selector=selector)
            except (ApiException, RuntimeUnavailable):
                continue
            for pod in data.get("items") or []:
                meta = pod["metadata"]
                if (pod.get("status") or {}).get("phase") == "Running":
                    exporters.append((meta["namespace"], meta["name"]))
        result: DcgmReadings | None = None
        if exporters:
            result = {}
            async with httpx.AsyncClient(timeout=5) as http:
                for ns, pod in exporters:
                    try:
                        hp = await self._forward(ns, pod, DCGM_PORT)
                        resp = await http.get(f"http://{hp.host}:{hp.port}/metrics")
                        resp.raise_for_status()
                        result.update(parse_dcgm(resp.text))
                    except (httpx.HTTPError, RuntimeFailure, OSError, ValueError) as e:
                        log.info("DCGM exporter %s/%s: %s", ns, pod, e)
            self._info.telemetry = "dcgm"
        else:
            self._info.telemetry = "nvidia-smi"
        self.dcgm_cache = (time.monotonic(), result)
        return result
