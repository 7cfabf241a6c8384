"""What a shell pane says when its kept session ended, for each reason the API gives."""

from __future__ import annotations

import pytest

from ecotui.screens.shells import ShellPane

CLUSTER = {"id": "gc_1", "name": "web"}


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        ("backend_restart", "session ended by a backend restart"),
        ("instance_gone", "session ended with the backend instance that held it"),
        ("deleted", "session ended (ended by its owner)"),
        ("something_new", "session ended (something_new)"),
        (None, "session ended (gone)"),
    ],
)
def test_an_ended_session_says_why(reason: str | None, words: str) -> None:
    pane = ShellPane(None, CLUSTER, "web-0")  # type: ignore[arg-type]
    pane.state = "ended"
    pane.ended_reason = reason
    text = pane.status_text()
    assert text.startswith(words), text
    assert text.endswith("press Enter for a new shell")
