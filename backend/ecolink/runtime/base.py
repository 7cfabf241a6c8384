"""The runtime interface: the only place that knows how replicas run.

Everything above it (billing, API, watch, proxy, sessions) is runtime-agnostic and
talks to a `Runtime` through this module's types. Two implementations:
`ecolink.runtime.local` (child processes and PTYs on this machine) and
`ecolink.runtime.kubernetes` (Deployments, Services, pod exec via the API server).

Conventions
- A replica's name is `{cluster_name}-{index}` for the local runtime and the
  pod name for kubernetes; the API accepts whatever `ReplicaState.name` says.
- The runtime reports changes by calling its `RuntimeListener`; it never
  touches the store or the ledger.
- Every method that cannot reach the runtime (the Kubernetes API down) raises
  `RuntimeUnavailable`; the API answers that as 503 and changes nothing. A runtime
  that was reached but said no raises `RuntimeRefused` (409 or 422, with its words).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ecocore.gpu_health import GpuHealth, Verdict
from ecocore.limits import DEFAULT_TERMINATION_GRACE_SECONDS

TelemetrySource = Literal["nvml", "dcgm", "nvidia-smi", "simulated"]

# Replica phases, as Kubernetes names pod phases.
Phase = Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"]


class RuntimeFailure(Exception):
    """Base for runtime failures. One that is neither of the kinds below is a bug or
    an answer nobody expected; the API says 503 and changes nothing."""


class RuntimeUnavailable(RuntimeFailure):
    """The runtime cannot be reached (API server down, ...). Maps to 503."""


class RuntimeRefused(RuntimeFailure):
    """The runtime was reached and said no (the API server refused a write: 403 by
    RBAC, 422 for an object it will not accept, a conflict that did not settle).
    Nothing was changed. `status` is what the API answers: 422 where the API server
    found the request itself invalid, else 409; the message keeps the API server's
    words."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status

    @classmethod
    def from_api_status(cls, api_status: int | None, message: str) -> RuntimeRefused:
        """A refusal the API server answered with HTTP `api_status`."""
        invalid = api_status in (400, 422)
        return cls(f"the API server refused: {api_status} {message}", 422 if invalid else 409)


class PortNotListening(RuntimeFailure):
    """Nothing in the replica listens on the port a port-forward asked for."""


class ReplicaNotFound(RuntimeFailure):
    """No replica of that name in that cluster. Maps to 404."""


@dataclass(frozen=True)
class ClusterSpec:
    """What a runtime needs to run a cluster. `replicas` is the count to run now
    (0 while stopped); the desired count is kept by the service layer."""

    cluster_id: str
    account_id: str
    name: str
    region: str
    gpu_type: str
    gpu_count: int
    replicas: int
    image: str
    startup_command: str | None = None
    shared_filesystems: tuple[str, ...] = ()
    endpoint_port: int | None = None
    expires_at: str | None = None  # RFC 3339; replicas see it as ECO_EXPIRES_AT
    # Extra labels for node selection from the catalog (kubernetes only).
    node_selector: tuple[tuple[str, str], ...] = ()
    # Seconds between SIGTERM and SIGKILL for this cluster's replicas (stop,
    # terminate, expiry); None: the runtime's default (`--termination-grace-seconds`).
    termination_grace_s: float | None = None


@dataclass(frozen=True)
class ReplicaState:
    name: str
    index: int
    phase: Phase
    ready: bool
    restarts: int = 0
    reason: str | None = None
    node: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "index": self.index,
            "phase": self.phase,
            "ready": self.ready,
            "restarts": self.restarts,
            "reason": self.reason,
            "node": self.node,
        }


@dataclass(frozen=True)
class GpuReading:
    index: int
    uuid: str
    name: str
    utilization: float  # percent 0..100
    memory_used_mib: int
    memory_total_mib: int
    temperature_c: float
    power_w: float
    power_limit_w: float
    # Health readings (None: the source gives none) and the verdict the telemetry hub
    # computed for them (ecocore.gpu_health).
    health: GpuHealth | None = None
    verdict: Verdict | None = None

    def as_json(self) -> dict[str, object]:
        health = (self.health or GpuHealth()).as_json()
        health.update((self.verdict or Verdict("unknown", "not evaluated")).as_json())
        return {
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "utilization": self.utilization,
            "memory_used_mib": self.memory_used_mib,
            "memory_total_mib": self.memory_total_mib,
            "temperature_c": self.temperature_c,
            "power_w": self.power_w,
            "power_limit_w": self.power_limit_w,
            "health": health,
        }


@dataclass(frozen=True)
class ReplicaTelemetry:
    replica: str
    source: TelemetrySource
    gpus: tuple[GpuReading, ...] = ()
    shared: bool = False  # True when GPUs are shared with other replicas (oversubscribed)
    # Why there are no (or partial) readings, e.g. "nvidia-smi not found in the
    # replica"; None when the readings are complete.
    note: str | None = None


@dataclass(frozen=True)
class ExecRequest:
    command: tuple[str, ...] = ()  # empty: a login shell (bash, else sh)
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True
    tty: bool = False
    width: int = 80
    height: int = 24
    env: tuple[tuple[str, str], ...] = ()


# Exec channels, as in the Kubernetes channel protocol.
STDIN, STDOUT, STDERR, STATUS, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


@dataclass
class ExecResult:
    exit_code: int | None  # None: unknown (connection lost)
    message: str | None = None

    def status_json(self) -> dict[str, object]:
        """The Kubernetes `Status` sent on channel 3."""
        if self.exit_code == 0:
            return {"metadata": {}, "status": "Success"}
        if self.exit_code is None:
            return {
                "metadata": {},
                "status": "Failure",
                "reason": "InternalError",
                "message": self.message or "the process ended without an exit status",
            }
        return {
            "metadata": {},
            "status": "Failure",
            "reason": "NonZeroExitCode",
            "message": f"command terminated with non-zero exit code: {self.exit_code}",
            "details": {"causes": [{"reason": "ExitCode", "message": str(self.exit_code)}]},
        }


class ExecStream(abc.ABC):
    """A running exec: a bidirectional stream of channel frames.

    `read()` returns the next output frame as (channel, payload) with channel
    STDOUT or STDERR (with tty, everything arrives on STDOUT), or None when the
    process has exited and all its output has been read; then `result()` gives
    the exit status. Output is never dropped: when the consumer does not read,
    the producer blocks (back-pressure), it does not buffer without bound.
    """

    @abc.abstractmethod
    async def read(self) -> tuple[int, bytes] | None: ...

    @abc.abstractmethod
    async def write(self, data: bytes) -> None:
        """Bytes for the process's stdin."""

    @abc.abstractmethod
    async def close_stdin(self) -> None: ...

    @abc.abstractmethod
    async def resize(self, width: int, height: int) -> None: ...

    @abc.abstractmethod
    async def result(self) -> ExecResult:
        """Wait for the exit status (after read() returned None)."""

    @abc.abstractmethod
    async def kill(self) -> None:
        """End the process (hang-up for a tty) and release resources."""

    # A runtime that relays raw Kubernetes frames may expose its negotiated
    # subprotocol so the API layer can pass frames through unchanged.
    protocol: str | None = None


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int


class RuntimeListener(Protocol):
    """How a runtime reports what it observes. Called on the event loop."""

    def replicas_changed(self, cluster_id: str, replicas: Sequence[ReplicaState]) -> None: ...

    def runtime_event(
        self, cluster_id: str, kind: str, message: str, replica: str | None = None
    ) -> None:
        """kind is one of api.md's event kinds (replica_ready, replica_crashed, ...)."""

    def cluster_failed(self, cluster_id: str, message: str) -> None:
        """The runtime gave up on the cluster (billing treats it like stop)."""


@dataclass
class RuntimeInfo:
    name: Literal["local", "kubernetes"]
    telemetry: TelemetrySource
    details: dict[str, str] = field(default_factory=dict)


class Runtime(abc.ABC):
    """Where replicas run. All methods are coroutines run on the backend's loop."""

    info: RuntimeInfo

    @abc.abstractmethod
    async def start(self, listener: RuntimeListener, known: Sequence[ClusterSpec]) -> None:
        """Start observing. `known` are the clusters the store says should exist
        (with the replica count they should run): adopt what already runs, start
        or fix what does not, remove what we own but the store does not know."""

    @abc.abstractmethod
    async def shutdown(self, stop_replicas: bool) -> None:
        """Stop observing; with stop_replicas, stop every replica we run (local)."""

    @abc.abstractmethod
    async def apply(self, spec: ClusterSpec) -> None:
        """Create or update the cluster to run spec.replicas replicas (0 = stopped)."""

    @abc.abstractmethod
    async def terminate(self, cluster_id: str) -> None:
        """Remove everything of the cluster; nothing it started is left running."""

    @abc.abstractmethod
    async def restart(self, cluster_id: str, replica: str | None = None) -> None:
        """Restart one replica, or all of them one at a time (rolling)."""

    @abc.abstractmethod
    def replicas(self, cluster_id: str) -> list[ReplicaState]:
        """The last observed replica states (no IO)."""

    @property
    def default_termination_grace_s(self) -> float:
        """The grace between SIGTERM and SIGKILL of clusters launched without one."""
        return float(DEFAULT_TERMINATION_GRACE_SECONDS)

    @abc.abstractmethod
    async def exec(self, cluster_id: str, replica: str, request: ExecRequest) -> ExecStream: ...

    @abc.abstractmethod
    def logs(
        self, cluster_id: str, replica: str, *, tail: int | None, follow: bool, previous: bool
    ) -> AsyncIterator[bytes]: ...

    @abc.abstractmethod
    async def service_target(self, cluster_id: str, replica: str, port: int) -> HostPort:
        """A loopback address that reaches `port` of the replica (for the service URL)."""

    async def expiry_changed(self, cluster_id: str, expires_at: str) -> None:
        """The cluster was extended: replicas should see the new expiry within seconds
        (ECO_EXPIRES_AT_FILE). Runtimes that cannot tell replicas do nothing."""
        return None

    async def forward_target(self, cluster_id: str, replica: str, port: int) -> HostPort:
        """Where a port-forward to `port` of the replica connects (raises
        PortNotListening where the runtime can tell that nothing listens)."""
        return await self.service_target(cluster_id, replica, port)

    def forward_refusal(self, local: tuple[str, int]) -> str | None:
        """Why a connection to a `forward_target` that closed before any byte was
        refused by the replica's side (nothing listens on the port), found by the
        connection's local address; None when it was not (or the runtime cannot tell)."""
        return None

    @abc.abstractmethod
    async def telemetry(self, cluster_id: str) -> list[ReplicaTelemetry]:
        """Current GPU readings per replica of the cluster."""

    @abc.abstractmethod
    def filesystems(self) -> list[dict[str, str]]:
        """The shared filesystems a cluster may attach: `{"name", "description"}` each,
        sorted by name (no IO beyond a directory listing)."""

    def available(self) -> bool:
        """False while the runtime cannot be reached (reads are then stale)."""
        return True
