"""SVG snapshot of the shells view: a terminal tab with real program output (fixed size,
fixed content: bytes from the corpus, no backend), a second tab whose process exited."""

from __future__ import annotations

from pathlib import Path

from textual.app import App, ComposeResult
from textual.widgets import Static

from ecocore.wire import SessionOut
from ecotui.screens.shells import ShellPane, shells_screen

CORPUS = Path(__file__).parent / "corpus"
CLUSTER = {
    "id": "gc_snap",
    "name": "train",
    "replica_states": [
        {"name": "train-0", "node": "node-a", "ready": True},
        {"name": "train-1", "node": "node-b", "ready": True},
    ],
}


class FixedPane(ShellPane):
    """A pane showing fixed bytes instead of a live session."""

    def __init__(self, replica: str, data: bytes, *, exit_code: int | None = None) -> None:
        super().__init__(None, CLUSTER, replica, command=["bash"], sid=f"ses_{replica}")  # type: ignore[arg-type]
        self.data = data
        self.fixed_exit = exit_code
        self.gpus = "GPUs 0:H100-80GB 87% (simulated)"

    def run_session(self) -> None:  # type: ignore[override]
        self.view.feed(self.data)
        if self.fixed_exit is None:
            self._set_state("live")
        else:
            self.exit_code = self.fixed_exit
            self._set_state("exited")

    def load_header(self) -> None:  # type: ignore[override]
        self._show()


class SnapApp(App[None]):
    client = None

    def compose(self) -> ComposeResult:
        yield Static("dashboard")

    async def on_mount(self) -> None:
        screen = shells_screen(self)
        await self.push_screen(screen)
        ls = (CORPUS / "ls_color.bin").read_bytes()
        await screen.add_pane(FixedPane("train-1", b"$ exit 3\r\n", exit_code=3), focus=False)
        await screen.add_pane(
            FixedPane("train-0", ls + (CORPUS / "sgr_all.bin").read_bytes() + b"$ "), focus=True
        )


def test_terminal_tab_snapshot(snap_compare) -> None:
    async def settle(pilot) -> None:
        await pilot.pause(0.3)

    assert snap_compare(SnapApp(), terminal_size=(100, 34), run_before=settle)


class FakeClient:
    """The one call the picker makes: the cluster's running sessions."""

    async def sessions(self, cluster_id: str) -> list[SessionOut]:
        def session(sid: str, replica: str, command: list[str], attached: int) -> SessionOut:
            return SessionOut(
                id=sid,
                cluster_id=cluster_id,
                replica=replica,
                command=command,
                tty=True,
                started_at="2026-01-01T00:00:00.000000Z",
                exited=False,
                exit_code=None,
                ended_reason=None,
                attached=attached,
            )

        return [
            session("ses_a1", "train-0", ["bash"], 1),
            session("ses_b2", "train-1", ["python3", "train.py"], 0),
        ]


class PickerApp(App[None]):
    def compose(self) -> ComposeResult:
        yield Static("dashboard")

    async def on_mount(self) -> None:
        from ecotui.screens.shells import ShellPicker

        other = {
            "id": "gc_other",
            "name": "serve",
            "replica_states": [{"name": "serve-0", "ready": True}],
        }
        await self.push_screen(
            ShellPicker(
                FakeClient(),
                [CLUSTER, other],
                "gc_snap",  # type: ignore[arg-type]
                open_sids={"ses_a1"},
            )
        )


def test_shell_picker_at_80x24_snapshot(snap_compare) -> None:
    async def settle(pilot) -> None:
        await pilot.pause(0.3)

    assert snap_compare(PickerApp(), terminal_size=(80, 24), run_before=settle)
