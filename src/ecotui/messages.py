"""Messages that cross screens (widget-specific messages live in their widgets).

Dialogs and shell screens written elsewhere post `ClusterActionDone` after an
action succeeded so the views can say so; the live state itself always comes
back through the watch feed.
"""

from __future__ import annotations

from textual.message import Message


class ClusterActionDone(Message):
    """An action on a cluster went through (the feed will show its effect)."""

    def __init__(self, cluster_id: str, action: str, detail: str = "") -> None:
        super().__init__()
        self.cluster_id = cluster_id
        self.action = action
        self.detail = detail
