"""The terminal widget: a program's screen inside the dashboard (Textual line API).

`TerminalView` draws an `ecotui.terminal.Terminal` row by row (`render_line`
-> `Strip`), caching each row's strip per line object and change count, and
repaints only the rows that changed, at most `fps` times a second however fast
output arrives (a flood costs parsing, not painting).

Input: every key goes to the program, encoded as xterm does (cursor keys
honour DECCKM, Alt is an ESC prefix, Ctrl+letter the control byte), except
`ctrl+]`, which gives focus back to the dashboard (`TerminalView.Released`).
Pastes are bracketed when the program asked; mouse events are reported when
the program enabled mouse reporting (hold shift to select instead).

Without mouse reporting the mouse selects text (copied on release through the
outer terminal's clipboard, OSC 52) and the wheel scrolls the scrollback. The
scrollback can also be paged, searched and copied through the methods the
shells screen binds to keys while the terminal is not focused (they live in
the base class, `ecotui.widgets.terminal_text.TerminalText`).

The widget does no IO: bytes from the program come in through `feed()`, bytes
for the program leave through `input_sink`, size changes through `resize_sink`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar

from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.strip import Strip
from textual.timer import Timer

from ecotui.keymap import RELEASE_KEY, TERMINAL
from ecotui.terminal import Terminal, encode_focus, encode_key, encode_mouse, encode_paste
from ecotui.terminal.line import Line, history_runs
from ecotui.terminal.style import (
    BLINK,
    BOLD,
    DEFAULT,
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
from ecotui.widgets.terminal_text import TerminalText

_SELECTION = Style(reverse=True)
_MATCH = Style(bgcolor="yellow", color="black")
_CURRENT_MATCH = Style(bgcolor="dark_orange", color="black", bold=True)


class TerminalView(TerminalText, can_focus=True):
    """A terminal screen fed with a program's output."""

    BINDINGS: ClassVar[list[BindingType]] = [*TERMINAL]

    DEFAULT_CSS = """
    TerminalView {
        width: 1fr;
        height: 1fr;
        background: $background;
        color: $foreground;
    }
    """

    class Released(Message):
        """`ctrl+]` was pressed: the dashboard should take the keys back."""

        def __init__(self, terminal: TerminalView) -> None:
            super().__init__()
            self.terminal = terminal

    class TitleChanged(Message):
        def __init__(self, terminal: TerminalView, title: str) -> None:
            super().__init__()
            self.terminal = terminal
            self.title = title

    class Bell(Message):
        def __init__(self, terminal: TerminalView) -> None:
            super().__init__()
            self.terminal = terminal

    def __init__(
        self,
        *,
        cols: int = 80,
        rows: int = 24,
        scrollback: int = 10_000,
        fps: float = 30.0,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(
            Terminal(cols, rows, scrollback=scrollback), name=name, id=id, classes=classes
        )
        self.scrollback = scrollback
        self.fps = max(1.0, fps)
        self.input_sink: Callable[[bytes], None] | None = None
        # Typed input (keys, pastes, mouse) goes here first when set; True: delivered
        # (broadcast to several shells), False: send it to this one as usual.
        self.user_input_hook: Callable[[bytes], bool] | None = None
        self.resize_sink: Callable[[int, int], None] | None = None
        self.frame_listeners: list[Callable[[], None]] = []
        self.frames = 0  # frames painted (tests and the benchmark read it)
        self.title = ""
        self._bells = 0
        self._frame_timer: Timer | None = None
        self._last_frame = 0.0
        self._sync_since: float | None = None
        self._strips: OrderedDict[int, tuple[object, object, int, Strip]] = OrderedDict()
        self._styles: dict[int, Style] = {}
        self._base: Style | None = None
        self._cursor_row: int | None = None
        self._mouse_buttons = 0

    # -- output from the program --------------------------------------------------------
    def feed(self, data: bytes, *, replay: bool = False) -> None:
        """Bytes the program wrote; repainted at the next frame.

        `replay`: the bytes are kept output shown again (a re-attached session).
        Their queries were answered when they were live, so they get no answer
        now (an answer would reach the program of today as typed keys), and
        their clipboard writes are not done again."""
        term = self.term
        term.feed(data)
        replies = term.take_replies()
        if replies and not replay:
            self.send(replies, user=False)
        if term.clipboard:
            writes = term.take_clipboard()
            if not replay:
                for _selection, text in writes:
                    self.app.copy_to_clipboard(text)
        if term.bell_count != self._bells:
            self._bells = term.bell_count
            self.post_message(self.Bell(self))
        if term.title != self.title:
            self.title = term.title
            self.post_message(self.TitleChanged(self, self.title))
        self.schedule_frame()

    def reset_terminal(self) -> None:
        """A blank terminal of the same size (before a replay of kept output)."""
        self.term = Terminal(self.term.cols, self.term.rows, scrollback=self.scrollback)
        self._strips.clear()
        self._view_top = None
        self._matches = []
        self._sel_anchor = self._sel_end = None
        self.refresh()

    def send(self, data: bytes, *, user: bool = True) -> None:
        """Bytes for the program (keys, pastes, replies to its queries)."""
        if not data:
            return
        if user:
            if self._view_top is not None:
                self.scroll_to_bottom()
            if self.user_input_hook is not None and self.user_input_hook(data):
                return
        if self.input_sink is not None:
            self.input_sink(data)

    def deliver(self, data: bytes) -> None:
        """Typed input from elsewhere (a broadcast): to this program, no hooks."""
        if self._view_top is not None:
            self.scroll_to_bottom()
        if self.input_sink is not None and data:
            self.input_sink(data)

    def action_release(self) -> None:
        self.post_message(self.Released(self))

    # -- frames ---------------------------------------------------------------------------------
    def schedule_frame(self) -> None:
        if self._frame_timer is not None or not self.is_mounted:
            return
        delay = self._last_frame + 1.0 / self.fps - time.monotonic()
        self._frame_timer = self.set_timer(max(0.001, delay), self._frame, name="terminal-frame")

    def _frame(self) -> None:
        self._frame_timer = None
        term = self.term
        now = time.monotonic()
        if term.synchronized:
            # The program asked to hold the screen while it draws (mode 2026), at most 1 s.
            if self._sync_since is None:
                self._sync_since = now
            if now - self._sync_since < 1.0:
                self._last_frame = now
                self.schedule_frame()
                return
        else:
            self._sync_since = None
        self._last_frame = now
        dirty = term.take_dirty()
        width = self.size.width
        if self._view_top is not None or dirty is None:
            self.refresh()
        else:
            rows = set(dirty)
            cursor = term.y if term.cursor_visible else None
            if cursor != self._cursor_row:
                if self._cursor_row is not None:
                    rows.add(self._cursor_row)
                if cursor is not None:
                    rows.add(cursor)
            elif cursor is not None:
                rows.add(cursor)  # the cursor may have moved along the row
            self._cursor_row = cursor
            if rows:
                self.refresh(*(Region(0, y, width, 1) for y in rows if y < self.size.height))
        self.frames += 1
        for listener in self.frame_listeners:
            listener()

    # -- drawing ----------------------------------------------------------------------------------
    def _base_style(self) -> Style:
        if self._base is None:
            self._base = self.rich_style
        return self._base

    def _style(self, sid: int) -> Style:
        st = self._styles.get(sid)
        if st is None:
            st = self._styles[sid] = self._make_style(sid)
        return st

    def _make_style(self, sid: int) -> Style:
        fg, bg, flags = self.term.styles[sid]
        base = self._base_style()
        fgc = _color(fg)
        bgc = _color(bg)
        if flags & REVERSE:
            fgc, bgc = (
                bgc or base.bgcolor or Color.parse("black"),
                fgc or base.color or Color.parse("white"),
            )
        if flags & HIDDEN:  # drawn in the background colour (Textual has no conceal)
            fgc = bgc or base.bgcolor
        style = Style(
            color=fgc,
            bgcolor=bgc,
            bold=bool(flags & BOLD) or None,
            dim=bool(flags & DIM) or None,
            italic=bool(flags & ITALIC) or None,
            underline=bool(flags & UNDERLINE) or None,
            underline2=bool(flags & DOUBLE_UNDERLINE) or None,
            blink=bool(flags & BLINK) or None,
            conceal=bool(flags & HIDDEN) or None,
            strike=bool(flags & STRIKE) or None,
            overline=bool(flags & OVERLINE) or None,
            link=self.term.styles.link(sid) or None,
        )
        return base + style

    def on_resize(self, event: events.Resize) -> None:
        cols = max(2, event.size.width)
        rows = max(1, event.size.height)
        self._base = None
        self._styles.clear()
        self._strips.clear()
        if (cols, rows) != (self.term.cols, self.term.rows):
            self.term.resize(cols, rows)
            if self.resize_sink is not None:
                self.resize_sink(cols, rows)
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._base = None
        self._styles.clear()
        self._strips.clear()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        top = self.view_top()
        row = top + y
        item = self._item_at(row)
        base = self._base_style()
        if item is None:
            return Strip.blank(width, base)
        gen = (item.gen, item.end) if isinstance(item, Line) else -1
        key = id(item)
        cached = self._strips.get(key)
        if cached is not None and cached[0] is item and cached[1] == gen and cached[2] == width:
            strip = cached[3]
            self._strips.move_to_end(key)
        else:
            runs = item.render_runs(width) if isinstance(item, Line) else history_runs(item)
            style = self._style
            strip = Strip([Segment(text, style(sid)) for text, sid in runs if text])
            strip = strip.crop_extend(0, width, base)
            self._strips[key] = (item, gen, width, strip)
            if len(self._strips) > 4 * max(24, self.size.height) + 64:
                self._strips.popitem(last=False)
        # Overlays: search matches, selection, cursor.
        if self._matches:
            for i, (mrow, c0, c1) in enumerate(self._matches):
                if mrow == row:
                    strip = _overlay(
                        strip, c0, c1, _CURRENT_MATCH if i == self._match_index else _MATCH
                    )
        sel = self._selection_span(row, width)
        if sel is not None:
            strip = _overlay(strip, sel[0], sel[1], _SELECTION)
        term = self.term
        if (
            self._view_top is None
            and term.cursor_visible
            and y == term.y
            and self.has_focus
            and not self.disabled
        ):
            x0, x1 = self._cursor_span(min(term.x, width - 1))
            strip = _overlay(strip, x0, x1, Style(reverse=True))
        return strip

    def _cursor_span(self, x: int) -> tuple[int, int]:
        """Cells the cursor covers: both halves of a wide character, so the glyph shows."""
        term = self.term
        line = term.lines[term.y]
        ch, _ = line.cell(x, term.cols)
        if ch == "" and x > 0:  # the right half of a wide character
            return x - 1, x + 1
        if ch and x + 1 < term.cols and line.cell(x + 1, term.cols)[0] == "":
            return x, x + 2
        return x, x + 1

    # -- keys, paste, focus -----------------------------------------------------------------------
    def check_consume_key(self, key: str, character: str | None = None) -> bool:
        # Every key is the program's, so no binding of the screen or app may take it.
        return key != RELEASE_KEY

    async def on_key(self, event: events.Key) -> None:
        if event.key == RELEASE_KEY:
            return  # the binding (action_release) takes it
        event.stop()
        event.prevent_default()
        term = self.term
        data = encode_key(
            event.key, event.character, app_cursor=term.app_cursor, app_keypad=term.app_keypad
        )
        if data:
            self.send(data)

    def on_paste(self, event: events.Paste) -> None:
        event.stop()
        event.prevent_default()
        self.send(encode_paste(event.text, self.term.bracketed_paste))

    def on_focus(self, event: events.Focus) -> None:
        if self.term.focus_events:
            self.send(encode_focus(True), user=False)
        self.refresh(Region(0, self.term.y, self.size.width, 1))

    def on_blur(self, event: events.Blur) -> None:
        if self.term.focus_events:
            self.send(encode_focus(False), user=False)
        self.refresh(Region(0, self.term.y, self.size.width, 1))

    # -- mouse --------------------------------------------------------------------------------
    def _reporting(self, event: events.MouseEvent) -> bool:
        return bool(self.term.mouse_tracking) and not event.shift

    def _report(self, kind: str, event: events.MouseEvent, button: int) -> None:
        term = self.term
        data = encode_mouse(
            kind,
            button,
            event.x,
            event.y,
            tracking=term.mouse_tracking,
            encoding=term.mouse_encoding,
            shift=event.shift,
            meta=event.meta,
            ctrl=event.ctrl,
            buttons_down=self._mouse_buttons > 0,
        )
        if data:
            self.send(data, user=False)

    def on_mouse_down(self, event: events.MouseDown) -> None:
        event.stop()
        if self._reporting(event):
            self._mouse_buttons += 1
            self._report("press", event, max(0, event.button - 1))
            self.capture_mouse()
            return
        row = self.view_top() + event.y
        self._sel_anchor = self._sel_end = (row, event.x)
        self._drag_selecting = True
        self.capture_mouse()
        self.refresh()

    def on_mouse_move(self, event: events.MouseMove) -> None:
        if self.term.mouse_tracking and not self._drag_selecting and not event.shift:
            self._report("move", event, max(0, event.button - 1))
            return
        if self._drag_selecting:
            row = self.view_top() + max(0, min(event.y, self.size.height - 1))
            self._sel_end = (row, max(0, min(event.x, self.size.width - 1)))
            self.refresh()

    def on_mouse_up(self, event: events.MouseUp) -> None:
        event.stop()
        self.release_mouse()
        if self._drag_selecting:
            self._drag_selecting = False
            text = self.selected_text()
            if text:
                self.app.copy_to_clipboard(text)
            elif self._sel_anchor == self._sel_end:
                anchor = self._sel_anchor
                self.clear_selection()
                if anchor is not None:
                    self.open_link(*anchor)
            return
        if self._reporting(event) or self._mouse_buttons:
            self._mouse_buttons = max(0, self._mouse_buttons - 1)
            self._report("release", event, max(0, event.button - 1))

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        event.stop()
        self._wheel(event, up=True)

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        event.stop()
        self._wheel(event, up=False)

    def _wheel(self, event: events.MouseEvent, *, up: bool) -> None:
        term = self.term
        if self._reporting(event):
            self._report("scroll_up" if up else "scroll_down", event, 0)
        elif term.alt_active:
            # A full-screen program without mouse reporting scrolls with the cursor keys.
            key = encode_key("up" if up else "down", app_cursor=term.app_cursor) or b""
            self.send(key * 3, user=False)
        else:
            self.scroll_history(-3 if up else 3)

    def get_content_width(self, container: Size, viewport: Size) -> int:
        return container.width

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return container.height

    def on_unmount(self) -> None:
        if self._frame_timer is not None:
            self._frame_timer.stop()
            self._frame_timer = None

    # For tests and tools: the cell under the terminal cursor and its style.
    def cursor_position(self) -> tuple[int, int]:
        return self.term.x, self.term.y

    def debug_state(self) -> dict[str, Any]:
        t = self.term
        return {
            "cols": t.cols,
            "rows": t.rows,
            "alt": t.alt_active,
            "x": t.x,
            "y": t.y,
            "history": len(t.history),
            "frames": self.frames,
        }


def _color(c: int) -> Color | None:
    if c == DEFAULT:
        return None
    if c >= RGB_FLAG:
        return Color.from_rgb((c >> 16) & 255, (c >> 8) & 255, c & 255)
    return Color.from_ansi(c)


def _overlay(strip: Strip, x0: int, x1: int, style: Style) -> Strip:
    width = strip.cell_length
    x0 = max(0, min(x0, width))
    x1 = max(x0, min(x1, width))
    if x0 == x1:
        return strip
    parts = strip.divide([x0, x1, width])
    if len(parts) < 3:
        return strip
    return Strip.join([parts[0], parts[1].apply_style(style), parts[2]])
