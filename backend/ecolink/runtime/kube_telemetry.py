"""GPU telemetry for pods: the DCGM exporter where one runs, else nvidia-smi.

`parse_dcgm` maps the exporter's Prometheus text (parsed with
prometheus-client's parser) to readings per pod by its `pod`/`namespace`
labels; `parse_nvidia_smi` reads `nvidia-smi --query-gpu=... --format=csv,
noheader,nounits`. Neither invents a value: a field the source does not give
is 0 and the reading says where it came from.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

from ecolink.runtime.base import GpuReading
from ecolink.runtime.gpu_parsers import DCGM_HEALTH_FIELDS, DCGM_THROTTLE, DCGM_XID, dcgm_health


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
