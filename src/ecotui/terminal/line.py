"""One row of the terminal: compact runs while written left to right, cells when edited.

Most output is written left to right onto blank lines (a shell, `ls`, logs,
build output). Such a line is kept as a list of `(text, style_id)` runs plus
the column where its content ends, so writing a run is one list append and a
line that scrolls off into the scrollback is kept as it is. Only when a
program writes into the middle of existing content (editors, `htop`, progress
bars) is the line turned into per-cell lists (`chars`, `styles`), where a
write is one slice assignment.

Cells: a wide (CJK) character takes two cells, the second holding `""`;
combining marks are appended to the character of their cell.
Scrollback lines are either a plain `str` (default style, not wrapped) or a
`Line` in run form that is never modified again.
"""

from __future__ import annotations

from wcwidth import wcwidth


class _Widths(dict[str, int]):
    """Cell width per character, cached (wcwidth is a Python function)."""

    def __missing__(self, ch: str) -> int:
        w = wcwidth(ch)
        if w < 0:  # control and other non-printables take no cell
            w = 0
        self[ch] = w
        return w


WIDTHS = _Widths()


def text_width(text: str) -> int:
    if text.isascii():
        return len(text)
    return sum(map(WIDTHS.__getitem__, text))


def to_cells(text: str) -> list[str]:
    """Characters of `text` laid into cells ("" after a wide char).

    Zero-width characters are attached to the previous cell."""
    if text.isascii():
        return list(text)
    cells: list[str] = []
    widths = WIDTHS
    for ch in text:
        w = widths[ch]
        if w == 1:
            cells.append(ch)
        elif w == 2:
            cells.append(ch)
            cells.append("")
        elif cells:
            i = len(cells) - 1
            if cells[i] == "" and i:
                i -= 1
            cells[i] += ch
    return cells


class Line:
    """A screen row; see the module docstring for its two forms."""

    __slots__ = ("segs", "end", "fill", "chars", "styles", "wrapped", "gen")

    def __init__(self, fill: int = 0) -> None:
        # Run form: segs covers cells [0, end); cells [end, cols) are blanks of style `fill`.
        self.segs: list[tuple[str, int]] | None = []
        self.end = 0
        self.fill = fill
        # Cell form (segs is None): one entry per column.
        self.chars: list[str] | None = None
        self.styles: list[int] | None = None
        self.wrapped = False  # the text goes on in the next line (autowrap)
        # Bumped on every change but an append in run form (which moves `end`);
        # renderers cache on (line, gen, end).
        self.gen = 0

    # -- form changes -------------------------------------------------------
    def materialize(self, cols: int) -> None:
        if self.chars is not None:
            return
        chars: list[str] = []
        styles: list[int] = []
        for text, sid in self.segs or ():
            cells = to_cells(text)
            chars.extend(cells)
            styles.extend([sid] * len(cells))
        if len(chars) < cols:
            pad = cols - len(chars)
            chars.extend(" " * pad)
            styles.extend([self.fill] * pad)
        elif len(chars) > cols:
            del chars[cols:]
            del styles[cols:]
            if chars and chars[-1] != "" and cols and WIDTHS[chars[-1][:1]] == 2:
                chars[-1] = " "
        self.chars = chars
        self.styles = styles
        self.segs = None

    def runs(self) -> list[tuple[str, int]]:
        """The content as (text, style) runs, trailing default blanks dropped."""
        if self.chars is None:
            return list(self.segs or ())
        chars = self.chars
        styles = self.styles
        assert styles is not None
        n = len(chars)
        while n and chars[n - 1] == " " and styles[n - 1] == 0:
            n -= 1
        out: list[tuple[str, int]] = []
        if not n:
            return out
        first = styles[0]
        if _all_same(styles, n):
            return [("".join(chars[:n]), first)]
        start = 0
        cur = first
        for i in range(1, n):
            s = styles[i]
            if s != cur:
                out.append(("".join(chars[start:i]), cur))
                start = i
                cur = s
        out.append(("".join(chars[start:n]), cur))
        return out

    def render_runs(self, cols: int) -> list[tuple[str, int]]:
        """Runs covering exactly `cols` cells (blank tail included), for drawing."""
        if self.chars is None:
            segs = list(self.segs or ())
            if self.end < cols:
                segs.append((" " * (cols - self.end), self.fill))
            return segs
        chars = self.chars
        styles = self.styles
        assert styles is not None
        n = min(cols, len(chars))
        if _all_same(styles, n):
            out = [("".join(chars[:n]), styles[0] if n else 0)]
        else:
            out = []
            start = 0
            cur = styles[0]
            for i in range(1, n):
                s = styles[i]
                if s != cur:
                    out.append(("".join(chars[start:i]), cur))
                    start = i
                    cur = s
            out.append(("".join(chars[start:n]), cur))
        if n < cols:
            out.append((" " * (cols - n), 0))
        return out

    def text(self) -> str:
        """The line's characters, trailing blanks removed."""
        if self.chars is None:
            return "".join(t for t, _ in self.segs or ()).rstrip(" ")
        return "".join(self.chars).rstrip(" ")

    def compact(self) -> Line | str:
        """This line as kept in the scrollback."""
        if self.chars is not None:
            runs = self.runs()
            self.chars = None
            self.styles = None
            self.segs = runs
            self.end = sum(text_width(t) for t, _ in runs)
            self.fill = 0
        elif self.fill != 0:
            # Keep the erased-background tail visible only up to the content.
            self.fill = 0
        segs = self.segs or ()
        if not self.wrapped:
            if not segs:
                return ""
            if len(segs) == 1 and segs[0][1] == 0:
                return segs[0][0]
        return self

    # -- edits -----------------------------------------------------------------
    def write(self, x: int, text: str, width: int, sid: int, cols: int) -> None:
        """Put `text` (`width` cells, all fitting before `cols`) at column x."""
        self.gen += 1
        if self.chars is None:
            end = self.end
            segs = self.segs
            assert segs is not None
            if x == end:
                segs.append((text, sid))
                self.end = x + width
                return
            if x > end:
                segs.append((" " * (x - end), self.fill))
                segs.append((text, sid))
                self.end = x + width
                return
            if x == 0 and width >= end:
                self.segs = [(text, sid)]
                self.end = width
                return
            self.materialize(cols)
        chars = self.chars
        styles = self.styles
        assert chars is not None and styles is not None
        cells = text if len(text) == width and text.isascii() else to_cells(text)
        n = len(cells)
        if x and chars[x] == "":
            chars[x - 1] = " "
        right = x + n
        if right < cols and chars[right] == "":
            chars[right] = " "
        chars[x:right] = cells
        styles[x:right] = [sid] * n

    def combine(self, x: int, mark: str, cols: int) -> None:
        """Attach a zero-width character to the cell at x (or the wide char it ends)."""
        self.materialize(cols)
        chars = self.chars
        assert chars is not None
        if chars[x] == "" and x:
            x -= 1
        chars[x] += mark
        self.gen += 1

    def erase(self, x0: int, x1: int, fill: int, cols: int) -> None:
        """Blank cells [x0, x1) with style `fill`."""
        x1 = min(x1, cols)
        if x0 >= x1:
            return
        self.gen += 1
        if self.chars is None:
            if x0 == 0 and x1 >= cols:
                self.segs = []
                self.end = 0
                self.fill = fill
                return
            if x1 >= cols and fill == self.fill:
                if x0 >= self.end:
                    return
                if self._truncate(x0):
                    return
            self.materialize(cols)
        chars = self.chars
        styles = self.styles
        assert chars is not None and styles is not None
        if chars[x0] == "" and x0:
            chars[x0 - 1] = " "
        if x1 < cols and chars[x1] == "":
            chars[x1] = " "
        n = x1 - x0
        chars[x0:x1] = " " * n
        styles[x0:x1] = [fill] * n

    def _truncate(self, x: int) -> bool:
        """Run form: drop content from column x on, if runs allow cutting there."""
        segs = self.segs
        assert segs is not None
        col = 0
        for i, (text, sid) in enumerate(segs):
            if col == x:
                del segs[i:]
                self.end = x
                return True
            if not text.isascii():
                return False
            nxt = col + len(text)
            if nxt > x:
                segs[i] = (text[: x - col], sid)
                del segs[i + 1 :]
                self.end = x
                return True
            col = nxt
        return False

    def insert_blanks(self, x: int, n: int, fill: int, cols: int) -> None:
        """ICH: shift cells from x right by n (lost past the edge), blanks at x."""
        self.materialize(cols)
        chars = self.chars
        styles = self.styles
        assert chars is not None and styles is not None
        n = min(n, cols - x)
        if chars[x] == "" and x:
            chars[x - 1] = " "
            chars[x] = " "
        chars[x:x] = " " * n
        styles[x:x] = [fill] * n
        del chars[cols:]
        del styles[cols:]
        if chars[cols - 1] != "" and WIDTHS[chars[cols - 1][:1] or " "] == 2:
            chars[cols - 1] = " "
        self.gen += 1

    def delete_cells(self, x: int, n: int, fill: int, cols: int) -> None:
        """DCH: remove n cells at x, pull the rest left, blanks at the end."""
        self.materialize(cols)
        chars = self.chars
        styles = self.styles
        assert chars is not None and styles is not None
        n = min(n, cols - x)
        if chars[x] == "" and x:
            chars[x - 1] = " "
        del chars[x : x + n]
        del styles[x : x + n]
        if x < len(chars) and chars[x] == "":
            chars[x] = " "
        chars.extend(" " * n)
        styles.extend([fill] * n)
        self.gen += 1

    def resize(self, old_cols: int, cols: int) -> None:
        if self.chars is None:
            if self.end > cols:
                self.materialize(old_cols)
            else:
                return
        chars = self.chars
        styles = self.styles
        assert chars is not None and styles is not None
        if cols < len(chars):
            del chars[cols:]
            del styles[cols:]
            if cols and chars[cols - 1] != "" and WIDTHS[chars[cols - 1][:1] or " "] == 2:
                chars[cols - 1] = " "
        else:
            pad = cols - len(chars)
            chars.extend(" " * pad)
            styles.extend([0] * pad)
        self.gen += 1

    def cell(self, x: int, cols: int) -> tuple[str, int]:
        """(char, style id) of one cell (for tests and selection)."""
        self.materialize(cols)
        assert self.chars is not None and self.styles is not None
        return self.chars[x], self.styles[x]


def _all_same(styles: list[int], n: int) -> bool:
    if not n:
        return True
    first = styles[0]
    if n == len(styles):
        return styles.count(first) == n
    return styles[:n].count(first) == n


def history_runs(item: Line | str) -> list[tuple[str, int]]:
    if isinstance(item, str):
        return [(item, 0)] if item else []
    return item.runs()


def history_text(item: Line | str) -> str:
    if isinstance(item, str):
        return item
    return item.text()


def history_wrapped(item: Line | str) -> bool:
    return False if isinstance(item, str) else item.wrapped
