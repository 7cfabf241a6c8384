"""A replica's log on the line API: large, streaming, searchable.

Lines are kept in a bounded deque and drawn only when on screen (with a small
cache); following keeps the end in view, pausing keeps the view still while
lines keep arriving; search highlights matches and jumps between them.
"""

from __future__ import annotations

import re
from collections import deque
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.binding import BindingType
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ecotui.keymap import MOVEMENT
from ecotui.text import visible_line


class LogView(ScrollView, can_focus=True):
    BINDINGS: ClassVar[list[BindingType]] = [*MOVEMENT]

    COMPONENT_CLASSES = {"log-view--match", "log-view--current", "log-view--error", "log-view--dim"}

    DEFAULT_CSS = """
    LogView {
        height: 1fr;
        overflow-x: auto;
        background: $surface;
        scrollbar-size-vertical: 1;
        scrollbar-size-horizontal: 1;
    }
    LogView > .log-view--match { background: $warning 40%; }
    LogView > .log-view--current { background: $accent; color: $background; text-style: bold; }
    LogView > .log-view--error { color: $error; }
    LogView > .log-view--dim { color: $foreground 55%; }
    """

    def __init__(self, *, max_lines: int = 20_000, id: str | None = None) -> None:
        super().__init__(id=id)
        self.lines: deque[str] = deque(maxlen=max_lines)
        self._partial = ""
        self.follow = True
        self.unseen = 0  # lines that arrived while paused
        self.search: str = ""
        self._pattern: re.Pattern[str] | None = None
        self.matches: list[int] = []
        self.match_index = -1
        self._max_width = 0
        self.dropped = 0  # lines that fell off the front (deque bound)

    # -- data --------------------------------------------------------------------
    def clear(self) -> None:
        self.lines.clear()
        self._partial = ""
        self.unseen = 0
        self.dropped = 0
        self._max_width = 0
        self.matches = []
        self.match_index = -1
        self._sync()

    def feed(self, text: str) -> int:
        """Append streamed text (may end mid-line). Returns complete lines added."""
        text = self._partial + text
        parts = text.split("\n")
        self._partial = parts.pop()
        return self.append_lines(parts)

    def flush(self) -> None:
        if self._partial:
            part, self._partial = self._partial, ""
            self.append_lines([part])

    def append_lines(self, new: list[str]) -> int:
        if not new:
            return 0
        overflow = max(0, len(self.lines) + len(new) - (self.lines.maxlen or 0))
        for line in new:
            line = visible_line(line)
            self.lines.append(line)
            self._max_width = max(self._max_width, len(line))
        if overflow:
            self.dropped += overflow
            self.matches = [m - overflow for m in self.matches if m >= overflow]
        if self._pattern is not None:
            start = len(self.lines) - len(new)
            for i in range(max(0, start), len(self.lines)):
                if self._pattern.search(self.lines[i]):
                    self.matches.append(i)
        if not self.follow:
            self.unseen += len(new)
        self._sync()
        return len(new)

    def _sync(self) -> None:
        self.virtual_size = Size(max(self._max_width, self.size.width), len(self.lines))
        if self.follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh()

    def set_follow(self, follow: bool) -> None:
        self.follow = follow
        if follow:
            self.unseen = 0
            self.scroll_end(animate=False, immediate=True, x_axis=False)

    # -- search ------------------------------------------------------------------
    def set_search(self, text: str) -> int:
        self.search = text
        self._pattern = re.compile(re.escape(text), re.IGNORECASE) if text else None
        self.matches = (
            [i for i, line in enumerate(self.lines) if self._pattern.search(line)]
            if self._pattern
            else []
        )
        self.match_index = -1
        self.refresh()
        return len(self.matches)

    def jump(self, step: int) -> int | None:
        """Go to the next (step 1) or previous (-1) match from the view; returns its line."""
        if not self.matches:
            return None
        self.set_follow(False)
        if self.match_index < 0:
            top = int(self.scroll_y)
            if step > 0:
                self.match_index = next((k for k, m in enumerate(self.matches) if m >= top), 0)
            else:
                self.match_index = next(
                    (k for k in range(len(self.matches) - 1, -1, -1) if self.matches[k] < top),
                    len(self.matches) - 1,
                )
        else:
            self.match_index = (self.match_index + step) % len(self.matches)
        line = self.matches[self.match_index]
        self.scroll_to(y=max(0, line - self.size.height // 2), animate=False, immediate=True)
        self.refresh()
        return line

    # -- movement ----------------------------------------------------------------
    def action_cursor_down(self) -> None:
        self.set_follow(False)
        self.scroll_to(y=self.scroll_y + 1, animate=False, immediate=True)

    def action_cursor_up(self) -> None:
        self.set_follow(False)
        self.scroll_to(y=self.scroll_y - 1, animate=False, immediate=True)

    def action_cursor_top(self) -> None:
        self.set_follow(False)
        self.scroll_home(animate=False, immediate=True)

    def action_cursor_bottom(self) -> None:
        self.scroll_end(animate=False, immediate=True, x_axis=False)

    def action_page_down(self) -> None:
        self.set_follow(False)
        self.scroll_to(y=self.scroll_y + self.size.height - 1, animate=False, immediate=True)

    def action_page_up(self) -> None:
        self.set_follow(False)
        self.scroll_to(y=self.scroll_y - self.size.height + 1, animate=False, immediate=True)

    # -- rendering ---------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        i = scroll_y + y
        width = self.scrollable_content_region.width or self.size.width
        base = self.rich_style
        if i >= len(self.lines):
            return Strip.blank(width, base)
        line = self.lines[i]
        style = base
        low = line.lower()
        if "error" in low or "traceback" in low or "exception" in low:
            style = base + self._st("error")
        segs: list[Segment] = []
        if self._pattern is not None and i in self._match_set():
            current = self.match_index >= 0 and self.matches[self.match_index] == i
            hl = base + self._st("current" if current else "match")
            pos = 0
            for m in self._pattern.finditer(line):
                if m.start() > pos:
                    segs.append(Segment(line[pos : m.start()], style))
                segs.append(Segment(line[m.start() : m.end()], hl))
                pos = m.end()
            if pos < len(line):
                segs.append(Segment(line[pos:], style))
        else:
            segs.append(Segment(line, style))
        strip = Strip(segs).crop_extend(scroll_x, scroll_x + width, base)
        return strip

    def _match_set(self) -> set[int]:
        cache = getattr(self, "_mset", None)
        if cache is None or cache[0] is not self.matches or cache[1] != len(self.matches):
            cache = (self.matches, len(self.matches), set(self.matches))
            self._mset = cache
        return cache[2]

    def _st(self, name: str) -> Style:
        return self.get_component_rich_style(f"log-view--{name}")
