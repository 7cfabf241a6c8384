"""The text side of the terminal widget: scrollback view, selection, search, links.

`TerminalText` is the base of `TerminalView`: it knows which absolute row
(scrollback, then screen) the widget shows at the top, turns rows into text,
and keeps the selection and the search matches that the view paints as
overlays. Rows are absolute: row 0 is the first line that ever scrolled off,
so a selection or a match stays on its text while output arrives.
"""

from __future__ import annotations

from textual.widget import Widget

from ecotui.terminal import Terminal
from ecotui.terminal.line import Line, history_runs, history_text, text_width, to_cells

# A program chose the link: only web and mail links are opened, never files.
_OPENABLE = ("http", "https", "mailto")


class TerminalText(Widget):
    """Scrollback, selection and search over a `Terminal` (no painting, no input)."""

    def __init__(
        self,
        term: Terminal,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.term = term
        # Scrollback view: absolute row at the top, None while following the live screen.
        self._view_top: int | None = None
        # Selection in absolute (row, col); search matches as (row, col0, col1).
        self._sel_anchor: tuple[int, int] | None = None
        self._sel_end: tuple[int, int] | None = None
        self._drag_selecting = False
        self.search_pattern = ""
        self._matches: list[tuple[int, int, int]] = []
        self._match_index = -1

    # -- rows ------------------------------------------------------------------------------
    def _item_at(self, row: int) -> Line | str | None:
        """The line at an absolute row (scrollback then screen), None past either end."""
        term = self.term
        added = term.history_added
        if row >= added:
            y = row - added
            return term.lines[y] if y < term.rows else None
        hist = term.history
        i = row - (added - len(hist))
        if i < 0 or term.alt_active:
            return None
        return hist[i]

    def view_top(self) -> int:
        """Absolute row shown at the top of the widget."""
        if self._view_top is None or self.term.alt_active:
            return self.term.history_added
        oldest = self.term.history_added - len(self.term.history)
        if self._view_top < oldest:
            self._view_top = oldest
        return self._view_top

    # -- scrollback ---------------------------------------------------------------------------
    @property
    def scrolled_back(self) -> int:
        """How many rows above the live screen the view is (0: following)."""
        return self.term.history_added - self.view_top()

    def scroll_history(self, delta: int) -> None:
        """Move the view by delta rows (negative: back into the scrollback)."""
        term = self.term
        if term.alt_active:
            return
        oldest = term.history_added - len(term.history)
        top = min(term.history_added, max(oldest, self.view_top() + delta))
        self._view_top = None if top >= term.history_added else top
        self.refresh()

    def page_up(self) -> None:
        self.scroll_history(-max(1, self.size.height - 1))

    def page_down(self) -> None:
        self.scroll_history(max(1, self.size.height - 1))

    def scroll_to_top(self) -> None:
        self.scroll_history(-(self.term.history_added + 1))

    def scroll_to_bottom(self) -> None:
        self._view_top = None
        self.refresh()

    # -- hyperlinks (OSC 8) --------------------------------------------------------------------
    def link_at(self, row: int, col: int) -> str:
        """The hyperlink of the cell at (absolute row, column), or ""."""
        item = self._item_at(row)
        if item is None:
            return ""
        runs = item.render_runs(self.term.cols) if isinstance(item, Line) else history_runs(item)
        x = 0
        for text, sid in runs:
            x += text_width(text)
            if col < x:
                return self.term.styles.link(sid)
        return ""

    def open_link(self, row: int, col: int) -> str:
        """Open the hyperlink under (absolute row, column) with the app (a click does this)."""
        uri = self.link_at(row, col)
        if uri.split(":", 1)[0].lower() not in _OPENABLE:
            return ""
        self.app.open_url(uri)
        return uri

    # -- text of rows, selection, search ------------------------------------------------------
    def row_text(self, row: int) -> str:
        item = self._item_at(row)
        if item is None:
            return ""
        return item.text() if isinstance(item, Line) else history_text(item)

    def _row_wrapped(self, row: int) -> bool:
        item = self._item_at(row)
        return isinstance(item, Line) and item.wrapped

    def screen_text(self) -> list[str]:
        """The rows the widget shows now, as text."""
        top = self.view_top()
        return [self.row_text(top + y) for y in range(self.size.height or self.term.rows)]

    def _ordered_selection(self) -> tuple[tuple[int, int], tuple[int, int]] | None:
        if self._sel_anchor is None or self._sel_end is None:
            return None
        a, b = sorted([self._sel_anchor, self._sel_end])
        return a, b

    def _selection_span(self, row: int, width: int) -> tuple[int, int] | None:
        sel = self._ordered_selection()
        if sel is None or sel[0] == sel[1]:
            return None
        (r0, c0), (r1, c1) = sel
        if not r0 <= row <= r1:
            return None
        start = c0 if row == r0 else 0
        end = c1 + 1 if row == r1 else width
        return start, end

    def select(self, start: tuple[int, int], end: tuple[int, int]) -> None:
        """Select from start to end, both (absolute row, column), inclusive."""
        self._sel_anchor, self._sel_end = start, end
        self.refresh()

    def clear_selection(self) -> None:
        self._sel_anchor = self._sel_end = None
        self.refresh()

    def selected_text(self) -> str:
        sel = self._ordered_selection()
        if sel is None or sel[0] == sel[1]:
            return ""
        (r0, c0), (r1, c1) = sel
        out: list[str] = []
        for row in range(r0, r1 + 1):
            cells = to_cells(self.row_text(row))
            start = c0 if row == r0 else 0
            end = c1 + 1 if row == r1 else len(cells)
            piece = "".join(cells[start:end]).rstrip(" ")
            out.append(piece)
            if row != r1 and not self._row_wrapped(row):
                out.append("\n")
        return "".join(out)

    def copy_selection(self) -> str:
        text = self.selected_text()
        if text:
            self.app.copy_to_clipboard(text)
        return text

    def copy_screen(self) -> str:
        text = "\n".join(self.screen_text()).rstrip("\n")
        if text:
            self.app.copy_to_clipboard(text)
        return text

    def search(self, pattern: str) -> bool:
        """Find `pattern` (case-insensitive) in the scrollback and screen; show the
        newest match. Returns whether there was one."""
        self.search_pattern = pattern
        self._matches = []
        self._match_index = -1
        if not pattern:
            self.refresh()
            return False
        term = self.term
        needle = pattern.lower()
        first = term.history_added - (0 if term.alt_active else len(term.history))
        last = term.history_added + term.rows
        for row in range(first, last):
            text = self.row_text(row)
            low = text.lower()
            start = low.find(needle)
            while start >= 0:
                c0 = text_width(text[:start])
                c1 = c0 + text_width(text[start : start + len(pattern)])
                self._matches.append((row, c0, c1))
                start = low.find(needle, start + max(1, len(needle)))
        if not self._matches:
            self.refresh()
            return False
        self._match_index = len(self._matches) - 1
        self._show_match()
        return True

    def search_next(self, backwards: bool = True) -> bool:
        """Go to the previous (older, default) or next match."""
        if not self._matches:
            return False
        step = -1 if backwards else 1
        self._match_index = (self._match_index + step) % len(self._matches)
        self._show_match()
        return True

    @property
    def current_match(self) -> tuple[int, int, int] | None:
        if 0 <= self._match_index < len(self._matches):
            return self._matches[self._match_index]
        return None

    @property
    def match_count(self) -> int:
        return len(self._matches)

    def _show_match(self) -> None:
        match = self.current_match
        if match is None:
            return
        row = match[0]
        term = self.term
        height = max(1, self.size.height or term.rows)
        top = self.view_top()
        if not top <= row < top + height:
            if row >= term.history_added:
                self._view_top = None
            else:
                self._view_top = max(term.history_added - len(term.history), row - height // 2)
        self.refresh()
