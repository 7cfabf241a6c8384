"""The verdict rules of ecocore.gpu_health: one test per rule and per verdict, the
thresholds at their edges, and the roll-up."""

from __future__ import annotations

import pytest

from ecocore.gpu_health import (
    FAILING_XIDS,
    PCIE_REPLAY_RISE,
    THROTTLE_SUSTAINED_S,
    XID_HOLD_S,
    GpuHealth,
    GpuProcess,
    MigInstance,
    Verdict,
    XidEvent,
    evaluate,
    throttle_from_mask,
    worst,
    xid_meaning,
)

NOW = 1_800_000_000.0
HEALTHY = GpuHealth(
    xid_events=(),
    ecc_sbe_volatile=3,
    ecc_dbe_volatile=0,
    ecc_sbe_aggregate=40,
    ecc_dbe_aggregate=0,
    retired_pages_sbe=0,
    retired_pages_dbe=0,
    retired_pages_pending=False,
    remap_correctable=0,
    remap_uncorrectable=0,
    remap_pending=False,
    remap_failed=False,
    throttle={"power_cap": 900.0, "idle": 50.0},
    sm_clock_mhz=1410,
    sm_clock_max_mhz=1980,
    mem_clock_mhz=2619,
    pcie_gen=4,
    pcie_gen_max=5,
    pcie_width=8,
    pcie_width_max=16,
    pcie_replays=5,
    nvlink_links=18,
    nvlink_crc_errors=2,
    nvlink_replay_errors=0,
    nvlink_recovery_errors=0,
    mig_mode=False,
    mig_instances=(),
    processes=(),
)


def with_(**kw) -> GpuHealth:
    from dataclasses import replace

    return replace(HEALTHY, **kw)


def test_healthy_gpu_is_ok_even_with_power_cap_sbe_and_narrow_link():
    assert evaluate(HEALTHY, NOW, nvlink_errors_before=2, pcie_replays_before=5) == Verdict("ok")


def test_no_readings_is_unknown_not_ok():
    assert evaluate(None, NOW).level == "unknown"
    assert evaluate(GpuHealth(), NOW).level == "unknown"


@pytest.mark.parametrize("code", sorted(FAILING_XIDS))
def test_each_fatal_xid_is_failing_with_its_meaning(code):
    v = evaluate(with_(xid_events=(XidEvent(code, NOW - 60),)), NOW)
    assert v.level == "failing"
    assert v.reason == f"XID {code}: {xid_meaning(code)}"


def test_xid_79_reads_fallen_off_the_bus():
    assert (
        evaluate(with_(xid_events=(XidEvent(79, NOW),)), NOW).reason
        == "XID 79: GPU has fallen off the bus"
    )


def test_fatal_xid_is_held_for_the_hold_time_then_released():
    at = NOW - XID_HOLD_S
    assert evaluate(with_(xid_events=(XidEvent(48, at),)), NOW).level == "failing"
    assert evaluate(with_(xid_events=(XidEvent(48, at - 1),)), NOW).level == "ok"


def test_xid_without_a_time_counts_as_recent():
    assert evaluate(with_(xid_events=(XidEvent(94, None),)), NOW).level == "failing"


@pytest.mark.parametrize("code", [13, 31, 43, 45, 68])
def test_application_xids_do_not_blame_the_gpu(code):
    assert evaluate(with_(xid_events=(XidEvent(code, NOW),)), NOW).level == "ok"


def test_other_xid_is_degraded():
    v = evaluate(with_(xid_events=(XidEvent(119, NOW),)), NOW)
    assert v == Verdict("degraded", "XID 119: GSP RPC timeout")


def test_any_double_bit_ecc_is_failing():
    assert evaluate(with_(ecc_dbe_volatile=1), NOW) == Verdict(
        "failing", "1 double-bit ECC error(s)"
    )


def test_aggregate_double_bit_alone_is_history_not_a_verdict():
    assert evaluate(with_(ecc_dbe_aggregate=3), NOW).level == "ok"


def test_failed_row_remap_is_failing():
    assert evaluate(with_(remap_failed=True), NOW) == Verdict("failing", "row remapping failed")


def test_pending_row_remap_is_degraded():
    assert evaluate(with_(remap_pending=True), NOW) == Verdict(
        "degraded", "row remap pending (needs a GPU reset)"
    )


def test_pending_page_retirement_is_degraded():
    assert evaluate(with_(retired_pages_pending=True), NOW).level == "degraded"


@pytest.mark.parametrize(
    "reason,label",
    [("thermal", "thermal"), ("hw_slowdown", "hw slowdown"), ("power_brake", "power brake")],
)
def test_sustained_slowdown_is_degraded_from_the_threshold(reason, label):
    short = with_(throttle={reason: THROTTLE_SUSTAINED_S - 1})
    assert evaluate(short, NOW).level == "ok"
    long = with_(throttle={reason: THROTTLE_SUSTAINED_S})
    assert evaluate(long, NOW) == Verdict("degraded", f"{label} throttling for 5m00s")


def test_power_cap_sync_boost_and_idle_never_degrade():
    h = with_(throttle={"power_cap": 1e6, "sync_boost": 1e6, "idle": 1e6})
    assert evaluate(h, NOW).level == "ok"


def test_rising_nvlink_errors_are_degraded():
    v = evaluate(with_(nvlink_crc_errors=7, nvlink_recovery_errors=1), NOW, nvlink_errors_before=2)
    assert v == Verdict("degraded", "NVLink errors rising (+6)")
    # Same count as the start of the window: not rising.
    assert evaluate(HEALTHY, NOW, nvlink_errors_before=2).level == "ok"
    # No earlier reading: cannot say it is rising.
    assert evaluate(with_(nvlink_crc_errors=100), NOW).level == "ok"


def test_pcie_replays_rising_past_the_threshold_are_degraded():
    base = 5
    assert (
        evaluate(
            with_(pcie_replays=base + PCIE_REPLAY_RISE - 1), NOW, pcie_replays_before=base
        ).level
        == "ok"
    )
    v = evaluate(with_(pcie_replays=base + PCIE_REPLAY_RISE), NOW, pcie_replays_before=base)
    assert v == Verdict("degraded", f"PCIe replays rising (+{PCIE_REPLAY_RISE})")


def test_failing_wins_over_degraded_and_lists_every_reason():
    h = with_(
        ecc_dbe_volatile=2, remap_failed=True, remap_pending=True, throttle={"thermal": 900.0}
    )
    v = evaluate(h, NOW)
    assert v.level == "failing"
    assert v.reason == "2 double-bit ECC error(s); row remapping failed"


def test_worst_rolls_up_replicas_clusters_and_fleets():
    ok, unk = Verdict("ok"), Verdict("unknown", "no health readings from this source")
    deg, fail = Verdict("degraded", "thermal"), Verdict("failing", "XID 79")
    assert worst([ok, deg, ok]) == deg
    assert worst([deg, fail, unk]) == fail
    assert worst([ok, unk]) == unk
    assert worst([ok, ok]) == ok
    assert worst([]).level == "unknown"


def test_throttle_mask_bits():
    assert throttle_from_mask(0) == ()
    assert throttle_from_mask(0x1) == ("idle",)
    assert throttle_from_mask(0x4 | 0x40) == ("power_cap", "thermal")
    assert throttle_from_mask(0x8 | 0x10 | 0x20 | 0x80) == (
        "thermal",
        "hw_slowdown",
        "sync_boost",
        "power_brake",
    )


def test_json_round_trip_keeps_unknowns_as_null():
    h = with_(
        xid_events=(XidEvent(79, NOW),),
        processes=(GpuProcess(7, "python", 512, "web-0"),),
        mig_mode=True,
        mig_instances=(MigInstance(3, 0, "1g.10gb", 9984),),
        pcie_replays=None,
    )
    d = h.as_json()
    assert d["pcie_replays"] is None
    assert d["xid_events"] == [{"code": 79, "at": NOW, "meaning": "GPU has fallen off the bus"}]
    assert GpuHealth.from_json(d) == h
    assert GpuHealth.from_json(GpuHealth().as_json()) == GpuHealth()
