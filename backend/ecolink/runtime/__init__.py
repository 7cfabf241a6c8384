"""Runtimes: where replicas run (local processes or Kubernetes)."""

from ecolink.runtime.base import (
    ClusterSpec,
    ExecRequest,
    ExecResult,
    ExecStream,
    GpuReading,
    HostPort,
    ReplicaNotFound,
    ReplicaState,
    ReplicaTelemetry,
    Runtime,
    RuntimeFailure,
    RuntimeListener,
    RuntimeRefused,
    RuntimeUnavailable,
)

__all__ = [
    "ClusterSpec",
    "ExecRequest",
    "ExecResult",
    "ExecStream",
    "GpuReading",
    "HostPort",
    "ReplicaNotFound",
    "ReplicaState",
    "ReplicaTelemetry",
    "Runtime",
    "RuntimeFailure",
    "RuntimeListener",
    "RuntimeRefused",
    "RuntimeUnavailable",
]
