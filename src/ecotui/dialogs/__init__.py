"""Cluster-action dialogs (Textual modal screens) and the calls that open them.

Each `open_*` pushes its dialog on `app` and returns the dialog. A dialog uses
only what `ecotui.host.DialogHost` names of its app (`client`, an
`ecotui.client.rest.EcoClient`; `clock`; `tz`, the zone to show times in, None
for the local zone) plus `app.notify` and `app.push_screen`, so it runs in the
dashboard and in a small host app alike. `cluster` is the REST client's
`ClusterOut`, or the dashboard model's record of the cluster (parsed as one). `callback`, when given, gets the dialog's result: the backend's
answer, or None when cancelled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from textual.app import App
from textual.screen import Screen

from ecotui.client.rest import ClusterArg, EcoClient
from ecotui.dialogs._base import ActionDialog
from ecotui.dialogs.endpoint import EndpointDialog, curl_line
from ecotui.dialogs.expiry import ExpiryWarningDialog
from ecotui.dialogs.extend import ExtendDialog
from ecotui.dialogs.launch import LaunchDialog
from ecotui.dialogs.lifecycle import ResumeDialog, StopDialog, TerminateDialog
from ecotui.dialogs.restart import RestartDialog
from ecotui.dialogs.scale import ScaleDialog
from ecotui.host import dialog_host

__all__ = [
    "ActionDialog",
    "EndpointDialog",
    "ExpiryWarningDialog",
    "ExtendDialog",
    "LaunchDialog",
    "RestartDialog",
    "ResumeDialog",
    "ScaleDialog",
    "StopDialog",
    "TerminateDialog",
    "curl_line",
    "open_endpoint",
    "open_expiry_warning",
    "open_extend",
    "open_launch",
    "open_restart",
    "open_resume",
    "open_scale",
    "open_stop",
    "open_terminate",
]

ScreenT = TypeVar("ScreenT", bound=Screen[Any])
Callback = Callable[[Any], Any] | None


def _env(app: App[Any]) -> dict[str, Any]:
    host = dialog_host(app)
    return {"clock": host.clock, "tz": host.tz}


def _client(app: App[Any]) -> EcoClient:
    return dialog_host(app).client


def _push(app: App[Any], screen: ScreenT, callback: Callback) -> ScreenT:
    app.push_screen(screen, callback)
    return screen


def open_launch(app: App[Any], callback: Callback = None) -> LaunchDialog:
    return _push(app, LaunchDialog(_client(app), **_env(app)), callback)


def open_scale(app: App[Any], cluster: ClusterArg, callback: Callback = None) -> ScaleDialog:
    return _push(app, ScaleDialog(cluster, _client(app), **_env(app)), callback)


def open_extend(app: App[Any], cluster: ClusterArg, callback: Callback = None) -> ExtendDialog:
    return _push(app, ExtendDialog(cluster, _client(app), **_env(app)), callback)


def open_endpoint(app: App[Any], cluster: ClusterArg, callback: Callback = None) -> EndpointDialog:
    return _push(app, EndpointDialog(cluster, _client(app), **_env(app)), callback)


def open_restart(
    app: App[Any], cluster: ClusterArg, replica: str | None = None, callback: Callback = None
) -> RestartDialog:
    return _push(app, RestartDialog(cluster, _client(app), replica, **_env(app)), callback)


def open_stop(app: App[Any], cluster: ClusterArg, callback: Callback = None) -> StopDialog:
    return _push(app, StopDialog(cluster, _client(app), **_env(app)), callback)


def open_resume(app: App[Any], cluster: ClusterArg, callback: Callback = None) -> ResumeDialog:
    return _push(app, ResumeDialog(cluster, _client(app), **_env(app)), callback)


def open_terminate(
    app: App[Any], cluster: ClusterArg, callback: Callback = None
) -> TerminateDialog:
    return _push(app, TerminateDialog(cluster, _client(app), **_env(app)), callback)


def open_expiry_warning(
    app: App[Any], cluster: ClusterArg, callback: Callback = None
) -> ExpiryWarningDialog:
    """The warning; its `e` key closes it and opens the extend dialog."""

    def done(choice: str | None) -> None:
        if choice == "extend":
            open_extend(app, cluster, callback)
        elif callback is not None:
            callback(None)

    return _push(app, ExpiryWarningDialog(cluster, **_env(app)), done)
