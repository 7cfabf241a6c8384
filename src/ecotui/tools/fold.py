"""Folding the output of one command run on many replicas (pure; no IO).

Each distinct output is shown once, headed by the replicas that produced it
(`demo-0..5,7 (7 replicas)`); the largest group is the majority and every other
group is shown as a unified diff against it. Used by `ecotui run` and by the
dashboard's run-everywhere panel.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

_NUMBERED = re.compile(r"^(.*?)(\d+)$")


@dataclass(frozen=True)
class ReplicaOutcome:
    """What one replica gave back."""

    name: str
    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int | None = None
    error: str | None = None  # no exit code: why (refused, lost, ...)
    timed_out: bool = False
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.error is None and not self.timed_out

    def status_text(self) -> str:
        if self.timed_out:
            return "timed out"
        if self.exit_code is not None:
            return f"exit {self.exit_code}"
        return f"failed: {self.error or 'no exit status'}"

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "exit_code": self.exit_code,
            "stdout": self.stdout.decode("utf-8", "replace"),
            "stderr": self.stderr.decode("utf-8", "replace"),
            "duration": round(self.duration, 3),
            "timed_out": self.timed_out,
            "error": self.error,
        }


@dataclass
class Group:
    """Replicas whose output was byte-for-byte the same."""

    stdout: bytes
    stderr: bytes
    members: list[ReplicaOutcome] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]

    def text_lines(self) -> list[str]:
        """The output as lines; stderr lines marked so a diff shows where each came from."""
        lines = self.stdout.decode("utf-8", "replace").splitlines()
        lines += [
            "[stderr] " + line for line in self.stderr.decode("utf-8", "replace").splitlines()
        ]
        return lines


def _name_key(name: str) -> tuple[str, int, str]:
    m = _NUMBERED.match(name)
    if m:
        return (m.group(1), int(m.group(2)), name)
    return (name, -1, name)


def sort_names(names: Iterable[str]) -> list[str]:
    """Replica names in their natural order (demo-2 before demo-10)."""
    return sorted(names, key=_name_key)


def replica_ranges(names: Iterable[str]) -> str:
    """`demo-0..5,7` for demo-0 to demo-5 and demo-7; other names listed as they are.

    Runs of three or more consecutive indices become `a..b`."""
    prefixes: dict[str, list[int]] = {}
    plain: list[str] = []
    order: list[str] = []
    for name in sort_names(set(names)):
        m = _NUMBERED.match(name)
        if m and m.group(1):
            prefix = m.group(1)
            if prefix not in prefixes:
                prefixes[prefix] = []
                order.append(prefix)
            prefixes[prefix].append(int(m.group(2)))
        else:
            plain.append(name)
    parts: list[str] = []
    for prefix in order:
        parts.append(prefix + ",".join(_runs(prefixes[prefix])))
    parts += plain
    return ", ".join(parts)


def _runs(numbers: Sequence[int]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        if j - i >= 2:
            out.append(f"{numbers[i]}..{numbers[j]}")
        else:
            out.extend(str(n) for n in numbers[i : j + 1])
        i = j + 1
    return out


def heading(names: Sequence[str]) -> str:
    n = len(names)
    return f"{replica_ranges(names)} ({n} replica{'s' if n != 1 else ''})"


def fold(outcomes: Iterable[ReplicaOutcome]) -> list[Group]:
    """Groups of identical output, the majority first, then by size and first replica."""
    groups: dict[tuple[bytes, bytes], Group] = {}
    for o in sorted(outcomes, key=lambda o: _name_key(o.name)):
        key = (o.stdout, o.stderr)
        if key not in groups:
            groups[key] = Group(o.stdout, o.stderr)
        groups[key].members.append(o)
    # dicts keep insertion order, so ties go to the group holding the first replica
    return sorted(groups.values(), key=lambda g: -len(g.members))


def status_summary(outcomes: Sequence[ReplicaOutcome]) -> list[str]:
    """One line per distinct status: `exit 0: demo-0..6 (7 replicas)`."""
    by: dict[str, list[str]] = {}
    for o in sorted(outcomes, key=lambda o: _name_key(o.name)):
        by.setdefault(o.status_text(), []).append(o.name)
    return [f"{status}: {heading(names)}" for status, names in by.items()]


def render(outcomes: Sequence[ReplicaOutcome], *, context: int = 3) -> str:
    """The folded report: the majority's output in full, the others as diffs
    against it, then the exit status of every replica."""
    if not outcomes:
        return "no replicas\n"
    groups = fold(outcomes)
    majority = groups[0]
    lines: list[str] = []

    def group_status(g: Group) -> str:
        statuses = sorted({m.status_text() for m in g.members})
        return ", ".join(statuses)

    lines.append(f"=== {heading(majority.names)} · {group_status(majority)}")
    body = majority.text_lines()
    lines += body if body else ["(no output)"]
    for g in groups[1:]:
        lines.append("")
        lines.append(f"=== {heading(g.names)} · {group_status(g)} · differs from the majority")
        diff = difflib.unified_diff(
            majority.text_lines(),
            g.text_lines(),
            fromfile=replica_ranges(majority.names),
            tofile=replica_ranges(g.names),
            n=context,
            lineterm="",
        )
        lines += list(diff)
    lines.append("")
    lines += status_summary(outcomes)
    return "\n".join(lines) + "\n"


def parse_selection(text: str, available: Sequence[str]) -> list[str]:
    """`--replicas`: names, indices and index ranges (`0-3`, `0..3`), comma separated.

    Raises ValueError naming what does not match a replica."""
    by_index: dict[int, str] = {}
    for name in available:
        m = _NUMBERED.match(name)
        if m:
            by_index.setdefault(int(m.group(2)), name)
    chosen: list[str] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        if item in available:
            chosen.append(item)
            continue
        rng = re.fullmatch(r"(\d+)\s*(?:-|\.\.)\s*(\d+)", item)
        if rng:
            lo, hi = int(rng.group(1)), int(rng.group(2))
            if lo > hi:
                raise ValueError(f"empty range {item!r}")
            missing = [i for i in range(lo, hi + 1) if i not in by_index]
            if missing:
                raise ValueError(f"no replica with index {missing[0]} (in {item!r})")
            chosen += [by_index[i] for i in range(lo, hi + 1)]
            continue
        if item.isdigit() and int(item) in by_index:
            chosen.append(by_index[int(item)])
            continue
        raise ValueError(f"no replica {item!r}")
    if not chosen:
        raise ValueError("no replicas named")
    return list(dict.fromkeys(chosen))  # first mention wins, order kept
