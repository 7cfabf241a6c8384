"""How the kernel schedules the front: SCHED_BATCH for its event loop by default,
normal on request, and never passed on to the replicas and shells it starts."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import pytest

from ecolink.front.server import apply_scheduling
from ecolink.runtime.local.proc import normal_scheduling


def in_thread(fn: Callable[[], Any]) -> Any:
    """Run `fn` on a thread of its own: the policy is per thread, and the test
    runner's own thread is left as it was."""
    out: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    if errors:
        raise errors[0]
    return out[0]


def test_batch_is_sched_batch_and_normal_puts_it_back() -> None:
    def run() -> tuple[str, int, str, int]:
        said = apply_scheduling("batch")
        now = os.sched_getscheduler(0)
        said_back = apply_scheduling("normal")
        return said, now, said_back, os.sched_getscheduler(0)

    said, policy, said_back, back = in_thread(run)
    assert (said, policy) == ("scheduling: SCHED_BATCH", os.SCHED_BATCH)
    assert (said_back, back) == ("scheduling: normal", os.SCHED_OTHER)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # this thread: untouched


def test_an_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="batch, normal"):
        apply_scheduling("realtime")


def test_a_child_of_the_batch_front_is_put_back_to_normal() -> None:
    def run() -> tuple[int, int]:
        apply_scheduling("batch")
        child = subprocess.Popen(["sleep", "30"])
        try:
            inherited = os.sched_getscheduler(child.pid)
            normal_scheduling(child.pid)
            return inherited, os.sched_getscheduler(child.pid)
        finally:
            child.kill()
            child.wait()

    inherited, after = in_thread(run)
    assert inherited == os.SCHED_BATCH  # what fork hands down: why the reset exists
    assert after == os.SCHED_OTHER


def test_a_child_gone_already_is_no_error() -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    normal_scheduling(child.pid)  # ESRCH: nothing to do
