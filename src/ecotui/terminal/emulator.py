"""The terminal emulator core: bytes from a program in, a screen of styled lines out.

Why our own core and not pyte: measured on this project's 2-core machine with
`bench/terminal.py`, pyte 0.8.2 parses about 1.3 MB/s of SGR-coloured lines,
1.2 MB/s of full-screen cursor-addressed redraws, 1.6 MB/s of CJK text and
0.7 MB/s of plain `seq` output; a widget on top of it freezes for seconds on a
large `cat`. This core reaches the issue's targets (see the bench for the
figures of a run) by working on runs, not characters:

- one regular expression splits the input into printable runs and control
  sequences (C0, ESC, CSI, OSC, DCS/APC/PM/SOS); CR and LF stay inside runs so
  a block of plain lines is one run, split with `str.split`;
- a run is written to a line with one list append (run form, see `line.py`)
  or one slice assignment (cell form);
- when a block holds more lines than the screen, it is cut with one
  `split("\r\n")` and the lines that would scroll straight off go to the
  scrollback as those strings, without ever becoming screen rows;
- SGR transitions are cached per (style, parameters).

A run of the bench on a busy machine: `seq 1 1000000` end to end, median 571 ms
against tmux 900 ms (12 floods each, interleaved; 183 ms of our CPU a flood);
core against pyte: SGR lines 9.6x, redraws 15.5x, CJK 17.7x, plain lines 87x.

What it keeps: per-row `Line`s for the main and the alternate screen, a
bounded scrollback (`collections.deque`), the cursor and modes, and what the
program asked of the terminal: answers to device queries (`take_replies`),
the window title, bell count, OSC 52 clipboard writes (`take_clipboard`).
Rows changed since the last `take_dirty()` are known to the renderer.

Deliberate choices (where xterm and tmux differ we follow tmux, whose screens
the corpus tests compare against): see tests/terminal/corpus/README.md.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from . import margins
from .charsets import DEC_GRAPHICS
from .line import WIDTHS, Line, history_runs, history_text, history_wrapped
from .reflow import reflow
from .style import StyleTable

# One token: a control sequence (group 1). Text between tokens is printable
# plus CR and LF (handled in blocks). An incomplete sequence at the end of a
# chunk is left inside the last text part and kept for the next chunk.
_TOKEN = re.compile(
    r"("
    r"\x1b\[[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e\x18\x1a]"  # CSI (CAN, SUB: aborted)
    r"|\x1b\][^\x07\x1b\x18\x1a]*(?:\x07|\x1b\\|[\x18\x1a])"  # OSC, BEL or ST terminated
    r"|\x1b[P_^X][^\x1b\x18\x1a]*(?:\x1b\\|[\x18\x1a])"  # DCS, APC, PM, SOS
    r"|\x1b[\x20-\x2f]*[\x30-\x4f\x51-\x57\x59\x5a\x5c\x60-\x7e\x18\x1a]"  # other ESC sequences
    r"|\x1b(?=[^\x20-\x7e])"  # ESC followed by a non-printable: cancelled
    r"|[\x00-\x09\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]"  # C0 controls except CR, LF, ESC
    r")"
)
_split = _TOKEN.split
# Controls that need the tokenizer (everything but CR and LF, ESC included).
# Checking a chunk for them with one character class is ~6x cheaper than the
# tokenizer's alternation, and floods of plain lines have none.
_NEEDS_TOKENS = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]").search

_NOT_SGR = ("<", "=", ">", "?")
_MAX_PENDING = 1 << 20  # an unterminated OSC/DCS longer than this is dropped

# Mouse tracking modes (DECSET numbers) and encodings.
MOUSE_X10, MOUSE_NORMAL, MOUSE_BUTTON, MOUSE_ANY = 9, 1000, 1002, 1003


@dataclass
class _Saved:
    x: int = 0
    y: int = 0
    pen: int = 0
    origin: bool = False
    wrap_pending: bool = False
    charsets: tuple[str, str, str, str] = ("B", "B", "B", "B")
    gl: int = 0


def _xterm_palette(n: int) -> tuple[int, int, int]:
    base = [
        (0, 0, 0),
        (205, 0, 0),
        (0, 205, 0),
        (205, 205, 0),
        (0, 0, 238),
        (205, 0, 205),
        (0, 205, 205),
        (229, 229, 229),
        (127, 127, 127),
        (255, 0, 0),
        (0, 255, 0),
        (255, 255, 0),
        (92, 92, 255),
        (255, 0, 255),
        (0, 255, 255),
        (255, 255, 255),
    ]
    if n < 16:
        return base[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return steps[n // 36], steps[(n // 6) % 6], steps[n % 6]
    v = 8 + (n - 232) * 10
    return v, v, v


class Terminal:
    """A VT/xterm-compatible screen fed with a program's output."""

    def __init__(self, cols: int = 80, rows: int = 24, *, scrollback: int = 10_000) -> None:
        self.cols = max(1, cols)
        self.rows = max(1, rows)
        self.styles = StyleTable()
        self.history: deque[Line | str] = deque(maxlen=max(0, scrollback))
        self.history_added = (
            0  # lines ever added to the scrollback (to keep a scrolled view steady)
        )
        self.main: list[Line] = [Line() for _ in range(self.rows)]
        self.alt: list[Line] = [Line() for _ in range(self.rows)]
        self.lines = self.main
        self.all_dirty = True
        self._snapshot: list[tuple[Line, int, int]] = []
        self.title = ""
        self.icon_title = ""
        self.cwd = ""
        self.bell_count = 0
        self.replies = bytearray()
        self.clipboard: list[tuple[str, str]] = []  # OSC 52 writes: (selection, text)
        self.default_fg = (229, 229, 229)
        self.default_bg = (0, 0, 0)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._reset_state()

    # -- state ---------------------------------------------------------------------
    def _reset_state(self) -> None:
        self.x = 0
        self.y = 0
        self.wrap_pending = False
        self.pen = 0
        self.top = 0
        self.bottom = self.rows - 1
        self.autowrap = True
        self.origin = False
        self.insert = False
        self.newline_mode = False
        self.cursor_visible = True
        self.app_cursor = False  # DECCKM
        self.app_keypad = False  # DECKPAM / DECNKM
        self.bracketed_paste = False
        self.mouse_tracking = 0  # 0, 9, 1000, 1002, 1003
        self.mouse_encoding = ""  # "", "utf8", "sgr", "urxvt"
        self.focus_events = False
        self.reverse_video = False
        self.synchronized = False  # DEC mode 2026: the renderer may hold frames
        self.alt_active = False
        self.charsets = ["B", "B", "B", "B"]
        self.gl = 0
        self._graphics = False
        self.tabs = set(range(8, self.cols, 8))
        self._reset_margins()
        self._saved_main = _Saved()
        self._saved_alt = _Saved()

    def _reset_margins(self) -> None:
        """Left and right margins (margins.py): off, the whole width."""
        self.lr_mode = False  # DECLRMM (mode 69): `CSI Pl ; Pr s` sets margins
        self.left = 0
        self.right = self.cols - 1
        self.lr_active = False  # margins narrower than the screen: margins.run() reads input

    # -- public API -------------------------------------------------------------------
    def feed(self, data: bytes | str) -> None:
        """Process output of the program (bytes are UTF-8, decoded incrementally)."""
        s = self._decoder.decode(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
        if self._pending:
            s = self._pending + s
            self._pending = ""
        if not s:
            return
        if _NEEDS_TOKENS(s) is None:
            if self.lr_active:
                margins.run(self, [s])
            else:
                self._run([s])
            return
        parts = _split(s)
        last = parts[-1]
        if "\x1b" in last:
            i = last.rfind("\x1b")
            pending = last[i:]
            if len(pending) <= _MAX_PENDING:
                self._pending = pending
            parts[-1] = last[:i]
        if self.lr_active:
            margins.run(self, parts)
        else:
            self._run(parts)

    def take_replies(self) -> bytes:
        """Bytes the terminal owes the program (answers to DA, DSR, ...)."""
        out = bytes(self.replies)
        self.replies.clear()
        return out

    def take_clipboard(self) -> list[tuple[str, str]]:
        out = self.clipboard
        self.clipboard = []
        return out

    def take_dirty(self) -> set[int] | None:
        """Rows changed since the last call; None means every row.

        Tracked without cost while writing: every `Line` counts its changes
        (`gen`), so a row is dirty when it holds another line object or the
        same one changed; the renderer asks once per frame."""
        lines = self.lines
        snap = self._snapshot
        self._snapshot = [(ln, ln.gen, ln.end) for ln in lines]
        if self.all_dirty or len(snap) != len(lines):
            self.all_dirty = False
            return None
        return {
            y
            for y, ln in enumerate(lines)
            if snap[y][0] is not ln or snap[y][1] != ln.gen or snap[y][2] != ln.end
        }

    def line(self, y: int) -> Line:
        return self.lines[y]

    def display(self) -> list[str]:
        """The screen as text, one string per row, trailing blanks removed."""
        return [ln.text() for ln in self.lines]

    def history_lines(self) -> list[str]:
        return [history_text(h) for h in self.history]

    @staticmethod
    def history_runs(item: Line | str) -> list[tuple[str, int]]:
        return history_runs(item)

    @staticmethod
    def history_wrapped(item: Line | str) -> bool:
        return history_wrapped(item)

    def cell(self, x: int, y: int) -> tuple[str, tuple[int, int, int]]:
        ch, sid = self.lines[y].cell(x, self.cols)
        return ch, self.styles[sid]

    # -- the token loop -------------------------------------------------------------
    def _run(self, parts: list[str]) -> None:
        """Process split input: parts[0::2] text, parts[1::2] control sequences.

        The common cases (an SGR, a run of ASCII appended on the current row)
        are inlined here; everything else goes through the methods below."""
        print_ = self._print
        block = self._block
        text = parts[0]
        if text:
            if "\n" in text or "\r" in text:
                block(text)
            else:
                print_(text)
        styles = self.styles
        by_pen = styles.sgr_by_pen
        sgr = styles.sgr
        c0 = self._c0
        csi = self._csi
        n = len(parts)
        pen = self.pen  # kept local while only SGRs and appends touch it
        from_pen = by_pen[pen].get  # SGR transitions from the current pen
        for i in range(1, n, 2):
            c = parts[i]
            sid = from_pen(c)  # only SGR sequences are ever in this cache
            if sid is not None or (
                c[-1] == "m" and len(c) > 2 and c[1] == "[" and c[2:3] not in _NOT_SGR
            ):
                if sid is None:
                    sid = sgr(pen, c[2:-1], c)
                if sid != pen:
                    pen = sid
                    from_pen = by_pen[pen].get
            else:
                self.pen = pen
                if len(c) == 1:
                    c0(c)
                elif c[-1] in "\x18\x1a":
                    pass  # CAN or SUB inside a sequence: it is abandoned, nothing shown
                elif c[1] == "[":
                    csi(c)
                    if self.lr_active:  # margins were set: the rest goes through margins.py
                        margins.run(self, parts[i + 1 :])
                        return
                else:
                    k = c[1]
                    if k == "]":
                        self._osc(c)
                    elif k in "P_^X":
                        self._dcs(c)
                    else:
                        self._esc(c)
                if self.pen != pen:
                    pen = self.pen
                    from_pen = by_pen[pen].get
            text = parts[i + 1]
            if not text:
                continue
            if text.isascii() and text.isprintable():  # no CR, LF or stray ESC
                if not self.wrap_pending:
                    x = self.x
                    w = len(text)
                    line = self.lines[self.y]
                    if (
                        line.segs is not None
                        and x == line.end
                        and x + w < self.cols
                        and not self._graphics
                        and not self.insert
                    ):
                        # Append a run to a row in run form (see line.py).
                        line.segs.append((text, pen))
                        line.end = self.x = x + w  # `end` changing marks the row dirty
                        continue
                self.pen = pen
                print_(text)
            elif "\n" in text or "\r" in text:
                if text == "\r\n" and not self.newline_mode:
                    self.x = 0
                    self.wrap_pending = False
                    y = self.y
                    if y == self.bottom:
                        self.pen = pen
                        self._scroll_up(1)
                    elif y < self.rows - 1:
                        self.y = y + 1
                else:
                    self.pen = pen
                    block(text)
            else:
                self.pen = pen
                print_(text)
        self.pen = pen

    def _block(self, text: str) -> None:
        """Printable text with CR and LF in it."""
        nl = text.count("\n")
        if nl > self.rows + 1 and self._bulk(text, nl):
            return
        segs = text.split("\n")
        first = True
        for seg in segs:
            if first:
                first = False
            else:
                self._lf()
            if seg:
                self._segment(seg)

    def _segment(self, seg: str) -> None:
        """Text without LF; CR returns to column 0."""
        if "\r" not in seg:
            self._print(seg)
            return
        pieces = seg.split("\r")
        p0 = pieces[0]
        if p0:
            self._print(p0)
        for p in pieces[1:]:
            self.x = 0
            self.wrap_pending = False
            if p:
                self._print(p)

    def _bulk(self, text: str, nl: int) -> bool:
        """Many `line\r\n` lines at once: only the last screenful becomes rows.

        Applies when every line between the first and the last LF ends with
        CR, has no other CR, is plain ASCII that fits the width, and the lines
        scroll the whole screen with a pen that erases to the default
        background. Returns False (nothing done) otherwise.

        The lines between are cut with one `split("\r\n")`, so a line that
        scrolls straight into the scrollback is the very string the split made.
        """
        cols = self.cols
        rows = self.rows
        if (
            self.top != 0
            or self.bottom != rows - 1
            or self.insert
            or self._graphics
            or self.newline_mode
            or not text.isascii()
            or "\x1b" in text
            or self.styles.fill(self.pen) != 0
        ):
            return False
        a = text.index("\n")
        b = text.rindex("\n")
        inner = text[a + 1 : b + 1]
        if inner.count("\r") != nl - 1 or inner.count("\r\n") != nl - 1:
            return False
        middle = inner.split("\r\n")
        middle.pop()  # inner ends with CR LF: an empty piece after it
        if max(map(len, middle)) > cols:
            return False
        # The first piece continues the current row; written normally.
        if a:
            self._segment(text[:a])
        self._lf()
        self.x = 0
        self.wrap_pending = False
        # Walk down to the bottom row normally (rows below may hold old text).
        i = 0
        while i < len(middle) and (self.y != self.bottom or i == 0):
            if middle[i]:
                self._print(middle[i])
            self.x = 0
            self.wrap_pending = False
            self._lf()
            i += 1
        rest = middle[i:]
        r = len(rest)
        if r:
            # Now at the bottom row, x == 0, on a blank row just scrolled in.
            pen = self.pen
            lines = self.lines
            keep_history = not self.alt_active
            old = lines[: rows - 1]
            hist = self.history
            if r >= rows - 1:
                if keep_history:
                    for ln in old:
                        self._push_history(ln)
                k = r - (rows - 1)
                if keep_history and k:
                    cap = hist.maxlen or 0
                    moved = rest[:k] if k <= cap else rest[k - cap : k]
                    if pen == 0:
                        hist.extend(moved)
                    else:
                        hist.extend([_run_line(s, pen) for s in moved])
                    self.history_added += k
                new = [_run_line(s, pen) for s in rest[k:]]
            else:
                if keep_history:
                    for ln in old[:r]:
                        self._push_history(ln)
                new = old[r:] + [_run_line(s, pen) for s in rest]
            new.append(Line())
            lines[:] = new
        self.x = 0
        self.wrap_pending = False
        if b + 1 < len(text):
            self._segment(text[b + 1 :])
        return True

    # -- printing ---------------------------------------------------------------------
    def _print(self, text: str) -> None:
        # Fast path: plain ASCII that fits on the current row.
        if text.isascii() and not self._graphics and not self.wrap_pending and not self.insert:
            x = self.x
            n = len(text)
            if x + n < self.cols and "\x1b" not in text:
                y = self.y
                self.lines[y].write(x, text, n, self.pen, self.cols)
                self.x = x + n
                return
        if self._graphics:
            text = text.translate(DEC_GRAPHICS)
        if "\x1b" in text:
            text = text.replace("\x1b", "")
        if text.isascii():
            self._put(text, len(text), True)
            return
        widths = WIDTHS
        # Split into runs of characters that take cells; zero-width ones combine.
        start = 0
        w = 0
        for i, ch in enumerate(text):
            cw = widths[ch]
            if cw == 0:
                if i > start:
                    self._put(text[start:i], w, False)
                self._combine(ch)
                start = i + 1
                w = 0
            else:
                w += cw
        if start < len(text):
            self._put(text[start:] if start else text, w, False)

    def _put(self, text: str, width: int, ascii_only: bool) -> None:
        cols = self.cols
        lines = self.lines
        while True:
            if self.wrap_pending:
                self.wrap_pending = False
                if self.autowrap:
                    lines[self.y].wrapped = True
                    self._lf()
                    self.x = 0
            x = self.x
            avail = cols - x
            if width <= avail:
                head, hw, text, width = text, width, "", 0
            elif ascii_only:
                if self.autowrap:
                    head, hw, text, width = text[:avail], avail, text[avail:], width - avail
                else:
                    head = text[: avail - 1] + text[-1]
                    hw, text, width = avail, "", 0
            else:
                acc = 0
                k = 0
                widths = WIDTHS
                for ch in text:
                    cw = widths[ch]
                    if acc + cw > avail:
                        break
                    acc += cw
                    k += 1
                if k == 0:
                    # A wide char does not fit in the last column: it goes to the next row.
                    if self.autowrap:
                        self.wrap_pending = True
                        continue
                    text = text[1:]
                    width -= 2
                    if not text:
                        return
                    continue
                head, hw = text[:k], acc
                text = text[k:]
                width -= acc
                if not self.autowrap:
                    text, width = "", 0
            y = self.y
            line = lines[y]
            if self.insert:
                line.insert_blanks(x, hw, self.styles.fill(self.pen), cols)
            line.write(x, head, hw, self.pen, cols)
            x += hw
            if x >= cols:
                self.x = cols - 1
                self.wrap_pending = self.autowrap
            else:
                self.x = x
            if not text:
                return

    def _combine(self, mark: str) -> None:
        x = self.x
        if not self.wrap_pending:
            if x == 0:
                return
            x -= 1
        self.lines[self.y].combine(x, mark, self.cols)

    # -- movement and scrolling -----------------------------------------------------
    def _lf(self) -> None:
        self.wrap_pending = False
        y = self.y
        if y == self.bottom:
            self._scroll_up(1)
        elif y < self.rows - 1:
            self.y = y + 1
        if self.newline_mode:
            self.x = 0

    def _push_history(self, line: Line) -> None:
        self.history.append(line.compact())
        self.history_added += 1

    def _scroll_up(self, n: int) -> None:
        top, bottom = self.top, self.bottom
        if n == 1:
            lines = self.lines
            ln = lines.pop(top)
            if not self.alt_active:
                self.history.append(ln.compact())
                self.history_added += 1
            fill = self.styles._fill.get(self.pen)
            lines.insert(bottom, Line(fill if fill is not None else self.styles.fill(self.pen)))
            return
        n = min(n, bottom - top + 1)
        lines = self.lines
        fill = self.styles.fill(self.pen)
        # As tmux: the top line of any scrolled region of the main screen is kept.
        to_history = not self.alt_active
        for _ in range(n):
            ln = lines.pop(top)
            if to_history:
                self._push_history(ln)
            lines.insert(bottom, Line(fill))

    def _scroll_down(self, n: int) -> None:
        top, bottom = self.top, self.bottom
        n = min(n, bottom - top + 1)
        lines = self.lines
        fill = self.styles.fill(self.pen)
        for _ in range(n):
            del lines[bottom]
            lines.insert(top, Line(fill))

    def _goto(self, x: int, y: int) -> None:
        """Absolute move; y relative to the top margin in origin mode."""
        if self.origin:
            y = min(max(y + self.top, self.top), self.bottom)
        else:
            y = min(max(y, 0), self.rows - 1)
        self.x = min(max(x, 0), self.cols - 1)
        self.y = y
        self.wrap_pending = False

    def _reverse_index(self) -> None:
        self.wrap_pending = False
        if self.y == self.top:
            self._scroll_down(1)
        elif self.y > 0:
            self.y -= 1

    # -- C0 -----------------------------------------------------------------------------
    def _c0(self, c: str) -> None:
        if c == "\x08":
            if self.wrap_pending:
                self.wrap_pending = False
            elif self.x > 0:
                self.x -= 1
            elif self.y > 0 and self.lines[self.y - 1].wrapped:
                # tmux moves back over a wrapped line's end.
                self.y -= 1
                self.x = self.cols - 1
        elif c == "\t":
            self._tab(1)
        elif c == "\x07":
            self.bell_count += 1
        elif c in "\x0b\x0c":
            self._lf()
        elif c == "\x0e":
            self.gl = 1
            self._graphics = self.charsets[1] == "0"
        elif c == "\x0f":
            self.gl = 0
            self._graphics = self.charsets[0] == "0"
        elif c == "\x05":
            pass  # ENQ: no answerback
        # NUL, DEL and the rest are ignored.

    def _tab(self, n: int) -> None:
        x = self.x
        for _ in range(n):
            nxt = [t for t in self.tabs if t > x]
            x = min(nxt) if nxt else self.cols - 1
        self.x = min(x, self.cols - 1)
        self.wrap_pending = False

    def _back_tab(self, n: int) -> None:
        x = self.x
        for _ in range(n):
            prev = [t for t in self.tabs if t < x]
            x = max(prev) if prev else 0
        self.x = x
        self.wrap_pending = False

    # -- ESC --------------------------------------------------------------------------
    def _esc(self, c: str) -> None:
        body = c[1:]
        if body == "7":
            self._save_cursor()
        elif body == "8":
            self._restore_cursor()
        elif body == "D":
            self._lf_index()
        elif body == "E":
            self._lf_index()
            self.x = 0
        elif body == "M":
            self._reverse_index()
        elif body == "H":
            self.tabs.add(self.x)
        elif body == "c":
            self.reset()
        elif body == "=":
            self.app_keypad = True
        elif body == ">":
            self.app_keypad = False
        elif len(body) == 2 and body[0] in "()*+":
            self.charsets["()*+".index(body[0])] = body[1]
            self._graphics = self.charsets[self.gl] == "0"
        elif body == "#8":
            fill = "E" * self.cols
            for ln in self.lines:
                ln.erase(0, self.cols, 0, self.cols)
                ln.write(0, fill, self.cols, 0, self.cols)
            self.top, self.bottom = 0, self.rows - 1
            self._goto(0, 0)
        # ESC N/O (single shifts), ESC \ (lone ST), ESC % G ...: ignored

    def _lf_index(self) -> None:
        nm = self.newline_mode
        self.newline_mode = False
        self._lf()
        self.newline_mode = nm

    def _save_cursor(self) -> None:
        saved = _Saved(
            self.x,
            self.y,
            self.pen,
            self.origin,
            self.wrap_pending,
            (self.charsets[0], self.charsets[1], self.charsets[2], self.charsets[3]),
            self.gl,
        )
        if self.alt_active:
            self._saved_alt = saved
        else:
            self._saved_main = saved

    def _restore_cursor(self) -> None:
        s = self._saved_alt if self.alt_active else self._saved_main
        self.pen = s.pen
        self.origin = s.origin
        self.charsets = list(s.charsets)
        self.gl = s.gl
        self._graphics = self.charsets[self.gl] == "0"
        self.x = min(s.x, self.cols - 1)
        self.y = min(s.y, self.rows - 1)
        self.wrap_pending = s.wrap_pending and self.x == self.cols - 1

    def reset(self) -> None:
        """RIS: everything back to the power-on state (the scrollback is kept)."""
        self.alt = [Line() for _ in range(self.rows)]
        self.main[:] = [Line() for _ in range(self.rows)]
        self.lines = self.main
        self._reset_state()
        self.title = ""
        self.all_dirty = True

    # -- CSI --------------------------------------------------------------------------
    def _csi(self, c: str) -> None:
        final = c[-1]
        body = c[2:-1]
        prefix = ""
        if body and body[0] in "<=>?":
            prefix = body[0]
            body = body[1:]
        inter = ""
        while body and "\x20" <= body[-1] <= "\x2f":
            inter = body[-1] + inter
            body = body[:-1]
        if final == "m":
            return  # SGR is handled in the loop; `CSI > ... m` (modifyOtherKeys) is ignored
        params: list[int] = []
        if body:
            for p in body.split(";"):
                p = p.split(":", 1)[0]
                params.append(int(p) if p.isdigit() else 0)
        handler = _CSI.get((prefix, inter, final))
        if handler is not None:
            handler(self, params)

    def _p(self, params: list[int], i: int = 0, default: int = 1) -> int:
        v = params[i] if i < len(params) else 0
        return v if v else default

    def _cuu(self, params: list[int]) -> None:
        n = self._p(params)
        top = self.top if self.y >= self.top else 0
        self.y = max(top, self.y - n)
        self.wrap_pending = False

    def _cud(self, params: list[int]) -> None:
        n = self._p(params)
        bottom = self.bottom if self.y <= self.bottom else self.rows - 1
        self.y = min(bottom, self.y + n)
        self.wrap_pending = False

    def _cuf(self, params: list[int]) -> None:
        self.x = min(self.cols - 1, self.x + self._p(params))
        self.wrap_pending = False

    def _cub(self, params: list[int]) -> None:
        x = self.x
        self.x = max(0, x - self._p(params))
        self.wrap_pending = False

    def _cnl(self, params: list[int]) -> None:
        self._cud(params)
        self.x = 0

    def _cpl(self, params: list[int]) -> None:
        self._cuu(params)
        self.x = 0

    def _cha(self, params: list[int]) -> None:
        self.x = min(self.cols - 1, self._p(params) - 1)
        self.wrap_pending = False

    def _cup(self, params: list[int]) -> None:
        self._goto(self._p(params, 1) - 1, self._p(params, 0) - 1)

    def _vpa(self, params: list[int]) -> None:
        self._goto(self.x, self._p(params) - 1)

    def _vpr(self, params: list[int]) -> None:
        self._cud(params)

    def _hpr(self, params: list[int]) -> None:
        self._cuf(params)

    def _cht(self, params: list[int]) -> None:
        self._tab(self._p(params))

    def _cbt(self, params: list[int]) -> None:
        self._back_tab(self._p(params))

    def _ed(self, params: list[int]) -> None:
        mode = params[0] if params else 0
        cols = self.cols
        fill = self.styles.fill(self.pen)
        lines = self.lines
        if mode == 0:
            x = self.x
            lines[self.y].erase(x, cols, fill, cols)
            for y in range(self.y + 1, self.rows):
                lines[y].erase(0, cols, fill, cols)
                lines[y].wrapped = False
        elif mode == 1:
            for y in range(self.y):
                lines[y].erase(0, cols, fill, cols)
                lines[y].wrapped = False
            lines[self.y].erase(0, self.x + 1, fill, cols)
        elif mode == 2:
            self._clear_screen()
        elif mode == 3:
            self.history.clear()

    def _clear_screen(self) -> None:
        """ED 2. On the main screen the rows down to the last one in use go to the
        scrollback first, as tmux does (its `scroll-on-clear`, on by default)."""
        lines = self.lines
        fill = self.styles.fill(self.pen)
        if not self.alt_active:
            last = max((y for y, ln in enumerate(lines) if ln.runs()), default=-1)
            for y in range(last + 1):
                self._push_history(lines[y])
                lines[y] = Line(fill)
        cols = self.cols
        for ln in lines:
            ln.erase(0, cols, fill, cols)
            ln.wrapped = False

    def _el(self, params: list[int]) -> None:
        mode = params[0] if params else 0
        cols = self.cols
        fill = self.styles.fill(self.pen)
        line = self.lines[self.y]
        if mode == 0:
            if self.wrap_pending:
                return  # tmux: the cursor is past the last column, nothing to its right
            line.erase(self.x, cols, fill, cols)
            line.wrapped = False
        elif mode == 1:
            line.erase(0, self.x + 1, fill, cols)
        elif mode == 2:
            line.erase(0, cols, fill, cols)
            line.wrapped = False

    def _ech(self, params: list[int]) -> None:
        n = self._p(params)
        self.lines[self.y].erase(self.x, self.x + n, self.styles.fill(self.pen), self.cols)

    def _ich(self, params: list[int]) -> None:
        self.lines[self.y].insert_blanks(
            self.x, self._p(params), self.styles.fill(self.pen), self.cols
        )
        self.wrap_pending = False

    def _dch(self, params: list[int]) -> None:
        self.lines[self.y].delete_cells(
            self.x, self._p(params), self.styles.fill(self.pen), self.cols
        )
        self.wrap_pending = False

    def _il(self, params: list[int]) -> None:
        if not self.top <= self.y <= self.bottom:
            return
        n = min(self._p(params), self.bottom - self.y + 1)
        fill = self.styles.fill(self.pen)
        lines = self.lines
        for _ in range(n):
            del lines[self.bottom]
            lines.insert(self.y, Line(fill))
        self.x = 0
        self.wrap_pending = False

    def _dl(self, params: list[int]) -> None:
        if not self.top <= self.y <= self.bottom:
            return
        n = min(self._p(params), self.bottom - self.y + 1)
        fill = self.styles.fill(self.pen)
        lines = self.lines
        for _ in range(n):
            del lines[self.y]
            lines.insert(self.bottom, Line(fill))
        self.x = 0
        self.wrap_pending = False

    def _su(self, params: list[int]) -> None:
        self._scroll_up(self._p(params))

    def _sd(self, params: list[int]) -> None:
        if len(params) > 1:
            return  # CSI Ps;Ps;Ps;Ps;Ps T is mouse highlight tracking
        self._scroll_down(self._p(params))

    def _rep(self, params: list[int]) -> None:
        """REP: the character before the cursor (the one just printed), n times more."""
        n = min(self._p(params), self.cols * self.rows)
        x = self.x if self.wrap_pending else self.x - 1
        if x < 0:
            return
        line = self.lines[self.y]
        ch, _ = line.cell(x, self.cols)
        if ch == "" and x:
            ch, _ = line.cell(x - 1, self.cols)
        if not ch or WIDTHS[ch[0]] == 0:
            return
        self._print_plain(ch * n)

    def _print_plain(self, text: str) -> None:
        graphics = self._graphics
        self._graphics = False  # already translated when first printed
        try:
            self._print(text)
        finally:
            self._graphics = graphics

    def _tbc(self, params: list[int]) -> None:
        mode = params[0] if params else 0
        if mode == 0:
            self.tabs.discard(self.x)
        elif mode == 3:
            self.tabs.clear()

    def _decstbm(self, params: list[int]) -> None:
        top = self._p(params, 0) - 1
        bottom = self._p(params, 1, self.rows) - 1
        bottom = min(bottom, self.rows - 1)
        if top >= bottom:
            return
        self.top, self.bottom = top, bottom
        self._goto(0, 0)

    def _sm(self, params: list[int]) -> None:
        for p in params:
            if p == 4:
                self.insert = True
            elif p == 20:
                self.newline_mode = True

    def _rm(self, params: list[int]) -> None:
        for p in params:
            if p == 4:
                self.insert = False
            elif p == 20:
                self.newline_mode = False

    def _decset(self, params: list[int]) -> None:
        for p in params:
            self._private_mode(p, True)

    def _decrst(self, params: list[int]) -> None:
        for p in params:
            self._private_mode(p, False)

    def _private_mode(self, p: int, on: bool) -> None:
        if p == 1:
            self.app_cursor = on
        elif p == 5:
            if self.reverse_video != on:
                self.reverse_video = on
                self.all_dirty = True
        elif p == 6:
            self.origin = on
            self._goto(0, 0)
            if on and self.lr_active:
                self.x = self.left
        elif p == 7:
            self.autowrap = on
            if not on:
                self.wrap_pending = False
        elif p == 3:
            # DECCOLM: the width stays (the window decides it); as tmux, the screen is
            # cleared and the cursor goes home.
            self._goto(0, 0)
            self._clear_screen()
        elif p == 25:
            self.cursor_visible = on
        elif p == 66:
            self.app_keypad = on
        elif p in (MOUSE_X10, MOUSE_NORMAL, MOUSE_BUTTON, MOUSE_ANY):
            if on:
                self.mouse_tracking = p
            elif self.mouse_tracking == p:
                self.mouse_tracking = 0
        elif p == 1004:
            self.focus_events = on
        elif p == 1005:
            self.mouse_encoding = "utf8" if on else ""
        elif p == 1006:
            self.mouse_encoding = "sgr" if on else ""
        elif p == 1015:
            self.mouse_encoding = "urxvt" if on else ""
        elif p in (47, 1047):
            self._set_alt(on, clear_on_enter=False, clear_on_leave=p == 1047)
        elif p == 1049:
            if on and not self.alt_active:
                self._save_cursor()
                self._set_alt(True, clear_on_enter=True, clear_on_leave=False)
            elif not on and self.alt_active:
                self._set_alt(False, clear_on_enter=False, clear_on_leave=True)
                self._restore_cursor()
        elif p == 1048:
            if on:
                self._save_cursor()
            else:
                self._restore_cursor()
        elif p == 69:
            self._reset_margins()
            self.lr_mode = on
        elif p == 2004:
            self.bracketed_paste = on
        elif p == 2026:
            self.synchronized = on

    def _set_alt(self, on: bool, *, clear_on_enter: bool, clear_on_leave: bool) -> None:
        if on == self.alt_active:
            return
        if on:
            # The main screen's saved cursor is separate from the alternate's.
            saved_main = self._saved_main
            self.alt_active = True
            self._saved_main = saved_main
            if clear_on_enter:
                fill = self.styles.fill(self.pen)
                self.alt = [Line(fill) for _ in range(self.rows)]
            self.lines = self.alt
        else:
            if clear_on_leave:
                self.alt = [Line() for _ in range(self.rows)]
            self.alt_active = False
            self.lines = self.main

    def _decrqm(self, params: list[int], private: bool) -> None:
        p = params[0] if params else 0
        if private:
            table = {
                1: self.app_cursor,
                5: self.reverse_video,
                6: self.origin,
                7: self.autowrap,
                25: self.cursor_visible,
                66: self.app_keypad,
                1004: self.focus_events,
                1006: self.mouse_encoding == "sgr",
                1049: self.alt_active,
                2004: self.bracketed_paste,
                2026: self.synchronized,
                69: self.lr_mode,
                1000: self.mouse_tracking == 1000,
                1002: self.mouse_tracking == 1002,
                1003: self.mouse_tracking == 1003,
            }
            state = (1 if table[p] else 2) if p in table else 0
            self.replies += f"\x1b[?{p};{state}$y".encode()
        else:
            table = {4: self.insert, 20: self.newline_mode}
            state = (1 if table[p] else 2) if p in table else 0
            self.replies += f"\x1b[{p};{state}$y".encode()

    def _dsr(self, params: list[int], private: bool) -> None:
        p = params[0] if params else 0
        if p == 5:
            self.replies += b"\x1b[0n"
        elif p == 6:
            y = self.y - (self.top if self.origin else 0)
            x = self.x + (1 if self.wrap_pending else 0)
            q = "?" if private else ""
            self.replies += f"\x1b[{q}{y + 1};{x + 1}R".encode()

    def _window_ops(self, params: list[int]) -> None:
        p = params[0] if params else 0
        if p == 18:
            self.replies += f"\x1b[8;{self.rows};{self.cols}t".encode()
        elif p == 14:
            self.replies += f"\x1b[4;{self.rows * 16};{self.cols * 8}t".encode()
        elif p == 16:
            self.replies += b"\x1b[6;16;8t"

    def _decstr(self, params: list[int]) -> None:
        """Soft reset: modes and pen, not the screen."""
        self.pen = 0
        self.top, self.bottom = 0, self.rows - 1
        self._reset_margins()
        self.autowrap = True
        self.origin = False
        self.insert = False
        self.cursor_visible = True
        self.app_cursor = False
        self.app_keypad = False
        self.charsets = ["B", "B", "B", "B"]
        self.gl = 0
        self._graphics = False
        self.wrap_pending = False

    # -- OSC, DCS -------------------------------------------------------------------------
    def _osc(self, c: str) -> None:
        if c.endswith("\x07"):
            body, term = c[2:-1], "\x07"
        else:
            body, term = c[2:-2], "\x1b\\"
        num, _, arg = body.partition(";")
        if num in ("0", "2"):
            self.title = arg
            if num == "0":
                self.icon_title = arg
        elif num == "1":
            self.icon_title = arg
        elif num == "7":
            self.cwd = arg
        elif num == "8":
            # OSC 8 ; params ; URI: text written from here on links to URI (empty: ends).
            params, _, uri = arg.partition(";")
            link_id = next((v[3:] for v in params.split(":") if v.startswith("id=")), "")
            self.pen = self.styles.with_link(self.pen, uri if len(uri) <= 2048 else "", link_id)
        elif num == "52":
            selection, _, data = arg.partition(";")
            if data == "?":
                return  # reading the clipboard is refused: a program must not read it
            try:
                text = base64.b64decode(data, validate=False).decode("utf-8", "replace")
            except (binascii.Error, ValueError):
                return
            self.clipboard.append((selection or "c", text))
        elif num in ("10", "11") and arg == "?":
            r, g, b = self.default_fg if num == "10" else self.default_bg
            self.replies += (
                f"\x1b]{num};rgb:{r:02x}{r:02x}/{g:02x}{g:02x}/{b:02x}{b:02x}{term}".encode()
            )
        elif num == "4":
            fields = arg.split(";")
            for i in range(0, len(fields) - 1, 2):
                if fields[i + 1] == "?" and fields[i].isdigit() and int(fields[i]) < 256:
                    r, g, b = _xterm_palette(int(fields[i]))
                    self.replies += (
                        f"\x1b]4;{fields[i]};rgb:{r:02x}{r:02x}/{g:02x}{g:02x}/{b:02x}{b:02x}{term}"
                    ).encode()

    def _dcs(self, c: str) -> None:
        # DECRQSS (DCS $ q ... ST): answer "not supported" so a program does not wait.
        if c.startswith("\x1bP$q"):
            self.replies += b"\x1bP0$r\x1b\\"
        # Sixel, tmux passthrough, XTGETTCAP ...: ignored.

    def _da1(self, params: list[int]) -> None:
        if not params or params[0] == 0:
            self.replies += b"\x1b[?62;22c"

    def _da2(self, params: list[int]) -> None:
        if not params or params[0] == 0:
            self.replies += b"\x1b[>1;10;0c"

    def _xtversion(self, params: list[int]) -> None:
        self.replies += b"\x1bP>|ecotui\x1b\\"

    # -- resize -------------------------------------------------------------------------------
    def resize(self, cols: int, rows: int) -> None:
        """New size. A new width reflows the main screen and the scrollback
        (`_reflow_main`); the alternate screen's rows are cut or padded. A new
        height alone: on the main screen rows that no longer fit above the
        cursor go to the scrollback, and a taller screen takes them back."""
        cols = max(1, cols)
        rows = max(1, rows)
        if cols == self.cols and rows == self.rows:
            return
        old_cols = self.cols
        if cols != old_cols:
            self._reflow_main(cols, rows)
            for ln in self.alt:
                ln.resize(old_cols, cols)
            self._resize_rows(self.alt, rows, is_main=False)
        else:
            # Height: the main screen keeps the cursor row in view.
            self._resize_rows(self.main, rows, is_main=True)
            self._resize_rows(self.alt, rows, is_main=False)
        self.cols = cols
        self.rows = rows
        self.top, self.bottom = 0, rows - 1
        self._reset_margins()
        self.tabs = {t for t in self.tabs if t < cols} | set(
            range(max(8, (old_cols // 8 + 1) * 8), cols, 8)
        )
        self.x = min(self.x, cols - 1)
        self.wrap_pending = False
        for s in (self._saved_main, self._saved_alt):
            s.x = min(s.x, cols - 1)
            s.y = min(s.y, rows - 1)
        self.lines = self.alt if self.alt_active else self.main
        self.all_dirty = True

    def _reflow_main(self, cols: int, rows: int) -> None:
        """A new width for the main screen: its wrapped lines and the scrollback's are
        rewrapped (`reflow.py`); the rows that no longer fit go to the scrollback, and
        the scrollback fills a screen with room to spare, as in tmux."""
        main = self.main
        on_main = not self.alt_active
        cur_y, cur_x = (self.y, self.x) if on_main else (self._saved_main.y, self._saved_main.x)
        if on_main and self.wrap_pending:
            cur_x += 1
        last = max((y for y, ln in enumerate(main) if ln.text() or ln.wrapped), default=-1)
        used = main[: max(last, cur_y) + 1]
        hist = self.history
        old_len = len(hist)
        items: list[Line | str] = [*hist, *used]
        rewrapped, (ry, rx) = reflow(items, self.cols, cols, (old_len + cur_y, cur_x))
        start = max(0, len(rewrapped) - rows)
        if ry < start:
            start = ry
        screen = [
            ln if isinstance(ln, Line) else _line_from_history(ln, cols)
            for ln in rewrapped[start : start + rows]
        ]
        screen.extend(Line() for _ in range(rows - len(screen)))
        hist.clear()
        hist.extend(ln.compact() if isinstance(ln, Line) else ln for ln in rewrapped[:start])
        self.history_added += len(hist) - old_len
        self.main[:] = screen
        ry -= start
        if on_main:
            self.y, self.x = ry, min(rx, cols - 1)
        else:
            self._saved_main.y, self._saved_main.x = ry, min(rx, cols - 1)

    def _resize_rows(self, buf: list[Line], rows: int, *, is_main: bool) -> None:
        old = len(buf)
        active = (self.alt_active and not is_main) or (is_main and not self.alt_active)
        cols = self.cols
        if rows < old:
            # Drop blank rows below the cursor first, then push rows off the top.
            cut_bottom = 0
            cursor = self.y if active else old - 1
            while (
                old - cut_bottom > rows
                and old - 1 - cut_bottom > cursor
                and not buf[old - 1 - cut_bottom].text()
            ):
                cut_bottom += 1
            if cut_bottom:
                del buf[old - cut_bottom :]
            extra = len(buf) - rows
            if extra > 0:
                for ln in buf[:extra]:
                    if is_main:
                        self._push_history(ln)
                del buf[:extra]
                if active:
                    self.y = max(0, self.y - extra)
            if not active and is_main:
                self._saved_main.y = max(0, self._saved_main.y - max(extra, 0))
        elif rows > old:
            more = rows - old
            pulled = 0
            if is_main and active:
                while pulled < more and self.history:
                    item = self.history.pop()
                    buf.insert(0, _line_from_history(item, cols))
                    pulled += 1
                self.y += pulled
            buf.extend(Line() for _ in range(more - pulled))
        if active:
            self.y = min(self.y, rows - 1)


def _run_line(text: str, sid: int) -> Line:
    ln = Line()
    if text:
        ln.segs = [(text, sid)]
        ln.end = len(text)
    return ln


def _line_from_history(item: Line | str, cols: int) -> Line:
    if isinstance(item, str):
        ln = _run_line(item, 0)
    else:
        ln = Line()
        ln.segs = list(item.runs())
        ln.end = sum(len(t) if t.isascii() else sum(WIDTHS[c] for c in t) for t, _ in ln.segs)
        ln.wrapped = item.wrapped
    if ln.end > cols:
        ln.materialize(ln.end)
        ln.resize(ln.end, cols)
    return ln


# CSI handlers by (private prefix, intermediates, final byte).
_CSI: dict[tuple[str, str, str], Callable[[Terminal, list[int]], object]] = {
    ("", "", "@"): Terminal._ich,
    ("", "", "A"): Terminal._cuu,
    ("", "", "B"): Terminal._cud,
    ("", "", "C"): Terminal._cuf,
    ("", "", "D"): Terminal._cub,
    ("", "", "E"): Terminal._cnl,
    ("", "", "F"): Terminal._cpl,
    ("", "", "G"): Terminal._cha,
    ("", "", "H"): Terminal._cup,
    ("", "", "I"): Terminal._cht,
    ("", "", "J"): Terminal._ed,
    ("?", "", "J"): Terminal._ed,
    ("", "", "K"): Terminal._el,
    ("?", "", "K"): Terminal._el,
    ("", "", "L"): Terminal._il,
    ("", "", "M"): Terminal._dl,
    ("", "", "P"): Terminal._dch,
    ("", "", "S"): Terminal._su,
    ("", "", "T"): Terminal._sd,
    ("", "", "X"): Terminal._ech,
    ("", "", "Z"): Terminal._cbt,
    ("", "", "`"): Terminal._cha,
    ("", "", "a"): Terminal._hpr,
    ("", "", "b"): Terminal._rep,
    ("", "", "c"): Terminal._da1,
    (">", "", "c"): Terminal._da2,
    ("", "", "d"): Terminal._vpa,
    ("", "", "e"): Terminal._vpr,
    ("", "", "f"): Terminal._cup,
    ("", "", "g"): Terminal._tbc,
    ("", "", "h"): Terminal._sm,
    ("", "", "l"): Terminal._rm,
    ("?", "", "h"): Terminal._decset,
    ("?", "", "l"): Terminal._decrst,
    ("", "", "n"): lambda t, p: t._dsr(p, False),
    ("?", "", "n"): lambda t, p: t._dsr(p, True),
    ("", "", "r"): Terminal._decstbm,
    ("", "", "s"): lambda t, p: (
        margins.set_margins(t, p) if t.lr_mode else t._save_cursor() if not p else None
    ),
    ("", "", "u"): lambda t, p: t._restore_cursor(),
    ("", "", "t"): Terminal._window_ops,
    (">", "", "q"): Terminal._xtversion,
    ("", "!", "p"): Terminal._decstr,
    ("", "$", "p"): lambda t, p: t._decrqm(p, False),
    ("?", "$", "p"): lambda t, p: t._decrqm(p, True),
}
