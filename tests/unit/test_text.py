"""`ecotui.text`: backend text made safe to show, and money read in cents."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from ecotui.text import money_in_cents, visible, visible_line


def test_escape_sequences_and_bell_become_pictures():
    assert visible("a\x1b]52;c;aGk=\x07b") == "a␛]52;c;aGk=␇b"
    assert visible("x\x9b31my") == "x<9b>31my"  # a C1 CSI byte
    assert visible("left\u202eright") == "left<U+202E>right"  # bidi override
    assert visible("one\ntwo\r") == "one␊two␍"
    assert visible("[bold]stays[/bold]") == "[bold]stays[/bold]"
    assert visible(None) == "" and visible(42) == "42"


def test_log_lines_drop_colour_expand_tabs_and_show_the_rest():
    assert visible_line("\x1b[31merror\x1b[0m\tdone\r\n") == "error   done"
    assert visible_line("\x1b]0;title\x07ok") == "␛]0;title␇ok"


@given(st.text())
def test_nothing_a_terminal_would_obey_is_left(s):
    out = visible(s)
    hidden = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
    assert not [ch for ch in out if unicodedata.category(ch) in hidden], repr(out)
    assert "\x1b" not in out and "\x07" not in out


@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")))
)
def test_printable_text_is_unchanged(s):
    assert visible(s) == s


def test_money_in_sentences_is_rounded_to_cents():
    assert money_in_cents("extended by 1 h; hold $1.800000") == "extended by 1 h; hold $1.80"
    assert money_in_cents("hold $8.874898, $1,234.567891 left") == "hold $8.87, $1,234.57 left"
    assert money_in_cents("$0.005000 and $2.50") == "$0.01 and $2.50"
