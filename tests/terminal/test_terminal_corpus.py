"""The emulator core against tmux on real programs' output (tests/terminal/corpus).

Each corpus entry holds bytes a real program wrote to a terminal (`ls`, `vim`,
`htop`, `top`, `less`, a nested tmux, progress bars, CJK text, ...) and tmux's
screen after reading the same bytes (`capture-pane -p -e -N`). Our screen must
match it cell by cell: characters, colours and attributes, plus the cursor,
the alternate-screen flag and the tail of the scrollback. Deliberate
differences are listed in corpus/README.md and normalised here, nowhere else.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from wcwidth import wcwidth

from ecotui.terminal import Terminal
from ecotui.terminal.style import (
    BLINK,
    BOLD,
    DIM,
    DOUBLE_UNDERLINE,
    HIDDEN,
    ITALIC,
    OVERLINE,
    REVERSE,
    RGB_FLAG,
    STRIKE,
    UNDERLINE,
)

CORPUS = Path(__file__).parent / "corpus"
NAMES = sorted(p.stem for p in CORPUS.glob("*.bin"))

ACS = {
    "`": "◆",
    "a": "▒",
    "f": "°",
    "g": "±",
    "j": "┘",
    "k": "┐",
    "l": "┌",
    "m": "└",
    "n": "┼",
    "o": "⎺",
    "p": "⎻",
    "q": "─",
    "r": "⎼",
    "s": "⎽",
    "t": "├",
    "u": "┤",
    "v": "┴",
    "w": "┬",
    "x": "│",
    "y": "≤",
    "z": "≥",
    "{": "π",
    "|": "≠",
    "}": "£",
    "~": "·",
}

Cell = tuple[str, object, object, frozenset[str]]
_SGR_OR_CHAR = re.compile(r"\x1b\[([0-9;:]*)m|(\x0e)|(\x0f)|(.)", re.S)


class _Pen:
    def __init__(self) -> None:
        self.fg: object = None
        self.bg: object = None
        self.attrs: set[str] = set()
        self.acs = False


def parse_tmux_lines(lines: list[str], cols: int) -> list[list[Cell]]:
    """tmux's `capture-pane -e` output as rows of cells (an independent parser).

    The SGR state carries over from one row to the next, as tmux writes it.
    Cells past what tmux wrote (it does not write cells that were only erased,
    even with a background colour) have the background UNKNOWN."""
    pen = _Pen()
    return [_parse_row(line, cols, pen) for line in lines]


def parse_tmux_line(line: str, cols: int) -> list[Cell]:
    return _parse_row(line, cols, _Pen())


UNKNOWN = "?"


def _parse_row(line: str, cols: int, pen: _Pen) -> list[Cell]:
    cells: list[Cell] = []
    for m in _SGR_OR_CHAR.finditer(line):
        params, so, si, ch = m.groups()
        if so:
            pen.acs = True
        elif si:
            pen.acs = False
        elif ch is not None:
            if pen.acs:
                ch = ACS.get(ch, ch)
            w = wcwidth(ch)
            if w == 0 and cells:
                i = len(cells) - 1
                if cells[i][0] == "" and i:
                    i -= 1
                c = cells[i]
                cells[i] = (c[0] + ch, c[1], c[2], c[3])
                continue
            cells.append((ch, pen.fg, pen.bg, frozenset(pen.attrs)))
            if w == 2:
                cells.append(("", pen.fg, pen.bg, frozenset(pen.attrs)))
        else:
            _apply_sgr(pen, params)
    while len(cells) < cols:
        cells.append((" ", None, UNKNOWN, frozenset()))
    return cells[:cols]


def _apply_sgr(pen: _Pen, params: str) -> None:
    fields = [f for f in params.split(";")] if params else ["0"]
    i = 0
    while i < len(fields):
        sub = fields[i].split(":")
        code = int(sub[0] or 0)
        if code == 0:
            pen.fg, pen.bg, pen.attrs = None, None, set()
        elif code == 4 and len(sub) > 1:
            pen.attrs -= {"underline", "dunderline"}
            if sub[1] == "2":
                pen.attrs.add("dunderline")
            elif sub[1] != "0":
                pen.attrs.add("underline")
        elif code == 5 and sub[1:] == ["3"]:
            # tmux 3.3a's capture-pane writes overline as "5:3".
            pen.attrs.add("overline")
        elif code in _ATTR_CODES:
            pen.attrs.add(_ATTR_CODES[code])
        elif code == 22:
            pen.attrs -= {"bold", "dim"}
        elif code == 24:
            pen.attrs -= {"underline", "dunderline"}
        elif 30 <= code <= 37:
            pen.fg = code - 30
        elif 90 <= code <= 97:
            pen.fg = code - 90 + 8
        elif 40 <= code <= 47:
            pen.bg = code - 40
        elif 100 <= code <= 107:
            pen.bg = code - 100 + 8
        elif code == 39:
            pen.fg = None
        elif code == 49:
            pen.bg = None
        elif code in (38, 48, 58):
            if fields[i + 1] == "5":
                color: object = int(fields[i + 2])
                i += 2
            else:
                color = ("rgb", int(fields[i + 2]), int(fields[i + 3]), int(fields[i + 4]))
                i += 4
            if code == 38:
                pen.fg = color
            elif code == 48:
                pen.bg = color
        i += 1


_ATTR_CODES = {
    1: "bold",
    2: "dim",
    3: "italic",
    4: "underline",
    5: "blink",
    7: "reverse",
    8: "hidden",
    9: "strike",
    21: "dunderline",
    53: "overline",
}
_FLAG_NAMES = [
    (BOLD, "bold"),
    (DIM, "dim"),
    (ITALIC, "italic"),
    (UNDERLINE, "underline"),
    (DOUBLE_UNDERLINE, "dunderline"),
    (BLINK, "blink"),
    (REVERSE, "reverse"),
    (HIDDEN, "hidden"),
    (STRIKE, "strike"),
    (OVERLINE, "overline"),
]


def _color(c: int) -> object:
    if c < 0:
        return None
    if c >= RGB_FLAG:
        return ("rgb", (c >> 16) & 255, (c >> 8) & 255, c & 255)
    return c


def our_cells(term: Terminal, y: int) -> list[Cell]:
    out: list[Cell] = []
    for x in range(term.cols):
        ch, (fg, bg, flags) = term.cell(x, y)
        attrs = frozenset(name for bit, name in _FLAG_NAMES if flags & bit)
        out.append((ch, _color(fg), _color(bg), attrs))
    return out


def _strip_blank_style(cells: list[Cell]) -> list[Cell]:
    """Attributes that cannot show on a blank cell (only the background can) are dropped."""
    out = []
    for ch, fg, bg, attrs in cells:
        if ch in (" ", ""):
            visible = attrs & {"reverse", "underline", "dunderline", "strike", "overline"}
            out.append((ch, fg if visible else None, bg, frozenset(visible)))
        else:
            out.append((ch, fg, bg, attrs))
    return out


def load(name: str) -> tuple[bytes, dict]:
    return (CORPUS / f"{name}.bin").read_bytes(), json.loads((CORPUS / f"{name}.json").read_text())


def feed_chunked(term: Terminal, data: bytes, seed: int) -> None:
    """Feed in random small chunks, splitting sequences and UTF-8 characters."""
    rng = random.Random(seed)
    i = 0
    while i < len(data):
        n = rng.choice([1, 2, 3, 7, 64, 500])
        term.feed(data[i : i + n])
        i += n


# Rows where we deliberately differ from tmux (corpus/README.md): what we show instead.
KNOWN_DIFFERENCES = {
    # A program erases from the right half of a wide character and writes there:
    # we blank the left half, as xterm does; tmux keeps the wide character in its
    # grid and capture-pane shows the new character one cell to the right.
    ("cjk", 13): "erase: 漢字 |",
    # DECSTBM in origin mode homes the cursor to the top margin (VT100, xterm, and what
    # vttest's screen says: "This line should be at the bottom of the screen"); tmux
    # 3.3a homes it to the top-left of the screen, so it writes the line on row 1.
    ("vttest_origin", 1): "",
    ("vttest_origin", 23): "Origin mode test. This line should be at the bottom of the screen.",
}


def check_screen(term: Terminal, meta: dict) -> None:
    rows, cols = meta["rows"], meta["cols"]
    assert term.alt_active == meta["alternate_on"]
    tmux_rows = parse_tmux_lines(meta["screen"], cols)
    for y in range(rows):
        if (meta["name"], y) in KNOWN_DIFFERENCES:
            assert term.display()[y] == KNOWN_DIFFERENCES[meta["name"], y]
            continue
        expected = _strip_blank_style(tmux_rows[y])
        ours = _strip_blank_style(our_cells(term, y))
        exp_text = "".join(c[0] for c in expected).rstrip()
        our_text = "".join(c[0] for c in ours).rstrip()
        assert our_text == exp_text, f"row {y} text"
        for x in range(cols):
            want = expected[x]
            got = ours[x]
            if want[2] == UNKNOWN:  # tmux did not say; only the character must agree
                got = (got[0], None, UNKNOWN, frozenset())
            assert got == want, f"row {y} col {x}: ours {got} tmux {want}"
    cx = term.x + (1 if term.wrap_pending else 0)
    assert [cx, term.y] == meta["cursor"], "cursor"


@pytest.mark.parametrize("name", NAMES)
def test_corpus_matches_tmux(name: str) -> None:
    data, meta = load(name)
    term = Terminal(meta["cols"], meta["rows"], scrollback=2000)
    term.feed(data)
    check_screen(term, meta)
    if not meta["alternate_on"] and meta["history_size"]:
        ours = [t.rstrip() for t in term.history_lines()]
        theirs = [
            "".join(c[0] for c in row).rstrip()
            for row in parse_tmux_lines(meta["history_tail"], meta["cols"])
        ]
        assert ours[-len(theirs) :] == theirs
        assert len(ours) == meta["history_size"]


@pytest.mark.parametrize("name", NAMES)
def test_corpus_in_small_chunks_matches_tmux(name: str) -> None:
    data, meta = load(name)
    term = Terminal(meta["cols"], meta["rows"], scrollback=2000)
    feed_chunked(term, data, seed=len(data))
    check_screen(term, meta)


def test_corpus_has_the_programs_the_issue_names() -> None:
    for needed in (
        "ls_color",
        "vim_edit",
        "vim_quit",
        "htop",
        "top",
        "less",
        "mc",
        "cjk",
        "progress",
        "vt_cancel_links",
        "vttest_box",
        "vttest_soft_scroll",
        "vttest_origin",
        "vttest_accordion",
        "vttest_insert_mode",
    ):
        assert needed in NAMES
    for name in NAMES:
        assert (CORPUS / f"{name}.bin").stat().st_size < 200_000
