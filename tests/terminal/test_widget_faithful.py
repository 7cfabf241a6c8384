"""The terminal widget as faithful as tmux: the cursor on a wide character, replayed
output, keys in one burst, hyperlinks (OSC 8), focus events and bracketed paste."""

from __future__ import annotations

from textual import events
from textual._xterm_parser import XTermParser
from textual.app import App, ComposeResult

from ecotui.widgets.terminal import TerminalView


class ViewApp(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.copied: list[str] = []
        self.opened: list[str] = []

    def compose(self) -> ComposeResult:
        yield TerminalView()

    def on_mount(self) -> None:
        v = self.query_one(TerminalView)
        v.input_sink = self.sent.append
        v.focus()

    def copy_to_clipboard(self, text: str) -> None:
        self.copied.append(text)

    def open_url(self, url: str, *, new_tab: bool = True) -> None:
        self.opened.append(url)


def _cells(strip) -> list[tuple[str, bool]]:
    """(text, reverse) of each segment of a painted row."""
    return [(seg.text, bool(seg.style and seg.style.reverse)) for seg in strip]


async def test_the_cursor_on_a_wide_character_shows_the_glyph() -> None:
    app = ViewApp()
    async with app.run_test(size=(40, 6)) as pilot:
        v = app.query_one(TerminalView)
        v.feed("hello 日本語".encode())
        for col in (10, 11):  # on either half of 語
            v.feed(f"\x1b[1;{col + 1}H".encode())
            await pilot.pause(0.1)
            strip = v.render_line(0)
            text = "".join(t for t, _ in _cells(strip))
            assert text.rstrip() == "hello 日本語"
            assert ("語", True) in _cells(strip)
        v.feed(b"\x1b[1;2H")  # an ASCII cell: one reverse cell as before
        await pilot.pause(0.1)
        assert ("e", True) in _cells(v.render_line(0))


async def test_replayed_output_gets_no_answers_and_copies_nothing() -> None:
    app = ViewApp()
    async with app.run_test(size=(40, 6)) as pilot:
        v = app.query_one(TerminalView)
        query = b"\x1b[6n\x1b[c\x1b]11;?\x07\x1b]52;c;aGk=\x07old"
        v.feed(query, replay=True)
        await pilot.pause(0.05)
        assert app.sent == [] and app.copied == []
        assert v.term.display()[0] == "old"
        v.feed(b"\x1b[6n\x1b]52;c;aGk=\x07")  # live output is answered as before
        await pilot.pause(0.05)
        assert b"".join(app.sent) == b"\x1b[1;4R" and app.copied == ["hi"]


async def test_keys_arriving_in_one_burst_are_all_sent_in_order() -> None:
    app = ViewApp()
    async with app.run_test(size=(40, 6)) as pilot:
        v = app.query_one(TerminalView)
        parser = XTermParser()
        burst = "\x7f5ab\x1b[D\x7f\x7fc\r"  # BackSpace 5 ... as one write over SSH
        for ev in parser.feed(burst):
            app.post_message(ev)  # all queued before any is handled
        await pilot.pause(0.2)
        assert v.has_focus
        assert b"".join(app.sent) == b"\x7f5ab\x1b[D\x7f\x7fc\r"


async def test_hyperlinks_are_kept_and_a_click_opens_them() -> None:
    app = ViewApp()
    async with app.run_test(size=(40, 6)) as pilot:
        v = app.query_one(TerminalView)
        v.feed(
            b"see \x1b]8;id=1;https://example.com/docs\x1b\\\x1b[1mdocs\x1b[0m\x1b]8;;\x1b\\ "
            b"\x1b]8;;file:///etc/passwd\x07file\x1b]8;;\x07"
        )
        await pilot.pause(0.1)
        top = v.view_top()
        assert v.link_at(top, 5) == "https://example.com/docs"
        assert v.link_at(top, 2) == "" and v.link_at(top, 8) == ""
        strip = v.render_line(0)
        assert any(seg.style and seg.style.link == "https://example.com/docs" for seg in strip)
        await pilot.click(TerminalView, offset=(5, 0))
        assert app.opened == ["https://example.com/docs"]
        await pilot.click(TerminalView, offset=(10, 0))  # not a web link: not opened
        assert app.opened == ["https://example.com/docs"]
        assert v.link_at(top, 10) == "file:///etc/passwd"


async def test_focus_events_and_bracketed_paste_pass_through() -> None:
    app = ViewApp()
    async with app.run_test(size=(40, 6)) as pilot:
        v = app.query_one(TerminalView)
        v.feed(b"\x1b[?1004h\x1b[?2004h")
        await pilot.pause(0.05)
        app.sent.clear()
        v.blur()
        await pilot.pause(0.05)
        v.focus()
        await pilot.pause(0.05)
        v.post_message(events.Paste("two\nlines"))
        await pilot.pause(0.1)
        assert b"".join(app.sent) == b"\x1b[O\x1b[I\x1b[200~two\rlines\x1b[201~"
