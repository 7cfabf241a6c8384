"""The clusters list as a person asked for it: sorted, filtered and grouped, cached
until something that moves a row changes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ecotui.gpu_health import cluster_health, health_rank
from ecotui.model.values import STATUS_ORDER, ClusterView, GroupRow, summary_util
from ecotui.traffic import sort_value as traffic_sort_value

SORT_COLUMNS = (
    "name",
    "status",
    "region",
    "gpu",
    "replicas",
    "util",
    "health",
    "reqs",
    "5xx",
    "burn",
    "spent",
    "expires",
)
GROUPINGS = (None, "region", "status")


class FleetView:
    """Sort, filter and group over the fleet's clusters (their API dicts and views)."""

    def __init__(
        self,
        clusters: Mapping[str, dict[str, Any]],
        views: Mapping[str, ClusterView],
        on_dirty: Callable[[], None],
    ) -> None:
        self._clusters = clusters
        self._views = views
        self._on_dirty = on_dirty
        self.sort_column = "name"
        self.sort_reverse = False
        self.filter_text = ""
        self.group_by: str | None = None
        self._order_cache: list[str] | None = None

    def dirty(self) -> None:
        self._order_cache = None
        self._on_dirty()

    def forget_order(self) -> None:
        """Drop the cached order without reporting a change (a snapshot reports its own)."""
        self._order_cache = None

    def order_value(self, c: dict[str, Any], view: ClusterView | None) -> Any:
        col = self.sort_column
        if col == "name":
            return c.get("name", "")
        if col == "status":
            return STATUS_ORDER.get(c.get("status", ""), 99)
        if col == "region":
            return c.get("region", "")
        if col == "gpu":
            return (c.get("gpu_type", ""), c.get("gpu_count", 0))
        if col == "health":
            return -health_rank(cluster_health(c)[0])
        if col == "replicas":
            return (c.get("ready_replicas", 0), c.get("replicas", 0))
        if col in ("reqs", "5xx"):
            return traffic_sort_value(c, col)
        if col == "util":
            mu = summary_util(c.get("gpu_summary"))
            return -1.0 if mu is None else mu
        if view is None:
            return 0
        if col == "burn":
            return view.burn
        if col == "spent":
            return view.spent
        if col == "expires":
            return view.expires_at.timestamp() if view.expires_at else float("inf")
        return 0

    def matches(self, c: Mapping[str, Any]) -> bool:
        if not self.filter_text:
            return True
        hay = " ".join(
            str(c.get(k, "")) for k in ("name", "id", "region", "status", "gpu_type")
        ).lower()
        return all(term in hay for term in self.filter_text.lower().split())

    def set_sort(self, column: str, reverse: bool | None = None) -> None:
        if column not in SORT_COLUMNS:
            raise ValueError(column)
        self.sort_column = column
        if reverse is not None:
            self.sort_reverse = reverse
        self.dirty()

    def next_sort(self) -> str:
        i = SORT_COLUMNS.index(self.sort_column)
        self.set_sort(SORT_COLUMNS[(i + 1) % len(SORT_COLUMNS)])
        return self.sort_column

    def reverse_sort(self) -> bool:
        self.sort_reverse = not self.sort_reverse
        self.dirty()
        return self.sort_reverse

    def set_filter(self, text: str) -> None:
        if text != self.filter_text:
            self.filter_text = text
            self.dirty()

    def next_grouping(self) -> str | None:
        i = GROUPINGS.index(self.group_by)
        self.group_by = GROUPINGS[(i + 1) % len(GROUPINGS)]
        self.dirty()
        return self.group_by

    def ordered_ids(self) -> list[str]:
        """Cluster ids that pass the filter, in sort order (cached until something moves)."""
        if self._order_cache is None:
            clusters, views = self._clusters, self._views
            ids = [cid for cid, c in clusters.items() if self.matches(c)]

            def key(cid: str) -> Any:
                return (
                    self.order_value(clusters[cid], views.get(cid)),
                    clusters[cid].get("name", ""),
                    cid,
                )

            ids.sort(key=key, reverse=self.sort_reverse)
            self._order_cache = ids
        return self._order_cache

    def rows(self) -> list[str | GroupRow]:
        """What the clusters table shows: ids, with group headings when grouping."""
        ids = self.ordered_ids()
        if self.group_by is None:
            return list(ids)
        groups: dict[str, list[str]] = {}
        for cid in ids:
            groups.setdefault(str(self._clusters[cid].get(self.group_by, "")), []).append(cid)
        if self.group_by == "status":
            labels = sorted(groups, key=lambda s: STATUS_ORDER.get(s, 99))
        else:
            labels = sorted(groups)
        out: list[str | GroupRow] = []
        for label in labels:
            out.append(GroupRow(label, len(groups[label])))
            out.extend(groups[label])
        return out
