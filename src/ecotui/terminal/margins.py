"""Left and right margins (DECLRMM, mode 69; DECSLRM, `CSI Pl ; Pr s`), as xterm has them.

While a program has set margins narrower than the screen, `Terminal.feed`
hands its input to `run()` here instead of the core's token loop: text wraps
at the right margin back to the left one, CR returns to the left margin, and
scrolling (LF and IND at the bottom margin, RI, SU, SD), IL, DL, ICH and DCH
move only the cells inside the rectangle of the four margins. CUP in origin
mode counts columns from the left margin. Few programs set margins (vttest,
some editors' split views), so this path is written for clarity, a character
at a time; the core's fast paths never see margins.

Where the cursor is outside the left/right margins, text and scrolling act as
without margins on that row, as in xterm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .charsets import DEC_GRAPHICS
from .line import WIDTHS, Line

if TYPE_CHECKING:
    from .emulator import Terminal


def set_margins(t: Terminal, params: list[int]) -> None:
    """DECSLRM: margins from params (1-based, default the whole width); homes the cursor."""
    left = (params[0] if params and params[0] else 1) - 1
    right = (params[1] if len(params) > 1 and params[1] else t.cols) - 1
    right = min(right, t.cols - 1)
    if left >= right:
        return
    t.left, t.right = left, right
    t.lr_active = (left, right) != (0, t.cols - 1)
    home(t)


def home(t: Terminal) -> None:
    t.x = t.left if t.origin else 0
    t.y = t.top if t.origin else 0
    t.wrap_pending = False


def _cells(t: Terminal, y: int) -> Line:
    ln = t.lines[y]
    ln.materialize(t.cols)
    ln.gen += 1
    return ln


def _inside(t: Terminal) -> bool:
    return t.left <= t.x <= t.right


def scroll_up(t: Terminal, n: int) -> None:
    """Move the rectangle of the margins up by n rows, blanks in at the bottom."""
    top, bottom, left, right = t.top, t.bottom, t.left, t.right
    n = max(0, min(n, bottom - top + 1))
    fill = t.styles.fill(t.pen)
    rows = [_cells(t, y) for y in range(top, bottom + 1)]
    width = right - left + 1
    for i, dst in enumerate(rows):
        assert dst.chars is not None and dst.styles is not None
        if i + n < len(rows):
            src = rows[i + n]
            assert src.chars is not None and src.styles is not None
            dst.chars[left : right + 1] = src.chars[left : right + 1]
            dst.styles[left : right + 1] = src.styles[left : right + 1]
        else:
            dst.chars[left : right + 1] = [" "] * width
            dst.styles[left : right + 1] = [fill] * width


def scroll_down(t: Terminal, n: int) -> None:
    top, bottom, left, right = t.top, t.bottom, t.left, t.right
    n = max(0, min(n, bottom - top + 1))
    fill = t.styles.fill(t.pen)
    rows = [_cells(t, y) for y in range(top, bottom + 1)]
    width = right - left + 1
    for i in range(len(rows) - 1, -1, -1):
        dst = rows[i]
        assert dst.chars is not None and dst.styles is not None
        if i - n >= 0:
            src = rows[i - n]
            assert src.chars is not None and src.styles is not None
            dst.chars[left : right + 1] = src.chars[left : right + 1]
            dst.styles[left : right + 1] = src.styles[left : right + 1]
        else:
            dst.chars[left : right + 1] = [" "] * width
            dst.styles[left : right + 1] = [fill] * width


def index(t: Terminal) -> None:
    """LF / IND: down one row; at the bottom margin (inside the margins) scroll."""
    t.wrap_pending = False
    if t.y == t.bottom:
        if _inside(t):
            scroll_up(t, 1)
    elif t.y < t.rows - 1:
        t.y += 1


def reverse_index(t: Terminal) -> None:
    t.wrap_pending = False
    if t.y == t.top:
        if _inside(t):
            scroll_down(t, 1)
    elif t.y > 0:
        t.y -= 1


def carriage_return(t: Terminal) -> None:
    t.x = t.left if (t.x >= t.left or t.origin) else 0
    t.wrap_pending = False


def _lines_op(t: Terminal, n: int, *, insert: bool) -> None:
    if not (t.top <= t.y <= t.bottom and _inside(t)):
        return
    top = t.top
    t.top = t.y
    try:
        if insert:
            scroll_down(t, n)
        else:
            scroll_up(t, n)
    finally:
        t.top = top
    t.x = t.left
    t.wrap_pending = False


def _chars_op(t: Terminal, n: int, *, insert: bool) -> None:
    if not _inside(t):
        return
    ln = _cells(t, t.y)
    assert ln.chars is not None and ln.styles is not None
    x, right = t.x, t.right
    n = max(1, min(n, right - x + 1))
    fill = t.styles.fill(t.pen)
    chars, styles = ln.chars, ln.styles
    if insert:
        chars[x + n : right + 1] = chars[x : right + 1 - n]
        styles[x + n : right + 1] = styles[x : right + 1 - n]
        chars[x : x + n] = [" "] * n
        styles[x : x + n] = [fill] * n
    else:
        chars[x : right + 1 - n] = chars[x + n : right + 1]
        styles[x : right + 1 - n] = styles[x + n : right + 1]
        chars[right + 1 - n : right + 1] = [" "] * n
        styles[right + 1 - n : right + 1] = [fill] * n
    t.wrap_pending = False


def put(t: Terminal, text: str) -> None:
    """Printable text, a character at a time, wrapping at the right margin."""
    if t._graphics:
        text = text.translate(DEC_GRAPHICS)
    for ch in text:
        w = WIDTHS[ch]
        if w == 0:
            t._combine(ch)
            continue
        if t.wrap_pending:
            t.wrap_pending = False
            if t.autowrap:
                inside = t.x <= t.right
                index(t)
                t.x = t.left if inside else 0
        right = t.right if t.x <= t.right else t.cols - 1
        if t.x + w - 1 > right:
            if not t.autowrap:
                t.x = max(0, right - w + 1)
            else:
                inside = t.x <= t.right
                index(t)
                t.x = t.left if inside else 0
                right = t.right if inside else t.cols - 1
        if t.insert:
            _chars_op(t, w, insert=True)
        t.lines[t.y].write(t.x, ch, w, t.pen, t.cols)
        if t.x + w > right:
            t.x = right
            t.wrap_pending = t.autowrap
        else:
            t.x += w


def _text(t: Terminal, text: str) -> None:
    start = 0
    for i, ch in enumerate(text):
        if ch in "\r\n":
            if i > start:
                put(t, text[start:i])
            if ch == "\r":
                carriage_return(t)
            else:
                index(t)
                if t.newline_mode:
                    carriage_return(t)
            start = i + 1
    if start < len(text):
        put(t, text[start:])


def _csi(t: Terminal, c: str) -> bool:
    """The CSI sequences margins change; False: the core's handler applies."""
    final = c[-1]
    body = c[2:-1]
    if (body and body[0] in "<=>?") or final not in "HfLM@PSTsr":
        return False
    if any(ch in " !\"#$%&'()*+,-./" for ch in body):
        return False
    params = (
        [int(p) if p.isdigit() else 0 for p in (q.split(":", 1)[0] for q in body.split(";"))]
        if body
        else []
    )
    n = params[0] if params and params[0] else 1
    if final in "Hf":
        row = n - 1
        col = (params[1] if len(params) > 1 and params[1] else 1) - 1
        if t.origin:
            t.y = min(max(row + t.top, t.top), t.bottom)
            t.x = min(max(col + t.left, t.left), t.right)
        else:
            t.y = min(max(row, 0), t.rows - 1)
            t.x = min(max(col, 0), t.cols - 1)
        t.wrap_pending = False
    elif final == "L":
        _lines_op(t, n, insert=True)
    elif final == "M":
        _lines_op(t, n, insert=False)
    elif final == "@":
        _chars_op(t, n, insert=True)
    elif final == "P":
        _chars_op(t, n, insert=False)
    elif final == "S":
        scroll_up(t, n)
    elif final == "T":
        if len(params) > 1:
            return True  # mouse highlight tracking: ignored
        scroll_down(t, n)
    elif final == "s":
        set_margins(t, params)
    elif final == "r":
        t._csi(c)
        if t.origin:
            t.x = t.left
    return True


def run(t: Terminal, parts: list[str]) -> None:
    """The core's split input (text, control, text, ...) while margins are set."""
    for i, part in enumerate(parts):
        if not part:
            continue
        if not t.lr_active:  # a sequence in this chunk reset the margins
            t._run(["", *parts[i:]] if i % 2 else parts[i:])
            return
        if i % 2 == 0:
            _text(t, part)
            continue
        if len(part) == 1:
            if part == "\x08":
                if t.wrap_pending:
                    t.wrap_pending = False
                elif t.x > t.left or (t.x < t.left and t.x > 0):
                    t.x -= 1
            elif part in "\x0b\x0c":
                index(t)
            else:
                t._c0(part)
        elif part[-1] in "\x18\x1a":
            continue
        elif part[1] == "[":
            if part[-1] == "m" and part[2:3] not in ("<", "=", ">", "?"):
                t.pen = t.styles.sgr(t.pen, part[2:-1], part)
            elif not _csi(t, part):
                t._csi(part)
        elif part[1] == "]":
            t._osc(part)
        elif part[1] in "P_^X":
            t._dcs(part)
        elif part[1:] == "D":
            index(t)
        elif part[1:] == "E":
            index(t)
            carriage_return(t)
        elif part[1:] == "M":
            reverse_index(t)
        else:
            t._esc(part)
