"""Cell styles for the terminal core: colours, attribute flags, SGR.

A style is an immutable tuple `(fg, bg, flags)` interned into a small int id
(`StyleTable`), so a line stores one int per run (or per cell) and comparing
two styles is comparing two ints. Id 0 is always the default style.

Colours: `DEFAULT` (-1), a palette index 0..255 (0..15 are the 16 ANSI colours;
`SGR 31` and `SGR 38;5;1` both give 1), or `RGB_FLAG | 0xRRGGBB` for truecolor.
"""

from __future__ import annotations

DEFAULT = -1
RGB_FLAG = 1 << 24

BOLD = 1
DIM = 2
ITALIC = 4
UNDERLINE = 8
BLINK = 16
REVERSE = 32
HIDDEN = 64
STRIKE = 128
DOUBLE_UNDERLINE = 256
OVERLINE = 512

# Flags above the attribute bits hold a hyperlink (OSC 8): an index into
# `StyleTable.links`. SGR never changes them; erased cells do not carry them.
LINK_SHIFT = 10
LINK_MASK = ~((1 << LINK_SHIFT) - 1)

Style = tuple[int, int, int]  # (fg, bg, flags)

DEFAULT_STYLE: Style = (DEFAULT, DEFAULT, 0)

# SGR parameters that set one flag / clear some flags.
_SET_FLAG = {
    1: BOLD,
    2: DIM,
    3: ITALIC,
    4: UNDERLINE,
    5: BLINK,
    6: BLINK,
    7: REVERSE,
    8: HIDDEN,
    9: STRIKE,
    21: DOUBLE_UNDERLINE,
    53: OVERLINE,
}
_CLEAR_FLAGS = {
    22: BOLD | DIM,
    23: ITALIC,
    24: UNDERLINE | DOUBLE_UNDERLINE,
    25: BLINK,
    27: REVERSE,
    28: HIDDEN,
    29: STRIKE,
    55: OVERLINE,
}


def rgb(r: int, g: int, b: int) -> int:
    return RGB_FLAG | ((r & 255) << 16) | ((g & 255) << 8) | (b & 255)


def _ints(field: str) -> list[int]:
    out = []
    for part in field.split(":"):
        try:
            out.append(int(part) if part else 0)
        except ValueError:
            out.append(0)
    return out


def _extended_color(fields: list[str], i: int) -> tuple[int | None, int]:
    """Parse `38;5;n` / `38;2;r;g;b` (or the colon forms) starting at fields[i].

    Returns (colour or None when malformed, index of the next field).
    """
    field = fields[i]
    if ":" in field:
        sub = _ints(field)
        if len(sub) >= 3 and sub[1] == 5:
            return (sub[2] if 0 <= sub[2] < 256 else None), i + 1
        if len(sub) >= 5 and sub[1] == 2:
            # 38:2:r:g:b or 38:2:colourspace:r:g:b
            comps = sub[-3:] if len(sub) >= 6 else sub[2:5]
            return rgb(*comps), i + 1
        return None, i + 1
    if i + 1 < len(fields):
        try:
            mode = int(fields[i + 1] or 0)
        except ValueError:
            return None, i + 2
        if mode == 5 and i + 2 < len(fields):
            try:
                n = int(fields[i + 2] or 0)
            except ValueError:
                return None, i + 3
            return (n if 0 <= n < 256 else None), i + 3
        if mode == 2 and i + 4 < len(fields):
            try:
                r, g, b = (int(fields[i + k] or 0) for k in (2, 3, 4))
            except ValueError:
                return None, i + 5
            return rgb(r, g, b), i + 5
        return None, len(fields)
    return None, i + 1


def apply_sgr(style: Style, params: str) -> Style:
    """The style after `CSI params m`."""
    if not params or params == "0":
        return DEFAULT_STYLE
    if ":" in params:
        return _apply_sgr_colon(style, params)
    fg, bg, flags = style
    try:
        codes = [int(f) if f else 0 for f in params.split(";")]
    except ValueError:
        return _apply_sgr_colon(style, params)
    i = 0
    n = len(codes)
    while i < n:
        code = codes[i]
        i += 1
        if code == 0:
            fg, bg, flags = DEFAULT, DEFAULT, 0
        elif 30 <= code <= 37:
            fg = code - 30
        elif 40 <= code <= 47:
            bg = code - 40
        elif code == 38 or code == 48 or code == 58:
            color = None
            if i < n:
                mode = codes[i]
                if mode == 5 and i + 1 < n:
                    if codes[i + 1] < 256:
                        color = codes[i + 1]
                    i += 2
                elif mode == 2 and i + 3 < n:
                    color = rgb(codes[i + 1], codes[i + 2], codes[i + 3])
                    i += 4
                else:
                    i = n
            if color is not None:
                if code == 38:
                    fg = color
                elif code == 48:
                    bg = color
        elif code == 39:
            fg = DEFAULT
        elif code == 49:
            bg = DEFAULT
        elif 90 <= code <= 97:
            fg = code - 90 + 8
        elif 100 <= code <= 107:
            bg = code - 100 + 8
        elif code in _SET_FLAG:
            flags |= _SET_FLAG[code]
        elif code in _CLEAR_FLAGS:
            flags &= ~_CLEAR_FLAGS[code]
    return fg, bg, flags


def _apply_sgr_colon(style: Style, params: str) -> Style:
    """SGR with colon sub-parameters (`38:2::r:g:b`, `4:3`) or odd fields."""
    fg, bg, flags = style
    fields = params.split(";")
    i = 0
    n = len(fields)
    while i < n:
        field = fields[i]
        if ":" in field and not field.startswith(("38", "48", "58")):
            sub = _ints(field)
            if sub[0] == 4:  # 4:0 none, 4:1 single, 4:2 double, 4:3.. curly etc.
                flags &= ~(UNDERLINE | DOUBLE_UNDERLINE)
                kind = sub[1] if len(sub) > 1 else 1
                if kind == 2:
                    flags |= DOUBLE_UNDERLINE
                elif kind:
                    flags |= UNDERLINE
            i += 1
            continue
        code_text = field.split(":", 1)[0]
        try:
            code = int(code_text) if code_text else 0
        except ValueError:
            i += 1
            continue
        if code == 0:
            fg, bg, flags = DEFAULT, DEFAULT, 0
        elif 30 <= code <= 37:
            fg = code - 30
        elif 40 <= code <= 47:
            bg = code - 40
        elif 90 <= code <= 97:
            fg = code - 90 + 8
        elif 100 <= code <= 107:
            bg = code - 100 + 8
        elif code == 39:
            fg = DEFAULT
        elif code == 49:
            bg = DEFAULT
        elif code in (38, 48, 58):
            color, i = _extended_color(fields, i)
            if color is not None:
                if code == 38:
                    fg = color
                elif code == 48:
                    bg = color
            continue
        elif code in _SET_FLAG:
            flags |= _SET_FLAG[code]
        elif code in _CLEAR_FLAGS:
            flags &= ~_CLEAR_FLAGS[code]
        i += 1
    return fg, bg, flags


def sgr_delta(params: str) -> tuple[bool, int | None, int | None, int, int]:
    """What `CSI params m` does to any style: (reset first, fg or None for
    unchanged, bg or None, flags to set, flags to clear)."""
    # Apply to two styles that differ in every field to see what is kept.
    a = apply_sgr((1, 2, 0), params)
    b = apply_sgr((3, 4, 0x3FF), params)
    reset = a == apply_sgr(DEFAULT_STYLE, params) == b
    fg = a[0] if a[0] == b[0] else None
    bg = a[1] if a[1] == b[1] else None
    set_ = a[2] & b[2]
    clear = ~(a[2] | b[2]) & 0x3FF
    if reset:
        return True, a[0], a[1], a[2], 0x3FF & ~a[2]
    return False, fg, bg, set_, clear


class _ByPen(dict[int, dict[str, int]]):
    def __missing__(self, sid: int) -> dict[str, int]:
        d: dict[str, int] = {}
        self[sid] = d
        return d


class StyleTable:
    """Interns styles to small ints; caches SGR transitions and erase fills."""

    __slots__ = (
        "styles",
        "_ids",
        "sgr_by_pen",
        "_cached",
        "_fill",
        "_deltas",
        "links",
        "_link_ids",
    )

    def __init__(self) -> None:
        self.styles: list[Style] = [DEFAULT_STYLE]
        self._ids: dict[Style, int] = {DEFAULT_STYLE: 0}
        # style id -> {the whole "ESC [ ... m" sequence: the style id after it}
        self.sgr_by_pen: dict[int, dict[str, int]] = _ByPen()
        self._cached = 0
        self._fill: dict[int, int] = {0: 0}
        self._deltas: dict[str, tuple[bool, int | None, int | None, int, int]] = {}
        self.links: list[str] = [""]  # OSC 8 targets; index 0: no link
        self._link_ids: dict[tuple[str, str], int] = {}

    def with_link(self, sid: int, uri: str, link_id: str = "") -> int:
        """Style `sid` with the hyperlink `uri` (empty: without a link)."""
        fg, bg, flags = self.styles[sid]
        n = 0
        if uri:
            key = (link_id, uri)
            got = self._link_ids.get(key)
            if got is None:
                if len(self.links) >= 4096:  # a program making endless links: reuse none
                    return self.intern((fg, bg, flags & ~LINK_MASK))
                got = self._link_ids[key] = len(self.links)
                self.links.append(uri)
            n = got
        return self.intern((fg, bg, (flags & ~LINK_MASK) | (n << LINK_SHIFT)))

    def link(self, sid: int) -> str:
        """The hyperlink of style `sid`, or ""."""
        n = self.styles[sid][2] >> LINK_SHIFT
        return self.links[n] if 0 < n < len(self.links) else ""

    def intern(self, style: Style) -> int:
        sid = self._ids.get(style)
        if sid is None:
            sid = len(self.styles)
            self.styles.append(style)
            self._ids[style] = sid
        return sid

    def sgr(self, sid: int, params: str, sequence: str | None = None) -> int:
        """Style id after applying `CSI params m` to style `sid` (cached)."""
        key = sequence if sequence is not None else f"\x1b[{params}m"
        cache = self.sgr_by_pen[sid]
        new = cache.get(key)
        if new is not None:
            return new
        delta = self._deltas.get(params)
        if delta is None:
            delta = sgr_delta(params)
            if len(self._deltas) > 50_000:
                self._deltas.clear()
            self._deltas[params] = delta
        reset, dfg, dbg, set_, clear = delta
        fg, bg, flags = self.styles[sid]
        if reset:  # a hyperlink outlives SGR 0
            fg, bg, flags = DEFAULT, DEFAULT, flags & LINK_MASK
        style = (fg if dfg is None else dfg, bg if dbg is None else dbg, (flags & ~clear) | set_)
        new = self._ids.get(style)
        if new is None:
            new = self.intern(style)
        self._cached += 1
        if self._cached > 50_000:
            for d in self.sgr_by_pen.values():
                d.clear()
            self._cached = 0
        cache[key] = new
        return new

    def fill(self, sid: int) -> int:
        """Style of cells erased while `sid` is the pen: its background only (BCE)."""
        f = self._fill.get(sid)
        if f is None:
            bg = self.styles[sid][1]
            f = self.intern((DEFAULT, bg, 0)) if bg != DEFAULT else 0
            self._fill[sid] = f
        return f

    def __getitem__(self, sid: int) -> Style:
        return self.styles[sid]

    def __len__(self) -> int:
        return len(self.styles)
