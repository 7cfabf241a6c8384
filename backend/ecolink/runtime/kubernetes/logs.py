"""A pod's log from the pod log API, streamed to the event loop.

The official client's read blocks, so a thread reads and hands chunks over a
bounded queue (the reader waits while the consumer is behind). Closing the
iterator shuts the connection down, which unblocks a reader waiting on `follow`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from kubernetes.client.exceptions import ApiException

from ecolink.runtime.base import ReplicaNotFound, RuntimeFailure, RuntimeUnavailable
from ecolink.runtime.kubernetes import objects as ko
from ecolink.runtime.kubernetes.client import REQUEST_TIMEOUT, KubeApi, refusal, unreachable


def _failure(item: BaseException, replica: str) -> Exception:
    if isinstance(item, ApiException) and item.status == 404:
        return ReplicaNotFound(replica)
    if isinstance(item, ApiException) and item.status == 400:
        return refusal(item)
    if unreachable(item):
        return RuntimeUnavailable(str(item))
    return RuntimeFailure(str(item))


async def pod_logs(
    api: KubeApi, pod: str, replica: str, *, tail: int | None, follow: bool, previous: bool
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=8)
    holder: dict[str, Any] = {}
    stop = False

    def put(item: bytes | BaseException | None) -> bool:
        fut = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
        try:
            fut.result()
            return True
        except Exception:  # noqa: BLE001 - loop gone
            return False

    def reader() -> None:
        try:
            kw: dict[str, Any] = {"container": ko.CONTAINER, "follow": follow, "previous": previous}
            if tail is not None:
                kw["tail_lines"] = tail
            # Not preloaded: an urllib3 response to stream, not the text.
            resp: Any = api.core.read_namespaced_pod_log(
                pod,
                api.ns,
                _preload_content=False,
                _request_timeout=(5, 24 * 3600) if follow else REQUEST_TIMEOUT,
                **kw,
            )
            holder["resp"] = resp
            for chunk in resp.stream(4096, decode_content=True):
                if stop or not put(chunk):
                    break
            resp.release_conn()
            put(None)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put(e)

    thread = asyncio.create_task(asyncio.to_thread(reader))
    try:
        while True:
            item = await queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise _failure(item, replica) from item
            yield item
    finally:
        stop = True
        resp = holder.get("resp")
        if resp is not None:
            with contextlib.suppress(Exception):
                # Unblock the reader thread stuck in a follow read.
                sock = getattr(getattr(resp, "connection", None), "sock", None)
                if sock is not None:
                    sock.shutdown(2)
                resp.close()
        while not queue.empty():
            queue.get_nowait()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(thread, 5)
