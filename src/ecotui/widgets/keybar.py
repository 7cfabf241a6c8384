"""The footer: the keys the current screen answers to, on at most two lines.

An item (key and what it does) is never split across lines; keys are clickable
(mouse too). It reads the screen's active bindings, so it always agrees with the
help screen and the command palette. When they do not all fit in two lines (80
columns), the keys of this view come first, then the command line and help,
then movement, then the other global keys; what is left out ends in
`? all keys`, and the help screen lists every one.
"""

from __future__ import annotations

from typing import Any

from textual.binding import Binding
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Static

from ecotui.keymap import key_label


class KeyBar(Static):
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: auto;
        max-height: 2;
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

    def _bindings_changed(self, screen: Screen[Any]) -> None:
        if self.is_attached and screen is self.screen:
            self._rebuild()

    def items(self) -> list[tuple[str, str, str]]:
        """(keys shown, description, key to simulate) for each shown action."""
        by_action: dict[tuple[str, str], list[Binding]] = {}
        groups: dict[str, list[Binding]] = {}
        order: list[str | tuple[str, str]] = []  # a group, or (action, description)
        for _key, active in self.screen.active_bindings.items():
            b = active.binding
            if not b.show:
                continue
            if b.group is not None:
                if b.group.description not in groups:
                    groups[b.group.description] = []
                    order.append(b.group.description)
                if key_label(b) not in [key_label(x) for x in groups[b.group.description]]:
                    groups[b.group.description].append(b)
                continue
            ident = (b.action, b.description)
            if ident not in by_action:
                by_action[ident] = []
                order.append(ident)
            by_action[ident].append(b)
        out: list[tuple[str, str, str]] = []
        for entry in order:
            if isinstance(entry, str):
                bs = groups[entry]
                out.append(("/".join(key_label(b) for b in bs), entry, bs[0].key))
            else:
                bs = by_action[entry]
                out.append(("/".join(key_label(b) for b in bs), bs[0].description, bs[0].key))
        return out

    def _rebuild(self) -> None:
        self._items = self.items()
        self._layout()

    MAX_LINES = 2

    def _layout(self) -> None:
        width = self.size.width or self.app.size.width
        self._width = self.size.width
        items = self._items
        if len(self._wrap(items, width)) > self.MAX_LINES:
            ranked = sorted(range(len(items)), key=lambda n: (_rank(items[n]), n))
            keep = list(ranked)
            more = ("?", "all keys", "question_mark")
            while keep:
                chosen = [items[n] for n in sorted(keep) if items[n][2] != "question_mark"]
                if len(self._wrap([*chosen, more], width)) <= self.MAX_LINES:
                    break
                keep.pop()
            items = [*chosen, more]
        self.update(
            Content("\n").join(Content("  ").join(line) for line in self._wrap(items, width))
        )

    @staticmethod
    def _wrap(items: list[tuple[str, str, str]], width: int) -> list[list[Content]]:
        lines: list[list[Content]] = [[]]
        used = 0
        for keys, desc, key in items:
            item = Content.from_markup("[bold $accent]$keys[/] $desc", keys=keys, desc=desc)
            item = item.stylize(f"@click=app.simulate_key({key!r})")
            need = item.cell_length + (2 if lines[-1] else 0)
            if lines[-1] and used + need > width:
                lines.append([])
                used = 0
                need = item.cell_length
            lines[-1].append(item)
            used += need
        return lines


def _rank(item: tuple[str, str, str]) -> int:
    """Which keys a two-line footer keeps longest (lower stays)."""
    keys, desc, key = item
    if key in ("question_mark", "colon", "escape"):
        return 1
    if key == "q":
        return 2
    if desc in ("move", "top/bottom", "page"):
        return 3
    if key in ("a", "ctrl+p", "T"):
        return 4
    return 0
