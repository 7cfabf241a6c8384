"""The shape every cluster-action dialog shares: a modal with a body, a status
line and Cancel/confirm buttons, that sends one request when confirmed.

What it guarantees:
- nothing is sent before the user confirms; Cancel (or escape) sends nothing;
- every request carries an Idempotency-Key, and a retry of the same submission
  (same operation, same body) reuses it, so a retry after a lost answer cannot
  apply the action twice;
- while the request is out the status line says so and confirm is disabled;
- a refusal is shown in words the user can act on, and one that names a field
  marks that field with the backend's message.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from datetime import datetime, tzinfo
from typing import Any, ClassVar, TypeVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.events import DescendantBlur, DescendantFocus
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Static
from textual.widgets.button import ButtonVariant

from ecocore.clock import Clock, SystemClock
from ecocore.wire import ClusterOut
from ecotui import costs, wording
from ecotui.client.rest import (
    ApiRefusal,
    BackendUnreachable,
    ClusterArg,
    EcoClient,
    as_cluster,
    new_idempotency_key,
)
from ecotui.text import money_in_cents, visible
from ecotui.wording import field_words

log = logging.getLogger(__name__)

ResultT = TypeVar("ResultT")


class ModalCard(ModalScreen[ResultT]):
    """A centred card with a border title, text lines and a row of buttons: the
    look every dialog shares (`#dialog`, `.text`, `#buttons`)."""

    DEFAULT_CSS = """
    ModalCard {
        align: center middle;
    }
    ModalCard > #dialog {
        width: 76;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        overflow-y: auto;
        border-title-style: bold;
        background: $surface;
        padding: 0 1;
    }
    ModalCard .text {
        width: 100%;
        height: auto;
        margin: 0 0 1 0;
    }
    ModalCard #buttons {
        width: 100%;
        height: 1;
        align-horizontal: right;
    }
    ModalCard #buttons Button {
        margin: 0 0 0 2;
        min-width: 10;
        width: auto;
        padding: 0 1;
    }
    """


class ActionDialog(ModalCard[Any]):
    """Base for the cluster-action dialogs; subclasses fill the body and `send`."""

    DEFAULT_CSS = """
    ActionDialog > #dialog {
        scrollbar-size-vertical: 1;
        border: round $accent;
        border-title-color: $text;
    }
    ActionDialog .preview {
        width: 100%;
        height: auto;
        margin: 0 0 1 0;
        color: $text;
    }
    ActionDialog .row {
        width: 100%;
        height: 1;
    }
    ActionDialog .row > .label {
        width: 18;
        color: $text-muted;
    }
    ActionDialog .row.-focus > .label {
        color: $text;
        text-style: bold reverse;
    }
    ActionDialog .row > Input {
        width: 1fr;
    }
    ActionDialog .row > .hint {
        width: auto;
        color: $text-muted;
        padding: 0 0 0 1;
    }
    ActionDialog .field-invalid {
        background: $error 35%;
    }
    ActionDialog .field-error {
        display: none;
        width: 100%;
        height: auto;
        color: $text-error;
        padding: 0 0 0 18;
    }
    ActionDialog .field-error.-shown {
        display: block;
    }
    ActionDialog #status {
        display: none;
        width: 100%;
        height: auto;
    }
    ActionDialog #status.-shown {
        display: block;
    }
    ActionDialog #status.-error {
        color: $text-error;
    }
    ActionDialog #status.-progress {
        color: $text-warning;
    }
    ActionDialog #foot {
        dock: bottom;
        width: 100%;
        height: auto;
        background: $surface;
    }
    ActionDialog #buttons {
        margin: 1 0 0 0;
    }
    ActionDialog #keys {
        width: 1fr;
        height: 1;
        color: $text-muted;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "confirm", "Confirm", show=False),
    ]

    #: The dialog's border title.
    TITLE: ClassVar[str] = ""
    CONFIRM_LABEL: ClassVar[str] = "Confirm"
    CONFIRM_VARIANT: ClassVar[ButtonVariant] = "primary"
    #: What the status line says while the request is out.
    PROGRESS: ClassVar[str] = "Sending…"
    #: API field name -> id of the widget that holds it.
    FIELDS: ClassVar[dict[str, str]] = {}

    def __init__(
        self, client: EcoClient, *, clock: Clock | None = None, tz: tzinfo | None = None
    ) -> None:
        super().__init__()
        self.client = client
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.tz = tz
        self.busy = False
        #: The account's available money (micro-dollars) once loaded, for the preview.
        self.available: int | None = None
        #: The answer of the last confirmed request (also the dismiss value).
        self.result: Any = None
        #: The last refusal shown, for callers and tests.
        self.refusal: ApiRefusal | None = None
        #: Every request sent: (operation, body, idempotency key), in order.
        self.sent: list[tuple[str, Any, str]] = []
        #: Field errors shown now: widget id -> the backend's message.
        self.field_errors: dict[str, str] = {}
        self._keys: dict[str, str] = {}
        self._marked_values: dict[str, object] = {}

    # -- layout -----------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as box:
            box.border_title = self.title_text()
            # The status line and the buttons are docked: when the dialog is taller
            # than the terminal the body scrolls and confirm stays in view.
            with Vertical(id="foot"):
                yield Static("", id="status")
                with Horizontal(id="buttons"):
                    yield Label(self.keys_text(), id="keys")
                    yield from self.compose_extra_buttons()
                    yield Button("Cancel", id="cancel", compact=True)
                    yield Button(
                        self.CONFIRM_LABEL, id="confirm", variant=self.CONFIRM_VARIANT, compact=True
                    )
            yield from self.compose_body()

    def title_text(self) -> str:
        return self.TITLE

    def keys_text(self) -> str:
        """The keys that close the dialog, said beside the buttons."""
        return f"^s {str(self.CONFIRM_LABEL).lower()} · esc cancel"

    def compose_body(self) -> Iterable[Widget]:
        return ()

    def compose_extra_buttons(self) -> Iterable[Widget]:
        return ()

    @staticmethod
    def field_row(
        label: str, widget: Widget, hint: str | None = None, hint_id: str | None = None
    ) -> Iterable[Widget]:
        """A labelled input line followed by its (hidden) error line."""
        children: list[Widget] = [Label(label, classes="label"), widget]
        if hint is not None:
            children.append(Static(hint, classes="hint", id=hint_id))
        yield Horizontal(*children, classes="row", id=f"{widget.id}-row")
        yield Static("", classes="field-error", id=f"{widget.id}-error")

    def on_descendant_focus(self, event: DescendantFocus) -> None:
        self._mark_focused_row()

    def on_descendant_blur(self, event: DescendantBlur) -> None:
        self.call_after_refresh(self._mark_focused_row)

    def _mark_focused_row(self) -> None:
        """The focused field's label is marked `›` and drawn reversed, so focus is
        visible in plain text and without colour."""
        focused = self.focused
        for row in self.query(".row"):
            has = focused is not None and focused in row.walk_children()
            row.set_class(has, "-focus")
            for label in row.query(".label"):
                if isinstance(label, Label):
                    text = str(getattr(label, "_eco_label", None) or label.content)
                    label._eco_label = text  # type: ignore[attr-defined]
                    label.update(Content(("› " if has else "") + text))

    @property
    def composed(self) -> bool:
        """True once the dialog's widgets exist (from on_mount on)."""
        return bool(self.query("#status"))

    # -- time -------------------------------------------------------------
    def now(self) -> datetime:
        return self.clock.now()

    def when(self, at: datetime | str) -> str:
        return wording.local_time_text(at, self.tz, now=self.now())

    # -- submitting ---------------------------------------------------------
    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            event.stop()
            self.action_cancel()
        elif event.button.id == "confirm":
            event.stop()
            self.action_confirm()

    def action_cancel(self) -> None:
        if self.busy:
            # The request is out; closing now would hide whether it was applied.
            self.set_status("Waiting for the backend's answer before closing…", "progress")
            return
        self.dismiss(None)

    def action_confirm(self) -> None:
        self.submit("confirm")

    def request_for(self, operation: str) -> Any:
        """The body to send for `operation` (None when there is none)."""
        return None

    async def send(self, operation: str, body: Any, idempotency_key: str) -> Any:
        raise NotImplementedError

    def done_message(self, operation: str, result: Any) -> str | None:
        return None

    def can_submit(self, operation: str) -> bool:
        return True

    def idempotency_key(self, operation: str, body: Any) -> str:
        """One key per distinct submission; retrying the same one reuses it."""
        fingerprint = operation + "\n" + json.dumps(body, sort_keys=True, default=str)
        if fingerprint not in self._keys:
            self._keys[fingerprint] = new_idempotency_key()
        return self._keys[fingerprint]

    def submit(self, operation: str, *, progress: str | None = None) -> None:
        if self.busy or not self.can_submit(operation):
            return
        body = self.request_for(operation)
        key = self.idempotency_key(operation, body)
        self.busy = True
        self.refusal = None
        self.clear_field_errors()
        self._set_buttons_disabled(True)
        self.set_status(progress or self.PROGRESS, "progress")
        self.run_worker(self._submit(operation, body, key), group="submit", exclusive=True)

    async def _submit(self, operation: str, body: Any, key: str) -> None:
        self.sent.append((operation, body, key))
        try:
            result = await self.send(operation, body, key)
        except ApiRefusal as exc:
            self.busy = False
            self._set_buttons_disabled(False)
            self.show_refusal(exc)
            return
        except BackendUnreachable:
            self.busy = False
            self._set_buttons_disabled(False)
            self.set_status(
                "Cannot reach the backend, so it is not known whether this was "
                "applied. Confirm again to retry: the retry cannot apply it twice.",
                "error",
            )
            return
        except Exception as exc:  # keep the dashboard alive whatever the answer was
            self.busy = False
            self._set_buttons_disabled(False)
            self.set_status(f"Unexpected error: {exc}", "error")
            return
        self.busy = False
        self.result = result
        self.after_success(operation, result)

    def after_success(self, operation: str, result: Any) -> None:
        msg = self.done_message(operation, result)
        if msg:
            self.app.notify(msg)
        self.dismiss(result)

    # -- showing state --------------------------------------------------------
    def set_status(self, text: str, kind: str | None = None) -> None:
        status = self.query_one("#status", Static)
        status.update(Content(visible(text)))
        status.set_class(bool(text), "-shown")
        status.set_class(kind == "error", "-error")
        status.set_class(kind == "progress", "-progress")

    def _set_buttons_disabled(self, disabled: bool) -> None:
        for button in self.query("#buttons Button"):
            if button.id != "cancel":
                button.disabled = disabled
        # The button row is always in view: it says that the request is out, too.
        for confirm in self.query("#confirm").results(Button):
            if disabled:
                confirm._eco_label = getattr(confirm, "_eco_label", None) or confirm.label  # type: ignore[attr-defined]
                confirm.label = self.PROGRESS.split(" ", 1)[0]
            elif getattr(confirm, "_eco_label", None) is not None:
                confirm.label = confirm._eco_label  # type: ignore[attr-defined]
                confirm._eco_label = None  # type: ignore[attr-defined]
        if not disabled:
            self.update_confirm()

    def update_confirm(self) -> None:
        """Subclasses re-enable or relabel their confirm button here."""

    def show_refusal(self, exc: ApiRefusal) -> None:
        self.refusal = exc
        message = money_in_cents(field_words(exc.field, exc.message))
        text = wording.refusal_text(exc.status, message, exc.field)
        marked = self.mark_field(exc.field, message) if exc.field else False
        if marked and exc.status == 422:
            self.set_status("The backend refused this input: see the marked field.", "error")
        else:
            self.set_status(text, "error")

    def widget_for_field(self, field: str) -> Widget | None:
        wid = self.FIELDS.get(field)
        if wid is None:
            # "expose.port" or "shared_filesystems[1]" style names: use the stem.
            for sep in (".", "["):
                stem = field.split(sep, 1)[0]
                wid = self.FIELDS.get(stem) or wid
        if wid is None:
            return None
        found = self.query(f"#{wid}")
        return found.first() if found else None

    def mark_field(self, field: str, message: str) -> bool:
        widget = self.widget_for_field(field)
        if widget is None:
            return False
        widget.add_class("field-invalid")
        if widget.id:
            self.field_errors[widget.id] = message
            self._marked_values[widget.id] = getattr(widget, "value", None)
        errors = self.query(f"#{widget.id}-error")
        if errors:
            err = errors.first(Static)
            err.update(Content(visible(message)))
            err.add_class("-shown")
        return True

    def field_error(self, widget_id: str) -> str | None:
        """The error shown on a field, if any (tests and callers)."""
        return self.field_errors.get(widget_id)

    def clear_field_error(self, widget_id: str) -> None:
        self.field_errors.pop(widget_id, None)
        for w in self.query(f"#{widget_id}"):
            w.remove_class("field-invalid")
        for err in self.query(f"#{widget_id}-error"):
            err.remove_class("-shown")
            if isinstance(err, Static):
                err.update("")

    def clear_field_errors(self) -> None:
        self.field_errors.clear()
        for w in self.query(".field-invalid"):
            w.remove_class("field-invalid")
        for err in self.query(".field-error"):
            err.remove_class("-shown")

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        wid = event.input.id
        # Only an edit clears the mark (a late Changed for the submitted value does not).
        if (
            wid
            and event.input.has_class("field-invalid")
            and (self._marked_values.get(wid) != event.value)
        ):
            self.clear_field_error(wid)
        self.refresh_preview()

    async def load_available(self) -> None:
        """The account's available money, for previews that say what is left.
        A preview works without it; the backend checks anyway."""
        try:
            account = await asyncio.wait_for(self.client.account(), 15)
        except Exception as exc:  # the preview works without it
            log.warning("%s: no available money for the preview: %r", type(self).__name__, exc)
            return
        self.available = costs.usd_to_micros(account.available)
        self.refresh_preview()

    def refresh_preview(self) -> None:
        """Recompute what the dialog shows from its inputs (and the clock)."""


class ClusterDialog(ActionDialog):
    """A dialog about one existing cluster (`cluster`: the REST answer, or the watch feed's
    record of it, parsed as the same wire model)."""

    def __init__(self, cluster: ClusterArg, client: EcoClient, **kw: Any) -> None:
        super().__init__(client, **kw)
        self.cluster: ClusterOut = as_cluster(cluster)
        #: The additional hold the preview shows now (micro-dollars), None if unknown.
        self.preview_hold: int | None = None
