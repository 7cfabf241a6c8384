"""Text from a backend or a replica, made safe to print on a person's terminal.

A cluster's startup command, a replica's reason, an event or a log line is
written by whoever controls the container. Printed as it is, an escape
sequence in it acts on the reader's terminal: it sets the window title,
writes the clipboard (OSC 52), moves the cursor to hide a line, or types
into the shell through a query's answer. `visible()` shows every control
character as printable text instead, so such text reads as what it is:

- C0 controls and DEL in caret notation: ESC is `^[`, BEL `^G`, DEL `^?`;
- C1 controls (U+0080..U+009F, which some terminals act on as ESC + letter)
  and the Unicode bidirectional overrides and isolates (which reorder what a
  line seems to say) as `<U+XXXX>`;
- everything else unchanged.

`keep` names controls to leave as they are (a multi-line text keeps "\\n").
Pure functions; the CLI and the dashboard both use them.
"""

from __future__ import annotations

from functools import lru_cache

_BIDI = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]


def _caret(code: int) -> str:
    return "^?" if code == 0x7F else "^" + chr(code + 0x40)


@lru_cache(maxsize=8)
def _table(keep: str) -> dict[int, str]:
    table: dict[int, str] = {}
    for code in [*range(0x20), 0x7F]:
        table[code] = _caret(code)
    for code in [*range(0x80, 0xA0), *_BIDI]:
        table[code] = f"<U+{code:04X}>"
    for ch in keep:
        table.pop(ord(ch), None)
    return table


def visible(text: str, keep: str = "") -> str:
    """`text` with its control characters shown as printable text (see the module)."""
    if text.isprintable():  # no Cc or Cf character: nothing to show differently
        return text
    return text.translate(_table(keep))


def visible_lines(text: str) -> str:
    """Multi-line text (a log): newlines and tabs kept, CRLF read as a newline,
    every other control shown."""
    return visible(text.replace("\r\n", "\n"), keep="\n\t")
