"""Short sentences about a cluster that several dialogs open with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ecotui import costs
from ecotui.model import fmt_usd


def gpus_text(cluster: Mapping[str, Any]) -> str:
    r = int(cluster["replicas"])
    return f"{r} replica{'s' if r != 1 else ''} × {cluster['gpu_count']} {cluster['gpu_type']}"


def cluster_summary(cluster: Mapping[str, Any]) -> str:
    """`web (running): 3 replicas × 4 H100-80GB in us-east at $30.00/h.`"""
    rate = fmt_usd(costs.cluster_hourly_rate(cluster))
    return (f"{cluster['name']} ({cluster['status']}): {gpus_text(cluster)} in "
            f"{cluster['region']} at {rate}/h.")


NAME_WORDS = ("a name is a DNS label: lowercase letters, digits and '-', 1 to 40 characters, "
              "starting with a letter and not ending with '-'")


def field_words(field: str | None, message: str) -> str:
    """A validation message in words a person can act on, never a raw regex.

    The backend reports pydantic's text (`String should match pattern '^[a-z]…$'`)
    for a field; for a name that means the DNS-label rule, said in words.
    """
    text = message.strip()
    if field and text.lower().startswith(f"{field.lower()}: "):
        text = text[len(field) + 2:]
    if "should match pattern" in text:
        if field in ("name", "shared_filesystems") or (field or "").startswith("shared_filesystems"):
            return NAME_WORDS
        return "has characters that are not allowed here"
    if field == "name" and ("at most" in text or "at least" in text):
        return NAME_WORDS
    return text
