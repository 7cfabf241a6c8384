"""GPU health in the watch feed's per-second `replicas` frames: the verdict and its
reason only. The full readings (XID events, ECC, row remapping, throttling, clocks,
PCIe, NVLink, MIG, processes) stay on `GET /gpu-clusters/{id}/replicas`, which the GPU
detail reads; a focused cluster's frame stays near its size without health.
"""

from __future__ import annotations

from ecocore.gpu_health import brief_replicas as brief_health

__all__ = ["brief_health"]
