"""The kubernetes runtime: clusters as Deployments on a real API server (see
`runtime` for how its parts fit together)."""

from ecolink.runtime.kubernetes.forward import PodDialer
from ecolink.runtime.kubernetes.runtime import KubernetesRuntime, create_kubernetes_runtime

__all__ = ["KubernetesRuntime", "PodDialer", "create_kubernetes_runtime"]
