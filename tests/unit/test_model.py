"""The dashboard's view model: frames in, rows, dirty sets and alerts out (no UI, no IO)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from ecocore.wire import EventOut, MetricsOut
from ecotui.client.watch import connection_frame
from ecotui.model import DashboardModel, GroupRow, parse_micros
from ecotui.testing import FIXED_START, GeneratedFleet, as_frame
from ecotui.wording import fmt_duration, fmt_local, fmt_usd, sparkline
from ecotui.wording import parse_time_or_none as parse_time


def apply(model: DashboardModel, frame) -> None:
    """Fold a frame given as the backend's JSON object, parsed as the watch client does."""
    model.apply(as_frame(frame))


class Clock:
    def __init__(self, now: datetime = FIXED_START) -> None:
        self.t = now

    def now(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


def usd(x: str) -> str:
    return x


def cluster(
    cid: str = "gc_1",
    name: str = "alpha",
    *,
    status: str = "running",
    region: str = "us-east",
    expires_in_s: float = 4 * 3600,
    now: datetime = FIXED_START,
    replicas: int = 2,
    gpu_count: int = 4,
    hourly: str = "20.000000",
    burn: str | None = None,
    spent: str = "1.000000",
    states: list[dict] | None = None,
    util: float | None = 50.0,
    idle: int = 0,
    gpu_type: str = "H100-80GB",
) -> dict:
    if states is None:
        states = [
            {
                "name": f"{name}-{i}",
                "index": i,
                "phase": "Running",
                "ready": True,
                "restarts": 0,
                "reason": None,
                "node": "n1",
            }
            for i in range(replicas)
        ]
    return {
        "id": cid,
        "name": name,
        "region": region,
        "gpu_type": gpu_type,
        "gpu_count": gpu_count,
        "replicas": replicas,
        "image": "ghcr.io/acme/infer:1.4",
        "startup_command": None,
        "shared_filesystems": [],
        "termination_grace_seconds": 30,
        "status": status,
        "status_reason": None,
        "stale": False,
        "created_at": (now - timedelta(hours=1)).isoformat(),
        "started_at": (now - timedelta(hours=1)).isoformat(),
        "estimated_duration_hours": 5.0,
        "expires_at": (now + timedelta(seconds=expires_in_s)).isoformat(),
        "hourly_rate": hourly,
        "burn_rate": burn
        if burn is not None
        else (hourly if status in ("running", "pending") else "0.000000"),
        "cost": {
            "hold": "100.000000",
            "spent": spent,
            "hold_remaining": "99.000000",
            "projected_total": "81.000000",
        },
        "endpoint": None,
        "ready_replicas": sum(1 for s in states if s["ready"]),
        "replica_states": states,
        # util None: no GPU reports, as the backend says it (`gpus` 0, a mean of 0.0).
        "gpu_summary": {
            "gpus": replicas * gpu_count if util is not None else 0,
            "mean_utilization": util if util is not None else 0.0,
            "idle_gpus": idle,
            "telemetry": "simulated",
        },
    }


def account(available: str = "5000.000000") -> dict:
    return {
        "id": "a",
        "name": "demo",
        "balance": "6000.000000",
        "held": "1000.000000",
        "available": available,
    }


def snapshot(*clusters: dict, acct: dict | None = None) -> dict:
    return {"type": "snapshot", "clusters": list(clusters), "account": acct or account()}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def model(clock: Clock) -> DashboardModel:
    return DashboardModel(clock)


# -- helpers -------------------------------------------------------------------------


def test_money_and_time_parsing():
    assert parse_micros("29.940000") == 29_940_000
    assert parse_micros("-0.000001") == -1
    assert parse_micros(None) == 0 and parse_micros("junk") == 0
    assert fmt_usd(1_234_567_890) == "$1,234.57"
    assert fmt_usd(-5_000) == "-$0.01"
    assert fmt_usd(1_000_001, cents=False) == "$1.000001"
    assert parse_time("2026-03-02T14:00:00Z") == datetime(2026, 3, 2, 14, tzinfo=UTC)
    assert parse_time(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_time("not a time") is None


def test_durations_and_local_times():
    assert fmt_duration(0) == "0s"
    assert fmt_duration(9) == "9s"
    assert fmt_duration(4 * 60 + 9) == "4m 09s"
    assert fmt_duration(5 * 3600 + 7 * 60 + 59) == "5h 07m"
    assert fmt_duration(3 * 86400 + 4 * 3600) == "3d 4h"
    when = datetime(2026, 3, 2, 14, 5, 3, tzinfo=UTC)
    assert fmt_local(when, UTC, now=when) == "14:05:03"
    assert fmt_local(when, UTC, now=when + timedelta(days=1)) == "Mar 02 14:05"
    # Another zone: the same instant shown in that zone's local time.
    from datetime import timezone

    assert fmt_local(when, timezone(timedelta(hours=2)), now=when) == "16:05:03"


def test_sparkline_scales_pads_and_shows_gaps():
    assert sparkline([0, 100], 2) == "▁█"
    assert sparkline([50], 3) == "▅  "
    assert sparkline([None, 100], 2) == " █"
    assert sparkline(range(100), 4) == sparkline([96, 97, 98, 99], 4)


# -- frames ---------------------------------------------------------------------------


def test_snapshot_fills_clusters_account_and_marks_everything(model):
    apply(model, snapshot(cluster("a", "alpha"), cluster("b", "beta")))
    ch = model.take_changes()
    assert ch.snapshot and ch.order and ch.account
    assert ch.clusters == {"a", "b"}
    assert model.ordered_ids() == ["a", "b"]
    assert model.account_micros["available"] == 5_000_000_000
    assert not model.take_changes()  # drained


def test_second_snapshot_removes_clusters_that_are_gone(model):
    apply(model, snapshot(cluster("a", "alpha"), cluster("b", "beta")))
    model.take_changes()
    apply(model, snapshot(cluster("b", "beta")))
    ch = model.take_changes()
    assert ch.removed == {"a"}
    assert list(model.clusters) == ["b"]


def test_burst_of_frames_coalesces_to_one_dirty_key(model):
    apply(model, snapshot(cluster("a", "alpha")))
    model.take_changes()
    for k in range(50):
        apply(model, {"type": "cluster", "cluster": cluster("a", "alpha", spent=f"{k}.000000")})
    ch = model.take_changes()
    assert ch.clusters == {"a"}
    assert model.nums["a"].spent == 49_000_000


def test_identical_frame_changes_nothing(model):
    c = cluster("a", "alpha")
    apply(model, snapshot(c))
    model.take_changes()
    apply(model, {"type": "cluster", "cluster": copy.deepcopy(c)})
    assert not model.take_changes()


def test_cluster_removed_and_account_frames(model):
    apply(model, snapshot(cluster("a", "alpha")))
    model.take_changes()
    apply(model, {"type": "account", "account": account("12.500000")})
    apply(model, {"type": "cluster_removed", "id": "a"})
    ch = model.take_changes()
    assert ch.account and ch.removed == {"a"}
    assert model.account_micros["available"] == 12_500_000
    assert model.clusters == {}


def test_summaries_update_util_and_sparkline_only_where_changed(model):
    apply(model, snapshot(cluster("a", "alpha", util=10.0), cluster("b", "beta", util=20.0)))
    model.take_changes()
    apply(
        model,
        {
            "type": "summaries",
            "clusters": {
                "a": {
                    "gpus": 8,
                    "mean_utilization": 30.0,
                    "idle_gpus": 0,
                    "telemetry": "simulated",
                },
                "b": {
                    "gpus": 8,
                    "mean_utilization": 20.0,
                    "idle_gpus": 0,
                    "telemetry": "simulated",
                },
                "zzz": {"gpus": 8, "mean_utilization": 1.0, "idle_gpus": 8, "telemetry": "nvml"},
            },
        },
    )
    ch = model.take_changes()
    assert ch.clusters == {"a"}  # b's summary is unchanged; zzz is unknown
    assert list(model.util_spark["a"]) == [10.0, 30.0]
    assert model.mean_util("a") == 30.0


def test_events_are_kept_in_order_deduplicated_and_bounded(clock):
    model = DashboardModel(clock, events_len=3)
    apply(model, snapshot(cluster("a", "alpha")))
    model.take_changes()
    for i in range(5):
        apply(
            model,
            {
                "type": "event",
                "cluster_id": "a",
                "event": {"at": f"2026-03-02T14:00:0{i}Z", "kind": "scaled", "message": str(i)},
            },
        )
    assert [e["message"] for e in model.events["a"]] == ["2", "3", "4"]
    assert model.take_changes().events == {"a"}
    # REST history arriving later is merged without duplicates, in time order.
    model.load_events(
        "a",
        [
            EventOut(at="2026-03-02T14:00:04Z", kind="scaled", message="4"),
            EventOut(at="2026-03-02T14:00:09Z", kind="extended", message="9"),
        ],
    )
    assert [e["message"] for e in model.events["a"]] == ["3", "4", "9"]


def test_replicas_frames_build_bounded_per_gpu_history(clock):
    model = DashboardModel(clock, history_len=5)
    fleet = GeneratedFleet(1, replicas=2, gpus=2)
    apply(model, fleet.snapshot_frame())
    cid = next(iter(fleet.clusters))
    for t in range(8):
        clock.advance(1)
        apply(model, fleet.replicas_frame(cid, float(t)))
    hist = model.gpu_history[cid]
    assert set(hist) == {
        (f"{fleet.clusters[cid]['name']}-{r}", g) for r in range(2) for g in range(2)
    }
    assert all(len(dq) == 5 for dq in hist.values())
    ch = model.take_changes()
    assert cid in ch.replicas and cid in ch.history
    model.history.focused = frozenset({cid})
    assert model.mean_util(cid) == model.live_util[cid]


def test_metrics_restore_fills_the_gap_before_live_samples(clock):
    model = DashboardModel(clock)
    apply(model, snapshot(cluster("a", "alpha")))
    live = {
        "type": "replicas",
        "cluster_id": "a",
        "replicas": [
            {
                "name": "alpha-0",
                "index": 0,
                "phase": "Running",
                "ready": True,
                "restarts": 0,
                "reason": None,
                "node": "n1",
                "telemetry": "simulated",
                "gpus": [
                    {
                        "index": 0,
                        "uuid": "u",
                        "name": "H100-80GB",
                        "utilization": 77.0,
                        "memory_used_mib": 1,
                        "memory_total_mib": 81920,
                        "temperature_c": 40,
                        "power_w": 100,
                        "power_limit_w": 700,
                    }
                ],
            }
        ],
    }
    apply(model, live)  # one live sample at `now`
    t0 = clock.now()
    samples = [
        [(t0 - timedelta(seconds=s)).isoformat(), 10.0 + s, 2, 30, 50] for s in (30, 20, 10, 0)
    ]
    model.load_metrics(
        "a",
        MetricsOut.model_validate(
            {
                "interval_s": 10,
                "replicas": [
                    {"name": "alpha-0", "gpus": [{"index": 0, "uuid": "u", "samples": samples}]}
                ],
            }
        ),
    )
    hist = list(model.gpu_history["a"][("alpha-0", 0)])
    assert [round(s[1]) for s in hist] == [40, 30, 20, 10]  # restored history, in time order
    clock.advance(1)
    apply(model, live)
    assert list(model.gpu_history["a"][("alpha-0", 0)])[-1][1] == 77.0


def test_focus_keeps_history_only_for_clusters_on_screen_plus_a_few(clock):
    model = DashboardModel(clock, history_clusters=2)
    fleet = GeneratedFleet(12, replicas=2, gpus=1)
    apply(model, fleet.snapshot_frame())
    ids = [cid for cid, c in fleet.clusters.items() if c["status"] == "running"]
    assert model.set_focus(ids[:3]) is True
    assert model.set_focus(ids[:3]) is False
    for cid in ids:
        apply(model, fleet.replicas_frame(cid, 0.0))
    # Frames for clusters not in focus (in flight from before a focus change) are dropped.
    assert set(model.gpu_history) == set(ids[:3]) == set(model.replicas)
    model.set_focus(ids[3:4])
    apply(model, fleet.replicas_frame(ids[3], 1.0))
    assert len(model.gpu_history) == 2 and ids[3] in model.gpu_history
    assert ids[2] in model.gpu_history  # the most recent of the others stays
    assert set(model.replicas) == {ids[3]}
    # Focused for the list only (no history drawn): latest readings, no history kept.
    model.set_focus(ids[4:6], history=[])
    for cid in ids[4:6]:
        apply(model, fleet.replicas_frame(cid, 2.0))
    assert set(model.replicas) == set(ids[4:6])
    assert not set(ids[4:6]) & set(model.gpu_history)
    assert model.mean_util(ids[4]) == model.live_util[ids[4]]


def test_connection_states_and_stale_data(model, clock):
    assert model.connection_label()[0] == "… connecting"
    apply(model, connection_frame("connected"))
    apply(model, snapshot(cluster("a", "alpha")))
    assert model.connection_label() == ("● connected", "ok")
    assert not model.is_stale()
    clock.advance(20)  # no frame for 20 s: summaries come every 5 s
    text, level = model.connection_label()
    assert text.startswith("◌ stale: no data for 20s") and level == "warning"
    apply(
        model,
        connection_frame(
            "reconnecting", attempt=3, next_retry_at=clock.now() + timedelta(seconds=4)
        ),
    )
    text, level = model.connection_label()
    assert text == "↻ reconnecting in 4s (attempt 3) · data stale" and level == "error"
    assert model.is_stale()
    assert model.take_changes().connection
    apply(
        model,
        connection_frame(
            "reconnecting",
            attempt=4,
            error="the API key was refused (401)",
            next_retry_at=clock.now() + timedelta(seconds=30),
        ),
    )
    assert model.connection_label()[0] == "✖ API key refused (401) · retry in 30s · data stale"


# -- sorting, filtering, grouping -------------------------------------------------------


def three(model):
    apply(
        model,
        snapshot(
            cluster(
                "a",
                "charlie",
                region="us-west",
                util=10,
                hourly="30.000000",
                spent="5.000000",
                expires_in_s=3000,
            ),
            cluster(
                "b",
                "alpha",
                region="eu-central",
                util=90,
                hourly="10.000000",
                spent="50.000000",
                expires_in_s=9000,
                status="pending",
            ),
            cluster(
                "c",
                "bravo",
                region="us-west",
                util=None,
                hourly="20.000000",
                spent="1.000000",
                expires_in_s=600,
                status="stopped",
            ),
        ),
    )
    model.take_changes()


@pytest.mark.parametrize(
    "column,expected",
    [
        ("name", ["b", "c", "a"]),
        ("status", ["b", "a", "c"]),  # pending, running, stopped
        ("region", ["b", "c", "a"]),  # eu-central, then us-west by name
        ("util", ["c", "a", "b"]),  # no reading first
        ("burn", ["c", "b", "a"]),  # stopped burns 0
        ("spent", ["c", "a", "b"]),
        ("expires", ["c", "a", "b"]),
    ],
)
def test_sort_by_every_column(model, column, expected):
    three(model)
    model.set_sort(column, reverse=False)
    assert model.ordered_ids() == expected
    model.reverse_sort()
    assert model.ordered_ids() == list(reversed(expected))


def test_next_sort_cycles_and_marks_order_dirty(model):
    three(model)
    assert model.next_sort() == "status"
    assert model.take_changes().order
    with pytest.raises(ValueError):
        model.set_sort("nope")


def test_filter_matches_every_term(model):
    three(model)
    model.set_filter("us-west")
    assert model.ordered_ids() == ["c", "a"]
    model.set_filter("west stopped")
    assert model.ordered_ids() == ["c"]
    model.set_filter("ALPHA")
    assert model.ordered_ids() == ["b"]
    model.set_filter("")
    assert len(model.ordered_ids()) == 3


def test_group_by_region_and_status(model):
    three(model)
    assert model.next_grouping() == "region"
    rows = model.rows()
    assert rows == [GroupRow("eu-central", 1), "b", GroupRow("us-west", 2), "c", "a"]
    assert model.next_grouping() == "status"
    labels = [r.label for r in model.rows() if isinstance(r, GroupRow)]
    assert labels == ["pending", "running", "stopped"]
    assert model.next_grouping() is None


def test_order_cache_is_kept_until_a_sort_value_changes(model):
    three(model)
    model.set_sort("spent")
    first = model.ordered_ids()
    assert model.ordered_ids() is first  # no re-sort without a change
    apply(
        model,
        {
            "type": "cluster",
            "cluster": cluster(
                "a",
                "charlie",
                region="us-west",
                util=10,
                hourly="30.000000",
                spent="5.000000",
                expires_in_s=3000,
            ),
        },
    )
    assert model.ordered_ids() is first  # same values: still no re-sort
    apply(
        model,
        {
            "type": "cluster",
            "cluster": cluster(
                "a", "charlie", region="us-west", hourly="30.000000", spent="99.000000"
            ),
        },
    )
    assert model.ordered_ids() == ["c", "b", "a"]


# -- alerts -------------------------------------------------------------------------------


def kinds(model):
    return sorted((a.cluster_id or "", a.kind, a.level) for a in model.alerts())


def test_expiring_alert_at_30_then_5_minutes_via_the_heap(model, clock):
    apply(model, snapshot(cluster("a", "alpha", expires_in_s=40 * 60)))
    assert kinds(model) == []
    clock.advance(9 * 60)  # 31 min left
    model.tick()
    assert kinds(model) == []
    clock.advance(61)  # 29:59 left
    model.tick()
    assert kinds(model) == [("a", "expiring", "warning")]
    new = model.take_new_alerts()
    assert [a.stage for a in new] == ["30"]
    clock.advance(25 * 60)  # 4:59 left
    model.tick()
    assert kinds(model) == [("a", "expiring", "error")]
    assert [a.stage for a in model.take_new_alerts()] == ["5"]
    clock.advance(5 * 60)  # expired: the backend will terminate it
    model.tick()
    assert kinds(model) == []


def test_tick_does_nothing_for_clusters_not_due(model, clock, monkeypatch):
    apply(model, snapshot(*[cluster(f"c{i}", f"n{i}", expires_in_s=10 * 3600) for i in range(200)]))
    calls = []
    original = model._recompute_alerts
    monkeypatch.setattr(
        model, "_recompute_alerts", lambda cid, now: calls.append(cid) or original(cid, now)
    )
    for _ in range(10):
        clock.advance(1)
        model.tick()
    assert calls == []


def test_idle_gpus_alert_after_ten_minutes_with_the_cost(model, clock):
    # 2 replicas x 4 GPUs at $20/h: $2.50 per GPU-hour; 3 idle GPUs cost $7.50/h.
    apply(model, snapshot(cluster("a", "alpha", idle=3, util=2.0)))
    for _ in range(119):  # every 5 s for 9 min 55 s
        clock.advance(5)
        apply(
            model,
            {
                "type": "summaries",
                "clusters": {
                    "a": {
                        "gpus": 8,
                        "mean_utilization": 2.0,
                        "idle_gpus": 3,
                        "telemetry": "simulated",
                    }
                },
            },
        )
        model.tick()
    assert kinds(model) == []
    clock.advance(5)
    model.tick()
    (alert,) = model.alerts()
    assert alert.kind == "idle" and "you pay $7.50/h for idle GPUs" in alert.message
    # Busy again: the alert clears.
    apply(
        model,
        {
            "type": "summaries",
            "clusters": {
                "a": {"gpus": 8, "mean_utilization": 60.0, "idle_gpus": 0, "telemetry": "simulated"}
            },
        },
    )
    assert kinds(model) == []


def test_crash_loop_from_the_reason_or_from_restarts(model, clock):
    crash = [
        {
            "name": "alpha-0",
            "index": 0,
            "phase": "Pending",
            "ready": False,
            "restarts": 4,
            "reason": "CrashLoopBackOff: exited with code 3; restarting in 8s",
            "node": None,
        }
    ]
    apply(model, snapshot(cluster("a", "alpha", states=crash)))
    (alert,) = model.alerts()
    assert (
        alert.kind == "crashloop" and "alpha-0" in alert.message and "4 restarts" in alert.message
    )
    # Restarts counted from frames, without a telling reason.
    apply(model, snapshot(cluster("b", "beta")))
    for n in range(1, 4):
        clock.advance(30)
        states = [
            {
                "name": "beta-0",
                "index": 0,
                "phase": "Running",
                "ready": True,
                "restarts": n,
                "reason": None,
                "node": "n",
            }
        ]
        apply(model, {"type": "cluster", "cluster": cluster("b", "beta", states=states)})
    assert ("b", "crashloop", "error") in kinds(model)
    clock.advance(11 * 60)  # no restart for 10 minutes: no longer crash-looping
    model.tick()
    assert ("b", "crashloop", "error") not in kinds(model)


def test_unschedulable_and_failed_alerts_carry_the_reason(model):
    pending = [
        {
            "name": f"alpha-{i}",
            "index": i,
            "phase": "Pending",
            "ready": False,
            "restarts": 0,
            "reason": "Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu",
            "node": None,
        }
        for i in range(2)
    ]
    apply(
        model,
        snapshot(
            cluster("a", "alpha", status="pending", states=pending),
            cluster("f", "fox", status="failed", states=[]),
        ),
    )
    by_kind = {a.kind: a for a in model.alerts()}
    assert "Insufficient nvidia.com/gpu" in by_kind["unschedulable"].message
    assert "replicas alpha-0, alpha-1" in by_kind["unschedulable"].message
    assert by_kind["failed"].message.startswith("fox failed")
    apply(
        model,
        {
            "type": "event",
            "cluster_id": "f",
            "event": {
                "at": "2026-03-02T14:00:00Z",
                "kind": "replica_failed",
                "message": "CUDA error: out of memory",
            },
        },
    )
    failed = next(a for a in model.alerts() if a.kind == "failed")
    assert "CUDA error: out of memory" in failed.message
    assert not [a for a in model.take_new_alerts() if a.kind == "failed"][1:]  # notified once


def test_pending_for_an_ordinary_reason_is_not_an_alert(model):
    pending = [
        {
            "name": "alpha-0",
            "index": 0,
            "phase": "Pending",
            "ready": False,
            "restarts": 0,
            "reason": "ContainerCreating",
            "node": "n",
        }
    ]
    apply(model, snapshot(cluster("a", "alpha", status="pending", states=pending)))
    assert kinds(model) == []


def test_low_credit_when_available_is_under_a_day_of_burn(model):
    # $20/h burn -> a day is $480.
    apply(model, snapshot(cluster("a", "alpha"), acct=account("479.000000")))
    (alert,) = model.alerts()
    assert alert.kind == "low_credit" and alert.cluster_id is None
    assert "$479.00" in alert.message and "$20.00/h" in alert.message
    apply(model, {"type": "account", "account": account("481.000000")})
    assert model.alerts() == []
    # Stopping the cluster stops the burn, so even little credit is fine.
    apply(model, {"type": "account", "account": account("1.000000")})
    assert [a.kind for a in model.alerts()] == ["low_credit"]
    apply(model, {"type": "cluster", "cluster": cluster("a", "alpha", status="stopped")})
    assert model.alerts() == [] and model.running_burn == 0


def test_alerts_are_notified_once_per_stage(model, clock):
    apply(model, snapshot(cluster("a", "alpha", expires_in_s=20 * 60)))
    assert [a.kind for a in model.take_new_alerts()] == ["expiring"]
    apply(
        model,
        {
            "type": "cluster",
            "cluster": cluster("a", "alpha", expires_in_s=20 * 60, spent="2.000000"),
        },
    )
    assert model.take_new_alerts() == []


def test_generated_fleet_shows_every_alert_kind():
    clock = Clock()
    model = DashboardModel(clock)
    fleet = GeneratedFleet(12)
    apply(model, fleet.snapshot_frame())
    for _ in range(121):
        clock.advance(5)
        apply(model, fleet.summaries_frame(0.0))
        model.tick()
    assert {a.kind for a in model.alerts()} == {
        "expiring",
        "idle",
        "crashloop",
        "failed",
        "unschedulable",
        "low_credit",
        "gpu_health",
    }


def test_terminated_costs_and_find(model):
    apply(
        model,
        snapshot(
            cluster("a", "alpha", status="terminated", spent="12.340000"), cluster("b", "beta")
        ),
    )
    assert [(c["id"], spent) for c, spent in model.terminated_costs()] == [("a", 12_340_000)]
    assert model.find("beta")["id"] == "b"
    assert model.find("b")["id"] == "b"
    assert model.find("alpha") is None  # a terminated name may be reused


def test_telemetry_sources_are_counted_incrementally(model):
    a = cluster("a", "alpha")
    b = cluster("b", "beta")
    b["gpu_summary"]["telemetry"] = "nvml"
    apply(model, snapshot(a, b))
    assert model.telemetry_sources() == ["nvml", "simulated"]
    assert model.telemetry_sources(["a"]) == ["simulated"]
    apply(model, {"type": "cluster_removed", "id": "b"})
    assert model.telemetry_sources() == ["simulated"]
    apply(
        model,
        {
            "type": "summaries",
            "clusters": {
                "a": {"gpus": 8, "mean_utilization": 1.0, "idle_gpus": 0, "telemetry": "dcgm"}
            },
        },
    )
    assert model.telemetry_sources() == ["dcgm"]
