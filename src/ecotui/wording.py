"""How the dashboard and the CLI say things: dollars, durations, times, sparklines,
refusals and the short sentences about a cluster that dialogs open with.

One formatter for each: dollars (`usd`), countdowns (`fmt_duration`), API times
(`parse_time`). Pure: no textual, no IO, no clock of its own (callers pass `now`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any

from ecocore.money import MICRO, usd_to_micros

if TYPE_CHECKING:
    from ecocore.wire import ClusterOut

__all__ = [
    "NAME_WORDS",
    "cluster_summary",
    "duration_text",
    "field_words",
    "fmt_duration",
    "fmt_local",
    "fmt_rate",
    "fmt_usd",
    "gpus_text",
    "local_time_text",
    "parse_time",
    "parse_time_or_none",
    "refusal_text",
    "sparkline",
    "usd",
    "usd_exact",
]


# -- dollars -------------------------------------------------------------------


def usd(micros: int, *, grouping: bool = False, places: int = 2) -> str:
    """Micro-dollars for people: `$1234.57` (`grouping`: `$1,234.57`).

    `places` 2 rounds half up (away from zero) to the cent; 6 is exact to the
    micro-dollar; -1 is exact with trailing zeros dropped, at least two places
    (`$12.345679`, `$300.00`)."""
    if places == 2:
        cents = (abs(micros) + 5_000) // 10_000
        sign = "-" if micros < 0 and cents else ""
        whole, frac = divmod(cents, 100)
        digits = f"{frac:02d}"
    else:
        sign = "-" if micros < 0 else ""
        whole, rest = divmod(abs(micros), MICRO)
        digits = f"{rest:06d}"
        if places < 0:
            digits = digits.rstrip("0").ljust(2, "0")
    amount = f"{whole:,}" if grouping else str(whole)
    return f"{sign}${amount}.{digits}"


def usd_exact(micros: int) -> str:
    """Dollars exact to the micro-dollar, at least two places: `$300.00`, `$12.345679`."""
    return usd(micros, places=-1)


def fmt_usd(micros: int, *, cents: bool = True) -> str:
    """The dashboard's dollars, with thousands separators: "$1,234.56"."""
    return usd(micros, grouping=True, places=2 if cents else 6)


def fmt_rate(micros: int) -> str:
    return f"{fmt_usd(micros)}/h"


# -- durations -----------------------------------------------------------------


def fmt_duration(seconds: float) -> str:
    """A countdown: "3d 4h", "5h 07m", "4m 09s", "12s" ("0s" once over)."""
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


def duration_text(us: int) -> str:
    """A remaining time in microseconds for people: `2d 3h`, `4m 10s`, `expired`."""
    if us <= 0:
        return "expired"
    return fmt_duration(us // 1_000_000)


# -- times ---------------------------------------------------------------------


def parse_time(value: str | datetime | int | float) -> datetime:
    """An RFC 3339 string, a datetime or epoch seconds as an aware UTC datetime;
    ValueError when it is none of these."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, bool):
        raise ValueError("not a time")
    elif isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        dt = datetime.fromisoformat(text)
    else:
        raise ValueError("not a time")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def parse_time_or_none(value: Any) -> datetime | None:
    """`parse_time`, with None for a missing or unreadable value (feed data)."""
    if value is None or value == "":
        return None
    try:
        return parse_time(value)
    except (ValueError, TypeError, OverflowError, OSError):
        return None


def fmt_local(dt: datetime | None, tz: tzinfo | None = None, *, now: datetime | None = None) -> str:
    """A time in local time (or `tz`): "14:05:03" today, "Jan 02 14:05" otherwise."""
    if dt is None:
        return "—"
    local = dt.astimezone(tz)
    if now is not None and now.astimezone(tz).date() == local.date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%b %d %H:%M")


def local_time_text(
    when: datetime | str, tz: tzinfo | None = None, now: datetime | None = None
) -> str:
    """A time in the user's zone: `14:05` today, else `Tue 3 Feb 14:05`, with the zone."""
    dt = parse_time(when).astimezone(tz) if tz is not None else parse_time(when).astimezone()
    zone = dt.tzname() or ""
    if now is not None:
        ref = parse_time(now).astimezone(dt.tzinfo)
        if ref.date() == dt.date():
            return f"{dt:%H:%M} {zone}".strip()
    return f"{dt:%a} {dt.day} {dt:%b %H:%M} {zone}".strip()


# -- sparklines ----------------------------------------------------------------

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
        out.append(
            SPARK_BLOCKS[min(len(SPARK_BLOCKS) - 1, int(frac * (len(SPARK_BLOCKS) - 1) + 0.5))]
        )
    return "".join(out) + " " * (width - len(out))


# -- refusals, in words a user can act on --------------------------------------


def refusal_text(status: int, message: str, field: str | None = None) -> str:
    """The backend's refusal (api.md error form) with what the user can do about it."""
    message = message.strip()
    if message and not message.endswith((".", "!", "?")):
        message += "."
    if status == 402:
        return (
            f"Not enough credit: {message} Add credit to the account, or ask for "
            "less (fewer replicas, fewer GPUs or fewer hours)."
        )
    if status == 409:
        low = message.lower()
        if field == "name":
            return f"{message} Choose another name."
        if "budget" in low or "free" in low:
            return (
                f"Over the region's GPU budget: {message} Choose fewer replicas or "
                "GPUs, or stop a cluster in that region first."
            )
        if "idempotency" in low:
            return f"{message} Close this and start the action again."
        return f"Not possible in the cluster's current state: {message}"
    if status == 401:
        return "The API key was refused. Check ECO_API_KEY or api_key in the ecotui config file."
    if status == 404:
        return f"{message} It may have been terminated; refresh and try again."
    if status == 503:
        return f"The runtime cannot be reached; nothing was changed. {message} Try again shortly."
    if status in (400, 422):
        return f"{field}: {message}" if field else message
    return f"The backend refused ({status}): {message}"


NAME_WORDS = (
    "a name is a DNS label: lowercase letters, digits and '-', 1 to 40 characters, "
    "starting with a letter and not ending with '-'"
)


def field_words(field: str | None, message: str) -> str:
    """A validation message in words a person can act on, never a raw regex.

    The backend reports pydantic's text (`String should match pattern '^[a-z]…$'`)
    for a field; for a name that means the DNS-label rule, said in words.
    """
    text = message.strip()
    if field and text.lower().startswith(f"{field.lower()}: "):
        text = text[len(field) + 2 :]
    if "should match pattern" in text:
        if field in ("name", "shared_filesystems") or (field or "").startswith(
            "shared_filesystems"
        ):
            return NAME_WORDS
        return "has characters that are not allowed here"
    if field == "name" and ("at most" in text or "at least" in text):
        return NAME_WORDS
    return text


# -- a cluster in one sentence -------------------------------------------------


def gpus_text(cluster: ClusterOut) -> str:
    r = cluster.replicas
    return f"{r} replica{'s' if r != 1 else ''} × {cluster.gpu_count} {cluster.gpu_type}"


def cluster_summary(cluster: ClusterOut) -> str:
    """`web (running): 3 replicas × 4 H100-80GB in us-east at $30.00/h.`"""
    rate = fmt_usd(usd_to_micros(cluster.hourly_rate))
    return (
        f"{cluster.name} ({cluster.status}): {gpus_text(cluster)} in {cluster.region} at {rate}/h."
    )
