"""The footer: every key the current screen answers to, wrapped over as many lines as needed.

Unlike a one-line footer it never hides keys off screen at 80 columns; an item
(key and what it does) is never split across lines; keys are clickable (mouse
too). It reads the screen's active bindings, so it always agrees with the help
screen and the command palette.
"""

from __future__ import annotations

from textual.content import Content
from textual.screen import Screen
from textual.widgets import Static

from ecotui.screens.keymap import key_label


class KeyBar(Static):
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: auto;
        max-height: 5;
        background: $panel;
        color: $foreground 85%;
        padding: 0 0;
        text-wrap: nowrap;
    }
    """

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self._width = -1
        self._items: list[tuple[str, str, str]] = []
        self._rebuild()

    def on_resize(self) -> None:
        if self.size.width != self._width:
            self._layout()

    def _bindings_changed(self, screen: Screen) -> None:
        if self.is_attached and screen is self.screen:
            self._rebuild()

    def items(self) -> list[tuple[str, str, str]]:
        """(keys shown, description, key to simulate) for each shown action."""
        by_action: dict[tuple[str, str], list] = {}
        groups: dict[str, list] = {}
        order: list[tuple[str, object]] = []
        for _key, active in self.screen.active_bindings.items():
            b = active.binding
            if not b.show:
                continue
            if b.group is not None:
                if b.group.description not in groups:
                    groups[b.group.description] = []
                    order.append(("group", b.group.description))
                if key_label(b) not in [key_label(x) for x in groups[b.group.description]]:
                    groups[b.group.description].append(b)
                continue
            ident = (b.action, b.description)
            if ident not in by_action:
                by_action[ident] = []
                order.append(("action", ident))
            by_action[ident].append(b)
        out: list[tuple[str, str, str]] = []
        for kind, ident in order:
            if kind == "group":
                bs = groups[ident]  # type: ignore[index]
                out.append(("/".join(key_label(b) for b in bs), str(ident), bs[0].key))
            else:
                bs = by_action[ident]  # type: ignore[index]
                out.append(("/".join(key_label(b) for b in bs), bs[0].description, bs[0].key))
        return out

    def _rebuild(self) -> None:
        self._items = self.items()
        self._layout()

    def _layout(self) -> None:
        width = self.size.width or self.app.size.width
        self._width = self.size.width
        lines: list[list[Content]] = [[]]
        used = 0
        for keys, desc, key in self._items:
            item = Content.from_markup("[bold $accent]$keys[/] $desc", keys=keys, desc=desc)
            item = item.stylize(f"@click=app.simulate_key({key!r})")
            need = item.cell_length + (2 if lines[-1] else 0)
            if lines[-1] and used + need > width:
                lines.append([])
                used = 0
                need = item.cell_length
            lines[-1].append(item)
            used += need
        self.update(Content("\n").join(Content("  ").join(line) for line in lines))
