"""Key presses, pastes, focus and mouse events as the bytes a program reads.

Key names follow Textual's (`"ctrl+c"`, `"shift+up"`, `"f5"`, `"alt+x"`), but
nothing here imports textual: the widget passes the name and the character.
Encodings are xterm's: cursor keys honour DECCKM (`ESC O A` in application
mode), modified keys use `CSI 1;m X`, Alt sends an ESC prefix, Ctrl+letter
the C0 control.
"""

from __future__ import annotations

# xterm modifier parameter: 1 + shift(1) + alt(2) + ctrl(4) + meta(8)
_MOD_BITS = {"shift": 1, "alt": 2, "meta": 2, "ctrl": 4, "super": 8, "hyper": 8}

_CURSOR = {"up": "A", "down": "B", "right": "C", "left": "D", "home": "H", "end": "F"}
_TILDE = {
    "insert": 2,
    "delete": 3,
    "pageup": 5,
    "page_up": 5,
    "pagedown": 6,
    "page_down": 6,
    "f5": 15,
    "f6": 17,
    "f7": 18,
    "f8": 19,
    "f9": 20,
    "f10": 21,
    "f11": 23,
    "f12": 24,
    "f13": 25,
    "f14": 26,
    "f15": 28,
    "f16": 29,
    "f17": 31,
    "f18": 32,
    "f19": 33,
    "f20": 34,
}
_SS3_F = {"f1": "P", "f2": "Q", "f3": "R", "f4": "S"}
_SIMPLE = {
    "enter": b"\r",
    "return": b"\r",
    "tab": b"\t",
    "escape": b"\x1b",
    "backspace": b"\x7f",
    "space": b" ",
}
# Ctrl with punctuation, by Textual's key names.
_CTRL_PUNCT = {
    "space": 0,
    "at": 0,
    "left_square_bracket": 0x1B,
    "backslash": 0x1C,
    "right_square_bracket": 0x1D,
    "circumflex_accent": 0x1E,
    "caret": 0x1E,
    "underscore": 0x1F,
    "question_mark": 0x7F,
    "minus": 0x1F,
    "2": 0,
    "3": 0x1B,
    "4": 0x1C,
    "5": 0x1D,
    "6": 0x1E,
    "7": 0x1F,
    "8": 0x7F,
}
_NAMED_CHARS = {
    "exclamation_mark": "!",
    "quotation_mark": '"',
    "number_sign": "#",
    "dollar_sign": "$",
    "percent_sign": "%",
    "ampersand": "&",
    "apostrophe": "'",
    "left_parenthesis": "(",
    "right_parenthesis": ")",
    "asterisk": "*",
    "plus": "+",
    "comma": ",",
    "minus": "-",
    "full_stop": ".",
    "slash": "/",
    "colon": ":",
    "semicolon": ";",
    "less_than_sign": "<",
    "equals_sign": "=",
    "greater_than_sign": ">",
    "question_mark": "?",
    "at": "@",
    "left_square_bracket": "[",
    "backslash": "\\",
    "right_square_bracket": "]",
    "circumflex_accent": "^",
    "underscore": "_",
    "grave_accent": "`",
    "left_curly_bracket": "{",
    "vertical_line": "|",
    "right_curly_bracket": "}",
    "tilde": "~",
    "space": " ",
}


def encode_key(
    key: str, character: str | None = None, *, app_cursor: bool = False, app_keypad: bool = False
) -> bytes | None:
    """Bytes for one key press, or None if it has no encoding."""
    parts = key.split("+")
    name = parts[-1]
    mods = {p for p in parts[:-1]}
    if key == "+" or name == "":  # the plus key itself
        name, mods = "plus", set()
    bits = sum(_MOD_BITS.get(m, 0) for m in mods)
    alt = "alt" in mods or "meta" in mods
    ctrl = "ctrl" in mods
    shift = "shift" in mods

    if name in _CURSOR:
        final = _CURSOR[name]
        if bits:
            return f"\x1b[1;{bits + 1}{final}".encode()
        if app_cursor:
            return f"\x1bO{final}".encode()
        return f"\x1b[{final}".encode()
    if name in _SS3_F:
        final = _SS3_F[name]
        if bits:
            return f"\x1b[1;{bits + 1}{final}".encode()
        return f"\x1bO{final}".encode()
    if name in _TILDE:
        num = _TILDE[name]
        if bits:
            return f"\x1b[{num};{bits + 1}~".encode()
        return f"\x1b[{num}~".encode()
    if name == "tab" and shift:
        return b"\x1b[Z"
    if name in ("enter", "return") and alt:
        return b"\x1b\r"
    if name == "backspace":
        if ctrl:
            return b"\x08"
        return b"\x1b\x7f" if alt else b"\x7f"
    if name in _SIMPLE and not ctrl:
        out = _SIMPLE[name]
        return b"\x1b" + out if alt and name != "escape" else out

    prefix = b"\x1b" if alt else b""
    if ctrl:
        if len(name) == 1 and name.isalpha() and name.isascii():
            return prefix + bytes([ord(name.lower()) & 0x1F])
        code = _CTRL_PUNCT.get(name)
        if code is not None:
            return prefix + bytes([code])
        return None
    # Printable: the character Textual reports, else the key's own name.
    ch = character if character and character.isprintable() else None
    if ch is None:
        if len(name) == 1:
            ch = name.upper() if shift and name.isalpha() else name
        else:
            ch = _NAMED_CHARS.get(name)
    if ch is None:
        if character and len(character) == 1:
            return prefix + character.encode()
        return None
    if alt and character and len(character) == 1 and not character.isprintable():
        return prefix + character.encode()
    return prefix + ch.encode("utf-8")


def encode_paste(text: str, bracketed: bool) -> bytes:
    """A paste as a terminal types it: newlines as CR, bracketed if the program asked."""
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    if bracketed:
        text = text.replace("\x1b[201~", "")
        return b"\x1b[200~" + text.encode("utf-8") + b"\x1b[201~"
    return text.encode("utf-8")


def encode_focus(focused: bool) -> bytes:
    return b"\x1b[I" if focused else b"\x1b[O"


def encode_mouse(
    kind: str,
    button: int,
    x: int,
    y: int,
    *,
    tracking: int,
    encoding: str,
    shift: bool = False,
    meta: bool = False,
    ctrl: bool = False,
    buttons_down: bool = False,
) -> bytes | None:
    """A mouse event for a program that enabled mouse reporting, or None.

    kind: "press", "release", "move", "scroll_up", "scroll_down"; button 0 left,
    1 middle, 2 right; x, y zero-based cells. `buttons_down`: a button is held
    during a move. tracking: 9, 1000, 1002, 1003 (0: off); encoding "", "utf8",
    "sgr", "urxvt".
    """
    if not tracking:
        return None
    if tracking == 9:
        if kind != "press":
            return None
        cb = button
        mods = 0
    else:
        if kind == "move":
            if tracking == 1000 or (tracking == 1002 and not buttons_down):
                return None
            cb = (button if buttons_down else 3) + 32
        elif kind == "scroll_up":
            cb = 64
        elif kind == "scroll_down":
            cb = 65
        elif kind == "release":
            cb = button if encoding == "sgr" else 3
        else:
            cb = button
        mods = (4 if shift else 0) | (8 if meta else 0) | (16 if ctrl else 0)
    cb |= mods
    cx, cy = x + 1, y + 1
    if encoding == "sgr":
        final = "m" if kind == "release" else "M"
        return f"\x1b[<{cb};{cx};{cy}{final}".encode()
    if encoding == "urxvt":
        return f"\x1b[{cb + 32};{cx};{cy}M".encode()
    if encoding == "utf8":
        if cx > 2015 or cy > 2015:
            return None
        return ("\x1b[M" + chr(cb + 32) + chr(cx + 32) + chr(cy + 32)).encode("utf-8")
    if cx > 223 or cy > 223:
        return None  # the X10 encoding cannot say it
    return b"\x1b[M" + bytes([cb + 32, cx + 32, cy + 32])
