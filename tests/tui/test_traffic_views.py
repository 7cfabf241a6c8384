"""The service URL's traffic in the views, on the generated fleet (frames pushed by the
test): per replica beside the GPU utilisation, per cluster in the clusters view, and
how the replicas are reached. Unknown traffic shows as "—", never as 0."""

from __future__ import annotations

import copy

from ecotui.widgets.replicas_table import ReplicasTable
from support.tui_helpers import (
    fixed_app,
    replica_columns,
    replica_line,
    row_text,
    screen_text,
    wait_for,
    wait_for_text,
)

BIG = (160, 48)
WIDE = (200, 50)  # every replica column fits
SMALL = (80, 24)


def cid_of(fx, name: str) -> str:
    return next(c["id"] for c in fx.fleet.clusters.values() if c["name"] == name)


def cells_of(line: str) -> list[str]:
    return line.split()


async def open_cluster(pilot, fx, name: str) -> None:
    fx.app.open_cluster(cid_of(fx, name))
    await wait_for(pilot, lambda: getattr(fx.app.screen, "_loaded", False), what="history loaded")
    await wait_for_text(pilot, f"{name}-7")


async def test_clusters_view_shows_request_and_5xx_rates():
    fx = fixed_app()
    async with fx.app.run_test(size=BIG) as pilot:
        await wait_for_text(pilot, "12 clusters")
        text = screen_text(fx.app)
        assert "req/s" in text and "5xx/s" in text
        tts = fx.fleet.clusters[cid_of(fx, "tts-serve")]["traffic"]
        row = row_text(fx.app, "tts-serve")
        assert f" {tts['requests_per_s']:.0f} " in row and " 0.4 " in row
        # Counted but idle: a known 0, not unknown.
        assert "✓ ok         0     0 " in row_text(fx.app, "llama-serve")
        # No public URL (bert), stopped (whisper): unknown, never 0.
        for name in ("bert-serve", "whisper-serve"):
            assert "✓ ok         —     —" in row_text(
                fx.app, name
            ) or "—            —     —" in row_text(fx.app, name), row_text(fx.app, name)
        # The next summaries frame moves the rates; traffic gone is unknown again.
        frame = fx.fleet.summaries_frame(5.0)
        frame["traffic"][cid_of(fx, "tts-serve")] = {
            **tts,
            "requests_per_s": 1234.0,
            "errors_5xx_per_s": 12.0,
        }
        frame["traffic"][cid_of(fx, "llama-serve")] = None
        fx.source.push(frame)
        await wait_for(
            pilot, lambda: " 1.2k " in row_text(fx.app, "tts-serve"), what="new request rate"
        )
        assert " 12 " in row_text(fx.app, "tts-serve")
        assert "✓ ok         —     —" in row_text(fx.app, "llama-serve")


async def test_clusters_view_sorts_by_request_rate():
    fx = fixed_app()
    async with fx.app.run_test(size=BIG) as pilot:
        await wait_for_text(pilot, "12 clusters")
        fx.app.model.set_sort("reqs", reverse=True)
        fx.app.repaint_now()
        await wait_for_text(pilot, "sort: req/s ▼")
        lines = screen_text(fx.app).splitlines()
        head = next(i for i, ln in enumerate(lines) if " cluster " in ln and " status " in ln)
        assert "tts-serve" in lines[head + 1] and "llama-serve" in lines[head + 2]


async def test_cluster_view_shows_replica_traffic_beside_gpu_util():
    fx = fixed_app()
    async with fx.app.run_test(size=WIDE) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await open_cluster(pilot, fx, "tts-serve")
        text = screen_text(fx.app)
        header = next(ln for ln in text.splitlines() if " replica " in ln and " phase " in ln)
        for label in ("GPU util", "util", "req/s", "5xx", "in flight", "p99", "health", "reason"):
            assert label in header, label
        assert header.index("util") < header.index("req/s")
        # Replica 2 answers some requests with 5xx; its p99 and in-flight count show.
        rep = fx.fleet.replicas_list(cid_of(fx, "tts-serve"), 0.0)[2]["traffic"]
        line = cells_of(replica_line(fx.app, "tts-serve-2"))
        assert f"{rep['requests_per_s']:.0f}" in line and "0.4" in line
        assert str(rep["in_flight"]) in line and f"{rep['latency_p99_ms']:.0f}ms" in line
        # How the service URL reaches the replicas, and the cluster's rates, in the title.
        assert "Replicas · 125 req/s · 5xx 0.4/s · direct to pod IPs · 12 in flight" in text


async def test_cluster_view_at_80x24_keeps_health_reason_and_traffic():
    fx = fixed_app()
    async with fx.app.run_test(size=SMALL) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await open_cluster(pilot, fx, "tts-serve")
        table = fx.app.screen.query_one(ReplicasTable)
        await wait_for(
            pilot,
            lambda: (
                [k for k, _ in table.shown]
                == [
                    "replica",
                    "phase",
                    "ready",
                    "health",
                    "restarts",
                    "reason",
                    "util",
                    "rps",
                    "5xx",
                ]
            ),
            what="columns by priority",
        )
        assert all(len(ln) <= 80 for ln in screen_text(fx.app).splitlines())
        cells = replica_columns(fx.app, "tts-serve-2", ("health", "util", "req/s", "5xx"))
        assert cells["health"] == "✓ ok" and cells["5xx"] == "0.4"
        assert cells["util"].endswith("%") and float(cells["req/s"]) > 0


async def test_cluster_view_80x24_says_the_port_forward_path():
    fx = fixed_app()
    async with fx.app.run_test(size=SMALL) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await open_cluster(pilot, fx, "llama-serve")
        text = screen_text(fx.app)
        assert "Replicas · 0 req/s · 5xx 0/s · via API server port-forward" in text
        # Idle GPUs, no requests: a low utilisation beside a known 0 req/s.
        cells = replica_columns(fx.app, "llama-serve-0", ("util", "req/s"))
        assert cells["req/s"] == "0" and cells["util"] in ("1%", "2%")


async def test_cluster_view_without_public_url_shows_unknown_traffic():
    fx = fixed_app()
    async with fx.app.run_test(size=WIDE) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await open_cluster(pilot, fx, "bert-serve")
        assert "Replicas · — req/s (no public URL)" in screen_text(fx.app)
        cells = replica_columns(
            fx.app, "bert-serve-0", ("util", "req/s", "5xx", "in flight", "p99")
        )
        assert cells["util"].endswith("%")
        assert [cells[k] for k in ("req/s", "5xx", "in flight", "p99")] == ["—"] * 4


async def test_replica_traffic_follows_replicas_frames():
    fx = fixed_app()
    async with fx.app.run_test(size=WIDE) as pilot:
        await wait_for_text(pilot, "12 clusters")
        await open_cluster(pilot, fx, "tts-serve")
        cid = cid_of(fx, "tts-serve")
        frame = copy.deepcopy(fx.fleet.replicas_frame(cid, 0.0))
        frame["replicas"][0]["traffic"].update(
            requests_per_s=640.0, in_flight=17, latency_p99_ms=2500.0
        )
        frame["replicas"][1]["traffic"] = None
        fx.source.push(frame)
        await wait_for(
            pilot,
            lambda: "640" in cells_of(replica_line(fx.app, "tts-serve-0")),
            what="replica 0's new rate",
        )
        line = cells_of(replica_line(fx.app, "tts-serve-0"))
        assert "17" in line and "2.5s" in line
        assert cells_of(replica_line(fx.app, "tts-serve-1")).count("—") == 4
