"""Wire models of GPU health (documentation and validation of the answers; the
readings and rules are in `ecocore.gpu_health`). Every reading may be null: the
source cannot give it. Null is unknown, never zero."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

HealthLevel = Literal["ok", "degraded", "failing", "unknown"]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class XidEventOut(_Answer):
    code: int
    at: float | None = Field(description="seconds since the epoch; null: not known")
    meaning: str


class MigInstanceOut(_Answer):
    gpu_instance: int | None
    compute_instance: int | None
    profile: str | None
    memory_total_mib: int | None


class GpuProcessOut(_Answer):
    pid: int
    name: str | None
    used_memory_mib: int | None
    replica: str | None = Field(description="the replica that runs the process, if known")


class GpuHealthOut(_Answer):
    verdict: HealthLevel
    reason: str | None
    xid_events: list[XidEventOut] | None = None
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
    throttle: dict[str, float] | None = Field(
        default=None, description="active throttle reason -> seconds it has held"
    )
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
    mig_instances: list[MigInstanceOut] | None = None
    processes: list[GpuProcessOut] | None = None


class HealthSummaryOut(_Answer):
    verdict: HealthLevel
    reason: str | None
    failing: int
    degraded: int


class FleetGpuOut(_Answer):
    cluster_id: str
    cluster: str
    region: str
    replica: str
    index: int
    uuid: str
    name: str
    utilization: float
    memory_used_mib: int
    memory_total_mib: int
    temperature_c: float
    power_w: float
    telemetry: str
    idle_cost_per_hour: str = Field(
        description="the hourly rate of this GPU while it idles, "
        'as a money string; "0" when it is busy'
    )
    health: GpuHealthOut


class FleetGpuChangeOut(_Answer):
    """A row of an answer `since` a version: its key and the fields that changed."""

    cluster_id: str
    replica: str
    index: int


class FleetGpusOut(_Answer):
    version: str = Field(description="name it as `since` for only what changes next")
    since: str | None = Field(
        None, description="present when the answer holds only what changed since this version"
    )
    gpus: list[FleetGpuOut | FleetGpuChangeOut]
    removed: list[list[str | int]] | None = Field(
        None, description="with `since`: [cluster_id, replica, index] of rows gone"
    )
    health: HealthSummaryOut
