"""The service URL's traffic in words and cells: unknown is "—", never 0."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ecotui import traffic
from ecotui.cli import render_cluster
from ecotui.model import DashboardModel
from ecotui.testing import GeneratedFleet, as_frame
from ecotui.widgets.replicas_table import replica_cells

BUSY = {"requests_per_s": 12.34, "errors_5xx_per_s": 0.4, "in_flight": 3, "path": "pod-ip"}
REPLICA = {
    "path": "port-forward",
    "requests_per_s": 0.0,
    "errors_5xx_per_s": 0.0,
    "statuses": {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0},
    "in_flight": 0,
    "latency_p50_ms": None,
    "latency_p99_ms": None,
}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "—"),
        (0, "0"),
        (0.0, "0"),
        (0.04, "0.0"),
        (0.4, "0.4"),
        (9.96, "10"),
        (12.34, "12"),
        (999.4, "999"),
        (999.6, "1.0k"),
        (1234.0, "1.2k"),
        ("junk", "—"),
    ],
)
def test_rates_per_second(value, text):
    assert traffic.fmt_per_s(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "—"),
        (0.8, "0.8ms"),
        (42.4, "42ms"),
        (1320.0, "1.3s"),
    ],
)
def test_latencies(value, text):
    assert traffic.fmt_ms(value) == text


def apply(model: DashboardModel, frame) -> None:
    """Fold a frame given as the backend's JSON object, parsed as the watch client does."""
    model.apply(as_frame(frame))


def test_paths_in_words():
    assert traffic.path_words("local") == "direct"
    assert traffic.path_words("pod-ip") == "direct to pod IPs"
    assert traffic.path_words("port-forward") == "via API server port-forward"
    assert traffic.path_words("pod-ip,port-forward") == (
        "direct to pod IPs and via API server port-forward"
    )
    assert traffic.path_words(None) is None


def test_replica_cells_unknown_and_known():
    # No traffic object (no public URL, nothing counted yet): every cell is "—".
    cells = replica_cells({"name": "r-0", "phase": "Running", "ready": True, "traffic": None})
    assert [cells[k] for k in ("rps", "5xx", "inflight", "p99")] == ["—"] * 4
    # Counted and idle: the rates are a known 0; the p99 of no request is unknown.
    cells = replica_cells({"name": "r-0", "phase": "Running", "traffic": REPLICA})
    assert [cells[k] for k in ("rps", "5xx", "inflight", "p99")] == ["0", "0", "0", "—"]
    busy = {
        **REPLICA,
        "requests_per_s": 25.0,
        "errors_5xx_per_s": 1.5,
        "in_flight": 4,
        "latency_p99_ms": 250.0,
    }
    cells = replica_cells({"name": "r-0", "phase": "Running", "traffic": busy})
    assert [cells[k] for k in ("rps", "5xx", "inflight", "p99")] == ["25", "1.5", "4", "250ms"]


def test_cluster_summary_says_how_replicas_are_reached():
    assert traffic.cluster_summary({"traffic": BUSY, "endpoint": {"port": 1}}) == (
        "12 req/s · 5xx 0.4/s · direct to pod IPs · 3 in flight"
    )
    assert traffic.cluster_summary({"traffic": None, "endpoint": {"port": 1}}) == "— req/s"
    assert traffic.cluster_summary({"traffic": None, "endpoint": None}) == (
        "— req/s (no public URL)"
    )


def test_show_prints_the_traffic_line():
    c = GeneratedFleet(12, 2, 1).clusters["gc_00009"]  # running, with a public URL
    assert c["traffic"] is not None
    out = render_cluster(c)
    line = next(ln for ln in out.splitlines() if ln.startswith("  traffic"))
    assert "req/s" in line and "direct to pod IPs" in line and "—" not in line
    out = render_cluster({**c, "traffic": None, "endpoint": None})
    assert "  traffic      — req/s (no public URL)" in out.splitlines()


class Clock:
    def now(self):
        return datetime(2026, 3, 2, 14, 0, tzinfo=UTC)


def test_summaries_carry_traffic_into_the_model_and_its_order():
    fleet = GeneratedFleet(12, 2, 1)
    m = DashboardModel(Clock())
    apply(m, fleet.snapshot_frame())
    m.take_changes()
    cid = "gc_00009"
    before = m.clusters[cid]["traffic"]
    frame = fleet.summaries_frame(3.0)
    frame["traffic"][cid] = {**before, "requests_per_s": 999.0}
    apply(m, frame)
    assert m.clusters[cid]["traffic"]["requests_per_s"] == 999.0
    assert cid in m.take_changes().clusters
    # A repeated frame changes nothing.
    apply(m, frame)
    assert cid not in m.take_changes().clusters
    # Sorted by request rate: the busiest first when reversed, unknown ones last.
    m.set_sort("reqs", reverse=True)
    order = m.ordered_ids()
    assert order[0] == cid and order[1] == "gc_00000"  # 999 req/s, then the idle 0
    assert all(m.clusters[i]["traffic"] is None for i in order[2:])
    # A summaries frame of an older backend (no traffic) keeps what is known.
    apply(m, {"type": "summaries", "clusters": {}})
    assert m.clusters[cid]["traffic"]["requests_per_s"] == 999.0
    # Traffic that becomes unknown is unknown again, not 0.
    apply(m, {"type": "summaries", "clusters": {}, "traffic": {cid: None}})
    assert m.clusters[cid]["traffic"] is None


def test_an_unknown_path_is_shown_not_obeyed():
    assert traffic.path_words("tunnel\x1b[31m") == "tunnel␛[31m"
