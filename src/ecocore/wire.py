"""The API's request and answer shapes as pydantic models (api.md), for validation and
for the OpenAPI document. Pure data: the dashboard may import this module too.

Requests are strict (no silent coercion of "4" to 4, no unknown fields); answers
allow extra fields so the backend can add to them without breaking readers.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictInt,
    StrictStr,
    TypeAdapter,
    WithJsonSchema,
    field_validator,
)

from ecocore.limits import (
    DEFAULT_TERMINATION_GRACE_SECONDS,
    MAX_REPLICAS,
    MAX_STARTUP_COMMAND_BYTES,
    MAX_TERMINATION_GRACE_SECONDS,
    MAX_TOTAL_MICRO_HOURS,
    MIN_MICRO_HOURS,
    MIN_TERMINATION_GRACE_SECONDS,
    NAME_PATTERN,
)
from ecocore.money import MoneyError, hours_to_micro_hours
from ecocore.wire_health import GpuHealthOut, HealthSummaryOut

# A container image reference: [registry[:port]/]path[:tag][@digest].
IMAGE_PATTERN = (
    # A registry host has a dot or a port, or is localhost (else it is a path part).
    r"^(?:(?:localhost(?::[0-9]{1,5})?"
    r"|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)+"
    r"(?::[0-9]{1,5})?"
    r"|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?:[0-9]{1,5})/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
HOURS_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*$"


def _validate_hours(value: object) -> int | float | str:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("hours must be a JSON number or a decimal string")
    check_hours(value)
    return value


Hours = Annotated[
    int | float | str,
    PlainValidator(_validate_hours),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0.01, "maximum": 720},
                {"type": "string", "pattern": HOURS_PATTERN, "maxLength": 40},
            ],
            "description": "Hours as a JSON number or a decimal string, 0.01 to 720, at most "
            "6 decimal places",
            "examples": [10, "2.5"],
        }
    ),
]

ClusterStatus = Literal[
    "pending", "running", "stopping", "stopped", "terminating", "terminated", "failed"
]
TelemetryKind = Literal["nvml", "dcgm", "nvidia-smi", "simulated"]
Money = Annotated[str, Field(description="US dollars, exact to 6 places", examples=["29.940000"])]


def check_hours(value: object) -> int:
    """Hours to micro-hours, or ValueError with the reason (0.01 to 720, 6 places)."""
    try:
        mh = hours_to_micro_hours(value)
    except MoneyError as exc:
        if str(exc) == "out of range":
            raise ValueError("hours must be 0.01 to 720") from None
        raise ValueError(f"hours must be a decimal number with at most 6 places ({exc})") from exc
    if mh < MIN_MICRO_HOURS:
        raise ValueError("hours must be at least 0.01")
    if mh > MAX_TOTAL_MICRO_HOURS:
        raise ValueError("hours must be at most 720")
    return mh


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


# --------------------------------------------------------------------------- requests


class ExposeIn(_Request):
    port: StrictInt = Field(ge=1, le=65535, description="the service port the replicas listen on")


class LaunchIn(_Request):
    name: StrictStr = Field(
        min_length=1,
        max_length=40,
        pattern=NAME_PATTERN,
        description="a DNS label: lowercase letters, digits and '-', starting with a letter, "
        "not ending with '-'",
    )
    region: StrictStr = Field(min_length=1, max_length=100, description="a region of GET /catalog")
    gpu_type: StrictStr = Field(
        min_length=1, max_length=100, description="a GPU type of the region"
    )
    gpu_count: StrictInt = Field(
        ge=1, le=1024, description="GPUs per replica, one of the type's gpu_counts"
    )
    replicas: StrictInt = Field(ge=2, le=MAX_REPLICAS)
    image: StrictStr = Field(
        min_length=1,
        max_length=512,
        pattern=IMAGE_PATTERN,
        description="a container image reference",
    )
    estimated_duration_hours: Hours
    startup_command: StrictStr | None = Field(
        None,
        max_length=MAX_STARTUP_COMMAND_BYTES,
        description="a shell command line run as `sh -c`, at most 4 KiB",
    )
    shared_filesystems: list[StrictStr] = Field(default_factory=list, max_length=32)
    expose: ExposeIn | None = None
    termination_grace_seconds: StrictInt | None = Field(
        None,
        ge=MIN_TERMINATION_GRACE_SECONDS,
        le=MAX_TERMINATION_GRACE_SECONDS,
        description="seconds each replica has between SIGTERM and SIGKILL at stop, "
        "terminate and expiry; left out: the backend's default "
        f"({DEFAULT_TERMINATION_GRACE_SECONDS} unless configured otherwise)",
    )

    @field_validator("startup_command")
    @classmethod
    def _command(cls, v: str | None) -> str | None:
        if v is not None:
            if len(v.encode("utf-8")) > MAX_STARTUP_COMMAND_BYTES:
                raise ValueError("startup_command must be at most 4 KiB")
            if "\x00" in v:
                raise ValueError("startup_command must not contain NUL")
            if not v.strip():
                raise ValueError("startup_command must not be blank")
        return v

    @field_validator("shared_filesystems")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("shared_filesystems lists a filesystem twice")
        return v


class ScaleIn(_Request):
    replicas: StrictInt = Field(ge=2, le=MAX_REPLICAS)


class ExtendIn(_Request):
    hours: Hours


class EndpointIn(_Request):
    port: StrictInt = Field(ge=1, le=65535)


# --------------------------------------------------------------------------- answers


class ErrorDetail(BaseModel):
    code: Literal[
        "unauthenticated",
        "not_found",
        "invalid_request",
        "conflict",
        "insufficient_balance",
        "runtime_unavailable",
        "store_unavailable",
        "method_not_allowed",
    ]
    message: str
    field: str | None = Field(None, description="the input at fault, where one is")


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(_Answer):
    status: Literal["ok"]
    version: str


class GpuTypeOut(_Answer):
    name: str
    rate_per_gpu_hour: Money
    gpu_counts: list[int]


class RegionOut(_Answer):
    name: str
    gpu_budget: int
    gpu_types: list[GpuTypeOut]


class CatalogOut(_Answer):
    regions: list[RegionOut]


class FilesystemOut(_Answer):
    name: str
    description: str


class FilesystemsOut(_Answer):
    filesystems: list[FilesystemOut]


class AccountOut(_Answer):
    id: str
    name: str
    balance: Money
    held: Money
    available: Money


class AuthSessionOut(_Answer):
    account: AccountOut
    expires_at: str


class LedgerEntryOut(_Answer):
    id: int
    at: str
    cluster_id: str | None
    kind: Literal["credit", "hold", "hold_release", "charge"]
    amount: Money
    balance_after: Money
    held_after: Money
    memo: str


class LedgerOut(_Answer):
    entries: list[LedgerEntryOut]


class CostOut(_Answer):
    hold: Money
    spent: Money
    hold_remaining: Money
    projected_total: Money


class EndpointOut(_Answer):
    url: str
    port: int


class ReplicaStateOut(_Answer):
    name: str
    index: int
    phase: Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"]
    ready: bool
    restarts: int
    reason: str | None
    node: str | None


class GpuSummaryOut(_Answer):
    health: HealthSummaryOut | None = None
    gpus: int
    mean_utilization: float
    idle_gpus: int
    telemetry: TelemetryKind


class ClusterTrafficOut(_Answer):
    """The service URL's traffic over the last seconds (None: no endpoint yet)."""

    requests_per_s: float
    errors_5xx_per_s: float
    in_flight: int
    path: str | None = Field(
        description="how the front reaches the replicas: local, pod-ip or port-forward"
    )


class ReplicaTrafficOut(_Answer):
    path: str | None
    requests_per_s: float
    errors_5xx_per_s: float
    statuses: dict[str, int]
    in_flight: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None


class ClusterOut(_Answer):
    id: str
    name: str
    region: str
    gpu_type: str
    gpu_count: int
    replicas: int
    image: str
    startup_command: str | None
    shared_filesystems: list[str]
    # The grace this cluster's replicas get (the backend's default if launched without one).
    termination_grace_seconds: int
    status: ClusterStatus
    status_reason: Literal["user", "expired", "error"] | None
    stale: bool
    created_at: str
    started_at: str | None
    expires_at: str
    estimated_duration_hours: float
    hourly_rate: Money
    burn_rate: Money
    cost: CostOut
    endpoint: EndpointOut | None
    ready_replicas: int
    replica_states: list[ReplicaStateOut]
    gpu_summary: GpuSummaryOut
    traffic: ClusterTrafficOut | None = None


class ClustersOut(_Answer):
    clusters: list[ClusterOut]


class GpuOut(_Answer):
    index: int
    uuid: str
    name: str
    utilization: float
    memory_used_mib: int
    memory_total_mib: int
    temperature_c: float
    power_w: float
    power_limit_w: float
    health: GpuHealthOut | None = None


class ReplicaOut(ReplicaStateOut):
    gpus: list[GpuOut]
    telemetry: TelemetryKind
    traffic: ReplicaTrafficOut | None = None


class ReplicasOut(_Answer):
    replicas: list[ReplicaOut]


class MetricsGpuOut(_Answer):
    index: int
    uuid: str
    samples: list[list[Any]] = Field(
        description="[t, utilization, memory_used_mib, temperature_c, power_w] per sample"
    )
    health: list[list[Any]] = Field(
        default_factory=list, description="[t, verdict, reason] at each change of verdict"
    )


class MetricsReplicaOut(_Answer):
    name: str
    gpus: list[MetricsGpuOut]


class MetricsOut(_Answer):
    interval_s: float
    replicas: list[MetricsReplicaOut]


class EventOut(_Answer):
    at: str
    kind: str
    message: str
    replica: str | None = None


class EventsOut(_Answer):
    events: list[EventOut]


class SessionOut(_Answer):
    """A kept shell session in a replica (POST, GET and DELETE .../sessions)."""

    model_config = ConfigDict(extra="allow", title="SessionOut")
    id: str
    cluster_id: str
    replica: str
    command: list[str]
    tty: bool
    started_at: str = Field(json_schema_extra={"format": "date-time"})
    exited: bool
    exit_code: int | None
    ended_reason: Literal["exited", "backend_restart", "deleted", "instance_gone"] | None
    attached: int = Field(ge=0)
    instance: str | None = Field(
        default=None, description="the instance holding the session (several share a database)"
    )


class SessionsOut(_Answer):
    model_config = ConfigDict(extra="allow", title="SessionsOut")
    sessions: list[SessionOut]


# --------------------------------------------------------------------------- watch frames


class WatchSnapshot(_Answer):
    type: Literal["snapshot"]
    clusters: list[ClusterOut]
    account: AccountOut


class WatchCluster(_Answer):
    type: Literal["cluster"]
    cluster: ClusterOut


class WatchClusterRemoved(_Answer):
    type: Literal["cluster_removed"]
    id: str


class WatchAccount(_Answer):
    type: Literal["account"]
    account: AccountOut


class WatchEvent(_Answer):
    type: Literal["event"]
    cluster_id: str
    event: EventOut


class WatchSummaries(_Answer):
    type: Literal["summaries"]
    clusters: dict[str, GpuSummaryOut]
    traffic: dict[str, ClusterTrafficOut | None] = Field(
        default_factory=dict, description="the service URL's traffic per cluster (null: none yet)"
    )


class WatchReplicas(_Answer):
    type: Literal["replicas"]
    cluster_id: str
    replicas: list[ReplicaOut]


class WatchConnection(_Answer):
    """Not sent by the backend: the dashboard's watch client puts these between the
    backend's frames to say how its connection stands."""

    type: Literal["connection"]
    state: Literal["connecting", "connected", "reconnecting", "closed"]
    attempt: int = 0
    next_retry_at: str | None = None
    error: str | None = None


# Every frame a /watch subscriber reads, told apart by `type`.
WatchFrame = Annotated[
    WatchSnapshot
    | WatchCluster
    | WatchClusterRemoved
    | WatchAccount
    | WatchEvent
    | WatchSummaries
    | WatchReplicas
    | WatchConnection,
    Field(discriminator="type"),
]
WATCH_FRAME: TypeAdapter[WatchFrame] = TypeAdapter(WatchFrame)


def parse_frame(data: str | bytes) -> WatchFrame:
    """One /watch message as its frame model (pydantic's ValidationError when it is none)."""
    return WATCH_FRAME.validate_json(data)


class WatchFocus(_Request):
    """What a client sends: the clusters whose replicas it wants every second."""

    type: Literal["focus"]
    clusters: list[StrictStr] = Field(max_length=100)
