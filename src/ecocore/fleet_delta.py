"""Incremental answers for lists of thousands of GPU rows (`GET /gpus?since=`).

The server keeps its last few answers per (account, query) and gives each a version.
A reader that names the version it holds gets only what changed since: rows that are
new (whole), the changed fields of rows it has (with the row's key), and the keys of
rows gone. A version the server no longer keeps (or never gave, e.g. before a restart)
gets the whole list, as a first read does. Pure: no I/O, no clock.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

KEY_FIELDS = ("cluster_id", "replica", "index")
RowKey = tuple[Any, ...]
_MISSING = object()


def row_key(row: Mapping[str, Any]) -> RowKey:
    return tuple(row.get(f) for f in KEY_FIELDS)


class RowVersions:
    """The last `keep` answers of one list, by version."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._prefix = secrets.token_hex(4)
        self._n = 0
        self._answers: OrderedDict[str, dict[RowKey, dict[str, Any]]] = OrderedDict()

    def answer(self, rows: Iterable[dict[str, Any]], since: str | None) -> dict[str, Any]:
        """`{"version", "gpus"}` whole, or `{"version", "since", "gpus", "removed"}`
        with what changed since a version this keeps."""
        current = {row_key(r): r for r in rows}
        base = self._answers.get(since) if since else None
        self._n += 1
        version = f"{self._prefix}-{self._n}"
        self._answers[version] = current
        while len(self._answers) > self.keep:
            self._answers.popitem(last=False)
        if base is None:
            return {"version": version, "gpus": list(current.values())}
        changed: list[dict[str, Any]] = []
        for k, r in current.items():
            old = base.get(k)
            if old is None:
                changed.append(r)
            elif old != r:
                d = {f: r.get(f) for f in KEY_FIELDS}
                d.update((f, v) for f, v in r.items() if f not in d and old.get(f, _MISSING) != v)
                changed.append(d)
        removed = [list(k) for k in base if k not in current]
        return {"version": version, "since": since, "gpus": changed, "removed": removed}


def apply_answer(
    rows: Mapping[RowKey, dict[str, Any]], answer: Mapping[str, Any]
) -> tuple[dict[RowKey, dict[str, Any]], set[RowKey]]:
    """The rows after an answer (whole or since a version), and the keys that changed."""
    if "since" not in answer:
        new = {row_key(r): r for r in answer.get("gpus") or ()}
        return new, {k for k, r in new.items() if rows.get(k) != r}
    out = dict(rows)
    changed: set[RowKey] = set()
    for d in answer.get("gpus") or ():
        k = row_key(d)
        old = out.get(k)
        out[k] = d if old is None else {**old, **d}
        changed.add(k)
    for k in answer.get("removed") or ():
        kt = tuple(k)
        if out.pop(kt, None) is not None:
            changed.add(kt)
    return out, changed
