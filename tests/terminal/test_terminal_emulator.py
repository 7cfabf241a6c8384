"""Unit tests of the emulator core: one feature each, checked on the resulting screen."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecotui.terminal import Terminal
from ecotui.terminal.style import (
    BOLD,
    DEFAULT,
    DIM,
    ITALIC,
    REVERSE,
    STRIKE,
    UNDERLINE,
    rgb,
)


def term(data: str | bytes = b"", cols: int = 20, rows: int = 5, **kw) -> Terminal:
    t = Terminal(cols, rows, **kw)
    t.feed(data.encode() if isinstance(data, str) else data)
    return t


def style_at(t: Terminal, x: int, y: int) -> tuple[int, int, int]:
    return t.cell(x, y)[1]


# -- text, wrapping, cursor ---------------------------------------------------------------
def test_plain_text_and_crlf() -> None:
    t = term("ab\r\ncd")
    assert t.display() == ["ab", "cd", "", "", ""]
    assert (t.x, t.y) == (2, 1)


def test_lf_keeps_the_column_and_cr_returns() -> None:
    t = term("ab\ncd\rX")
    assert t.display()[:2] == ["ab", "X cd"]


def test_autowrap_has_a_pending_state() -> None:
    t = term("x" * 20, cols=20)
    assert (t.x, t.y, t.wrap_pending) == (19, 0, True)
    t.feed(b"\r")  # CR cancels the pending wrap: still on row 0
    assert (t.x, t.y, t.wrap_pending) == (0, 0, False)
    t.feed(b"x" * 20 + b"y")
    assert t.display()[:2] == ["x" * 20, "y"]
    assert t.lines[0].wrapped


def test_autowrap_off_overwrites_the_last_column() -> None:
    t = term("\x1b[?7l" + "a" * 25 + "Z", cols=10)
    assert t.display()[0] == "a" * 9 + "Z" and t.y == 0


def test_cursor_movement_and_clamping() -> None:
    t = term("\x1b[3;4Hx\x1b[2Ay\x1b[10Bz\x1b[100Cw\x1b[2Dv\x1b[1Gu", cols=10, rows=5)
    assert t.display() == ["    y", "", "   x", "", "u    z v w"]


def test_tabs_default_set_and_cleared() -> None:
    t = term("a\tb\x1b[3g\r\tc", cols=30)
    assert t.display()[0] == "a       b" + " " * 20 + "c"  # no stops left: the last column
    t = term("\x1b[1;5H\x1bH\r\tX", cols=30)
    assert t.display()[0] == "    X"


def test_backspace_and_reverse_wrap_over_a_wrapped_line() -> None:
    t = term("abc\x08\x08X")
    assert t.display()[0] == "aXc"
    t = term("0123456789ab\x08\x08\x08Q", cols=10)
    assert t.display()[:2] == ["012345678Q", "ab"]


# -- SGR -----------------------------------------------------------------------------------
def test_sgr_16_256_truecolor_and_attributes() -> None:
    t = term(
        "\x1b[31;44mA\x1b[0m\x1b[91mB\x1b[38;5;200;48;5;17mC\x1b[38;2;1;2;3mD"
        "\x1b[0;1;2;3;4;7;9mE\x1b[22;23;24;27;29mF\x1b[38:2::9:8:7mG"
    )
    assert style_at(t, 0, 0) == (1, 4, 0)
    assert style_at(t, 1, 0) == (9, DEFAULT, 0)
    assert style_at(t, 2, 0) == (200, 17, 0)
    assert style_at(t, 3, 0) == (rgb(1, 2, 3), 17, 0)
    assert style_at(t, 4, 0) == (
        DEFAULT,
        DEFAULT,
        BOLD | DIM | ITALIC | UNDERLINE | REVERSE | STRIKE,
    )
    assert style_at(t, 5, 0) == (DEFAULT, DEFAULT, 0)
    assert style_at(t, 6, 0)[0] == rgb(9, 8, 7)


def test_erase_uses_the_background_colour() -> None:
    t = term("abcdef\x1b[1;3H\x1b[42m\x1b[K")
    assert t.display()[0] == "ab"
    assert style_at(t, 5, 0) == (DEFAULT, 2, 0)
    assert style_at(t, 0, 0) == (DEFAULT, DEFAULT, 0)


# -- editing ---------------------------------------------------------------------------------
def test_erase_in_display_and_line() -> None:
    t = term("11111\r\n22222\r\n33333\x1b[2;3H\x1b[1K", cols=5, rows=3)
    assert t.display() == ["11111", "   22", "33333"]
    t.feed(b"\x1b[0J")
    assert t.display() == ["11111", "", ""]
    t.feed(b"\x1b[1;2H\x1b[2K")
    assert t.display() == ["", "", ""]


def test_insert_delete_erase_characters() -> None:
    t = term("abcdef\x1b[1;2H\x1b[2@\x1b[2;1Habcdef\x1b[2;2H\x1b[2P\x1b[3;1Habcdef\x1b[3;2H\x1b[3X")
    assert t.display()[:3] == ["a  bcdef", "adef", "a   ef"]


def test_insert_mode() -> None:
    t = term("abc\r\x1b[4hXY\x1b[4lZ")
    assert t.display()[0] == "XYZbc"


def test_insert_and_delete_lines_inside_the_scroll_region() -> None:
    t = term("1\r\n2\r\n3\r\n4\r\n5\x1b[2;4r\x1b[2;1H\x1b[L", cols=5, rows=5)
    assert t.display() == ["1", "", "2", "3", "5"]
    t.feed(b"\x1b[2M")
    assert t.display() == ["1", "3", "", "", "5"]


def test_scroll_region_scrolls_only_inside() -> None:
    t = term("top\x1b[5;1Hbottom\x1b[2;4r\x1b[4;1Hx\nA\nB", cols=10, rows=5)
    assert t.display() == ["top", "x", " A", "  B", "bottom"]


def test_reverse_index_scrolls_down_at_the_top_margin() -> None:
    t = term("a\r\nb\r\nc\x1b[H\x1bM", cols=5, rows=3)
    assert t.display() == ["", "a", "b"]


def test_origin_mode_addresses_inside_the_region() -> None:
    t = term("\x1b[2;4r\x1b[?6h\x1b[1;1HO\x1b[10;1HP\x1b[6n", cols=5, rows=5)
    assert t.display() == ["", "O", "", "P", ""]
    assert t.take_replies() == b"\x1b[3;2R"


def test_rep_repeats_the_last_character() -> None:
    assert term("ab\x1b[3b").display()[0] == "abbbb"


def test_decaln_fills_with_e() -> None:
    assert term("\x1b#8", cols=3, rows=2).display() == ["EEE", "EEE"]


def test_line_drawing_charset_g0_and_shift_out() -> None:
    t = term("\x1b(0lqk\x1b(Bq\x1b)0\x0ex\x0fx")
    assert t.display()[0] == "┌─┐q│x"


# -- wide and combining characters ------------------------------------------------------------------
def test_wide_and_combining_characters() -> None:
    t = term("漢字e\u0301x")
    assert t.display()[0] == "漢字e\u0301x"
    assert t.cell(0, 0)[0] == "漢" and t.cell(1, 0)[0] == "" and t.cell(4, 0)[0] == "e\u0301"
    assert t.x == 6


def test_wide_character_at_the_last_column_wraps() -> None:
    t = term("abcd漢", cols=5)
    assert t.display()[:2] == ["abcd", "漢"]


def test_overwriting_half_of_a_wide_character_blanks_the_other_half() -> None:
    t = term("漢字\x1b[1;2Hx")
    assert t.display()[0] == " x字"


# -- screens ------------------------------------------------------------------------------------------
def test_alternate_screen_1049_saves_and_restores() -> None:
    t = term("main\x1b[2;3H\x1b[?1049h\x1b[Halt")
    assert t.alt_active and t.display()[0] == "alt"
    t.feed(b"\x1b[?1049l")
    assert not t.alt_active and t.display()[0] == "main" and (t.x, t.y) == (2, 1)
    t.feed(b"\x1b[?1049h")
    assert t.display()[0] == ""  # cleared on entry


def test_alternate_screen_47_keeps_and_1047_clears_on_leave() -> None:
    t = term("m\x1b[?47hA\x1b[?47l\x1b[?47h")
    assert t.display()[0] == " A"
    t.feed(b"\x1b[?47l\x1b[?1047h\x1b[HB\x1b[?1047l\x1b[?1047h")
    assert t.display()[0] == ""


def test_alternate_screen_keeps_no_scrollback() -> None:
    t = term("\x1b[?1049h" + "x\r\n" * 50, rows=5)
    assert len(t.history) == 0


def test_save_restore_cursor_and_pen() -> None:
    t = term("\x1b[3;3H\x1b[31m\x1b7\x1b[0m\x1b[1;1Ha\x1b8b")
    assert t.display()[2] == "  b" and style_at(t, 2, 2)[0] == 1


def test_ris_resets_screen_and_modes() -> None:
    t = term("abc\x1b[?1h\x1b[?2004h\x1b[31m\x1bc")
    assert t.display()[0] == "" and not t.app_cursor and not t.bracketed_paste and t.pen == 0


# -- modes and replies --------------------------------------------------------------------------------
def test_modes_the_widget_reads() -> None:
    t = term("\x1b[?1h\x1b=\x1b[?2004h\x1b[?1002h\x1b[?1006h\x1b[?1004h\x1b[?25l")
    assert t.app_cursor and t.app_keypad and t.bracketed_paste and t.focus_events
    assert t.mouse_tracking == 1002 and t.mouse_encoding == "sgr" and not t.cursor_visible
    t.feed(b"\x1b[?1l\x1b>\x1b[?2004l\x1b[?1002l\x1b[?1006l\x1b[?25h")
    assert not (t.app_cursor or t.app_keypad or t.bracketed_paste or t.mouse_tracking)
    assert t.cursor_visible and t.mouse_encoding == ""


def test_device_queries_are_answered() -> None:
    t = term("ab\x1b[c\x1b[>c\x1b[5n\x1b[6n\x1b[18t\x1b[?2004$p\x1b]11;?\x07")
    assert t.take_replies() == (
        b"\x1b[?62;22c\x1b[>1;10;0c\x1b[0n\x1b[1;3R\x1b[8;5;20t"
        b"\x1b[?2004;2$y\x1b]11;rgb:0000/0000/0000\x07"
    )
    assert t.take_replies() == b""


def test_title_clipboard_and_bell() -> None:
    t = term("\x1b]0;one\x07\x1b]2;two\x1b\\\x07\x07\x1b]52;c;aGVsbG8=\x07\x1b]52;c;?\x07")
    assert t.title == "two" and t.icon_title == "one" and t.bell_count == 2
    assert t.take_clipboard() == [("c", "hello")]  # and the read request is refused


# -- scrollback ----------------------------------------------------------------------------------------
def test_scrollback_is_bounded_and_counts() -> None:
    t = term("".join(f"{i}\r\n" for i in range(100)), rows=5, scrollback=30)
    assert len(t.history) == 30 and t.history_added == 96
    assert t.history_lines()[-1] == "95" and t.display()[:4] == ["96", "97", "98", "99"]


def test_scrolled_off_lines_keep_their_styles() -> None:
    t = term("\x1b[31mred\x1b[0m plain\r\n" + "x\r\n" * 10, rows=3)
    item = t.history[0]
    assert Terminal.history_runs(item) == [("red", t.styles.intern((1, DEFAULT, 0))), (" plain", 0)]


def test_bulk_path_gives_the_same_screen_as_line_by_line() -> None:
    data = ("head\r\n" + "".join(f"line {i}\r\n" for i in range(500)) + "tail\rT").encode()
    whole = term(data, cols=30, rows=10, scrollback=100)
    bytewise = Terminal(30, 10, scrollback=100)
    for b in data:
        bytewise.feed(bytes([b]))
    assert whole.display() == bytewise.display()
    assert whole.history_lines() == bytewise.history_lines()
    assert whole.history_added == bytewise.history_added == 492
    assert (whole.x, whole.y) == (bytewise.x, bytewise.y)


def test_resize_keeps_the_cursor_row_and_takes_lines_back() -> None:
    t = term("".join(f"{i}\r\n" for i in range(10)) + "$ ", cols=10, rows=6)
    assert t.display()[-1] == "$"
    t.resize(10, 3)
    assert t.display() == ["8", "9", "$"] and t.y == 2
    t.resize(10, 6)
    assert t.display() == ["5", "6", "7", "8", "9", "$"] and t.y == 5
    t.resize(4, 6)
    assert t.cols == 4 and all(len(r) <= 4 for r in t.display())


def test_take_dirty_reports_changed_rows() -> None:
    t = term("a\r\nb", rows=4)
    assert t.take_dirty() is None  # first call: everything
    assert t.take_dirty() == set()
    t.feed(b"\x1b[3;1Hc")
    assert t.take_dirty() == {2}
    t.feed(b"\r\n\r\n")  # a scroll moves every row
    assert t.take_dirty() == {0, 1, 2, 3}


# -- chunk boundaries -----------------------------------------------------------------------------------
_PIECES = [
    "a",
    "漢",
    "e\u0301",
    "\r\n",
    "\n",
    "\r",
    "\t",
    "\x08",
    "\x1b[31m",
    "\x1b[0m",
    "\x1b[2;3H",
    "\x1b[K",
    "\x1b[2J",
    "\x1b[?1049h",
    "\x1b[?1049l",
    "\x1b]0;t\x07",
    "\x1b[3@",
    "\x1b[2P",
    "\x1b[L",
    "\x1b[M",
    "\x1b[1;3r",
    "\x1b[r",
    "\x1bM",
    "\x1b7",
    "\x1b8",
    "\x1b(0q\x1b(B",
    "xyz" * 5,
    "\x1b[38;2;1;2;3m",
    "\x1b[4b",
    "\x1b[?7l",
    "\x1b[?7h",
    "line\r\n" * 12,
]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=60), st.integers(0, 2**32))
def test_any_chunking_gives_the_same_screen(pieces: list[str], seed: int) -> None:
    data = "".join(pieces).encode()
    whole = term(data, cols=12, rows=4, scrollback=50)
    rng = random.Random(seed)
    parts = Terminal(12, 4, scrollback=50)
    i = 0
    while i < len(data):
        n = rng.randint(1, 9)
        parts.feed(data[i : i + n])
        i += n
    assert parts.display() == whole.display()
    assert parts.history_lines() == whole.history_lines()
    assert (parts.x, parts.y, parts.alt_active) == (whole.x, whole.y, whole.alt_active)
    for y in range(4):
        for x in range(12):
            assert parts.cell(x, y) == whole.cell(x, y)


@pytest.mark.parametrize("junk", [b"\x1b[", b"\x1b]0;never ends", b"\x1b", b"\xe6\xbc"])
def test_incomplete_input_waits_for_the_rest(junk: bytes) -> None:
    t = term(b"ok" + junk)
    assert t.display()[0] == "ok"
