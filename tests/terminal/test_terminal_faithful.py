"""The emulator core on what tmux does and a first version did not: CAN/SUB abort a
sequence, OSC 8 hyperlinks, reflow on a new width."""

from __future__ import annotations

from ecotui.terminal import Terminal
from ecotui.terminal.reflow import reflow


def term(data: str | bytes, cols: int = 40, rows: int = 6) -> Terminal:
    t = Terminal(cols, rows)
    t.feed(data)
    return t


def test_can_and_sub_abort_a_sequence_and_show_nothing() -> None:
    assert term("\x1b[3\x18mX").display()[0] == "mX"  # CSI aborted, the rest printed
    t = term("\x1b[31\x1amRED")
    assert t.display()[0] == "mRED" and t.styles[t.pen] == (-1, -1, 0)
    t = term("\x1b]0;ti\x18tle\x07")
    assert t.display()[0] == "tle" and t.title == "" and t.bell_count == 1
    assert term("\x1bP1$q\x1aabc").display()[0] == "abc" and not term("\x1bP1$q\x1aabc").replies
    assert term("a\x1b(\x18b").display()[0] == "ab"
    # Split across feeds, as a PTY delivers it.
    t = Terminal(40, 6)
    for piece in ("\x1b[", "3", "\x18", "mX"):
        t.feed(piece)
    assert t.display()[0] == "mX"


def test_hyperlinks_are_kept_across_sgr_and_not_in_erased_cells() -> None:
    t = term(
        "a \x1b]8;id=x;https://e.com/p\x1b\\li\x1b[0;1mnk\x1b]8;;\x1b\\ b\x1b[2;1H\x1b[44m\x1b[K"
    )
    link = t.styles.link
    row = t.lines[0]
    assert [link(row.cell(x, 40)[1]) for x in range(7)] == [
        "",
        "",
        "https://e.com/p",
        "https://e.com/p",
        "https://e.com/p",
        "https://e.com/p",
        "",
    ]
    assert t.styles[row.cell(4, 40)[1]][2] & 1  # bold kept with the link
    assert link(t.lines[1].cell(3, 40)[1]) == ""


def _top_like(t: Terminal, n: int) -> list[str]:
    lines = [
        f"{i:3d} root  20  0  S 0.0 0:00.00 kworker/u8:{i}-events_unbound_kthread" for i in range(n)
    ]
    for ln in lines:
        t.feed(ln + "\r\n")
    t.feed("$ ")
    return lines


def test_resize_reflows_without_blank_lines_and_gives_lines_back_whole() -> None:
    t = Terminal(100, 8, scrollback=100)
    lines = _top_like(t, 20)
    t.resize(40, 8)
    # Every long line wraps onto the next rows; no blank row anywhere.
    everything = t.history_lines() + t.display()
    assert "" not in everything[:-1] and everything[-1] == "$"
    assert (t.x, t.y) == (2, 7)
    t.resize(100, 8)
    assert t.history_lines() + t.display()[:-1] == lines and t.display()[-1] == "$"
    assert (t.x, t.y) == (2, 7)
    t.feed("echo ok")
    assert t.display()[-1] == "$ echo ok"


def test_reflow_keeps_the_cursor_on_its_character_and_a_short_screen_at_the_top() -> None:
    t = Terminal(20, 6)
    t.feed("$ " + "x" * 25)  # the shell's line wraps once
    assert (t.x, t.y) == (7, 1)
    t.resize(10, 6)
    assert t.display()[:3] == ["$ xxxxxxxx", "x" * 10, "x" * 7] and (t.x, t.y) == (7, 2)
    t.resize(40, 6)
    assert t.display()[0] == "$ " + "x" * 25 and (t.x, t.y) == (27, 0)


def test_reflow_never_splits_a_wide_character() -> None:
    t = Terminal(9, 4)
    t.feed("ab日本語中文")  # 2 + 10 cells: wraps after 日本語 + 1 blank
    t.resize(6, 4)
    assert t.display()[:3] == ["ab日本", "語中文", ""]
    rows, cursor = reflow(list(t.main), 6, 5, (1, 6))
    assert [r.text() for r in rows[:3]] == ["ab日", "本語", "中文"] and cursor == (2, 4)


def test_the_alternate_screen_is_not_reflowed() -> None:
    t = Terminal(20, 4)
    t.feed("x" * 30 + "\x1b[?1049h\x1b[H" + "y" * 30)
    t.resize(10, 4)
    assert t.display()[:2] == ["y" * 10, "y" * 10]
    t.feed("\x1b[?1049l")
    assert t.display()[:3] == ["x" * 10, "x" * 10, "x" * 10]


# -- left and right margins (DECLRMM, DECSLRM), as xterm has them ----------------------------
def _grid(cols: int = 12, rows: int = 5) -> Terminal:
    """A screen full of letters: row y is made of chr(ord('a') + y)."""
    t = Terminal(cols, rows)
    t.feed("\r\n".join(chr(97 + y) * cols for y in range(rows)))
    return t


def test_text_wraps_inside_the_margins_and_cr_returns_to_the_left_one() -> None:
    t = Terminal(12, 4)
    t.feed("\x1b[?69h\x1b[3;8s")  # columns 3..8
    assert (t.lr_active, t.left, t.right, t.x, t.y) == (True, 2, 7, 0, 0)
    t.feed("\x1b[1;3H0123456789")
    assert t.display()[:2] == ["  012345", "  6789"]
    t.feed("\rX")
    assert t.display()[1] == "  X789" and t.x == 3


def test_scrolling_moves_only_the_rectangle_of_the_margins() -> None:
    t = _grid()
    t.feed("\x1b[?69h\x1b[4;9s\x1b[2;4r\x1b[4;5H\n")  # LF at the bottom margin
    assert t.display() == [
        "aaaaaaaaaaaa",
        "bbbccccccbbb",
        "cccddddddccc",
        "ddd      ddd",
        "eeeeeeeeeeee",
    ]
    assert t.history_lines() == []  # nothing of a rectangle goes to the scrollback
    t.feed("\x1b[2;5H\x1bM")  # RI at the top margin: the rectangle moves down
    assert t.display()[1:4] == ["bbb      bbb", "cccccccccccc", "dddddddddddd"]
    t.feed("\x1b[2S")  # SU
    assert t.display()[1:4] == ["bbbddddddbbb", "ccc      ccc", "ddd      ddd"]


def test_insert_and_delete_lines_and_characters_stay_inside_the_margins() -> None:
    t = _grid()
    t.feed("\x1b[?69h\x1b[4;9s\x1b[2;5H\x1b[L")  # IL inside the margins
    assert t.display() == [
        "aaaaaaaaaaaa",
        "bbb      bbb",
        "cccbbbbbbccc",
        "dddccccccddd",
        "eeeddddddeee",
    ]
    assert t.x == 3  # to the left margin
    t.feed("\x1b[2M")
    assert t.display()[1:] == ["bbbccccccbbb", "cccddddddccc", "ddd      ddd", "eee      eee"]
    t.feed("\x1b[1;1H\x1b[L")  # outside the margins: nothing moves
    assert t.display()[0] == "aaaaaaaaaaaa"
    t = Terminal(12, 2)
    t.feed("0123456789AB\x1b[?69h\x1b[4;9s\x1b[1;5H\x1b[2@")
    assert t.display()[0] == "0123  4569AB"
    t.feed("\x1b[3P")
    assert t.display()[0] == "012356   9AB"


def test_origin_mode_counts_from_the_margins_and_mode_69_off_restores_save_cursor() -> None:
    t = Terminal(20, 6)
    t.feed("\x1b[?69h\x1b[6;15s\x1b[2;5r\x1b[?6h\x1b[1;1HO")
    assert t.display()[1] == "     O" and (t.x, t.y) == (6, 1)
    t.feed("\x1b[2;99HR")  # clamped to the right margin
    assert t.display()[2] == "              R"
    t.feed("\x1b[?6l\x1b[?69l")
    assert not t.lr_active and (t.left, t.right) == (0, 19)
    t.feed("\x1b[4;3H\x1b[s\x1b[H\x1b[uS")  # CSI s saves the cursor again
    assert t.display()[3] == "  S"
    t.feed("\x1b[?69$p")
    assert t.take_replies() == b"\x1b[?69;2$y"


def test_margins_split_across_feeds() -> None:
    t = Terminal(12, 4)
    for piece in ("\x1b[?6", "9h\x1b[3;", "8s\x1b[1;3H01234", "56789"):
        t.feed(piece)
    assert t.display()[:2] == ["  012345", "  6789"]
