"""Billing rules (billing.md): the pure arithmetic, the worked example to the
micro-dollar through the service and its ledger, and property tests of the ledger
invariants over random sequences of actions (at least 1,000 sequences per run)."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecocore import billing
from ecocore.billing import ClusterMoney, Segment
from ecolink.errors import ApiError
from ecolink.runtime.base import RuntimeUnavailable
from ecolink.service import ClusterService, LaunchRequest
from ecolink.store import Store, to_us
from support import service_harness
from support.service_harness import make_service, new_account

# Every test here runs on each store engine (SQLite and Postgres).
pytestmark = pytest.mark.usefixtures("engine")

H = billing.US_PER_HOUR
MH = 1_000_000  # micro-hours per hour
USD = 1_000_000


# --------------------------------------------------------------------------- pure arithmetic


def test_rates_multiply_gpu_rate_count_and_replicas() -> None:
    assert billing.per_replica_rate(2_500_000, 4) == 10 * USD
    assert billing.hourly_rate(2_500_000, 4, 3) == 30 * USD


def test_holds_round_up_and_charges_round_down() -> None:
    # $1.753333/h for 1 micro-hour is 1.753333 micro-dollars: hold 2, charge 1.
    assert billing.hold_for_hours(1_753_333, 1) == 2
    assert billing.hold_for_duration(1_753_333, billing.US_PER_MICRO_HOUR) == 2
    assert billing.accrued([Segment(0, billing.US_PER_MICRO_HOUR, 1_753_333)], 10**12) == 1
    # Exact amounts are not rounded at all.
    assert billing.hold_for_hours(30 * USD, 10 * MH) == 300 * USD
    assert billing.hold_for_hours(30 * USD, 0) == 0


def test_accrued_sums_segments_exactly_before_rounding() -> None:
    # Three thirds of a micro-dollar each would round to 0 three times; summed once, 1.
    third = H // 3
    segs = [Segment(0, third, 1), Segment(third, 2 * third, 1), Segment(2 * third, H, 1)]
    assert billing.accrued(segs, H) == 1
    assert sum(billing.accrued([s], H) for s in segs) == 0


def test_accrued_stops_at_until_and_open_segments_run_to_it() -> None:
    segs = [Segment(0, 2 * H, 10 * USD), Segment(3 * H, None, 20 * USD)]
    assert billing.accrued(segs, H) == 10 * USD
    assert billing.accrued(segs, 3 * H) == 20 * USD
    assert billing.accrued(segs, 4 * H) == 40 * USD
    assert billing.accrued(segs, 0) == 0


def test_charge_due_is_the_difference_and_never_exceeds_the_hold() -> None:
    segs = [Segment(0, None, 30 * USD)]
    money = ClusterMoney(hold=300 * USD, released=0, spent=60 * USD)
    assert billing.charge_due(money, segs, 4 * H) == 60 * USD
    assert billing.charge_due(money, segs, 2 * H) == 0
    capped = ClusterMoney(hold=100 * USD, released=0, spent=60 * USD)
    assert billing.charge_due(capped, segs, 20 * H) == 40 * USD


def test_scale_up_hold_covers_the_added_replicas_to_expiry_only() -> None:
    assert billing.scale_up_hold(10 * USD, 3, 5, 6 * H) == 120 * USD
    assert billing.scale_up_hold(10 * USD, 5, 2, 6 * H) == 0


def test_ledger_signs_move_balance_and_held() -> None:
    b, h = billing.apply_posting(0, 0, "credit", 1000)
    b, h = billing.apply_posting(b, h, "hold", 300)
    b, h = billing.apply_posting(b, h, "charge", -120)
    b, h = billing.apply_posting(b, h, "hold_release", -100)
    assert (b, h) == (880, 80)
    assert billing.signed("charge", 5) == -5 and billing.signed("hold", 5) == 5


# --------------------------------------------------------------------------- the worked example


def _entries(store: Store, cluster_id: str, after: int) -> list[tuple[str, int]]:
    return [
        (e.kind, e.amount)
        for e in store.ledger_all()
        if e.cluster_id == cluster_id and e.id > after
    ]


def _last_id(store: Store) -> int:
    entries = store.ledger_all()
    return entries[-1].id if entries else 0


def test_worked_example_of_billing_md_to_the_micro_dollar() -> None:
    async def run() -> None:
        service, _, clock, store = make_service()
        acct = new_account(service, "alice", 1000)
        await service.start(background=False)
        t0 = clock.now()

        def at(hours: int) -> None:
            from datetime import timedelta

            clock.set(t0 + timedelta(hours=hours))

        mark = _last_id(store)
        c = await service.launch(
            acct,
            LaunchRequest(
                name="demo",
                region="us-east",
                gpu_type="H100-80GB",
                gpu_count=4,
                replicas=3,
                image="python:3.12",
                duration_mh=10 * MH,
            ),
        )
        assert _entries(store, c.id, mark) == [("hold", 300 * USD)]
        assert service.burn_rate(c) == 30 * USD

        at(4)
        mark = _last_id(store)
        c = await service.scale(acct, "demo", 5)
        assert _entries(store, c.id, mark) == [("charge", -120 * USD), ("hold", 120 * USD)]
        assert (c.spent_total, service.burn_rate(c)) == (120 * USD, 50 * USD)

        at(5)
        mark = _last_id(store)
        c = await service.scale(acct, "demo", 2)
        assert _entries(store, c.id, mark) == [("charge", -50 * USD)]
        assert (c.spent_total, service.burn_rate(c)) == (170 * USD, 20 * USD)

        at(6)
        mark = _last_id(store)
        c = await service.extend(acct, "demo", 2 * MH)
        assert _entries(store, c.id, mark) == [("charge", -20 * USD), ("hold", 40 * USD)]
        assert c.expires_at == to_us(t0) + 12 * H
        assert c.spent_total == 190 * USD

        at(7)
        mark = _last_id(store)
        c = await service.stop(acct, "demo")
        assert _entries(store, c.id, mark) == [("charge", -20 * USD), ("hold_release", -250 * USD)]
        assert (c.spent_total, service.burn_rate(c), c.status) == (210 * USD, 0, "stopped")

        at(8)
        mark = _last_id(store)
        c = await service.resume(acct, "demo")
        assert _entries(store, c.id, mark) == [("hold", 80 * USD)]
        assert service.burn_rate(c) == 20 * USD

        at(12)
        mark = _last_id(store)
        await service.tick()
        c = service.get_cluster(acct, c.id)
        assert _entries(store, c.id, mark) == [("charge", -80 * USD)]
        assert (c.status, c.status_reason) == ("terminated", "expired")
        assert c.spent_total == 290 * USD
        assert c.hold_total == 540 * USD
        assert c.released_total == 250 * USD
        assert c.hold_total == c.spent_total + c.released_total
        a = store.account(acct)
        assert a is not None
        assert (a.balance, a.held, a.available) == (710 * USD, 0, 710 * USD)
        assert store.audit() == []

    asyncio.run(run())


# --------------------------------------------------------------------------- invariants


def check_invariants(service: ClusterService) -> None:
    """billing.md's invariants, plus: what was charged is exactly the time segments'
    spend up to where charges were posted (no drift, nothing past expiry)."""
    store = service.store
    assert store.audit() == []
    now = service.now()
    budgets: defaultdict[tuple[str, str], int] = defaultdict(int)
    for a in store.accounts():
        assert a.held >= 0
        assert a.balance - a.held >= 0
    for c in store.list_clusters(None):
        money = ClusterMoney(c.hold_total, c.released_total, c.spent_total)
        assert 0 <= c.spent_total <= c.hold_total
        assert money.remaining >= 0
        segs = store.segments(c.id)
        for s in segs:
            assert s.end_us is None or s.end_us <= c.expires_at
            assert s.start_us <= c.expires_at
        open_segs = [s for s in segs if s.end_us is None]
        if c.status in ("pending", "running") and not c.suspended:
            assert len(open_segs) == 1
            assert c.last_charge_at <= now
            assert c.spent_total == billing.accrued(segs, c.last_charge_at)
        else:
            assert open_segs == []
            assert c.spent_total == billing.accrued(segs, c.expires_at)
        if c.status in ("stopped", "terminated", "failed"):
            assert money.remaining == 0
        if c.status in billing.BUDGETED:
            budgets[(c.account_id, c.region)] += c.gpu_count * c.replicas
        if c.status_reason == "expired":
            assert max((s.end_us or 0) for s in segs) <= c.expires_at
    for (_, region), used in budgets.items():
        r = service.catalog.region(region)
        assert r is not None and used <= r.gpu_budget


def _snapshot(store: Store) -> tuple[object, ...]:
    return (
        tuple(store.ledger_all()),
        tuple(
            (c.id, c.status, c.replicas, c.expires_at, c.endpoint_port)
            for c in store.list_clusters(None)
        ),
    )


idx = st.integers(0, 3)
hours_mh = st.integers(10_000, 12 * MH)
action = st.one_of(
    st.tuples(
        st.just("launch"),
        st.sampled_from([1, 2, 4, 8]),
        st.integers(2, 6),
        hours_mh,
        st.sampled_from(["H100-80GB", "L40S", "A100-80GB"]),
    ),
    st.tuples(st.just("scale"), idx, st.integers(2, 8)),
    st.tuples(st.just("extend"), idx, hours_mh),
    st.tuples(st.just("stop"), idx),
    st.tuples(st.just("resume"), idx),
    st.tuples(st.just("terminate"), idx),
    st.tuples(st.just("advance"), st.integers(1, 3 * H)),
    st.tuples(st.just("tick")),
    st.tuples(st.just("fail"), idx),
    st.tuples(st.just("outage"), st.booleans()),
    st.tuples(st.just("restart_backend"), st.booleans()),
)


async def _run_sequence(credit: int, steps: list[tuple[object, ...]]) -> None:
    try:
        await _sequence(credit, steps)
    finally:
        service_harness.close_made()  # a database per example: let each one go


async def _sequence(credit: int, steps: list[tuple[object, ...]]) -> None:
    service, runtime, clock, store = make_service(budget=40)
    acct = new_account(service, "prop", credit)
    await service.start(background=False)
    names: list[str] = []
    for n, step in enumerate(steps):
        kind = step[0]
        target = (
            names[int(step[1]) % len(names)]
            if names and kind in ("scale", "extend", "stop", "resume", "terminate", "fail")
            else None
        )
        before = _snapshot(store)
        overdue = any(
            c.expires_at <= service.now()
            and c.status in ("pending", "running", "stopping", "stopped")
            for c in store.list_clusters(None)
        )
        try:
            if kind == "launch":
                gpu_type = str(step[4])
                region = "eu-west" if gpu_type == "A100-80GB" else "us-east"
                gpu_count = int(step[1]) if gpu_type != "A100-80GB" else min(2, int(step[1]))
                name = f"c{n}"
                await service.launch(
                    acct,
                    LaunchRequest(
                        name=name,
                        region=region,
                        gpu_type=gpu_type,
                        gpu_count=gpu_count,
                        replicas=int(step[2]),
                        image="img",
                        duration_mh=int(step[3]),
                    ),
                )
                names.append(name)
            elif kind == "scale" and target:
                await service.scale(acct, target, int(step[2]))
            elif kind == "extend" and target:
                await service.extend(acct, target, int(step[2]))
            elif kind == "stop" and target:
                await service.stop(acct, target)
            elif kind == "resume" and target:
                await service.resume(acct, target)
            elif kind == "terminate" and target:
                await service.terminate(acct, target)
            elif kind == "fail" and target:
                c = store.find_cluster(acct, target)
                assert c is not None
                await service.fail(c.id, "every replica failed")
            elif kind == "advance":
                clock.advance(int(step[1]) / 1_000_000)
            elif kind == "tick":
                await service.tick()
            elif kind == "outage":
                runtime.unavailable = bool(step[1])
            elif kind == "restart_backend":
                await service.shutdown(stop_replicas=bool(step[1]))
                service = ClusterService(store, runtime, service.catalog, clock)
                runtime.unavailable = False
                await service.start(background=False)
        except RuntimeUnavailable:
            assert runtime.unavailable
            if not overdue:
                assert _snapshot(store) == before, "a 503 changed something"
        except ApiError as exc:
            assert exc.status in (402, 404, 409, 422), exc
            if not overdue:
                assert _snapshot(store) == before, (
                    f"a refused action ({exc.status}) changed something"
                )
        check_invariants(service)
    runtime.unavailable = False
    clock.advance(800 * 3600)
    await service.tick()
    check_invariants(service)
    for c in store.list_clusters(None):
        assert c.status in ("terminated", "failed")


_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
@settings(max_examples=1000, deadline=None, suppress_health_check=_SLOW_OK)
@given(credit=st.integers(0, 3000), steps=st.lists(action, min_size=1, max_size=20))
def test_ledger_invariants_hold_over_random_action_sequences(
    credit: int, steps: list[tuple[object, ...]]
) -> None:
    asyncio.run(_run_sequence(credit, steps))


# The same on Postgres, with fewer examples: each one makes a database (0.2 s).
@pytest.mark.parametrize("engine", ["postgres"], indirect=True)
@settings(max_examples=100, deadline=None, suppress_health_check=_SLOW_OK)
@given(credit=st.integers(0, 3000), steps=st.lists(action, min_size=1, max_size=20))
def test_ledger_invariants_hold_over_random_action_sequences_on_postgres(
    credit: int, steps: list[tuple[object, ...]]
) -> None:
    asyncio.run(_run_sequence(credit, steps))


@pytest.mark.parametrize("minutes", [1, 59, 61, 600])
def test_charges_are_posted_at_least_once_a_minute_while_running(minutes: int) -> None:
    async def run() -> None:
        service, _, clock, store = make_service()
        acct = new_account(service, "a", 1000)
        await service.start(background=False)
        c = await service.launch(
            acct,
            LaunchRequest(
                name="x",
                region="us-east",
                gpu_type="L40S",
                gpu_count=1,
                replicas=2,
                image="img",
                duration_mh=24 * MH,
            ),
        )
        for _ in range(minutes * 12):
            clock.advance(5)
            await service.tick()
        charges = [e for e in store.ledger_all() if e.kind == "charge"]
        times = [to_us(clock.now())] if not charges else [e.at for e in charges]
        start = c.created_at
        gaps = [b - a for a, b in zip([start, *times], times, strict=False)]
        assert charges, "no charge posted while running"
        assert max(gaps) <= 60 * 1_000_000
        # The charges add up to the exact spend so far, rounded down once.
        fresh = store.cluster(c.id)
        assert fresh is not None
        exact = 2 * 950_000 * (fresh.last_charge_at - start) // H
        assert fresh.spent_total == exact
        assert to_us(clock.now()) - fresh.last_charge_at < 60 * 1_000_000

    asyncio.run(run())
