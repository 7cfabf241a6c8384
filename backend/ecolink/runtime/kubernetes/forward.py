"""How this process reaches a pod's port: its own address where it can be dialled
(inside the cluster), else a loopback port-forward through the API server.

`PodDialer` finds out, by trying, whether pod addresses can be dialled;
`Forwards` keeps one `PortForwardListener` per (pod, port) and closes those of
pods that go away.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ecolink.runtime.base import HostPort
from ecolink.runtime.kubernetes.client import KubeTarget
from ecolink.runtime.kubernetes.stream import PortForwardListener


class PodDialer:
    """Whether pod addresses can be dialled from here, found by trying: a connection
    that opens within `timeout` says yes (remembered for `ttl_ok`), one that does not
    says no (remembered for `ttl_no`, then tried again). Tried only inside a cluster
    (`KUBERNETES_SERVICE_HOST` set) unless `ECOLINK_POD_IP=always`; `never` turns it
    off."""

    def __init__(
        self,
        timeout: float = 0.5,
        ttl_ok: float = 30.0,
        ttl_no: float = 30.0,
        enabled: bool | None = None,
    ) -> None:
        self.timeout = timeout
        self.ttl_ok = ttl_ok
        self.ttl_no = ttl_no
        mode = os.environ.get("ECOLINK_POD_IP", "auto")
        in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        self.enabled = (
            enabled
            if enabled is not None
            else (mode == "always" or (mode == "auto" and in_cluster))
        )
        self._seen: dict[tuple[str, int], tuple[bool, float]] = {}

    async def reachable(self, ip: str, port: int) -> bool:
        if not self.enabled:
            return False
        now = time.monotonic()
        hit = self._seen.get((ip, port))
        if hit is not None and now < hit[1]:
            return hit[0]
        ok = False
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), self.timeout)
            writer.close()
            ok = True
        except (OSError, TimeoutError, ValueError):
            ok = False
        self._seen[(ip, port)] = (ok, now + (self.ttl_ok if ok else self.ttl_no))
        return ok


class Forwards:
    """The port-forward listeners in use, one per (pod, port)."""

    def __init__(
        self, target: KubeTarget, spawn: Callable[[Coroutine[Any, Any, None]], None]
    ) -> None:
        self._target = target
        self._spawn = spawn
        self._listeners: dict[tuple[str, int], PortForwardListener] = {}

    async def to(self, namespace: str, pod: str, port: int) -> HostPort:
        """A loopback address tunnelled to `port` of the pod."""
        key = (pod if namespace == self._target.namespace else f"{namespace}/{pod}", port)
        fwd = self._listeners.get(key)
        if fwd is None or fwd.address is None:
            fwd = PortForwardListener(self._target, namespace, pod, port)
            await fwd.start()
            self._listeners[key] = fwd
        assert fwd.address is not None
        return fwd.address

    def drop(self, pod: str) -> None:
        """Close the listeners of a pod that goes away."""
        for key in [k for k in self._listeners if k[0] == pod]:
            self._spawn(self._listeners.pop(key).close())

    def refusal(self, local: tuple[str, int]) -> str | None:
        for fwd in list(self._listeners.values()):
            message = fwd.refusals.pop(local, None)
            if message is not None:
                return message
        return None

    async def close(self) -> None:
        for fwd in list(self._listeners.values()):
            await fwd.close()
        self._listeners.clear()
