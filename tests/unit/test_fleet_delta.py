"""Incremental `GET /gpus` answers: whole, since a kept version, unknown versions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ecocore.fleet_delta import RowVersions, apply_answer, row_key


def row(cid: str, replica: str, index: int, util: float, verdict: str = "ok") -> dict:
    return {
        "cluster_id": cid,
        "replica": replica,
        "index": index,
        "cluster": "c",
        "utilization": util,
        "health": {"verdict": verdict, "reason": None},
    }


def test_whole_then_only_changes():
    v = RowVersions()
    a = [row("gc_1", "r-0", 0, 10.0), row("gc_1", "r-0", 1, 20.0), row("gc_2", "r-0", 0, 5.0)]
    first = v.answer(a, None)
    assert "since" not in first and first["gpus"] == a
    b = [
        row("gc_1", "r-0", 0, 10.0),
        row("gc_1", "r-0", 1, 30.0, "failing"),
        row("gc_3", "r-1", 0, 1.0),
    ]
    d = v.answer(b, first["version"])
    assert d["since"] == first["version"]
    # Unchanged row: absent. Changed: key + changed fields only. New: whole.
    assert d["gpus"] == [
        {
            "cluster_id": "gc_1",
            "replica": "r-0",
            "index": 1,
            "utilization": 30.0,
            "health": {"verdict": "failing", "reason": None},
        },
        row("gc_3", "r-1", 0, 1.0),
    ]
    assert d["removed"] == [["gc_2", "r-0", 0]]
    held = {row_key(r): r for r in a}
    rows, changed = apply_answer(held, d)
    assert rows == {row_key(r): r for r in b}
    assert changed == {("gc_1", "r-0", 1), ("gc_3", "r-1", 0), ("gc_2", "r-0", 0)}


def test_unknown_or_dropped_versions_get_the_whole_list():
    v = RowVersions(keep=2)
    first = v.answer([row("gc_1", "r", 0, 1.0)], None)
    v.answer([row("gc_1", "r", 0, 2.0)], None)
    v.answer([row("gc_1", "r", 0, 3.0)], None)  # the first version is no longer kept
    again = v.answer([row("gc_1", "r", 0, 4.0)], first["version"])
    assert "since" not in again and again["gpus"] == [row("gc_1", "r", 0, 4.0)]
    assert "since" not in v.answer([], "not-a-version")
    # Another list's versions never match (each keeper names its own).
    assert "since" not in RowVersions().answer([], again["version"])


rows_st = st.dictionaries(
    st.tuples(st.sampled_from(["gc_1", "gc_2"]), st.sampled_from(["a", "b"]), st.integers(0, 3)),
    st.tuples(st.floats(0, 100, allow_nan=False), st.sampled_from(["ok", "degraded", "failing"])),
    max_size=12,
)


@given(rows_st, rows_st)
def test_applying_a_delta_gives_the_new_list(before, after):
    a = [row(*k, *v) for k, v in before.items()]
    b = [row(*k, *v) for k, v in after.items()]
    keeper = RowVersions()
    first = keeper.answer(a, None)
    held, _ = apply_answer({}, first)
    rows, _ = apply_answer(held, keeper.answer(b, first["version"]))
    assert rows == {row_key(r): r for r in b}
