"""Text from the backend or a replica, made safe to show: `visible()`.

Names, startup commands, events, reasons and log lines come from outside the
dashboard. Shown raw, an escape sequence in them would be obeyed by the user's
terminal (`ESC ] 52` writes the clipboard) and `[bold]` would be read as markup.
`visible()` turns every control character into a visible stand-in; callers put
the result into a `rich.text.Text` or `textual.content.Content` (never a markup
string), so brackets stay brackets.

Pure: no textual, no rich.
"""

from __future__ import annotations

import re
import unicodedata

# Colour and style sequences (SGR) of program output: dropped from log lines, the
# rest of any escape sequence is shown, not obeyed.
_SGR = re.compile(r"\x1b\[[0-9;:]*m")

# C0 controls and DEL as the Unicode "control pictures" (ESC -> ␛, BEL -> ␇).
_PICTURES = {c: chr(0x2400 + c) for c in range(0x20)}
_PICTURES[0x7F] = "\u2421"  # ␡

__all__ = ["money_in_cents", "visible", "visible_line"]


def _stand_in(ch: str) -> str | None:
    code = ord(ch)
    if code < 0x20 or code == 0x7F:
        return _PICTURES[code]
    if 0x80 <= code < 0xA0:  # C1 controls (CSI, OSC as single bytes)
        return f"<{code:02x}>"
    cat = unicodedata.category(ch)
    if cat in ("Cf", "Cs", "Co", "Cn") or cat in ("Zl", "Zp"):
        # bidi overrides, zero-width characters, line/paragraph separators, unassigned
        return f"<U+{code:04X}>"
    return None


def visible(text: object, *, tabs: int | None = None) -> str:
    """`text` with every control character replaced by a visible stand-in.

    `tabs`: expand tabs to that tab width instead of showing them as ␉ (log lines).
    Anything that is not a string is turned into one first (None -> "").
    """
    if text is None:
        return ""
    s = text if isinstance(text, str) else str(text)
    if s.isprintable() and "\t" not in s:
        return s  # the common case, fast
    out: list[str] = []
    col = 0
    for ch in s:
        if ch == "\t" and tabs:
            pad = tabs - (col % tabs)
            out.append(" " * pad)
            col += pad
            continue
        rep = _stand_in(ch)
        piece = ch if rep is None else rep
        out.append(piece)
        col += len(piece)
    return "".join(out)


def visible_line(text: object) -> str:
    """One line of a log: colour codes and a trailing CR or LF dropped, tabs expanded,
    every other control character visible."""
    if text is None:
        return ""
    s = text if isinstance(text, str) else str(text)
    s = s.rstrip("\r\n")
    if "\x1b" in s:
        s = _SGR.sub("", s)
    return visible(s, tabs=8)


_MONEY = re.compile(r"\$(\d[\d,]*)\.(\d{3,6})(?!\d)")


def money_in_cents(text: str) -> str:
    """Dollar amounts written to the micro-dollar in a sentence from the backend
    (`hold $1.800000`) rounded half up to the cent (`hold $1.80`) for reading."""

    def cents(m: re.Match[str]) -> str:
        whole = int(m.group(1).replace(",", ""))
        micros = whole * 1_000_000 + int(m.group(2).ljust(6, "0"))
        c = (micros + 5_000) // 10_000
        grouped = f"{c // 100:,}" if "," in m.group(1) else str(c // 100)
        return f"${grouped}.{c % 100:02d}"

    return _MONEY.sub(cents, text)
