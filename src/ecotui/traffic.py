"""The service URL's traffic as the dashboard and the CLI show it (pure helpers).

The backend publishes, per cluster and per replica, a `traffic` object: requests and
5xx answers per second over the last seconds, requests in flight, latency percentiles
and the path the service URL takes to reach the replicas. It is null while a cluster
has no public URL or nothing has counted it yet: that shows as "—", never as 0.
"""

from __future__ import annotations

from typing import Any

from ecotui.text import visible

UNKNOWN = "—"

# How the service URL reaches the replicas, in words.
PATH_WORDS = {
    "local": "direct",
    "pod-ip": "direct to pod IPs",
    "port-forward": "via API server port-forward",
}


def traffic_of(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """The traffic object of a cluster or replica, or None when unknown."""
    t = (obj or {}).get("traffic")
    return t if isinstance(t, dict) else None


def fmt_per_s(value: Any) -> str:
    """A rate per second: "0", "0.4", "12", "1.2k"; unknown: "—"."""
    if value is None:
        return UNKNOWN
    try:
        v = float(value)
    except (TypeError, ValueError):
        return UNKNOWN
    if v <= 0:
        return "0"
    if v < 9.95:
        return f"{v:.1f}"
    if v < 999.5:
        return f"{v:.0f}"
    return f"{v / 1000:.1f}k"


def fmt_ms(value: Any) -> str:
    """A latency: "0.8ms", "42ms", "1.3s"; unknown (no request measured): "—"."""
    if value is None:
        return UNKNOWN
    try:
        v = float(value)
    except (TypeError, ValueError):
        return UNKNOWN
    if v < 9.95:
        return f"{v:.1f}ms"
    if v < 999.5:
        return f"{v:.0f}ms"
    return f"{v / 1000:.1f}s"


def path_words(path: Any) -> str | None:
    """How the replicas are reached, in words ("pod-ip,port-forward": both, named)."""
    if not path:
        return None
    parts = [p for p in str(path).split(",") if p]
    return " and ".join(PATH_WORDS.get(p) or visible(p) for p in parts) or None


def replica_cells(r: dict[str, Any]) -> dict[str, str]:
    """The replica table's traffic cells: req/s, 5xx/s, in flight, p99."""
    t = traffic_of(r)
    if t is None:
        return {"rps": UNKNOWN, "5xx": UNKNOWN, "inflight": UNKNOWN, "p99": UNKNOWN}
    return {
        "rps": fmt_per_s(t.get("requests_per_s")),
        "5xx": fmt_per_s(t.get("errors_5xx_per_s")),
        "inflight": UNKNOWN if t.get("in_flight") is None else str(int(t["in_flight"])),
        "p99": fmt_ms(t.get("latency_p99_ms")),
    }


def cluster_summary(c: dict[str, Any], *, with_path: bool = True) -> str:
    """One line: "12 req/s · 5xx 0.4/s · direct to pod IPs · 3 in flight" (the path
    before the count, so a narrow title cuts the count first); unknown: "— req/s" (and
    why, when the cluster has no public URL)."""
    t = traffic_of(c)
    if t is None:
        return f"{UNKNOWN} req/s" + ("" if c.get("endpoint") else " (no public URL)")
    parts = [
        f"{fmt_per_s(t.get('requests_per_s'))} req/s",
        f"5xx {fmt_per_s(t.get('errors_5xx_per_s'))}/s",
    ]
    words = path_words(t.get("path"))
    if with_path and words:
        parts.append(words)
    if t.get("in_flight") is not None:
        parts.append(f"{int(t['in_flight'])} in flight")
    return " · ".join(parts)


def sort_value(c: dict[str, Any], key: str) -> float:
    """Sort key of a cluster by request rate ("reqs") or 5xx rate ("5xx"); unknown last."""
    t = traffic_of(c)
    field = "requests_per_s" if key == "reqs" else "errors_5xx_per_s"
    if t is None or t.get(field) is None:
        return -1.0
    return float(t[field])
