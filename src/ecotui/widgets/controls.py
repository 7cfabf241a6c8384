"""Form controls that work over a laggy SSH link and without colour.

- `EcoInput`: an Input whose editing keys (backspace, delete, arrows, ...) are
  applied in the order they arrive. In Textual a printable key is inserted as
  soon as the Input sees it, while an editing key is a binding that runs only
  after the key has bubbled up to the app, several message hops later; when
  `BackSpace 5` arrives in one read, `5` is inserted first and backspace then
  deletes it. Here the Input runs its own bindings as it sees the key.
- `EcoCheckbox`, `EcoRadioButton`, `EcoSelectionList`: the state is a glyph,
  `[x]`/`[ ]` and `(•)`/`( )`, not a colour.
- `EcoOptionList`: the highlighted option is marked `›` (`·` while the list has
  no focus) at the start of its first line, not by its background alone.
"""

from __future__ import annotations

from rich.segment import Segment
from textual import events
from textual.content import Content
from textual.strip import Strip
from textual.widgets import Checkbox, Input, OptionList, RadioButton, SelectionList

CHECK_ON, CHECK_OFF = "[x]", "[ ]"
RADIO_ON, RADIO_OFF = "(•)", "( )"
CURSOR_FOCUSED, CURSOR_BLURRED = "›", "·"


class EcoInput(Input):
    """An Input that applies keys of one burst in order."""

    async def _on_key(self, event: events.Key) -> None:
        if not event.is_printable:
            bindings = self._bindings.key_to_bindings.get(event.key)
            if bindings:
                binding = bindings[0]
                event.stop()
                event.prevent_default()
                self._restart_blink()
                await self.run_action(binding.action)
                return
        await super()._on_key(event)


class EcoCheckbox(Checkbox):
    """A checkbox drawn `[x]` when on and `[ ]` when off."""

    @property
    def _button(self) -> Content:
        style = self.get_visual_style("toggle--button")
        return Content.styled(CHECK_ON if self.value else CHECK_OFF, style)


class EcoRadioButton(RadioButton):
    """A radio button drawn `(•)` when chosen and `( )` when not."""

    @property
    def _button(self) -> Content:
        style = self.get_visual_style("toggle--button")
        return Content.styled(RADIO_ON if self.value else RADIO_OFF, style)


class EcoSelectionList(SelectionList[str]):
    """A selection list whose boxes read `[x]`/`[ ]`."""

    def render_line(self, y: int) -> Strip:
        line = super().render_line(y)
        _, scroll_y = self.scroll_offset
        index = scroll_y + y
        if index >= self.option_count or line.cell_length < 3:
            return line
        option = self.get_option_at_index(index)
        glyph = CHECK_ON if option.value in self._selected else CHECK_OFF
        segs = list(line)
        style = segs[1].style if len(segs) > 1 else None
        rest = line.crop(3, line.cell_length)
        return Strip([Segment(glyph, style), *rest], line.cell_length)


class EcoOptionList(OptionList):
    """An option list whose highlighted option reads without colour: `›` on its first
    line (`·` when the list has no focus), drawn in a cell of padding kept for it."""

    DEFAULT_CSS = """
    EcoOptionList > .option-list--option { padding: 0 0 0 1; }
    """

    def render_line(self, y: int) -> Strip:
        line = super().render_line(y)
        if self.highlighted is None or line.cell_length < 2:
            return line
        try:
            index, offset = self._lines[self.scroll_offset.y + y]
        except IndexError:
            return line
        if index != self.highlighted or offset != 0:
            return line
        segs = list(line)
        style = segs[0].style if segs else None
        glyph = CURSOR_FOCUSED if self.has_focus else CURSOR_BLURRED
        width = line.cell_length
        if line.text[:1] != " ":  # no cell of padding (a style took it): leave it be
            return line
        return Strip([Segment(glyph, style), *line.crop(1, width)], width)
