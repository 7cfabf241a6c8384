"""Shell recordings in the asciicast v2 format (what asciinema's player and tools read).

A file is a JSON header line (`{"version": 2, "width", "height", "timestamp", ...}`)
followed by one JSON array per event: `[seconds, "o", text]` for output and
`[seconds, "r", "WxH"]` for a resize. Output bytes are decoded as UTF-8 across
chunk boundaries, so a character split between two reads is written whole.

Recordings live in `recordings_dir()` unless a path is given: under the user's
data directory (`$XDG_DATA_HOME/ecotui/recordings`, else
`~/.local/share/ecotui/recordings`), created 0700, files 0600 (a shell shows
secrets).
"""

from __future__ import annotations

import codecs
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any


def recordings_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local/share")
    return Path(base) / "ecotui" / "recordings"


def default_recording_path(
    cluster: str, replica: str, *, now: datetime | None = None, env: Mapping[str, str] | None = None
) -> Path:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return recordings_dir(env) / f"{cluster}-{replica}-{stamp}.cast"


def list_recordings(env: Mapping[str, str] | None = None) -> list[Path]:
    """Recordings in the default directory, newest first."""
    d = recordings_dir(env)
    try:
        files = [p for p in d.iterdir() if p.suffix == ".cast" and p.is_file()]
    except OSError:
        return []
    return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)


class CastWriter:
    """Writes one asciicast v2 file as the session goes (each event flushed)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        width: int,
        height: int,
        *,
        title: str | None = None,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        timestamp: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file: IO[str] | None = os.fdopen(fd, "w", encoding="utf-8")
        self._clock = clock
        self._start = clock()
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        header: dict[str, Any] = {
            "version": 2,
            "width": int(width),
            "height": int(height),
            "timestamp": int(timestamp if timestamp is not None else time.time()),
        }
        if title:
            header["title"] = title
        header["env"] = {k: v for k, v in (env or {}).items() if k in ("SHELL", "TERM")}
        self._write(header)

    @property
    def closed(self) -> bool:
        return self._file is None

    def _at(self) -> float:
        return round(self._clock() - self._start, 6)

    def _write(self, obj: Any) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self._file.flush()

    def output(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        if text:
            self._write([self._at(), "o", text])

    def resize(self, width: int, height: int) -> None:
        self._write([self._at(), "r", f"{int(width)}x{int(height)}"])

    def close(self) -> None:
        if self._file is None:
            return
        rest = self._decoder.decode(b"", final=True)
        if rest:
            self._write([self._at(), "o", rest])
        self._file.close()
        self._file = None


class CastError(ValueError):
    """The file is not an asciicast v2 recording; the message says where."""


@dataclass(frozen=True)
class Cast:
    header: dict[str, Any]
    events: list[tuple[float, str, str]]

    @property
    def duration(self) -> float:
        return self.events[-1][0] if self.events else 0.0


def read_cast(path: str | os.PathLike[str]) -> Cast:
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except IsADirectoryError:
        raise CastError(f"{path}: is a directory") from None
    except UnicodeDecodeError:
        raise CastError(f"{path}: not an asciicast file (not UTF-8 text)") from None
    if not lines:
        raise CastError(f"{path}: empty file")
    try:
        header = json.loads(lines[0])
    except ValueError:
        raise CastError(f"{path}: line 1: not an asciicast v2 header") from None
    if not isinstance(header, dict) or header.get("version") != 2:
        raise CastError(f"{path}: line 1: not an asciicast v2 header (version 2 expected)")
    events: list[tuple[float, str, str]] = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            t, kind, data = json.loads(line)
            events.append((float(t), str(kind), str(data)))
        except (ValueError, TypeError):
            raise CastError(f"{path}: line {n}: not an event [time, code, data]") from None
    return Cast(header, events)


_SIZE = re.compile(r"^\s*(\d{1,5})\s*x\s*(\d{1,5})\s*$")


def parse_size(data: str) -> tuple[int, int] | None:
    """The (width, height) of a resize event's "WxH", or None if it is malformed."""
    m = _SIZE.match(data)
    if m is None:
        return None
    w, h = int(m.group(1)), int(m.group(2))
    return (w, h) if w > 0 and h > 0 else None


def resize_sequence(data: str) -> str | None:
    """The xterm window-size request (CSI 8 ; rows ; cols t) that asks the playing
    terminal for the size a resize event recorded; None for a malformed event."""
    size = parse_size(data)
    return None if size is None else f"\x1b[8;{size[1]};{size[0]}t"


def schedule(
    events: list[tuple[float, str, str]], *, speed: float = 1.0, idle_limit: float | None = None
) -> Iterator[tuple[float, str, str]]:
    """Events with the delay to wait before each: gaps capped at `idle_limit`,
    then divided by `speed`."""
    prev = 0.0
    for t, kind, data in events:
        gap = max(0.0, t - prev)
        prev = t
        if idle_limit is not None:
            gap = min(gap, idle_limit)
        yield gap / speed, kind, data
