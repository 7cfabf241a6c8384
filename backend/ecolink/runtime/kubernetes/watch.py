"""List-then-watch loops for the kubernetes runtime, one thread each.

The official client's calls block, so every watch runs in its own daemon
thread and hands what it sees to the event loop with
`call_soon_threadsafe`. A loop lists once (a full snapshot), then watches
from the list's resourceVersion, resumes from the last resourceVersion seen
when a watch ends, and lists again after `410 Gone`. Failures to reach the
API server are reported so that the runtime can say it is unavailable; the
loop retries with backoff and recovers by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class WatchLoop(threading.Thread):
    """Keeps one label-selected collection in sync.

    on_sync(items) after each full list, on_event(type, obj) for each change,
    on_health(ok, error) when reachability changes; all called on `loop`.
    """

    def __init__(
        self,
        name: str,
        list_fn: Callable[..., Any],
        list_args: tuple[Any, ...],
        label_selector: str,
        loop: asyncio.AbstractEventLoop,
        on_sync: Callable[[list[Obj]], None],
        on_event: Callable[[str, Obj], None],
        on_health: Callable[[bool, str | None], None],
        timeout_seconds: int = 240,
    ) -> None:
        super().__init__(name=f"kube-watch-{name}", daemon=True)
        self.kind = name
        self._list_fn = list_fn
        self._list_args = list_args
        self._selector = label_selector
        self._loop = loop
        self._on_sync = on_sync
        self._on_event = on_event
        self._on_health = on_health
        self._timeout = timeout_seconds
        self._halt = threading.Event()
        self._resp: Any = None
        self.resource_version: str | None = None
        self._force_rv: str | None = None
        # Counters for tests and benchmarks.
        self.lists = 0
        self.watches = 0
        self.relists_after_gone = 0

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        if self._loop.is_closed():
            return
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # loop closed under us during shutdown
            pass

    def resume_from(self, resource_version: str) -> None:
        """End the current watch and resume from `resource_version` (tests use
        an ancient one to make the API server answer 410 Gone)."""
        self._force_rv = resource_version
        self._cut()

    def stop(self) -> None:
        self._halt.set()
        self._cut()

    def _handle_line(self, line: str) -> None:
        ev = json.loads(line)
        kind = ev.get("type")
        obj = ev.get("object") or {}
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise ApiException(status=410, reason="Gone")
            raise ApiException(status=code or 500, reason=str(obj.get("message")))
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self.resource_version = rv
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self._post(self._on_event, kind, obj)

    def _cut(self) -> None:
        """Unblock a read in progress by shutting the socket down."""
        resp = self._resp
        sock = getattr(getattr(resp, "connection", None), "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _list(self) -> None:
        resp = self._list_fn(
            *self._list_args,
            label_selector=self._selector,
            _preload_content=False,
            _request_timeout=(5, 60),
        )
        try:
            data = json.loads(resp.data)
        finally:
            resp.release_conn()
        self.lists += 1
        self.resource_version = data["metadata"]["resourceVersion"]
        self._post(self._on_sync, data.get("items") or [])

    def run(self) -> None:
        backoff = 0.2
        healthy: bool | None = None

        def health(ok: bool, error: str | None) -> None:
            nonlocal healthy
            if ok != healthy:
                healthy = ok
                self._post(self._on_health, ok, error)

        while not self._halt.is_set():
            try:
                # After a failure, list again: it proves the server is back
                # (a watch may stay silent for minutes) and catches up at once.
                if self.resource_version is None or healthy is False:
                    self._list()
                    health(True, None)
                backoff = 0.2
                if self._force_rv is not None:
                    self.resource_version, self._force_rv = self._force_rv, None
                self.watches += 1
                resp = self._list_fn(
                    *self._list_args,
                    label_selector=self._selector,
                    resource_version=self.resource_version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=self._timeout,
                    watch=True,
                    _preload_content=False,
                    _request_timeout=(5, self._timeout + 30),
                )
                self._resp = resp
                try:
                    if self._halt.is_set() or self._force_rv is not None:
                        continue
                    for line in iter_resp_lines(resp):  # type: ignore[no-untyped-call]
                        if self._halt.is_set() or self._force_rv is not None:
                            break
                        if not line:
                            continue
                        self._handle_line(line)
                finally:
                    self._resp = None
                    # Never reuse a watch connection: it may be half-read or cut.
                    resp.close()
                    resp.release_conn()
            except ApiException as e:
                if e.status == 410:
                    # Our resourceVersion is too old: start again from a list.
                    self.relists_after_gone += 1
                    self.resource_version = None
                    continue
                if self._halt.is_set():
                    break
                health(False, f"API server answered {e.status}: {e.reason}")
                self._halt.wait(backoff)
                backoff = min(backoff * 2, 3.0)
            except Exception as e:  # noqa: BLE001 - network errors of every kind
                if self._halt.is_set():
                    break
                if self._force_rv is not None:
                    continue  # we cut the connection ourselves
                health(False, f"cannot reach the API server: {e.__class__.__name__}: {e}")
                self._halt.wait(backoff)
                backoff = min(backoff * 2, 3.0)
