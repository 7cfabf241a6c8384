"""GPU history: bounded per-GPU samples for the clusters a view draws, the fleet's
utilisation sparklines, and the live mean utilisation of focused clusters.

Memory stays bounded however large the fleet and however long the session: samples
per GPU are capped, and only the clusters in view (plus a few recent ones) keep them.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ecotui.model.values import Sample, summary_util
from ecotui.wording import parse_time_or_none

if TYPE_CHECKING:
    from ecocore.wire import MetricsOut

GpuSamples = dict[tuple[str, int], deque[Sample]]


class GpuHistory:
    def __init__(
        self, *, history_len: int = 900, spark_len: int = 24, history_clusters: int = 4
    ) -> None:
        self.history_len = history_len
        self.spark_len = spark_len
        self.history_clusters = history_clusters
        # Per focused cluster: (replica name, gpu index) -> bounded samples.
        self.gpu_history: OrderedDict[str, GpuSamples] = OrderedDict()
        self.util_spark: dict[str, deque[float]] = {}
        self.live_util: dict[str, float] = {}
        self.focused: frozenset[str] = frozenset()
        # Clusters whose per-GPU history is kept (those a cluster view shows); the others
        # in focus keep only their latest replicas and mean utilisation.
        self.history_wanted: frozenset[str] = frozenset()
        self.focus_used = False

    def wants(self, cid: str) -> bool:
        """Whether a replicas frame for this cluster is kept at all."""
        return not self.focus_used or cid in self.focused

    def add_replicas(self, cid: str, reps: Iterable[Mapping[str, Any]], now: datetime) -> bool:
        """Fold one replicas frame; True when it carried GPU readings (the mean moved).
        Whether history was recorded is `records(cid)`."""
        total = n = 0.0
        if cid in self.history_wanted or not self.focus_used:
            hist = self.samples_for(cid)
            t = now.timestamp()
            maxlen = self.history_len
            for r in reps:
                for g in r.get("gpus") or ():
                    key = (r.get("name", ""), int(g.get("index", 0)))
                    dq = hist.get(key)
                    if dq is None:
                        dq = hist[key] = deque(maxlen=maxlen)
                    u = float(g.get("utilization") or 0.0)
                    dq.append(
                        (
                            t,
                            u,
                            float(g.get("memory_used_mib") or 0),
                            float(g.get("temperature_c") or 0.0),
                            float(g.get("power_w") or 0.0),
                        )
                    )
                    total += u
                    n += 1
        else:
            for r in reps:
                for g in r.get("gpus") or ():
                    total += float(g.get("utilization") or 0.0)
                    n += 1
        if n:
            self.live_util[cid] = total / n
            return True
        return False

    def records(self, cid: str) -> bool:
        return cid in self.history_wanted or not self.focus_used

    def load_metrics(self, cid: str, metrics: MetricsOut) -> None:
        """History from GET /metrics, e.g. after a reconnect: backfills the gap."""
        hist = self.samples_for(cid)
        for rep in metrics.replicas:
            for g in rep.gpus:
                key = (rep.name, g.index)
                restored: list[Sample] = []
                for s in g.samples:
                    when = parse_time_or_none(s[0])
                    if when is None:
                        continue
                    restored.append(
                        (
                            when.timestamp(),
                            float(s[1] or 0),
                            float(s[2] or 0),
                            float(s[3] or 0),
                            float(s[4] or 0),
                        )
                    )
                old = hist.get(key) or deque()
                last_restored = restored[-1][0] if restored else float("-inf")
                first_restored = restored[0][0] if restored else float("inf")
                merged = (
                    [s for s in old if s[0] < first_restored]
                    + restored
                    + [s for s in old if s[0] > last_restored]
                )
                hist[key] = deque(merged, maxlen=self.history_len)

    def push_spark(self, cid: str, summary: Mapping[str, Any]) -> None:
        mu = summary_util(summary)
        if mu is None:
            return
        dq = self.util_spark.get(cid)
        if dq is None:
            dq = self.util_spark[cid] = deque(maxlen=self.spark_len)
        dq.append(float(mu))

    def set_focus(self, ids: Iterable[str], history: Iterable[str] | None = None) -> bool:
        """The clusters now on screen (and, of those, the ones whose per-GPU history a
        view draws; default all). Returns True when the focus changed."""
        new = frozenset(ids)
        wanted = new if history is None else frozenset(history)
        self.focus_used = True
        if new == self.focused and wanted == self.history_wanted:
            return False
        self.focused = new
        self.history_wanted = wanted
        for cid in list(self.live_util):
            if cid not in new:
                del self.live_util[cid]
        for cid in wanted:
            if cid in self.gpu_history:
                self.gpu_history.move_to_end(cid)
        self._evict()
        return True

    def mean_util(self, cid: str) -> float | None:
        """The live mean of a focused cluster (None: ask the summary)."""
        if cid in self.focused:
            return self.live_util.get(cid)
        return None

    def samples_for(self, cid: str) -> GpuSamples:
        hist = self.gpu_history.get(cid)
        if hist is None:
            hist = self.gpu_history[cid] = {}
            self.gpu_history.move_to_end(cid)
            self._evict()
        else:
            self.gpu_history.move_to_end(cid)
        return hist

    def _evict(self) -> None:
        while len(self.gpu_history) > max(self.history_clusters, len(self.history_wanted)):
            victim = next((k for k in self.gpu_history if k not in self.history_wanted), None)
            if victim is None:
                break
            del self.gpu_history[victim]

    def forget(self, cid: str) -> None:
        for d in (self.util_spark, self.live_util):
            d.pop(cid, None)
        self.gpu_history.pop(cid, None)
