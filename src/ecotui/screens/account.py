"""The account: balance, held, available, the ledger (paged; `/` filters by any text: cluster
name or id, kind, memo), ended clusters' cost.

Balances are live from the watch feed; the ledger is read from the REST API
(newest first, 100 a page, `before` an entry id) and re-read at most every few
seconds while new entries arrive. `x` asks where to export the ledger as CSV
(default: the app's export directory, else ~/Downloads or home). The amount
column is unsigned; "available ±" says what each entry did to the money the
account can spend.
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Label, Static

from ecocore.wire import LedgerEntryOut
from ecotui.client.rest import ApiRefusal, BackendUnreachable
from ecotui.keymap import ACCOUNT_VIEW, MOVEMENT
from ecotui.model import Changes, parse_micros
from ecotui.screens.base import DashboardScreen
from ecotui.text import visible
from ecotui.widgets.controls import EcoInput
from ecotui.wording import fmt_duration, fmt_local, fmt_rate, fmt_usd, parse_time_or_none

PAGE = 100
LEDGER_COLUMNS = [
    ("id", "#"),
    ("at", "at"),
    ("cluster", "cluster"),
    ("kind", "kind"),
    ("amount", "amount"),
    ("available", "avail ±"),
    ("balance", "balance after"),
    ("held", "held after"),
    ("memo", "memo"),
]
NARROW_LEDGER = {"at", "cluster", "kind", "amount", "available", "memo"}
RELOAD_EVERY_S = 5.0


class LedgerTable(DataTable[Any]):
    BINDINGS: ClassVar[list[BindingType]] = [*MOVEMENT]

    def action_cursor_top(self) -> None:
        self.move_cursor(row=0)

    def action_cursor_bottom(self) -> None:
        self.move_cursor(row=max(0, self.row_count - 1))


class AccountScreen(DashboardScreen):
    where = "account"
    BINDINGS: ClassVar[list[BindingType]] = [*ACCOUNT_VIEW]

    DEFAULT_CSS = """
    AccountScreen #balances { height: auto; padding: 0 1; background: $boost; }
    AccountScreen #ledger-caption { height: 1; padding: 0 1; color: $foreground 70%; }
    AccountScreen #filter { height: 1; border: none; padding: 0 1; display: none; background: $boost; }
    AccountScreen #filter.-shown { display: block; }
    AccountScreen #tables { height: 1fr; }
    AccountScreen #ledger { height: 1fr; border: round $primary 50%; border-title-color: $foreground; }
    AccountScreen #ledger:focus { border: heavy $primary; }
    AccountScreen #ended-box { width: 48; height: 1fr; }
    AccountScreen #ended { height: 1fr; border: round $primary 50%; border-title-color: $foreground; }
    AccountScreen.-narrow #tables { layout: vertical; }
    AccountScreen.-narrow #ended-box { width: 1fr; height: auto; max-height: 8; }
    AccountScreen.-narrow #ended { height: auto; max-height: 8; }
    AccountScreen #ended-box.-empty { display: none; }
    """

    def __init__(self, *, export_dir: Path | None = None) -> None:
        super().__init__()
        self.export_dir = export_dir
        self.cluster_filter: str | None = None  # a cluster id (asked of the backend)
        self.text_filter = ""  # words every shown entry contains (cluster, kind, memo)
        self._shown = 0  # entries of the page that match it
        self._befores: list[int | None] = [None]
        self.entries: list[LedgerEntryOut] = []
        self._want_reload = False
        self._last_load: float = 0.0

    def compose_body(self) -> ComposeResult:
        yield Static("", id="balances")
        yield Label("", id="ledger-caption")
        yield EcoInput(
            placeholder="filter the ledger: cluster, kind, memo (enter keeps, esc clears)",
            id="filter",
        )
        with Horizontal(id="tables"):
            ledger = LedgerTable(id="ledger", cursor_type="row")
            ledger.border_title = "Ledger (newest first)"
            yield ledger
            with Vertical(id="ended-box"):
                ended: DataTable[Any] = DataTable(id="ended", cursor_type="row")
                ended.border_title = "Ended clusters: cost"
                yield ended

    def on_mount(self) -> None:
        self.set_class(self.app.size.width < 120, "-narrow")
        self._ledger_columns()
        ledger = self.query_one("#ledger", DataTable)
        ended = self.query_one("#ended", DataTable)
        for key, label in (
            ("name", "cluster"),
            ("status", "status"),
            ("gpus", "GPUs"),
            ("spent", "cost"),
        ):
            ended.add_column(label, key=key)
        ledger.focus()
        self.load_ledger()

    def on_resize(self) -> None:
        self.set_class(self.app.size.width < 120, "-narrow")
        if self._ledger_columns():
            self._fill_ledger()

    def _ledger_columns(self) -> bool:
        """The ledger's columns for this width (at 80 columns: no id, no balances after,
        so there is no sideways scrolling). True when they changed."""
        wide = self.app.size.width >= 120
        cols = LEDGER_COLUMNS if wide else [c for c in LEDGER_COLUMNS if c[0] in NARROW_LEDGER]
        if cols == getattr(self, "_cols", None):
            return False
        self._cols = cols
        ledger = self.query_one("#ledger", DataTable)
        ledger.clear(columns=True)
        for key, label in cols:
            ledger.add_column(label, key=key)
        return True

    # -- data ------------------------------------------------------------------------
    @work(group="ledger", exclusive=True)
    async def load_ledger(self) -> None:
        self._last_load = asyncio.get_running_loop().time()
        self._want_reload = False
        try:
            entries = await self.eco.client.ledger(
                cluster_id=self.cluster_filter, limit=PAGE, before=self._befores[-1]
            )
        except (ApiRefusal, BackendUnreachable) as exc:
            self.notify(f"could not read the ledger: {exc}", severity="warning", timeout=4)
            return
        self.entries = entries
        self._fill_ledger()

    def _fill_ledger(self) -> None:
        table = self.query_one("#ledger", DataTable)
        keep = table.cursor_row
        table.clear()
        m = self.eco.model
        now = self.eco.clock.now()
        terms = self.text_filter.lower().split()
        self._shown = 0
        for e in self.entries:
            cid = e.cluster_id
            name = (m.clusters.get(cid) or {}).get("name", cid) if cid else "—"
            amount = parse_micros(e.amount)
            kind = str(e.kind)
            words, effect = ledger_effect(kind, amount)
            if terms and not entry_matches(terms, name, cid, kind, words, e.memo):
                continue
            self._shown += 1
            cells = {
                "id": str(e.id),
                "at": fmt_local(parse_time_or_none(e.at), self.eco.tz, now=now),
                "cluster": Text(visible(name)),
                "kind": Text(words),
                "amount": Text(fmt_usd(abs(amount))),
                "available": Text(_signed(effect) if effect else "0"),
                "balance": fmt_usd(parse_micros(e.balance_after)),
                "held": fmt_usd(parse_micros(e.held_after)),
                "memo": Text(visible(e.memo or ""), no_wrap=True, overflow="ellipsis"),
            }
            if len(self._cols) < len(LEDGER_COLUMNS):  # narrow: the memo gets what is left
                memo = cells["memo"]
                if isinstance(memo, Text) and len(memo.plain) > 11:
                    cells["memo"] = Text(memo.plain[:10] + "…")
            table.add_row(*[cells[k] for k, _ in self._cols], key=str(e.id))
        if table.row_count:
            table.move_cursor(row=min(keep, table.row_count - 1))
        self._caption()

    def _caption(self) -> None:
        m = self.eco.model
        page = len(self._befores)
        who = "all clusters"
        if self.cluster_filter:
            who = f"cluster {(m.clusters.get(self.cluster_filter) or {}).get('name', self.cluster_filter)}"
        more = "more: ]" if len(self.entries) >= PAGE else "last page"
        count = f"{len(self.entries)} entries"
        if self.text_filter.strip():
            count = f"“{self.text_filter.strip()}” {self._shown} of {count}"
        text = (
            f"ledger · {who} · page {page} · {count}"
            f"{' · newer: [' if page > 1 else ''} · {more} · x exports CSV"
        )
        self.query_one("#ledger-caption", Label).update(text)

    def _balances(self) -> None:
        m = self.eco.model
        box = self.query_one("#balances", Static)
        if m.account is None:
            box.update("account: waiting for the feed")
            return
        a = m.account_micros
        burn = m.running_burn
        text = (
            f"{m.account.name} · balance {fmt_usd(a.get('balance', 0))} · "
            f"held {fmt_usd(a.get('held', 0))} · available {fmt_usd(a.get('available', 0))}"
        )
        if burn:
            hours = a.get("available", 0) / burn
            text += f"\nburn {fmt_rate(burn)}: credit lasts {fmt_duration(hours * 3600)}"
            if hours < 24:
                text += " ▲ LOW CREDIT: under a day"
        box.update(text)

    def _ended(self) -> None:
        table = self.query_one("#ended", DataTable)
        rows = self.eco.model.terminated_costs()
        table.clear()
        total = 0
        for c, spent in sorted(rows, key=lambda x: x[0].get("name", "")):
            total += spent
            table.add_row(
                Text(visible(c.get("name"))),
                Text(visible(f"{c.get('status')} ({c.get('status_reason') or '—'})")),
                Text(visible(f"{c.get('gpu_type')}×{c.get('gpu_count')}×{c.get('replicas')}")),
                fmt_usd(spent),
                key=str(c.get("id")),
            )
        table.border_title = f"Ended clusters: cost {fmt_usd(total)}"
        # No ended cluster: the ledger gets the rows.
        self.query_one("#ended-box").set_class(not rows, "-empty")

    # -- repaint -----------------------------------------------------------------------
    def refresh_view(self, changes: Changes, now: datetime, second: bool) -> None:
        super().refresh_view(changes, now, second)
        if changes.account or changes.snapshot:
            self._balances()
            if len(self._befores) == 1:
                self._want_reload = True
        if changes.clusters or changes.removed or changes.snapshot:
            if (
                any(
                    self.eco.model.clusters.get(cid, {}).get("status") in ("terminated", "failed")
                    for cid in changes.clusters
                )
                or changes.removed
                or changes.snapshot
            ):
                self._ended()
        if second and self._want_reload:
            loop_time = asyncio.get_running_loop().time()
            if loop_time - self._last_load >= RELOAD_EVERY_S:
                self.load_ledger()

    def full_refresh(self, now: datetime) -> None:
        super().full_refresh(now)
        self._balances()
        self._ended()
        self._caption()

    # -- keys ----------------------------------------------------------------------------
    def action_older(self) -> None:
        if len(self.entries) >= PAGE:
            self._befores.append(self.entries[-1].id)
            self.load_ledger()

    def action_newer(self) -> None:
        if len(self._befores) > 1:
            self._befores.pop()
            self.load_ledger()

    def action_reload(self) -> None:
        self.load_ledger()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("-shown")
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_typed(self, event: Input.Changed) -> None:
        """Narrow the rows shown as the words are typed."""
        if event.value != self.text_filter:
            self.text_filter = event.value
            self._fill_ledger()

    @on(Input.Submitted, "#filter")
    def _filter(self, event: Input.Submitted) -> None:
        """Keep the filter. Text that names one cluster asks the backend for that
        cluster's whole ledger; any other text keeps filtering the pages shown."""
        ref = event.value.strip()
        c = self.eco.model.find(ref) if ref else None
        self.cluster_filter = str(c["id"]) if c is not None else None
        self.text_filter = "" if c is not None else ref
        if not ref:
            event.input.remove_class("-shown")
        self._befores = [None]
        self.query_one("#ledger", DataTable).focus()
        self.load_ledger()

    def handle_back(self) -> bool:
        box = self.query_one("#filter", Input)
        if box.has_focus or self.cluster_filter or self.text_filter:
            box.value = ""
            box.remove_class("-shown")
            if self.text_filter:
                self.text_filter = ""
                self._fill_ledger()
            if self.cluster_filter:
                self.cluster_filter = None
                self._befores = [None]
                self.load_ledger()
            self.query_one("#ledger", DataTable).focus()
            return True
        return False

    def action_export(self) -> None:
        """Ask where to write the CSV (a file name in a folder that is not the
        current directory unless the user types it), then write it."""
        stamp = self.eco.clock.now().astimezone(self.eco.tz).strftime("%Y%m%d-%H%M%S")
        suffix = ""
        if self.cluster_filter:
            suffix = "-" + str(
                (self.eco.model.clusters.get(self.cluster_filter) or {}).get(
                    "name", self.cluster_filter
                )
            )
        folder = self.export_dir or self.eco.export_dir or default_export_dir()
        path = folder / f"ecotui-ledger{suffix}-{stamp}.csv"

        def chosen(answer: str | None) -> None:
            if answer:
                self.export_csv(Path(answer).expanduser())

        self.app.push_screen(ExportDialog(path), chosen)

    @work(group="export", exclusive=True)
    async def export_csv(self, path: Path | None = None) -> Path | None:
        try:
            text = await self.eco.client.ledger_csv(cluster_id=self.cluster_filter, limit=1000)
        except (ApiRefusal, BackendUnreachable) as exc:
            self.notify(f"export failed: {exc}", severity="error")
            return None
        if path is None:
            stamp = self.eco.clock.now().astimezone(self.eco.tz).strftime("%Y%m%d-%H%M%S")
            folder = self.export_dir or self.eco.export_dir or default_export_dir()
            path = folder / f"ecotui-ledger-{stamp}.csv"
        if path.exists():
            self.notify(f"not exported: {path} exists", severity="error")
            return None
        try:
            await asyncio.to_thread(path.write_text, text, encoding="utf-8")
        except OSError as exc:
            self.notify(f"export failed: {exc}", severity="error")
            return None
        rows = max(0, text.count("\n") - 1)
        self.notify(f"ledger exported: {path} ({rows} entries)", title="Export")
        self.last_export = path
        return path


def _signed(micros: int) -> str:
    return ("+" if micros > 0 else "") + fmt_usd(micros)


def entry_matches(terms: list[str], *fields: Any) -> bool:
    """Every (lower-case) term is in one of the entry's fields, case ignored."""
    hay = " ".join(str(f) for f in fields if f).lower()
    return all(t in hay for t in terms)


def ledger_effect(kind: str, amount: int) -> tuple[str, int]:
    """(what the entry did, in words; what it did to the available money).

    The ledger's own signs are about `balance` and `held` (a hold is +, its
    release −); a person reads what happened to the money they can spend.
    """
    if kind == "hold":
        return "hold", -abs(amount)
    if kind == "hold_release":
        return "release", abs(amount)
    if kind == "charge":
        return "charge", 0
    if kind == "credit":
        return "credit", amount
    return kind.replace("_", " "), 0


def default_export_dir() -> Path:
    """Where a CSV goes by default: $XDG_DOWNLOAD_DIR, ~/Downloads, else home."""
    env = os.environ.get("XDG_DOWNLOAD_DIR")
    if env and Path(env).is_dir():
        return Path(env)
    downloads = Path.home() / "Downloads"
    return downloads if downloads.is_dir() else Path.home()


class ExportDialog(ModalScreen[str | None]):
    """Where to write the ledger CSV: a path to confirm or edit."""

    DEFAULT_CSS = """
    ExportDialog { align: center middle; }
    ExportDialog > Vertical { width: 76; max-width: 100%; height: auto; border: round $accent;
                              padding: 0 1; background: $surface; }
    ExportDialog EcoInput { height: 1; border: none; padding: 0; background: $boost; }
    ExportDialog #export-keys { color: $text-muted; margin: 1 0 0 0; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "Export the ledger as CSV"
            yield Static("Write to:", markup=False)
            yield EcoInput(str(self.path), id="export-path", select_on_focus=False)
            yield Static("enter writes · esc cancels", id="export-keys", markup=False)

    def on_mount(self) -> None:
        self.query_one(EcoInput).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
