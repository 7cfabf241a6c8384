"""Folding the output of a command run on many replicas (`ecotui.tools.fold`)."""

from __future__ import annotations

import pytest

from ecotui.tools.fold import (
    ReplicaOutcome,
    fold,
    heading,
    parse_selection,
    render,
    replica_ranges,
)


def test_ranges_fold_runs_of_three_or_more():
    names = [f"demo-{i}" for i in (0, 1, 2, 3, 4, 5, 7)]
    assert replica_ranges(names) == "demo-0..5,7"
    assert heading(names) == "demo-0..5,7 (7 replicas)"
    assert replica_ranges(["demo-10", "demo-2", "demo-3"]) == "demo-2,3,10"
    assert heading(["web-1"]) == "web-1 (1 replica)"
    assert replica_ranges(["a-0", "b-1", "b-2", "b-3", "pod"]) == "a-0, b-1..3, pod"


def test_fold_groups_identical_output_majority_first():
    outs = [ReplicaOutcome(f"d-{i}", b"same\n", exit_code=0) for i in range(5)]
    outs.insert(2, ReplicaOutcome("d-9", b"other\n", exit_code=1))
    groups = fold(outs)
    assert [g.names for g in groups] == [["d-0", "d-1", "d-2", "d-3", "d-4"], ["d-9"]]


def test_render_shows_majority_once_and_diffs_the_rest():
    outs = [
        ReplicaOutcome(f"demo-{i}", b"gpu0 ok\ngpu1 ok\n", exit_code=0)
        for i in (0, 1, 2, 3, 4, 5, 7)
    ]
    outs.append(ReplicaOutcome("demo-6", b"gpu0 ok\ngpu1 FAIL\n", exit_code=2))
    text = render(outs)
    assert text.count("gpu0 ok") == 2  # once in full, once as diff context
    assert "=== demo-0..5,7 (7 replicas) · exit 0" in text
    assert "=== demo-6 (1 replica) · exit 2 · differs from the majority" in text
    assert "--- demo-0..5,7" in text and "+++ demo-6" in text
    assert "-gpu1 ok" in text and "+gpu1 FAIL" in text
    assert "exit 0: demo-0..5,7 (7 replicas)" in text
    assert "exit 2: demo-6 (1 replica)" in text


def test_same_output_different_codes_is_one_group_with_both_codes():
    outs = [
        ReplicaOutcome("r-0", b"x\n", exit_code=0),
        ReplicaOutcome("r-1", b"x\n", exit_code=3),
        ReplicaOutcome("r-2", b"", timed_out=True, error="timed out after 1 s"),
    ]
    text = render(outs)
    assert "=== r-0,1 (2 replicas) · exit 0, exit 3" in text
    assert "timed out: r-2 (1 replica)" in text


def test_stderr_lines_are_marked():
    text = render([ReplicaOutcome("r-0", b"out\n", b"bad\n", 1)])
    assert "out\n[stderr] bad\n" in text


def test_selection():
    names = [f"demo-{i}" for i in range(8)]
    assert parse_selection("demo-1,3,5-6", names) == ["demo-1", "demo-3", "demo-5", "demo-6"]
    assert parse_selection("0..2,1", names) == ["demo-0", "demo-1", "demo-2"]
    with pytest.raises(ValueError, match="no replica 'demo-9'"):
        parse_selection("demo-9", names)
    with pytest.raises(ValueError, match="index 8"):
        parse_selection("6-8", names)
    with pytest.raises(ValueError):
        parse_selection(",", names)
