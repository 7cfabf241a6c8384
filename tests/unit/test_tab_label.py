"""The shells view's tab labels: the active tab reads differently in plain text."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from ecotui.screens.shell_tools import tab_label


def _pane(label: str) -> SimpleNamespace:
    return SimpleNamespace(label=label, recorder=None, cluster_info=None)


def test_the_active_tab_has_a_glyph_the_others_do_not() -> None:
    now = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
    active = tab_label(_pane("demo/demo-0"), now, active=True).plain
    other = tab_label(_pane("demo/demo-1"), now).plain
    assert active.startswith("› ") and active.endswith("demo/demo-0")
    assert not other.lstrip().startswith("›") and other.endswith("demo/demo-1")
    # The same width either way: switching tabs does not shift the tab bar.
    assert len(active) - len("demo/demo-0") == len(other) - len("demo/demo-1")


def test_recording_is_marked_in_words() -> None:
    pane = _pane("demo/demo-0")
    pane.recorder = object()
    assert "● REC demo/demo-0" in tab_label(pane, active=True).plain
