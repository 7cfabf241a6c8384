"""Endpoint dialog: open the cluster's public URL on a port, change the port (the
URL stays), or close it; copy the URL or a ready `curl` line to the clipboard.

Copying uses the terminal's clipboard escape (OSC 52, `App.copy_to_clipboard`),
so it works over SSH too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from textual.binding import Binding, BindingType
from textual.widget import Widget
from textual.widgets import Button, Input, Static

from ecocore.wire import EndpointOut
from ecotui.client.rest import ClusterArg, EcoClient
from ecotui.dialogs._base import ActionDialog, ClusterDialog
from ecotui.text import visible
from ecotui.widgets.controls import EcoInput
from ecotui.wording import cluster_summary


def curl_line(url: str) -> str:
    """A ready request to the public URL, with a placeholder for the API key."""
    return f'curl {url} -H "Authorization: Bearer eco_YOUR_KEY"'


class EndpointDialog(ClusterDialog):
    PROGRESS = "Updating the public URL… waiting for the backend to confirm."
    FIELDS = {"port": "port"}
    BINDINGS: ClassVar[list[BindingType]] = [
        *ActionDialog.BINDINGS,
        Binding("ctrl+u", "copy_url", "Copy URL", show=False),
        Binding("ctrl+k", "copy_curl", "Copy curl", show=False),
    ]

    def __init__(self, cluster: ClusterArg, client: EcoClient, **kw: Any) -> None:
        super().__init__(cluster, client, **kw)
        self.endpoint: EndpointOut | None = self.cluster.endpoint

    @property
    def CONFIRM_LABEL(self) -> str:  # type: ignore[override]
        return "Change port" if self.endpoint else "Open URL"

    def title_text(self) -> str:
        return f"Public URL of {self.cluster.name}"

    def compose_body(self) -> Iterable[Widget]:
        yield Static(cluster_summary(self.cluster), classes="text")
        if self.endpoint:
            yield Static(
                f"{visible(self.endpoint.url)}\n"
                f"forwards to port {self.endpoint.port} of each ready replica, "
                "load-balanced (on the local runtime: the port each replica was given in "
                "$PORT). Requests need the header `Authorization: Bearer API_KEY`. "
                "A new port keeps the URL.",
                id="url",
                classes="text",
                markup=False,
            )
            port = str(self.endpoint.port)
        else:
            yield Static(
                "No public URL yet. Opening one forwards requests that carry "
                "`Authorization: Bearer API_KEY`, load-balanced, to this port of each ready "
                "replica (on the local runtime: the port in each replica's $PORT).",
                id="url",
                classes="text",
                markup=False,
            )
            port = ""
        yield from self.field_row(
            "Port", EcoInput(port, id="port", compact=True, type="integer", placeholder="8000")
        )

    def compose_extra_buttons(self) -> Iterable[Widget]:
        if self.endpoint:
            yield Button("Copy URL", id="copy_url", compact=True)
            yield Button("Copy curl", id="copy_curl", compact=True)
            yield Button("Close URL", id="close", variant="error", compact=True)

    def on_mount(self) -> None:
        self.query_one("#port", Input).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        # Cancel and confirm are handled by ActionDialog's own handler (Textual calls
        # the handler of every class in the MRO).
        if event.button.id == "copy_url":
            event.stop()
            self.action_copy_url()
        elif event.button.id == "copy_curl":
            event.stop()
            self.action_copy_curl()
        elif event.button.id == "close":
            event.stop()
            self.submit("close", progress="Closing the public URL… waiting for the backend.")

    def action_copy_url(self) -> None:
        if self.endpoint:
            self.app.copy_to_clipboard(self.endpoint.url)
            self.set_status("Copied the URL to the clipboard.")

    def action_copy_curl(self) -> None:
        if self.endpoint:
            self.app.copy_to_clipboard(curl_line(self.endpoint.url))
            self.set_status(
                "Copied a curl line to the clipboard; put your key in place of eco_YOUR_KEY."
            )

    def request_for(self, operation: str) -> Any:
        if operation == "close":
            return None
        raw = self.query_one("#port", Input).value.strip()
        try:
            return {"port": int(raw)}
        except ValueError:
            return {"port": raw}

    async def send(self, operation: str, body: Any, idempotency_key: str) -> Any:
        if operation == "close":
            await self.client.close_endpoint(self.cluster.id, idempotency_key=idempotency_key)
            return None
        return await self.client.set_endpoint(
            self.cluster.id, body["port"], idempotency_key=idempotency_key
        )

    def after_success(self, operation: str, result: Any) -> None:
        name = self.cluster.name
        if operation == "close":
            self.endpoint = None
            self.app.notify(f"{name}: public URL closed")
            self.dismiss({"closed": True})
            return
        self.endpoint = result
        self.app.notify(f"{name}: {result.url} → port {result.port}")
        self.dismiss(result)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_confirm()
