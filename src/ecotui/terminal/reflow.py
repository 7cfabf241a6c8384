"""Reflow: the main screen and its scrollback rewrapped at a new width.

Rows that autowrap joined (`Line.wrapped`) are one logical line; a new width
cuts each logical line again, so a line that was one line before a resize is
one line after it (200 → 80 → 200 columns gives back the 200-column rows),
and no row is left blank where a wrapped line used to end. A wide character is
never split: a row that would end on its first half ends one cell early.

Pure functions over `Line`s and scrollback items; `Terminal.resize` uses them
for the main screen (the alternate screen is redrawn by its program, so it is
cut or padded, as tmux does).
"""

from __future__ import annotations

from .line import WIDTHS, Line, text_width, to_cells

Cell = tuple[str, int]


def _cells(item: Line | str, width: int | None) -> list[Cell]:
    """The cells of a row: exactly `width` of them (a wrapped row), or its content
    without the trailing default blanks (width None: the last row of a line)."""
    if isinstance(item, str):
        cells = [(c, 0) for c in to_cells(item)]
    elif item.chars is not None:
        assert item.styles is not None
        cells = list(zip(item.chars, item.styles, strict=True))
    else:
        cells = []
        for text, sid in item.segs or ():
            cells.extend((c, sid) for c in to_cells(text))
        if width is not None and item.fill != 0 and len(cells) < width:
            cells.extend([(" ", item.fill)] * (width - len(cells)))
    if width is None:
        n = len(cells)
        while n and cells[n - 1] == (" ", 0):
            n -= 1
        del cells[n:]
    elif len(cells) < width:
        cells.extend([(" ", 0)] * (width - len(cells)))
    else:
        del cells[width:]
    return cells


def _line(cells: list[Cell], wrapped: bool) -> Line:
    ln = Line()
    segs: list[tuple[str, int]] = []
    i = 0
    n = len(cells)
    while i < n:
        sid = cells[i][1]
        j = i
        while j < n and cells[j][1] == sid:
            j += 1
        segs.append(("".join(c for c, _ in cells[i:j]), sid))
        i = j
    ln.segs = segs
    ln.end = n
    ln.wrapped = wrapped
    return ln


def _content_width(item: Line | str) -> int:
    if isinstance(item, str):
        return len(item) if item.isascii() else text_width(item)
    if item.chars is None:
        return item.end
    return sum(text_width(t) for t, _ in item.runs())


def _wrap(cells: list[Cell], cols: int) -> list[list[Cell]]:
    rows: list[list[Cell]] = []
    i = 0
    n = len(cells)
    while True:
        j = min(n, i + cols)
        if j < n and cells[j][0] == "" and j - 1 > i:
            j -= 1  # do not split a wide character: it starts the next row
        rows.append(cells[i:j])
        i = j
        if i >= n:
            return rows


def reflow(
    items: list[Line | str], old_cols: int, cols: int, cursor: tuple[int, int]
) -> tuple[list[Line | str], tuple[int, int]]:
    """Rewrap rows (scrollback then screen, oldest first) from `old_cols` to `cols`.

    cursor: (index into items, column). Returns the new rows and the cursor's
    new (index, column). Rows that need no change are returned as they are."""
    out: list[Line | str] = []
    cy, cx = cursor
    new_cursor = (0, 0)
    i = 0
    n = len(items)
    while i < n:
        item = items[i]
        # A logical line: rows i..j, all but the last wrapped.
        j = i
        while j < n - 1 and isinstance(items[j], Line) and items[j].wrapped:  # type: ignore[union-attr]
            j += 1
        if j == i and _content_width(item) <= cols:
            if isinstance(item, Line):
                item.resize(old_cols, cols)
            if i == cy:
                new_cursor = (len(out), min(cx, cols - 1))
            out.append(item)
            i += 1
            continue
        cells: list[Cell] = []
        offset = None
        for k in range(i, j + 1):
            if k == cy:
                offset = len(cells) + cx
            row = _cells(items[k], old_cols if k < j else None)
            if k < j and row and row[-1] == (" ", 0):
                # A wide character that did not fit left the last column blank.
                nxt = items[k + 1]
                first = (nxt if isinstance(nxt, str) else nxt.text())[:1]
                if first and WIDTHS[first] == 2:
                    row.pop()
            cells.extend(row)
        start = len(out)
        rows = _wrap(cells, cols)
        for r, row in enumerate(rows):
            out.append(_line(row, r < len(rows) - 1))
        if offset is not None:
            # Walk the new rows to the cursor's cell (rows may be short of `cols`).
            row_i, left = 0, offset
            while row_i < len(rows) - 1 and left >= len(rows[row_i]):
                left -= len(rows[row_i])
                row_i += 1
            while left >= cols:  # past the content: blank rows below
                left -= cols
                row_i += 1
            while start + row_i >= len(out):
                out.append(Line())
            new_cursor = (start + row_i, left)
        i = j + 1
    if cy >= n:
        new_cursor = (len(out) + cy - n, min(cx, cols - 1))
    return out, new_cursor
