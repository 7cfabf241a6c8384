"""The log of one replica: follow, pause, search, and the run before the last restart.

A worker streams `GET .../logs?follow=1` into a line-API view; pausing stops
the view from moving (lines still arrive and are counted); `v` shows the
previous run (what a crash-looping replica printed before it died).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.content import Content
from textual.widgets import Input, Label

from ecotui.client.rest import ApiRefusal, BackendUnreachable
from ecotui.keymap import LOGS_VIEW
from ecotui.model import Changes
from ecotui.screens.base import DashboardScreen
from ecotui.screens.command_line import replica_names
from ecotui.text import visible
from ecotui.widgets.controls import EcoInput
from ecotui.widgets.log_view import LogView


class LogsScreen(DashboardScreen):
    BINDINGS: ClassVar[list[BindingType]] = [*LOGS_VIEW]

    DEFAULT_CSS = """
    LogsScreen #log-caption { height: 1; padding: 0 1; background: $boost; width: 1fr; }
    LogsScreen #search { height: 1; border: none; padding: 0 1; display: none; background: $boost; }
    LogsScreen #search.-shown { display: block; }
    """

    def __init__(self, cluster_id: str, replica: str, *, tail: int = 1000) -> None:
        super().__init__()
        self.cluster_id = cluster_id
        self.replica = replica
        self.alert_cluster = cluster_id
        self.tail = tail
        self.previous = False
        self.stream_state = "connecting"

    @property
    def where(self) -> str:  # type: ignore[override]
        c = self.eco.model.clusters.get(self.cluster_id) or {}
        return f"{visible(c.get('name', self.cluster_id))} › logs of {visible(self.replica)}"

    def compose_body(self) -> ComposeResult:
        yield Label("", id="log-caption")
        yield EcoInput(
            placeholder="search the log (enter: go to first match, esc: clear)", id="search"
        )
        yield LogView(id="log")

    @property
    def log_view(self) -> LogView:
        return self.query_one(LogView)

    def on_mount(self) -> None:
        self.log_view.focus()
        self.stream()

    # -- the stream --------------------------------------------------------------
    @work(group="logs", exclusive=True)
    async def stream(self) -> None:
        view = self.log_view
        view.clear()
        client = self.eco.client
        if self.previous:
            self.stream_state = "loading"
            self._caption()
            try:
                text = await client.logs(
                    self.cluster_id, self.replica, tail=self.tail, previous=True
                )
            except (ApiRefusal, BackendUnreachable) as exc:
                self.stream_state = f"no previous run: {exc}"
                self._caption()
                return
            view.feed(text)
            view.flush()
            self.stream_state = "loaded"
            if not text:
                self.stream_state = "empty: no run before the last restart"
            self._caption()
            return
        tail: int | None = self.tail
        while True:
            self.stream_state = "connecting"
            self._caption()
            try:
                async for chunk in client.follow_logs(self.cluster_id, self.replica, tail=tail):
                    if self.stream_state != "live":
                        self.stream_state = "live"
                    view.feed(chunk.decode("utf-8", "replace"))
                    self._caption()
                view.flush()
                self.stream_state = "stream ended; retrying"
            except ApiRefusal as exc:
                self.stream_state = f"refused: {exc}"
                self._caption()
                return
            except BackendUnreachable:
                self.stream_state = "backend unreachable; retrying"
            except Exception as exc:  # a dropped stream (httpx read error) is retried
                self.stream_state = f"stream lost ({type(exc).__name__}); retrying"
            self._caption()
            tail = 0  # only new lines after a reconnect
            await asyncio.sleep(2.0)

    def _caption(self) -> None:
        view = self.log_view
        parts = [
            visible(self.replica),
            f"{'previous run' if self.previous else 'current run'} · {self.stream_state}",
        ]
        if not self.previous:
            parts.append("following" if view.follow else f"paused (+{view.unseen})")
        parts.append(f"{len(view.lines)} lines")
        if view.search:
            n = len(view.matches)
            if view.match_index >= 0:
                parts.append(f"“{view.search}” {view.match_index + 1}/{n}")
            else:
                parts.append(f"“{view.search}” {n} match{'es' if n != 1 else ''}")
        text = " · ".join(parts)
        label = self.query_one("#log-caption", Label)
        if getattr(label, "_eco_text", None) != text:
            label._eco_text = text  # type: ignore[attr-defined]
            label.update(Content(text))

    def refresh_view(self, changes: Changes, now: datetime, second: bool) -> None:
        super().refresh_view(changes, now, second)

    def full_refresh(self, now: datetime) -> None:
        super().full_refresh(now)
        self._caption()

    def wanted_focus(self) -> list[str]:
        return [self.cluster_id]

    def current_cluster(self) -> dict[str, Any] | None:
        return self.eco.model.clusters.get(self.cluster_id)

    # -- keys ----------------------------------------------------------------------
    def action_toggle_follow(self) -> None:
        view = self.log_view
        view.set_follow(not view.follow)
        self._caption()

    def action_search(self) -> None:
        box = self.query_one("#search", Input)
        box.add_class("-shown")
        box.focus()

    @on(Input.Changed, "#search")
    def _search_changed(self, event: Input.Changed) -> None:
        self.log_view.set_search(event.value)
        self._caption()

    @on(Input.Submitted, "#search")
    def _search_submit(self, event: Input.Submitted) -> None:
        self.log_view.focus()
        self.log_view.jump(1)
        self._caption()

    def action_next_match(self) -> None:
        self.log_view.jump(1)
        self._caption()

    def action_previous_match(self) -> None:
        self.log_view.jump(-1)
        self._caption()

    def _switch_replica(self, step: int) -> None:
        names = replica_names(self.app, self.cluster_id)
        if not names:
            return
        i = names.index(self.replica) if self.replica in names else -1
        self.replica = names[(i + step) % len(names)]
        self.query_one("StatusBar").set_where(self.where)  # type: ignore[attr-defined]
        self.stream()

    def action_next_replica(self) -> None:
        self._switch_replica(1)

    def action_previous_replica(self) -> None:
        self._switch_replica(-1)

    def action_toggle_previous(self) -> None:
        self.previous = not self.previous
        self.log_view.set_follow(not self.previous)
        self.stream()

    def handle_back(self) -> bool:
        box = self.query_one("#search", Input)
        if box.has_focus or box.value:
            box.value = ""
            box.remove_class("-shown")
            self.log_view.set_search("")
            self.log_view.focus()
            self._caption()
            return True
        return False
