"""What screens and dialogs may use of the app, and how they ask it to navigate.

Screens and dialogs never import the app. They type what they read of it
against these protocols (`DialogHost` for the dialogs, `EcoHost` for the
dashboard's own screens; a small test app satisfies the first alone), and
they ask for a view by posting a message the app handles (`OpenCluster`,
`OpenLogs`, `OpenView`, `OpenShell`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Any, Literal, Protocol, cast, runtime_checkable

from textual.app import App
from textual.message import Message

from ecocore.clock import Clock
from ecotui.client.rest import ClusterArg, EcoClient
from ecotui.model import DashboardModel


@runtime_checkable
class ClientHost(Protocol):
    """An app with a REST client: enough for the shells and the replica tools."""

    client: EcoClient


@runtime_checkable
class DialogHost(ClientHost, Protocol):
    """What a cluster-action dialog needs of its app: the client, the clock and the zone."""

    clock: Clock
    tz: tzinfo | None  # None: the machine's local time zone


@runtime_checkable
class EcoHost(DialogHost, Protocol):
    """The dashboard app as its screens see it."""

    model: DashboardModel
    export_dir: Path | None

    def focus_changed(self) -> None:
        """Send the watch focus when the clusters on screen changed."""

    def repaint_now(self) -> None:
        """Paint what changed without waiting for the repaint timer."""


def client_host(app: App[Any]) -> ClientHost:
    return cast(ClientHost, app)


def dialog_host(app: App[Any]) -> DialogHost:
    return cast(DialogHost, app)


def eco_host(app: App[Any]) -> EcoHost:
    return cast(EcoHost, app)


# -- navigation: posted by screens and widgets, handled by the app ------------------------


@dataclass
class OpenCluster(Message):
    """Show one cluster (the cluster view)."""

    cluster_id: str


@dataclass
class OpenLogs(Message):
    """Show a replica's log."""

    cluster_id: str
    replica: str


@dataclass
class OpenView(Message):
    """Show one of the app's fixed views (unless it is already on top)."""

    view: Literal["help", "account", "gpus", "shells"]


@dataclass
class OpenShell(Message):
    """Open a shell in a replica of the cluster, in the shells view."""

    cluster: ClusterArg
    replica: str
