"""Launch form: everything a cluster is launched with, the hourly rate, the hold
it will place and what the account will have left, live as the user types.

Choices come from the backend's catalog and filesystems. Nothing is sent until
the user confirms; the backend validates, and a refusal that names a field is
shown on that field.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any, ClassVar

from textual import on
from textual.containers import Horizontal, VerticalScroll
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Input, Label, Select, SelectionList, Static

from ecocore.wire import AccountOut, CatalogOut, ClusterOut, FilesystemOut, RegionOut
from ecotui import costs
from ecotui.client.rest import EcoClient
from ecotui.dialogs._base import ActionDialog
from ecotui.widgets.controls import EcoCheckbox, EcoInput, EcoSelectionList
from ecotui.wording import fmt_usd


class LaunchDialog(ActionDialog):
    TITLE = "Launch a cluster"
    CONFIRM_LABEL = "Launch"
    PROGRESS = "Launching… waiting for the backend to confirm."
    FIELDS: ClassVar[dict[str, str]] = {
        "name": "name",
        "region": "region",
        "gpu_type": "gpu_type",
        "gpu_count": "gpu_count",
        "replicas": "replicas",
        "image": "image",
        "estimated_duration_hours": "hours",
        "startup_command": "startup_command",
        "shared_filesystems": "shared_fs",
        "expose": "port",
        "port": "port",
    }
    DEFAULT_CSS = """
    LaunchDialog #form {
        height: auto;
        max-height: 15;
        margin: 0 0 1 0;
    }
    LaunchDialog #form Select {
        width: 1fr;
    }
    LaunchDialog #shared_fs {
        width: 1fr;
        height: auto;
        max-height: 4;
    }
    LaunchDialog #shared_fs-row {
        height: auto;
    }
    LaunchDialog #expose {
        width: auto;
    }
    LaunchDialog #preview {
        height: 2;
        margin: 0;
    }
    LaunchDialog #preview.-short {
        color: $text-error;
    }
    """

    def __init__(
        self,
        client: EcoClient,
        *,
        catalog: CatalogOut | None = None,
        filesystems: list[FilesystemOut] | None = None,
        account: AccountOut | None = None,
        clusters: list[ClusterOut] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(client, **kw)
        self.catalog = catalog
        self.filesystems = filesystems
        self.account = account
        self.clusters = clusters
        self.loaded = False
        #: The preview now shown (None until the inputs allow one).
        self.preview: costs.LaunchPreview | None = None

    def compose_body(self) -> Iterable[Widget]:
        yield Static("Loading the catalog…", id="loading", classes="text")
        yield VerticalScroll(id="form")
        yield Static("", id="preview", classes="preview")

    async def on_mount(self) -> None:
        self.query_one("#confirm", Button).disabled = True
        self.run_worker(self._load(), group="load")

    async def _load(self) -> None:
        try:
            needed: list[tuple[str, Coroutine[Any, Any, Any]]] = []
            if self.catalog is None:
                needed.append(("catalog", self.client.catalog()))
            if self.filesystems is None:
                needed.append(("filesystems", self.client.filesystems()))
            if self.account is None:
                needed.append(("account", self.client.account()))
            if self.clusters is None:
                needed.append(("clusters", self.client.clusters()))
            results = await asyncio.gather(*(coro for _, coro in needed))
        except Exception as exc:
            for _, coro in needed:
                if asyncio.iscoroutine(coro):
                    coro.close()
            self.query_one("#loading", Static).update(
                f"Cannot load the catalog: {exc}. Close this and try again."
            )
            return
        for (name, _), value in zip(needed, results, strict=True):
            setattr(self, name, value)
        await self._build_form()

    async def _build_form(self) -> None:
        assert self.catalog is not None
        regions = [r.name for r in self.catalog.regions]
        if not regions:
            self.query_one("#loading", Static).update("The catalog offers no region.")
            return
        rows: list[Widget] = []
        rows += self.field_row(
            "Name",
            EcoInput("", id="name", compact=True, placeholder="a DNS label, e.g. inference-a"),
        )
        rows += self.field_row(
            "Region",
            Select([(r, r) for r in regions], id="region", allow_blank=False, compact=True),
        )
        types = self._gpu_types(regions[0])
        rows += self.field_row(
            "GPU type", Select(types, id="gpu_type", allow_blank=False, compact=True)
        )
        counts = self._gpu_counts(regions[0], types[0][1]) if types else [("1", 1)]
        rows += self.field_row(
            "GPUs per replica", Select(counts, id="gpu_count", allow_blank=False, compact=True)
        )
        rows += self.field_row(
            "Replicas",
            EcoInput("2", id="replicas", compact=True, type="integer"),
            hint="",
            hint_id="replicas-hint",
        )
        rows += self.field_row(
            "Image", EcoInput("", id="image", compact=True, placeholder="registry/name:tag")
        )
        rows += self.field_row(
            "Duration (hours)",
            EcoInput("1", id="hours", compact=True, type="number"),
            hint="then it terminates",
        )
        rows += self.field_row(
            "Startup command",
            EcoInput(
                "",
                id="startup_command",
                compact=True,
                placeholder="optional sh -c line; serve on $PORT",
            ),
        )
        fs = self.filesystems or []
        if fs:
            rows += self.field_row(
                "Filesystems",
                EcoSelectionList(
                    *[(f"{f.name}  {f.description}".rstrip(), f.name) for f in fs],
                    id="shared_fs",
                    compact=True,
                ),
            )
        else:
            rows += self.field_row(
                "Filesystems",
                Static(
                    "none yet: `ecolink filesystems create NAME` makes one",
                    id="shared_fs",
                    markup=False,
                ),
            )
        rows.append(
            Horizontal(
                Label("Public URL", classes="label"),
                EcoCheckbox(_expose_label(False), id="expose", compact=True),
                EcoInput("8000", id="port", compact=True, type="integer", disabled=True),
                classes="row",
                id="port-row",
            )
        )
        rows.append(Static("", classes="field-error", id="port-error"))
        form = self.query_one("#form", VerticalScroll)
        await form.mount_all(rows)
        self.query_one("#loading", Static).update(
            "Nothing is sent until you press Launch; the backend checks everything."
        )
        self.loaded = True
        self.query_one("#name", Input).focus()
        self.refresh_preview()

    # -- catalog lookups --------------------------------------------------------
    def _region(self, name: str) -> RegionOut | None:
        regions = self.catalog.regions if self.catalog is not None else []
        return next((r for r in regions if r.name == name), None)

    def _gpu_types(self, region: str) -> list[tuple[str, str]]:
        r = self._region(region)
        return [
            (f"{t.name}  {fmt_usd(costs.usd_to_micros(t.rate_per_gpu_hour))}/GPU-h", t.name)
            for t in (r.gpu_types if r is not None else [])
        ]

    def _gpu_counts(self, region: str, gpu_type: str) -> list[tuple[str, int]]:
        r = self._region(region)
        for t in r.gpu_types if r is not None else []:
            if t.name == gpu_type:
                return [(str(n), n) for n in t.gpu_counts]
        return []

    def _value(self, wid: str) -> Any:
        v = self.query_one(f"#{wid}", Select).value
        return None if v is Select.NULL or v is Select.BLANK else v

    @on(Select.Changed, "#region")
    def _region_changed(self, event: Select.Changed) -> None:
        event.stop()
        types = self._gpu_types(str(event.value))
        sel = self.query_one("#gpu_type", Select)
        if types:
            current = self._value("gpu_type")
            sel.set_options(types)
            if current in [v for _, v in types]:
                sel.value = current
            # The collapsed Select shows its label only when the value changes: a type
            # offered in both regions would keep the old region's price. Redraw it.
            sel.mutate_reactive(Select.value)  # type: ignore[misc]  # Textual's documented form
        self.clear_field_error("region")
        self.refresh_preview()

    @on(Select.Changed, "#gpu_type")
    def _type_changed(self, event: Select.Changed) -> None:
        event.stop()
        region = self._value("region")
        counts = self._gpu_counts(str(region), str(event.value))
        sel = self.query_one("#gpu_count", Select)
        current = self._value("gpu_count")
        if counts:
            sel.set_options(counts)
            if current in [n for _, n in counts]:
                sel.value = current
        self.clear_field_error("gpu_type")
        self.refresh_preview()

    @on(Select.Changed, "#gpu_count")
    def _count_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.clear_field_error("gpu_count")
        self.refresh_preview()

    @on(Checkbox.Changed, "#expose")
    def _expose_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        # Said in words too: a checkbox's state is otherwise only its colour.
        event.checkbox.label = _expose_label(event.value)
        self.query_one("#port", Input).disabled = not event.value
        self.clear_field_error("port")

    @on(SelectionList.SelectedChanged)
    def _fs_changed(self, event: SelectionList.SelectedChanged[str]) -> None:
        self.clear_field_error("shared_fs")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        # Enter moves on; only the Launch button (or ctrl+s) sends.
        event.stop()
        self.focus_next()

    # -- the live preview -------------------------------------------------------
    def free_gpus(self, region: str) -> int | None:
        r = self._region(region)
        if r is None or self.clusters is None:
            return None
        return costs.gpus_free(r.gpu_budget, self.clusters, region)

    def refresh_preview(self) -> None:
        if not self.loaded:
            return
        region = self._value("region")
        gpu_type = self._value("gpu_type")
        gpu_count = self._value("gpu_count")
        hint = self.query_one("#replicas-hint", Static)
        free = self.free_gpus(str(region)) if region else None
        if free is not None and gpu_count:
            r_max = costs.max_replicas(free, int(gpu_count))
            hint.update(
                f"2 to {r_max} ({free} GPUs free)"
                if r_max >= 2
                else f"no room: {free} GPUs free in {region}"
            )
        else:
            hint.update("at least 2")
        preview = self.query_one("#preview", Static)
        rate = (
            costs.catalog_rate(self.catalog, str(region), str(gpu_type))
            if self.catalog is not None and region and gpu_type
            else None
        )
        try:
            replicas = int(self.query_one("#replicas", Input).value.strip())
        except ValueError:
            replicas = None
        try:
            mh: int | None = costs.parse_hours(self.query_one("#hours", Input).value.strip())
        except costs.MoneyError:
            mh = None
        available = costs.usd_to_micros(self.account.available if self.account else "0")
        if rate is None or replicas is None or mh is None or not gpu_count:
            self.preview = None
            preview.update(
                "Enter replicas and hours to see the rate and the hold.\n"
                f"Available {fmt_usd(available)}"
            )
            preview.remove_class("-short")
            self.update_confirm()
            return
        p = costs.launch_preview(rate, int(gpu_count), replicas, mh, available)
        self.preview = p
        line1 = (
            f"{fmt_usd(rate)}/GPU-h × {gpu_count} GPUs × {replicas} replicas = "
            f"{fmt_usd(p.hourly_rate)}/h"
        )
        line2 = (
            f"Hold {fmt_usd(p.hold)} for {costs.format_hours(mh)} h · available "
            f"{fmt_usd(available)} → "
        )
        line2 += f"short by {fmt_usd(p.short_by)}" if p.short_by else f"{fmt_usd(p.left)} left"
        preview.update(f"{line1}\n{line2}")
        preview.set_class(p.short_by > 0, "-short")
        self.update_confirm()

    def update_confirm(self) -> None:
        if self.composed and not self.busy:
            self.query_one("#confirm", Button).disabled = not self.loaded

    def can_submit(self, operation: str) -> bool:
        return self.loaded

    # -- sending ----------------------------------------------------------------
    def request_for(self, operation: str) -> Any:
        def text(wid: str) -> str:
            return self.query_one(f"#{wid}", Input).value.strip()

        def number(wid: str) -> int | str:
            raw = text(wid)
            try:
                return int(raw)
            except ValueError:
                return raw  # the backend names what is wrong with it

        body: dict[str, Any] = {
            "name": text("name"),
            "region": self._value("region"),
            "gpu_type": self._value("gpu_type"),
            "gpu_count": self._value("gpu_count"),
            "replicas": number("replicas"),
            "image": text("image"),
            "estimated_duration_hours": text("hours"),
        }
        if text("startup_command"):
            body["startup_command"] = text("startup_command")
        fs = self.query("#shared_fs").first()
        if isinstance(fs, SelectionList) and fs.selected:
            body["shared_filesystems"] = list(fs.selected)
        if self.query_one("#expose", Checkbox).value:
            body["expose"] = {"port": number("port")}
        return body

    async def send(self, operation: str, body: Any, idempotency_key: str) -> Any:
        return await self.client.launch(body, idempotency_key=idempotency_key)

    def done_message(self, operation: str, result: Any) -> str | None:
        return (
            f"Launched {result.name}: "
            f"{fmt_usd(costs.usd_to_micros(result.hourly_rate))}/h, "
            f"hold {fmt_usd(costs.usd_to_micros(result.cost.hold))}"
        )


def _expose_label(on: bool) -> str:
    return "on: expose on port" if on else "off: expose on port"
