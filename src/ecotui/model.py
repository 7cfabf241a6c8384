"""The dashboard's view model: everything the screens show, fed by /watch frames.

Pure Python (no textual, no IO): the app's watch worker calls `apply(frame)` for
every frame, a timer calls `tick()` and `take_changes()` at the repaint rate, and
the screens read what changed. Values are coalesced by nature (the model keeps
the latest value per key) and a dirty set says which rows need repainting, so a
burst of frames costs one repaint per row.

Time-driven alerts (expiring soon, idle GPUs) are scheduled on a heap, so a tick
does work proportional to what became due, never to the size of the fleet.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from ecotui.gpu_health import cluster_health, health_rank
from ecotui.traffic import sort_value as traffic_sort_value

MICRO = 1_000_000

# Alert thresholds (issue text): expiring soon at 30 and 5 minutes; GPUs idle
# under 5 % for 10 minutes; a day of burn for the account's available credit.
EXPIRY_WARN = timedelta(minutes=30)
EXPIRY_CRITICAL = timedelta(minutes=5)
IDLE_AFTER = timedelta(minutes=10)
IDLE_UTILIZATION = 5.0
CRASH_WINDOW = timedelta(minutes=10)
CRASH_RESTARTS = 3
# The feed sends summaries every 5 s: no frame for this long means stale data.
STALE_AFTER = timedelta(seconds=15)

STATUS_ORDER = {
    "failed": 0, "pending": 1, "running": 2, "stopping": 3, "stopped": 4,
    "terminating": 5, "terminated": 6,
}
# A symbol beside every status word: status is never told by colour alone.
STATUS_SYMBOL = {
    "running": "●", "pending": "◌", "stopping": "◑", "stopped": "○",
    "terminating": "◑", "terminated": "·", "failed": "✖",
}
LIVE_STATUSES = ("pending", "running", "stopping")
ENDED_STATUSES = ("terminated", "failed")
UNSCHEDULABLE_WORDS = ("unschedulable", "insufficient", "failedscheduling",
                       "didn't match", "no nodes", "not enough")
CRASH_WORDS = ("crashloop", "back-off", "backoff")

SORT_COLUMNS = ("name", "status", "region", "gpu", "replicas", "util", "health", "reqs", "5xx",
                "burn", "spent", "expires")
GROUPINGS = (None, "region", "status")


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """Wall-clock time in UTC (tests inject a fake one)."""

    def now(self) -> datetime:
        return datetime.now(UTC)


# -- parsing and formatting (pure helpers, also used by the widgets) -----------

def parse_micros(value: Any) -> int:
    """API money ("29.940000") to integer micro-dollars; anything unparsable is 0."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value * MICRO
    try:
        return int((Decimal(str(value)) * MICRO).to_integral_value())
    except (InvalidOperation, ValueError):
        return 0


def parse_time(value: Any) -> datetime | None:
    """RFC 3339 string or epoch seconds to an aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), UTC)
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def fmt_usd(micros: int, *, cents: bool = True) -> str:
    """Micro-dollars for display: "$1,234.56" (rounded half up to the cent)."""
    sign = "-" if micros < 0 else ""
    m = abs(micros)
    if cents:
        c = (m + 5_000) // 10_000
        return f"{sign}${c // 100:,}.{c % 100:02d}"
    return f"{sign}${m // MICRO:,}.{m % MICRO:06d}"


def fmt_rate(micros: int) -> str:
    return f"{fmt_usd(micros)}/h"


def fmt_duration(seconds: float) -> str:
    """A countdown: "3d 4h", "5h 07m", "4m 09s", "12s"."""
    s = int(seconds)
    if s <= 0:
        return "0s"
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    if d:
        return f"{d}d {h}h"
    if h:
        return f"{h}h {m:02d}m"
    if m:
        return f"{m}m {sec:02d}s"
    return f"{sec}s"


def fmt_local(dt: datetime | None, tz: tzinfo | None = None, *, now: datetime | None = None) -> str:
    """A time in local time (or `tz`): "14:05:03" today, "Jan 02 14:05" otherwise."""
    if dt is None:
        return "—"
    local = dt.astimezone(tz)
    if now is not None and now.astimezone(tz).date() == local.date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%b %d %H:%M")


SPARK_BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Iterable[float | None], width: int, *, top: float = 100.0) -> str:
    """Block sparkline of the last `width` values (0..top), padded on the right."""
    vals = list(values)[-width:] if width > 0 else []
    out = []
    for v in vals:
        if v is None:
            out.append(" ")
            continue
        frac = max(0.0, min(1.0, v / top)) if top else 0.0
        out.append(SPARK_BLOCKS[min(len(SPARK_BLOCKS) - 1, int(frac * (len(SPARK_BLOCKS) - 1) + 0.5))])
    return "".join(out) + " " * (width - len(out))


# -- per-cluster numbers, parsed once per cluster frame ------------------------

@dataclass(frozen=True)
class ClusterNums:
    hourly: int
    burn: int
    hold: int
    spent: int
    hold_remaining: int
    projected: int
    expires_at: datetime | None
    created_at: datetime | None
    gpus: int

    @classmethod
    def of(cls, c: dict[str, Any]) -> ClusterNums:
        cost = c.get("cost") or {}
        return cls(
            hourly=parse_micros(c.get("hourly_rate")),
            burn=parse_micros(c.get("burn_rate")),
            hold=parse_micros(cost.get("hold")),
            spent=parse_micros(cost.get("spent")),
            hold_remaining=parse_micros(cost.get("hold_remaining")),
            projected=parse_micros(cost.get("projected_total")),
            expires_at=parse_time(c.get("expires_at")),
            created_at=parse_time(c.get("created_at")),
            gpus=int(c.get("gpu_count") or 0) * int(c.get("replicas") or 0),
        )

    @property
    def per_gpu_rate(self) -> int:
        return self.hourly // self.gpus if self.gpus else 0


@dataclass(frozen=True)
class Alert:
    """Something the on-call engineer must see: in colour, in words, as a notification."""

    cluster_id: str | None  # None: the account
    kind: str  # expiring | idle | crashloop | failed | unschedulable | low_credit
    level: str  # "warning" | "error"
    title: str
    message: str
    # A notification is sent again only when this changes (30 min -> 5 min).
    stage: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.cluster_id or "", self.kind, self.stage)


def gpu_health_alerts(cid: str, c: Mapping[str, Any]) -> list[Alert]:
    """The model's alert for a cluster with degraded or failing GPUs (one per cluster)."""
    if c.get("status") not in ("running", "pending", "stopping"):
        return []
    verdict, reason, failing, degraded = cluster_health(c)
    name = c.get("name", cid)
    if verdict == "failing":
        return [Alert(cid, "gpu_health", "error", "GPU failing",
                      f"{name}: {failing} GPU{'s' if failing != 1 else ''} failing: {reason}",
                      stage=f"failing:{failing}:{reason}")]
    if verdict == "degraded":
        return [Alert(cid, "gpu_health", "warning", "GPU degraded",
                      f"{name}: {degraded} GPU{'s' if degraded != 1 else ''} degraded: {reason}",
                      stage=f"degraded:{degraded}:{reason}")]
    return []


@dataclass
class ConnectionInfo:
    state: str = "connecting"  # connecting | connected | reconnecting | closed
    attempt: int = 0
    next_retry_at: datetime | None = None
    error: str | None = None
    since: datetime | None = None
    last_frame_at: datetime | None = None
    ever_connected: bool = False


@dataclass
class Changes:
    """What changed since the last repaint."""

    clusters: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    replicas: set[str] = field(default_factory=set)
    events: set[str] = field(default_factory=set)
    history: set[str] = field(default_factory=set)
    account: bool = False
    connection: bool = False
    order: bool = False
    alerts: bool = False
    snapshot: bool = False  # a (re)connection's snapshot arrived

    def __bool__(self) -> bool:
        return bool(self.clusters or self.removed or self.replicas or self.events or self.history
                    or self.account or self.connection or self.order or self.alerts or self.snapshot)


@dataclass(frozen=True)
class GroupRow:
    label: str
    count: int

    @property
    def key(self) -> str:
        return f"group:{self.label}"


Sample = tuple[float, float, float, float, float]  # t (epoch s), util, mem MiB, temp C, power W


def _replica_list(replicas: list[dict[str, Any]]) -> str:
    names = [str(r.get("name", "?")) for r in replicas]
    if len(names) == 1:
        return f"replica {names[0]}"
    if len(names) <= 3:
        return "replicas " + ", ".join(names)
    return f"{len(names)} replicas ({names[0]}, …)"


class DashboardModel:
    """State of one dashboard session: clusters, account, events, replicas, history, alerts."""

    def __init__(self, clock: Clock, *, history_len: int = 900, spark_len: int = 24,
                 events_len: int = 500, history_clusters: int = 4) -> None:
        self.clock = clock
        self.history_len = history_len
        self.spark_len = spark_len
        self.events_len = events_len
        self.history_clusters = history_clusters

        self.clusters: dict[str, dict[str, Any]] = {}
        self.nums: dict[str, ClusterNums] = {}
        self.account: dict[str, Any] | None = None
        self.account_micros: dict[str, int] = {}
        self.events: dict[str, deque[dict[str, Any]]] = {}
        self.replicas: dict[str, list[dict[str, Any]]] = {}
        self.replicas_at: dict[str, datetime] = {}
        self.cluster_at: dict[str, datetime] = {}
        self.stale_ids: set[str] = set()  # clusters whose runtime states are the last known
        # Per focused cluster: (replica name, gpu index) -> bounded samples.
        self.gpu_history: OrderedDict[str, dict[tuple[str, int], deque[Sample]]] = OrderedDict()
        self.util_spark: dict[str, deque[float]] = {}
        self.live_util: dict[str, float] = {}
        self.connection = ConnectionInfo()
        self.snapshots = 0
        self.focused: frozenset[str] = frozenset()
        # Clusters whose per-GPU history is kept (those a cluster view shows); the others
        # in focus keep only their latest replicas and mean utilisation.
        self.history_wanted: frozenset[str] = frozenset()
        self._focus_used = False

        # view options
        self.sort_column = "name"
        self.sort_reverse = False
        self.filter_text = ""
        self.group_by: str | None = None
        self._order_cache: list[str] | None = None

        # alerts
        self._alerts: dict[str, tuple[Alert, ...]] = {}
        self._account_alerts: tuple[Alert, ...] = ()
        self._notified: set[tuple[str, str, str]] = set()
        self._new_alerts: list[Alert] = []
        self._due: list[tuple[datetime, str]] = []
        self._idle_since: dict[str, datetime] = {}
        self._idle_min: dict[str, int] = {}
        # cluster id -> replica name -> restart times seen / last restart count
        self._restart_times: dict[str, dict[str, deque[datetime]]] = {}
        self._restarts_seen: dict[str, dict[str, int]] = {}
        self._running_burn = 0
        # telemetry source per cluster and how many clusters report each (kept incrementally)
        self._telemetry_of: dict[str, str] = {}
        self._telemetry_count: dict[str, int] = {}

        self._changes = Changes()

    # -- feed --------------------------------------------------------------
    def apply(self, frame: dict[str, Any]) -> None:
        """Fold one watch frame (or a connection pseudo-frame) into the model."""
        kind = frame.get("type")
        now = self.clock.now()
        if kind != "connection":
            last = self.connection.last_frame_at
            if last is not None and now - last > STALE_AFTER:
                self._changes.connection = True  # stale no more: repaint the indicator
            self.connection.last_frame_at = now
        handler = self._handlers.get(kind)  # type: ignore[arg-type]
        if handler is not None:
            handler(self, frame, now)

    def apply_many(self, frames: Iterable[dict[str, Any]]) -> None:
        for f in frames:
            self.apply(f)

    def _on_snapshot(self, frame: dict[str, Any], now: datetime) -> None:
        incoming = {c["id"]: c for c in frame.get("clusters", [])}
        for cid in list(self.clusters):
            if cid not in incoming:
                self._remove(cid)
        for c in incoming.values():
            self._put_cluster(c, now)
        if frame.get("account") is not None:
            self._put_account(frame["account"])
        self.snapshots += 1
        self._changes.snapshot = True
        self._changes.order = True
        self._order_cache = None

    def _on_cluster(self, frame: dict[str, Any], now: datetime) -> None:
        self._put_cluster(frame["cluster"], now)

    def _on_removed(self, frame: dict[str, Any], now: datetime) -> None:
        self._remove(frame["id"])

    def _on_account(self, frame: dict[str, Any], now: datetime) -> None:
        self._put_account(frame["account"])

    def _on_event(self, frame: dict[str, Any], now: datetime) -> None:
        cid = frame.get("cluster_id")
        ev = frame.get("event") or {}
        if not cid:
            return
        self._add_events(cid, [ev])
        # A failure's message arrives as an event: refresh the alert's words.
        if cid in self.clusters and ev.get("kind") in ("replica_failed", "replica_crashed", "terminated"):
            self._recompute_alerts(cid, now)

    def _on_summaries(self, frame: dict[str, Any], now: datetime) -> None:
        for cid, summary in (frame.get("clusters") or {}).items():
            c = self.clusters.get(cid)
            if c is None:
                continue
            old = c.get("gpu_summary")
            self._note_telemetry(cid, summary)
            if old != summary:
                c = dict(c)
                c["gpu_summary"] = summary
                self.clusters[cid] = c
                self._changes.clusters.add(cid)
                if self.sort_column in ("util", "health"):
                    self._order_dirty()
                if (old or {}).get("health") != summary.get("health"):
                    self._recompute_alerts(cid, now)
            self._push_spark(cid, summary)
            self._track_idle(cid, summary, now)
        # The service URL's traffic per cluster (null: no public URL or nothing counted yet).
        for cid, traffic in (frame.get("traffic") or {}).items():
            c = self.clusters.get(cid)
            if c is None or c.get("traffic") == traffic:
                continue
            self.clusters[cid] = {**c, "traffic": traffic}
            self._changes.clusters.add(cid)
            if self.sort_column in ("reqs", "5xx"):
                self._order_dirty()

    def _on_replicas(self, frame: dict[str, Any], now: datetime) -> None:
        cid = frame.get("cluster_id")
        if not cid or cid not in self.clusters:
            return
        if self._focus_used and cid not in self.focused:
            return  # in flight from before a focus change: not kept, memory stays bounded
        reps = frame.get("replicas") or []
        self.replicas[cid] = reps
        self.replicas_at[cid] = now
        self._changes.replicas.add(cid)
        total = n = 0.0
        if cid in self.history_wanted or not self._focus_used:
            hist = self._history_for(cid)
            t = now.timestamp()
            for r in reps:
                for g in r.get("gpus") or ():
                    key = (r.get("name", ""), int(g.get("index", 0)))
                    dq = hist.get(key)
                    if dq is None:
                        dq = hist[key] = deque(maxlen=self.history_len)
                    u = float(g.get("utilization") or 0.0)
                    dq.append((t, u, float(g.get("memory_used_mib") or 0),
                               float(g.get("temperature_c") or 0.0), float(g.get("power_w") or 0.0)))
                    total += u
                    n += 1
            self._changes.history.add(cid)
        else:
            for r in reps:
                for g in r.get("gpus") or ():
                    total += float(g.get("utilization") or 0.0)
                    n += 1
        if n:
            self.live_util[cid] = total / n
            self._changes.clusters.add(cid)

    def _on_connection(self, frame: dict[str, Any], now: datetime) -> None:
        conn = self.connection
        state = frame.get("state", "connecting")
        if state != conn.state:
            conn.since = now
        conn.state = state
        conn.attempt = int(frame.get("attempt") or 0)
        conn.next_retry_at = parse_time(frame.get("next_retry_at"))
        conn.error = frame.get("error")
        if state == "connected":
            conn.ever_connected = True
            conn.last_frame_at = now
        self._changes.connection = True

    _handlers: dict[str, Callable[[DashboardModel, dict[str, Any], datetime], None]] = {
        "snapshot": _on_snapshot,
        "cluster": _on_cluster,
        "cluster_removed": _on_removed,
        "account": _on_account,
        "event": _on_event,
        "summaries": _on_summaries,
        "replicas": _on_replicas,
        "connection": _on_connection,
    }

    # -- REST-sourced data (fetched by the app's workers) --------------------
    def load_events(self, cluster_id: str, events: list[dict[str, Any]]) -> None:
        """Events from GET /events (oldest first), merged with those seen live."""
        self._add_events(cluster_id, sorted(events, key=lambda e: str(e.get("at", ""))))

    def load_metrics(self, cluster_id: str, metrics: dict[str, Any]) -> None:
        """History from GET /metrics, e.g. after a reconnect: backfills the gap."""
        hist = self._history_for(cluster_id)
        for rep in metrics.get("replicas") or ():
            for g in rep.get("gpus") or ():
                key = (rep.get("name", ""), int(g.get("index", 0)))
                restored: list[Sample] = []
                for s in g.get("samples") or ():
                    when = parse_time(s[0])
                    if when is None:
                        continue
                    restored.append((when.timestamp(), float(s[1] or 0), float(s[2] or 0),
                                     float(s[3] or 0), float(s[4] or 0)))
                old = hist.get(key) or deque()
                last_restored = restored[-1][0] if restored else float("-inf")
                first_restored = restored[0][0] if restored else float("inf")
                merged = ([s for s in old if s[0] < first_restored] + restored
                          + [s for s in old if s[0] > last_restored])
                hist[key] = deque(merged, maxlen=self.history_len)
        self._changes.history.add(cluster_id)

    def load_account(self, account: dict[str, Any]) -> None:
        self._put_account(account)

    def set_focus(self, ids: Iterable[str], history: Iterable[str] | None = None) -> bool:
        """The clusters now on screen (and, of those, the ones whose per-GPU history a
        view draws; default all). Returns True when the focus changed.

        Replicas are kept only for focused clusters and GPU history only for the
        history clusters (plus a few recent ones), so memory stays bounded however
        large the fleet and however long the session."""
        new = frozenset(ids)
        wanted = new if history is None else frozenset(history)
        self._focus_used = True
        if new == self.focused and wanted == self.history_wanted:
            return False
        self.focused = new
        self.history_wanted = wanted
        for cid in list(self.replicas):
            if cid not in new:
                del self.replicas[cid]
                self.live_util.pop(cid, None)
        for cid in wanted:
            if cid in self.gpu_history:
                self.gpu_history.move_to_end(cid)
        self._evict()
        return True

    def _evict(self) -> None:
        while len(self.gpu_history) > max(self.history_clusters, len(self.history_wanted)):
            victim = next((k for k in self.gpu_history if k not in self.history_wanted), None)
            if victim is None:
                break
            del self.gpu_history[victim]

    # -- internals -----------------------------------------------------------
    def _history_for(self, cid: str) -> dict[tuple[str, int], deque[Sample]]:
        hist = self.gpu_history.get(cid)
        if hist is None:
            hist = self.gpu_history[cid] = {}
            self.gpu_history.move_to_end(cid)
            self._evict()
        else:
            self.gpu_history.move_to_end(cid)
        return hist

    def _put_cluster(self, c: dict[str, Any], now: datetime) -> None:
        cid = c["id"]
        old = self.clusters.get(cid)
        if old == c:
            return
        if old is not None and "gpu_summary" not in c and "gpu_summary" in old:
            c = {**c, "gpu_summary": old["gpu_summary"]}
        self.clusters[cid] = c
        self.cluster_at[cid] = now
        if c.get("stale"):
            self.stale_ids.add(cid)
        else:
            self.stale_ids.discard(cid)
        if c.get("status") in ("stopped", "terminated", "failed") and cid in self.replicas:
            # No replicas run any more: per-second replica frames stop, drop the last ones.
            del self.replicas[cid]
            self._changes.replicas.add(cid)
        old_nums = self.nums.get(cid)
        nums = self.nums[cid] = ClusterNums.of(c)
        self._changes.clusters.add(cid)
        if old is None or self._order_value(old, old_nums) != self._order_value(c, nums) \
                or (old.get("status") != c.get("status")):
            self._order_dirty()
        # Running burn total is kept incrementally for the low-credit alert.
        if old_nums is not None and old is not None and old.get("status") in LIVE_STATUSES:
            self._running_burn -= old_nums.burn
        if c.get("status") in LIVE_STATUSES:
            self._running_burn += nums.burn
        summary = c.get("gpu_summary")
        self._note_telemetry(cid, summary)
        if summary and (old is None or old.get("gpu_summary") != summary):
            if old is None:
                self._push_spark(cid, summary)
            self._track_idle(cid, summary, now)
        self._track_restarts(cid, c, now)
        if c.get("status") not in LIVE_STATUSES:
            self._idle_since.pop(cid, None)
        self._schedule_expiry(cid, nums, now)
        self._recompute_alerts(cid, now)
        self._recompute_account_alerts()

    def _remove(self, cid: str) -> None:
        old = self.clusters.pop(cid, None)
        nums = self.nums.pop(cid, None)
        self.stale_ids.discard(cid)
        self._note_telemetry(cid, None)
        if old is not None and nums is not None and old.get("status") in LIVE_STATUSES:
            self._running_burn -= nums.burn
        for d in (self.events, self.replicas, self.replicas_at, self.cluster_at, self.util_spark,
                  self.live_util,
                  self._idle_since, self._idle_min, self._restart_times, self._restarts_seen):
            d.pop(cid, None)  # type: ignore[attr-defined]
        self.gpu_history.pop(cid, None)
        if self._alerts.pop(cid, None):
            self._changes.alerts = True
        self._changes.removed.add(cid)
        self._changes.clusters.discard(cid)
        self._order_dirty()
        self._recompute_account_alerts()

    def _put_account(self, account: dict[str, Any]) -> None:
        if account == self.account:
            return
        self.account = account
        self.account_micros = {k: parse_micros(account.get(k)) for k in ("balance", "held", "available")}
        self._changes.account = True
        self._recompute_account_alerts()

    def _add_events(self, cid: str, events: list[dict[str, Any]]) -> None:
        dq = self.events.get(cid)
        if dq is None:
            dq = self.events[cid] = deque(maxlen=self.events_len)
        seen = {(e.get("at"), e.get("kind"), e.get("message"), e.get("replica")) for e in dq}
        added = False
        for ev in events:
            k = (ev.get("at"), ev.get("kind"), ev.get("message"), ev.get("replica"))
            if k in seen:
                continue
            seen.add(k)
            dq.append(ev)
            added = True
        if added:
            # keep time order when REST history arrives after live events
            if len(dq) > 1 and str(dq[-2].get("at", "")) > str(dq[-1].get("at", "")):
                ordered = sorted(dq, key=lambda e: str(e.get("at", "")))
                dq.clear()
                dq.extend(ordered)
            self._changes.events.add(cid)

    def _push_spark(self, cid: str, summary: dict[str, Any]) -> None:
        mu = summary.get("mean_utilization")
        if mu is None:
            return
        dq = self.util_spark.get(cid)
        if dq is None:
            dq = self.util_spark[cid] = deque(maxlen=self.spark_len)
        dq.append(float(mu))

    def _track_idle(self, cid: str, summary: dict[str, Any], now: datetime) -> None:
        c = self.clusters.get(cid)
        idle = int(summary.get("idle_gpus") or 0)
        if not c or c.get("status") != "running" or idle <= 0:
            if self._idle_since.pop(cid, None) is not None:
                self._idle_min.pop(cid, None)
                self._recompute_alerts(cid, now)
            return
        if cid not in self._idle_since:
            self._idle_since[cid] = now
            self._idle_min[cid] = idle
            heapq.heappush(self._due, (now + IDLE_AFTER, cid))
        else:
            before = self._idle_min[cid]
            self._idle_min[cid] = min(before, idle)
            if self._idle_min[cid] != before:
                self._recompute_alerts(cid, now)

    def _track_restarts(self, cid: str, c: dict[str, Any], now: datetime) -> None:
        seen = self._restarts_seen.setdefault(cid, {})
        for r in c.get("replica_states") or ():
            name = r.get("name", "")
            n = int(r.get("restarts") or 0)
            prev = seen.get(name)
            seen[name] = n
            if prev is not None and n > prev:
                dq = self._restart_times.setdefault(cid, {}).setdefault(name, deque(maxlen=16))
                for _ in range(min(n - prev, 16)):
                    dq.append(now)
                heapq.heappush(self._due, (now + CRASH_WINDOW, cid))

    def _schedule_expiry(self, cid: str, nums: ClusterNums, now: datetime) -> None:
        if nums.expires_at is None:
            return
        for edge in (nums.expires_at - EXPIRY_WARN, nums.expires_at - EXPIRY_CRITICAL, nums.expires_at):
            if edge > now:
                heapq.heappush(self._due, (edge, cid))

    def _order_dirty(self) -> None:
        self._order_cache = None
        self._changes.order = True

    # -- alerts --------------------------------------------------------------
    def tick(self, now: datetime | None = None) -> None:
        """Re-evaluate what became due (expiry thresholds, idle timers)."""
        now = now or self.clock.now()
        due: set[str] = set()
        while self._due and self._due[0][0] <= now:
            due.add(heapq.heappop(self._due)[1])
        for cid in due:
            if cid in self.clusters:
                self._recompute_alerts(cid, now)

    def _recompute_alerts(self, cid: str, now: datetime) -> None:
        c = self.clusters.get(cid)
        alerts: list[Alert] = []
        if c is not None:
            alerts = self._cluster_alerts(cid, c, now)
        new = tuple(alerts)
        if self._alerts.get(cid, ()) != new:
            if new:
                self._alerts[cid] = new
            else:
                self._alerts.pop(cid, None)
            self._changes.alerts = True
            self._changes.clusters.add(cid)
            self._queue_notifications(new)

    def _cluster_alerts(self, cid: str, c: dict[str, Any], now: datetime) -> list[Alert]:
        name = c.get("name", cid)
        status = c.get("status")
        nums = self.nums[cid]
        out: list[Alert] = []
        if status == "failed":
            reason = c.get("status_reason") or "error"
            detail = self._last_event_message(cid, ("replica_failed", "terminated", "expired"))
            msg = f"{name} failed ({reason})" + (f": {detail}" if detail else "")
            out.append(Alert(cid, "failed", "error", "Cluster failed", msg))
        if status not in ENDED_STATUSES and status != "terminating" and nums.expires_at is not None:
            left = nums.expires_at - now
            if timedelta(0) < left <= EXPIRY_WARN:
                critical = left <= EXPIRY_CRITICAL
                mins = 5 if critical else 30
                out.append(Alert(
                    cid, "expiring", "error" if critical else "warning", "Expiring soon",
                    f"{name} expires in under {mins} minutes; extend it (e) to keep it",
                    stage=str(mins)))
        unsched: list[dict[str, Any]] = []
        crashing: list[dict[str, Any]] = []
        for r in c.get("replica_states") or ():
            reason = r.get("reason") or ""
            low = reason.lower()
            if r.get("phase") == "Pending" and reason and any(w in low for w in UNSCHEDULABLE_WORDS):
                unsched.append(r)
                continue
            times = self._restart_times.get(cid, {}).get(r.get("name", ""))
            recent = sum(1 for t in times if now - t <= CRASH_WINDOW) if times else 0
            if any(w in low for w in CRASH_WORDS) or recent >= CRASH_RESTARTS:
                crashing.append(r)
        # One alert per cluster and kind, naming the replicas, not one per replica.
        if unsched:
            who = _replica_list(unsched)
            out.append(Alert(cid, "unschedulable", "error", "Replica unschedulable",
                             f"{name}: {who} cannot be scheduled: {unsched[0].get('reason')}",
                             stage=str(len(unsched))))
        if crashing:
            who = _replica_list(crashing)
            restarts = max(int(r.get("restarts") or 0) for r in crashing)
            reason = crashing[0].get("reason")
            out.append(Alert(cid, "crashloop", "error", "Replica crash-looping",
                             f"{name}: {who} crash-looping ({restarts} restarts)"
                             + (f": {reason}" if reason else ""),
                             stage=",".join(r.get("name", "") for r in crashing)))
        out.extend(gpu_health_alerts(cid, c))
        since = self._idle_since.get(cid)
        if status == "running" and since is not None and now - since >= IDLE_AFTER:
            idle = self._idle_min.get(cid, 0)
            cost = idle * nums.per_gpu_rate
            out.append(Alert(cid, "idle", "warning", "Idle GPUs",
                             f"{name}: {idle} GPU{'s' if idle != 1 else ''} under "
                             f"{IDLE_UTILIZATION:g}% for 10+ minutes: you pay {fmt_rate(cost)} for idle GPUs",
                             stage=str(idle)))
        return out

    def _last_event_message(self, cid: str, kinds: tuple[str, ...]) -> str | None:
        for ev in reversed(self.events.get(cid, ())):
            if ev.get("kind") in kinds and ev.get("message"):
                return str(ev["message"])
        return None

    def _recompute_account_alerts(self) -> None:
        alerts: tuple[Alert, ...] = ()
        if self.account is not None and self._running_burn > 0:
            available = self.account_micros.get("available", 0)
            day = self._running_burn * 24
            if available < day:
                hours = available / self._running_burn if self._running_burn else 0
                alerts = (Alert(None, "low_credit", "error" if hours < 1 else "warning", "Low credit",
                                f"available credit {fmt_usd(available)} covers {fmt_duration(hours * 3600)} "
                                f"of the {fmt_rate(self._running_burn)} your clusters burn "
                                f"(less than a day)"),)
        if alerts != self._account_alerts:
            self._account_alerts = alerts
            self._changes.alerts = True
            self._queue_notifications(alerts)

    def _queue_notifications(self, alerts: Iterable[Alert]) -> None:
        for a in alerts:
            if a.key not in self._notified:
                self._notified.add(a.key)
                self._new_alerts.append(a)

    def alerts(self) -> list[Alert]:
        """Every active alert, most severe first."""
        out = list(self._account_alerts)
        for group in self._alerts.values():
            out.extend(group)
        out.sort(key=lambda a: (a.level != "error", a.cluster_id or ""))
        return out

    def cluster_alerts(self, cid: str) -> tuple[Alert, ...]:
        return self._alerts.get(cid, ())

    def take_new_alerts(self) -> list[Alert]:
        """Alerts that appeared since the last call (each notified once per stage)."""
        out, self._new_alerts = self._new_alerts, []
        return out

    @property
    def running_burn(self) -> int:
        return self._running_burn

    # -- repaint -------------------------------------------------------------
    def take_changes(self) -> Changes:
        out, self._changes = self._changes, Changes()
        return out

    def is_stale(self, now: datetime | None = None) -> bool:
        """Data shown may be out of date: disconnected, or no frame for a while."""
        conn = self.connection
        if conn.state != "connected":
            return self.snapshots > 0
        now = now or self.clock.now()
        return conn.last_frame_at is not None and now - conn.last_frame_at > STALE_AFTER

    def connection_label(self, now: datetime | None = None) -> tuple[str, str]:
        """(text, level) for the connection indicator; level: ok | warning | error."""
        now = now or self.clock.now()
        conn = self.connection
        if conn.state == "connected":
            if self.is_stale(now):
                age = (now - conn.last_frame_at).total_seconds() if conn.last_frame_at else 0
                return f"◌ stale: no data for {fmt_duration(age)}", "warning"
            return "● connected", "ok"
        if conn.state == "reconnecting":
            wait = ""
            if conn.next_retry_at is not None:
                secs = max(0.0, (conn.next_retry_at - now).total_seconds())
                wait = f" in {fmt_duration(secs + 0.999)}" if secs > 0 else " now"
            stale = " · data stale" if self.snapshots else ""
            if conn.error and "401" in conn.error:
                return f"✖ API key refused (401) · retry{wait}{stale}", "error"
            return f"↻ reconnecting{wait} (attempt {conn.attempt}){stale}", "error"
        if conn.state == "closed":
            return "✖ disconnected", "error"
        return "… connecting", "warning"

    # -- the clusters list -------------------------------------------------
    def _note_telemetry(self, cid: str, summary: dict[str, Any] | None) -> None:
        src = (summary or {}).get("telemetry")
        old = self._telemetry_of.get(cid)
        if src == old:
            return
        if old is not None:
            self._telemetry_count[old] -= 1
            if not self._telemetry_count[old]:
                del self._telemetry_count[old]
            del self._telemetry_of[cid]
        if src:
            self._telemetry_of[cid] = src
            self._telemetry_count[src] = self._telemetry_count.get(src, 0) + 1

    def telemetry_sources(self, ids: Iterable[str] | None = None) -> list[str]:
        """Telemetry sources reported (by these clusters, or by all: kept counted)."""
        if ids is None:
            return sorted(self._telemetry_count)
        seen: set[str] = set()
        for cid in ids:
            c = self.clusters.get(cid)
            src = ((c or {}).get("gpu_summary") or {}).get("telemetry")
            if src:
                seen.add(src)
        return sorted(seen)

    def mean_util(self, cid: str) -> float | None:
        if cid in self.live_util and cid in self.focused:
            return self.live_util[cid]
        summary = (self.clusters.get(cid) or {}).get("gpu_summary") or {}
        mu = summary.get("mean_utilization")
        return None if mu is None else float(mu)

    def _order_value(self, c: dict[str, Any], nums: ClusterNums | None) -> Any:
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
            mu = ((c.get("gpu_summary") or {}).get("mean_utilization"))
            return -1.0 if mu is None else float(mu)
        if nums is None:
            return 0
        if col == "burn":
            return nums.burn
        if col == "spent":
            return nums.spent
        if col == "expires":
            return nums.expires_at.timestamp() if nums.expires_at else float("inf")
        return 0

    def matches(self, c: dict[str, Any]) -> bool:
        if not self.filter_text:
            return True
        hay = " ".join(str(c.get(k, "")) for k in ("name", "id", "region", "status", "gpu_type")).lower()
        return all(term in hay for term in self.filter_text.lower().split())

    def set_sort(self, column: str, reverse: bool | None = None) -> None:
        if column not in SORT_COLUMNS:
            raise ValueError(column)
        self.sort_column = column
        if reverse is not None:
            self.sort_reverse = reverse
        self._order_dirty()

    def next_sort(self) -> str:
        i = SORT_COLUMNS.index(self.sort_column)
        self.set_sort(SORT_COLUMNS[(i + 1) % len(SORT_COLUMNS)])
        return self.sort_column

    def reverse_sort(self) -> bool:
        self.sort_reverse = not self.sort_reverse
        self._order_dirty()
        return self.sort_reverse

    def set_filter(self, text: str) -> None:
        if text != self.filter_text:
            self.filter_text = text
            self._order_dirty()

    def next_grouping(self) -> str | None:
        i = GROUPINGS.index(self.group_by)
        self.group_by = GROUPINGS[(i + 1) % len(GROUPINGS)]
        self._order_dirty()
        return self.group_by

    def ordered_ids(self) -> list[str]:
        """Cluster ids that pass the filter, in sort order (cached until something moves)."""
        if self._order_cache is None:
            ids = [cid for cid, c in self.clusters.items() if self.matches(c)]
            clusters, nums = self.clusters, self.nums

            def key(cid: str) -> Any:
                return (self._order_value(clusters[cid], nums.get(cid)), clusters[cid].get("name", ""), cid)

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
            groups.setdefault(str(self.clusters[cid].get(self.group_by, "")), []).append(cid)
        if self.group_by == "status":
            labels = sorted(groups, key=lambda s: STATUS_ORDER.get(s, 99))
        else:
            labels = sorted(groups)
        out: list[str | GroupRow] = []
        for label in labels:
            out.append(GroupRow(label, len(groups[label])))
            out.extend(groups[label])
        return out

    def replica_rows(self, cid: str) -> list[dict[str, Any]]:
        """A cluster's replicas for display: states from whichever frame is newer (the
        cluster's or the per-second replicas frame), GPUs from the replicas frame."""
        c = self.clusters.get(cid) or {}
        states = c.get("replica_states") or []
        reps = self.replicas.get(cid)
        if reps is None:
            return list(states)
        if self.cluster_at.get(cid, datetime.min.replace(tzinfo=UTC)) > self.replicas_at.get(
                cid, datetime.min.replace(tzinfo=UTC)):
            gpus = {r.get("name"): r for r in reps}
            return [{**gpus.get(s.get("name"), {}), **s} for s in states]
        return list(reps)

    def terminated_costs(self) -> list[tuple[dict[str, Any], int]]:
        """Ended clusters still listed, with what each cost."""
        return [(c, self.nums[cid].spent) for cid, c in self.clusters.items()
                if c.get("status") in ENDED_STATUSES]

    def find(self, ref: str) -> dict[str, Any] | None:
        if ref in self.clusters:
            return self.clusters[ref]
        for c in self.clusters.values():
            if c.get("name") == ref and c.get("status") != "terminated":
                return c
        return None
