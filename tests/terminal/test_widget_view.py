"""The TerminalView widget on its own: frames, dirty rows, input encoding, mouse,
paste, selection and copy, scrollback paging and search (fed bytes directly)."""

from __future__ import annotations

import asyncio

from textual import events
from textual.app import App, ComposeResult
from textual.strip import Strip

from ecotui.widgets.terminal import TerminalView


class Probe(TerminalView):
    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.rendered: list[int] = []

    def render_line(self, y: int) -> Strip:
        self.rendered.append(y)
        return super().render_line(y)


class ViewApp(App[None]):
    def __init__(self, fps: float = 30.0) -> None:
        super().__init__()
        self.fps = fps
        self.sent: list[bytes] = []
        self.sizes: list[tuple[int, int]] = []
        self.copied: list[str] = []
        self.messages: list[str] = []

    def compose(self) -> ComposeResult:
        yield Probe(fps=self.fps)

    def on_mount(self) -> None:
        v = self.query_one(Probe)
        v.input_sink = self.sent.append
        v.resize_sink = lambda c, r: self.sizes.append((c, r))
        v.focus()

    def copy_to_clipboard(self, text: str) -> None:
        self.copied.append(text)

    def on_terminal_view_title_changed(self, m: TerminalView.TitleChanged) -> None:
        self.messages.append(f"title:{m.title}")

    def on_terminal_view_bell(self, m: TerminalView.Bell) -> None:
        self.messages.append("bell")

    def on_terminal_view_released(self, m: TerminalView.Released) -> None:
        self.messages.append("released")


def sent(app: ViewApp) -> bytes:
    return b"".join(app.sent)


async def test_the_terminal_follows_the_widget_size() -> None:
    app = ViewApp()
    async with app.run_test(size=(70, 20)) as pilot:
        v = app.query_one(Probe)
        assert (v.term.cols, v.term.rows) == (70, 20)
        assert app.sizes[-1] == (70, 20)
        await pilot.resize_terminal(90, 25)
        await pilot.pause()
        assert (v.term.cols, v.term.rows) == (90, 25) and app.sizes[-1] == (90, 25)


async def test_frames_are_capped_and_only_dirty_rows_repaint() -> None:
    app = ViewApp(fps=10)
    async with app.run_test(size=(40, 10)) as pilot:
        v = app.query_one(Probe)
        await pilot.pause(0.3)
        frames = v.frames
        for i in range(500):  # a burst: many feeds, few frames
            v.feed(f"\x1b[3;1Hcount {i}".encode())
        await pilot.pause(0.35)
        assert v.frames - frames <= 5
        assert v.term.display()[2] == "count 499"
        await pilot.pause(0.2)
        v.rendered.clear()
        v.feed(b"\x1b[6;1Hrow five")
        await pilot.pause(0.25)
        assert "row five" in v.render_line(5).text
        assert set(v.rendered) <= {2, 5}  # the changed row and the cursor's old row


async def test_keys_follow_the_programs_modes() -> None:
    app = ViewApp()
    async with app.run_test(size=(40, 10)) as pilot:
        v = app.query_one(Probe)
        await pilot.press("up", "x", "ctrl+c")
        v.feed(b"\x1b[?1h")
        await pilot.press("up", "alt+b", "f2")
        assert sent(app) == b"\x1b[Ax\x03\x1bOA\x1bb\x1bOQ"


async def test_ctrl_right_bracket_releases_and_sends_nothing() -> None:
    app = ViewApp()
    async with app.run_test(size=(40, 10)) as pilot:
        await pilot.press("ctrl+right_square_bracket")
        await pilot.pause()
        assert app.messages == ["released"] and sent(app) == b""


async def test_paste_is_bracketed_when_asked() -> None:
    app = ViewApp()
    async with app.run_test(size=(40, 10)) as pilot:
        v = app.query_one(Probe)
        v.post_message(events.Paste("one\ntwo"))
        await pilot.pause()
        v.feed(b"\x1b[?2004h")
        v.post_message(events.Paste("three"))
        await pilot.pause()
        assert sent(app) == b"one\rtwo\x1b[200~three\x1b[201~"


async def test_mouse_reporting_passes_through() -> None:
    app = ViewApp()
    async with app.run_test(size=(40, 10)) as pilot:
        v = app.query_one(Probe)
        v.feed(b"\x1b[?1000h\x1b[?1006h")
        await pilot.click(Probe, offset=(5, 3))
        await pilot.pause()
        assert sent(app) == b"\x1b[<0;6;4M\x1b[<0;6;4m"
        assert app.copied == []  # reporting, not selecting


async def test_drag_selects_and_copies() -> None:
    app = ViewApp()
    async with app.run_test(size=(40, 10)) as pilot:
        v = app.query_one(Probe)
        v.feed(b"first line\r\nsecond line\r\nthird")
        await pilot.pause(0.1)
        await pilot.mouse_down(Probe, offset=(6, 0))
        await pilot.hover(Probe, offset=(5, 1))
        await pilot.mouse_up(Probe, offset=(5, 1))
        await pilot.pause()
        assert app.copied == ["line\nsecond"]
        assert v.selected_text() == "line\nsecond"


async def test_scrollback_paging_and_search() -> None:
    app = ViewApp()
    async with app.run_test(size=(40, 10)) as pilot:
        v = app.query_one(Probe)
        v.feed("".join(f"line {i:04d}\r\n" for i in range(300)).encode())
        await pilot.pause(0.1)
        assert v.screen_text()[-2] == "line 0299"
        v.page_up()
        assert v.scrolled_back == 9 and v.screen_text()[0] == "line 0282"
        v.feed(b"more\r\n")  # new output does not move a scrolled view
        await pilot.pause(0.1)
        assert v.screen_text()[0] == "line 0282"
        assert v.search("LINE 004")
        assert v.match_count == 10 and v.current_match is not None
        row = v.current_match[0]
        assert v.row_text(row) == "line 0049" and "line 0049" in v.screen_text()
        v.search_next()
        assert v.row_text(v.current_match[0]) == "line 0048"
        v.scroll_to_top()
        assert v.screen_text()[0] == "line 0000"
        await pilot.press("x")  # typing returns to the live screen
        assert v.scrolled_back == 0 and sent(app) == b"x"


async def test_replies_title_bell_and_clipboard() -> None:
    app = ViewApp()
    async with app.run_test(size=(40, 10)) as pilot:
        v = app.query_one(Probe)
        v.feed(b"ab\x1b[6n\x1b]2;remote title\x07\x07\x1b]52;c;Y29weSBtZQ==\x07")
        await pilot.pause()
        assert sent(app) == b"\x1b[1;3R"
        assert app.copied == ["copy me"]
        assert sorted(app.messages) == ["bell", "title:remote title"]


async def test_styles_reach_the_strip() -> None:
    app = ViewApp()
    async with app.run_test(size=(40, 10)) as pilot:
        v = app.query_one(Probe)
        v.feed(b"\x1b[1;31mred\x1b[0m \x1b[38;2;10;20;30;48;5;21mrgb")
        await pilot.pause(0.1)
        segs = list(v.render_line(0))
        red = next(s for s in segs if s.text == "red")
        rgb = next(s for s in segs if s.text == "rgb")
        assert red.style.bold and red.style.color.number == 1
        assert rgb.style.color.triplet == (10, 20, 30) and rgb.style.bgcolor.number == 21
        await asyncio.sleep(0)
