"""Upload to and download from a replica (`>` and `<` on a replica), with a
path prompt and a progress bar. The copy itself is `ecotui cp`'s
(`ecotui.tools.copy`): files and directories, modes, mtimes and symlinks kept,
nothing half-copied left behind when it fails."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, ProgressBar, Static

from ecotui.client.rest import ApiRefusal, BackendUnreachable, EcoClient
from ecotui.host import client_host
from ecotui.tools.copy import CopyError, Progress, download, local_size, upload
from ecotui.widgets.controls import EcoInput

Direction = Literal["upload", "download"]


class CopyScreen(ModalScreen[str | None]):
    """Asks for the two paths, copies, shows the progress; dismisses with what was done."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]
    DEFAULT_CSS = """
    CopyScreen { align: center middle; }
    CopyScreen > Vertical { width: 80; height: auto; border: round $primary;
                            background: $surface; padding: 0 1; }
    CopyScreen ProgressBar { display: none; }
    CopyScreen ProgressBar.-shown { display: block; }
    CopyScreen .error { color: $error; height: auto; }
    CopyScreen .progress-line { height: auto; color: $text-muted; }
    """

    def __init__(
        self, client: EcoClient, cluster: dict[str, Any], replica: str, direction: Direction
    ) -> None:
        super().__init__()
        self.client = client
        self.cluster = cluster
        self.cluster_id = str(cluster.get("id"))
        self.replica = replica
        self.direction = direction
        self.progress: Progress | None = None
        self.result: str | None = None
        self.copying = False

    def compose(self) -> ComposeResult:
        where = f"{self.cluster.get('name')} / {self.replica}"
        with Vertical():
            if self.direction == "upload":
                yield Static(f"Upload to {where}")
                yield EcoInput(placeholder="local file or directory", id="local")
                yield EcoInput(
                    placeholder="path in the replica (default: its working dir)", id="remote"
                )
            else:
                yield Static(f"Download from {where}")
                yield EcoInput(placeholder="path in the replica", id="remote")
                yield EcoInput(
                    value=os.getcwd(), placeholder="local directory or file name", id="local"
                )
            yield ProgressBar(total=None, show_eta=True)
            yield Static("", classes="progress-line")
            yield Static("", classes="error")

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        if self.copying:
            return
        local = self.query_one("#local", Input).value.strip()
        remote = self.query_one("#remote", Input).value.strip()
        first = "#local" if self.direction == "upload" else "#remote"
        if not self.query_one(first, Input).value.strip():
            self.query_one(".error", Static).update("give the path to copy")
            return
        if self.direction == "upload" and not remote:
            remote = "."
        if self.direction == "download" and not local:
            local = "."
        self.query_one(".error", Static).update("")
        self.copying = True
        self.query_one(ProgressBar).add_class("-shown")
        self.progress = Progress(f"{self.direction} {self.replica}", None)
        self.set_interval(0.2, self._tick)
        self.copy(local, remote)

    def _tick(self) -> None:
        p = self.progress
        if p is None:
            return
        bar = self.query_one(ProgressBar)
        if p.total:
            bar.update(total=p.total, progress=min(p.done, p.total))
        self.query_one(".progress-line", Static).update(p.line())

    @work(group="copy", exclusive=True, exit_on_error=False)
    async def copy(self, local: str, remote: str) -> None:
        assert self.progress is not None
        try:
            if self.direction == "upload":
                local_path = os.path.expanduser(local)
                if not os.path.lexists(local_path):
                    raise CopyError(f"{local}: no such file or directory")
                await upload(
                    self.client,
                    self.cluster_id,
                    self.replica,
                    local_path,
                    remote,
                    progress=self._sized(local_path),
                )
                self.result = f"Uploaded {local} to {self.replica}:{remote}"
            else:
                landed = await download(
                    self.client,
                    self.cluster_id,
                    self.replica,
                    remote,
                    os.path.expanduser(local),
                    progress=self.progress,
                )
                self.result = f"Downloaded {self.replica}:{remote} to {landed}"
        except (CopyError, OSError, ApiRefusal, BackendUnreachable) as exc:
            self.copying = False
            self.query_one(".error", Static).update(f"copy failed: {exc}")
            return
        self._tick()
        self.dismiss(self.result)

    def _sized(self, path: str) -> Progress:
        assert self.progress is not None
        self.progress.total = local_size(Path(path)) or None
        return self.progress

    def action_cancel(self) -> None:
        self.workers.cancel_group(self, "copy")
        self.dismiss(None)


async def open_copy(
    app: App[Any], cluster: dict[str, Any], replica: str, direction: Direction
) -> None:
    """`>` (upload) or `<` (download) on a replica."""
    client = client_host(app).client

    def done(result: str | None) -> None:
        if result:
            app.notify(result)

    await app.push_screen(CopyScreen(client, cluster, replica, direction), done)


async def open_upload(app: App[Any], cluster: dict[str, Any], replica: str) -> None:
    await open_copy(app, cluster, replica, "upload")


async def open_download(app: App[Any], cluster: dict[str, Any], replica: str) -> None:
    await open_copy(app, cluster, replica, "download")
