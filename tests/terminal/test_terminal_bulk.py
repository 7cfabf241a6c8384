"""A block of many `line\\r\\n` lines takes a shortcut (only the last screenful
becomes rows): whatever the lines, the pen and the screen, the result is the
one of writing the same bytes one at a time."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ecotui.terminal import Terminal
from ecotui.terminal.line import Line

COLS, ROWS = 8, 4

# Lines as a flood writes them: empty, short, exactly the width. At times one
# line that is not plain (one past the width: autowrap; a CR inside; wide
# characters), which must make the block take the ordinary path.
_PLAIN = st.one_of(st.text("abc ", max_size=COLS), st.sampled_from(["", "x" * COLS]))
_ODD = st.one_of(
    st.none(), st.tuples(st.integers(0, 40), st.sampled_from(["y" * (COLS + 1), "ab\rc", "漢字"]))
)
_BEFORE = st.sampled_from(
    [
        "",
        "$ ",
        "\x1b[31m",
        "\x1b[41m",
        "\x1b[2;4r",
        "\x1b[1;3r",
        "\x1b[?1049h",
        "\x1b[4h",
        "\x1b[1;1H\x1b[J",
        "\x1b[5;1H" + "z" * COLS,
    ]
)


def _cells(item: Line | str) -> list[tuple[str, int]]:
    """A scrollback line as (character, style) pairs: how runs are cut does not matter."""
    return [(ch, sid) for text, sid in Terminal.history_runs(item) for ch in text]


def _same(a: Terminal, b: Terminal) -> None:
    assert a.display() == b.display()
    assert [_cells(h) for h in a.history] == [_cells(h) for h in b.history]
    assert [Terminal.history_wrapped(h) for h in a.history] == [
        Terminal.history_wrapped(h) for h in b.history
    ]
    assert a.history_added == b.history_added
    assert (a.x, a.y, a.wrap_pending) == (b.x, b.y, b.wrap_pending)
    for y in range(ROWS):
        assert a.lines[y].wrapped == b.lines[y].wrapped
        for x in range(COLS):
            assert a.cell(x, y) == b.cell(x, y)


@settings(max_examples=150, deadline=None)
@given(
    _BEFORE,
    st.lists(_PLAIN, min_size=ROWS + 2, max_size=40),
    _ODD,
    st.text("ab", max_size=3),
    st.integers(0, 30),
)
def test_a_flood_of_lines_gives_what_byte_by_byte_gives(
    before: str, lines: list[str], odd: tuple[int, str] | None, tail: str, scrollback: int
) -> None:
    if odd is not None:
        lines.insert(odd[0], odd[1])
    data = (before + "".join(f"{ln}\r\n" for ln in lines) + tail).encode()
    whole = Terminal(COLS, ROWS, scrollback=scrollback)
    whole.feed(data)
    bytewise = Terminal(COLS, ROWS, scrollback=scrollback)
    for b in data:
        bytewise.feed(bytes([b]))
    _same(whole, bytewise)


def test_lines_scrolled_straight_off_are_kept_in_order_as_written() -> None:
    t = Terminal(COLS, ROWS, scrollback=100)
    t.feed(b"$ seq\r\n" + b"".join(b"%d\r\n" % i for i in range(1, 51)) + b"$ ")
    assert t.history_lines() == ["$ seq"] + [str(i) for i in range(1, 48)]
    assert t.display() == ["48", "49", "50", "$"]
    assert t.history_added == 48
