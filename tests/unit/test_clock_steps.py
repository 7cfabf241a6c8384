"""Time cannot be used against the customer: wall-clock steps backwards and forwards
(the steady clock keeps counting the real time) never bill time that did not run,
never open a segment over time already billed, and never expire a cluster early."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_store import _cluster

from ecocore import billing
from ecocore.billing import ACCRUING, Segment, accrued, segment_start
from ecocore.clock import FakeClock
from ecolink.clock import SteadyClock
from ecolink.service import LaunchRequest
from ecolink.store import Store, to_us
from support import service_harness
from support.service_harness import T0, make_service, new_account

# Every test here runs on each store engine (SQLite and Postgres).
pytestmark = pytest.mark.usefixtures("engine")

MH = 1_000_000
US = 1_000_000
HOUR = 3600


class Steady:
    """A steady clock the test moves (seconds)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def clocks(max_step_s: float = 60.0) -> tuple[FakeClock, Steady, SteadyClock]:
    wall, steady = FakeClock(T0), Steady()
    return wall, steady, SteadyClock(wall, steady, max_step_s=max_step_s)


def pass_time(wall: FakeClock, steady: Steady, seconds: float) -> None:
    wall.advance(seconds)
    steady.t += seconds


# --------------------------------------------------------------------------- the clock


def test_the_clock_follows_the_wall_clock_while_it_agrees() -> None:
    wall, steady, clock = clocks()
    assert clock.now() == T0
    pass_time(wall, steady, 30)
    assert clock.now() == T0 + timedelta(seconds=30)
    wall.advance(0.5)  # a small correction is followed
    assert clock.now() == T0 + timedelta(seconds=30.5)


def test_a_step_backwards_is_logged_and_time_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    wall, steady, clock = clocks()
    clock.now()
    pass_time(wall, steady, 100)
    with caplog.at_level(logging.WARNING, logger="ecolink.clock"):
        wall.advance(-3600)
        assert clock.now() == T0 + timedelta(seconds=100)
    assert "stepped backwards by 3600.0 s" in caplog.text
    pass_time(wall, steady, 10)
    assert clock.now() == T0 + timedelta(seconds=110)


def test_a_large_step_forward_is_logged_and_not_followed(caplog: pytest.LogCaptureFixture) -> None:
    wall, steady, clock = clocks(max_step_s=60)
    clock.now()
    with caplog.at_level(logging.WARNING, logger="ecolink.clock"):
        wall.advance(86400)
        assert clock.now() == T0
    assert "stepped forward by 86400.0 s" in caplog.text
    pass_time(wall, steady, 5)
    assert clock.now() == T0 + timedelta(seconds=5)
    # Put right again: followed again.
    wall.set(T0 + timedelta(seconds=6))
    assert clock.now() == T0 + timedelta(seconds=6)


def test_a_step_within_the_bound_is_followed() -> None:
    wall, steady, clock = clocks(max_step_s=60)
    clock.now()
    wall.advance(30)
    assert clock.now() == T0 + timedelta(seconds=30)


# --------------------------------------------------------------------------- segments


def test_large_steps_that_add_up_to_a_small_one_are_not_followed() -> None:
    """+61 s, +61 s, then -62 s: the wall clock ends 60 s ahead of the time that ran,
    made of steps that were each refused; it is not one small step to follow."""
    wall, steady, clock = clocks(max_step_s=60)
    clock.now()
    for step in (61, 61, -62):
        pass_time(wall, steady, 1)
        wall.advance(step)
        clock.now()
    assert clock.now() == T0 + timedelta(seconds=3)
    wall.set(T0 + timedelta(seconds=4))  # put right: followed again
    pass_time(wall, steady, 1)
    assert clock.now() == T0 + timedelta(seconds=5)


def test_a_segment_never_starts_before_the_previous_one_ended() -> None:
    segs = [Segment(0, 100, 7), Segment(200, 300, 7)]
    assert segment_start(segs, 250) == 300
    assert segment_start(segs, 400) == 400
    assert segment_start([Segment(0, None, 7)], -5) == 0


@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(1, 10**7)), max_size=8
    ),
    st.integers(0, 20_000),
)
def test_overlapping_segments_never_count_time_twice(
    raw: list[tuple[int, int, int]], until: int
) -> None:
    segs = [Segment(a, a + d, r) for a, d, r in raw]
    top = max((r for _, _, r in raw), default=0)
    # Never more than the dearest rate over the time covered.
    covered = 0
    points = sorted({p for s in segs for p in (s.start_us, s.end_us or s.start_us)})
    for lo, hi in zip(points, points[1:], strict=False):
        if any(s.start_us <= lo and (s.end_us or 0) >= hi for s in segs):
            covered += max(0, min(hi, until) - lo)
    assert accrued(segs, until) <= top * covered // billing.US_PER_HOUR


def test_the_store_opens_segments_after_the_last_end() -> None:
    store = Store(service_harness.new_database())
    with store.tx():
        acct = store.create_account("a", 0)
    _cluster(store, acct.id, cid="gc_x")
    with store.tx():
        store.open_segment("gc_x", 1_000, 5)
        store.close_segment("gc_x", 2_000)
        assert store.open_segment("gc_x", 1_500, 5) == 2_000
    assert [s.start_us for s in store.segments("gc_x")] == [1_000, 2_000]


# --------------------------------------------------------------------------- the service


def launch_req(hours: int = 10) -> LaunchRequest:
    return LaunchRequest(
        name="demo",
        region="us-east",
        gpu_type="H100-80GB",
        gpu_count=1,
        replicas=2,
        image="x",
        duration_mh=hours * MH,
    )


# A wall step: none, forward past the bound, or backwards past the tolerance.
STEPS = st.one_of(st.just(0), st.integers(61, 5 * 86400), st.integers(-5 * 86400, -3))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(1, 2 * HOUR), STEPS), min_size=1, max_size=14))
def test_a_jumping_wall_clock_bills_exactly_the_time_that_ran(moves: list[tuple[int, int]]) -> None:
    """Whatever the wall clock does, a cluster pays for the real (steady) time it ran,
    and expires when its real duration is up, not before."""

    async def main() -> None:
        wall, steady, clock = clocks(max_step_s=60)
        service, _, _, store = make_service(clock=clock)  # type: ignore[arg-type]
        acct = new_account(service, "alice", 10_000)
        await service.start(background=False)
        c = await service.launch(acct, launch_req(10))
        rate = service.hourly_rate(c)
        real = 0
        # Each time the wall clock is re-followed it may differ from the steady time by
        # up to the tolerance: allow that much per move.
        slack_s = 2 * len(moves) + 1
        for seconds, step in moves:
            pass_time(wall, steady, seconds)
            real += seconds
            wall.advance(step)
            await service.expire_due()
            await service.post_charges(force=True)
            fresh = store.cluster(c.id)
            assert fresh is not None
            if real < 10 * HOUR - slack_s:
                assert fresh.status in ACCRUING, (real, fresh.status)
                exact = rate * real * US // billing.US_PER_HOUR
                assert abs(fresh.spent_total - exact) <= rate * slack_s // HOUR + 1
            elif real >= 10 * HOUR + slack_s:
                assert fresh.status in ("terminating", "terminated")
                assert fresh.spent_total == fresh.hold_total
            segs = store.segments(c.id)
            for a, b in zip(segs, segs[1:], strict=False):
                assert a.end_us is not None and b.start_us >= a.end_us
        assert store.audit() == []

    try:
        asyncio.run(main())
    finally:
        service_harness.close_made()  # a database per example


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.integers(1, HOUR),
            st.integers(-3 * 86400, 3 * 86400),
            st.sampled_from(["stop", "resume", "scale", "tick"]),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_actions_under_a_stepping_clock_never_overlap_or_overbill(
    moves: list[tuple[int, int, str]],
) -> None:
    """Stop, resume and scale while the wall clock steps anywhere: segments never
    overlap, and what is charged never exceeds the rate times the real time."""

    async def main() -> None:
        wall, steady, clock = clocks(max_step_s=60)
        service, _, _, store = make_service(clock=clock)  # type: ignore[arg-type]
        acct = new_account(service, "alice", 100_000)
        await service.start(background=False)
        c = await service.launch(acct, launch_req(200))
        dearest = billing.hourly_rate(c.rate_per_gpu_hour, c.gpu_count, 3)
        real = 0
        for seconds, step, action in moves:
            pass_time(wall, steady, seconds)
            real += seconds
            wall.advance(step)
            if action == "stop":
                await service.stop(acct, c.id)
            elif action == "resume":
                await service.resume(acct, c.id)
            elif action == "scale":
                cur = store.cluster(c.id)
                assert cur is not None
                await service.scale(acct, c.id, 3 if cur.replicas == 2 else 2)
            await service.post_charges(force=True)
            fresh = store.cluster(c.id)
            assert fresh is not None
            # Within the bound, forward steps are followed: allow them.
            allowed_s = real + sum(min(max(s, 0), 60) for _, s, _ in moves) + 2 * len(moves)
            assert fresh.spent_total <= dearest * allowed_s * US // billing.US_PER_HOUR + 1
            segs = store.segments(c.id)
            for a, b in zip(segs, segs[1:], strict=False):
                assert a.end_us is not None and b.start_us >= a.end_us
        assert store.audit() == []

    try:
        asyncio.run(main())
    finally:
        service_harness.close_made()  # a database per example


def test_a_restart_after_the_clock_went_back_counts_from_the_record() -> None:
    async def main() -> None:
        wall = FakeClock(T0)
        service, _, _, store = make_service(clock=wall)
        acct = new_account(service, "alice", 1000)
        await service.start(background=False)
        c = await service.launch(acct, launch_req(10))
        wall.advance(2 * HOUR)
        await service.shutdown(stop_replicas=True)
        spent = store.cluster(c.id).spent_total  # type: ignore[union-attr]
        # Down; the clock is set back a day; the backend starts again.
        wall.advance(-24 * HOUR)
        again, _, _, _ = make_service(store, clock=wall)
        await again.start(background=False)
        assert again.now() >= to_us(T0 + timedelta(hours=2))
        wall.advance(HOUR)  # still before the record: nothing ran that was not paid
        await again.post_charges(force=True)
        fresh = store.cluster(c.id)
        assert fresh is not None and fresh.status in ACCRUING
        assert fresh.spent_total == spent
        segs = store.segments(c.id)
        assert segs[-1].start_us >= segs[-2].end_us  # type: ignore[operator]
        assert store.audit() == []

    asyncio.run(main())
