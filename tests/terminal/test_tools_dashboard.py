"""The dashboard's replica tools against a real backend: `!` asks for a command and
shows the folded result of every ready replica; `N` (nvidia-smi side by side) is a
use of it and opens the same folded report with `f`."""

from __future__ import annotations

import pytest
from shell_helpers import HostApp, launch, wait_until
from textual.widgets import Input, Static

from ecotui.client.rest import EcoClient
from ecotui.screens.gpu_compare import GpuCompareScreen, open_gpu_compare
from ecotui.screens.run_everywhere import CommandPrompt, RunScreen, open_run_everywhere


@pytest.fixture
def cluster(fresh_api):
    return launch(fresh_api, "box", replicas=3)


@pytest.fixture
def client(shared_ecolink_server, fresh_api):
    return EcoClient(shared_ecolink_server.url, fresh_api.account_key)


def _text(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


async def test_bang_asks_and_shows_the_folded_result(client, cluster):
    app = HostApp(client)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_run_everywhere(app, cluster)
        await pilot.pause()
        assert isinstance(app.screen, CommandPrompt)
        app.screen.query_one(Input).value = (
            "sh -c 'echo same; [ $ECO_REPLICA_INDEX = 2 ] && echo odd && exit 5; true'")
        await pilot.press("enter")
        await wait_until(lambda: isinstance(app.screen, RunScreen), 10, "the run panel")
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await wait_until(lambda: bool(screen.report), 30, "the folded report")
        await pilot.pause()
        report = _text(screen, "#run-report")
        assert report.startswith("=== box-0,1 (2 replicas) · exit 0\nsame\n")
        assert "=== box-2 (1 replica) · exit 5 · differs from the majority" in report
        assert "+odd" in report
        assert "exit 5: box-2 (1 replica)" in report
        assert "2 of 3 replicas exited 0" in _text(screen, "#run-title")
        # ! again: another command on the same cluster
        await pilot.press("exclamation_mark")
        await pilot.pause()
        assert isinstance(app.screen, CommandPrompt)
        app.screen.query_one(Input).value = "printenv ECO_CLUSTER_NAME"
        await pilot.press("enter")
        await wait_until(lambda: "box (3 replicas)" not in screen.report
                         and screen.report.startswith("=== box-0..2 (3 replicas) · exit 0\nbox"),
                         30, "the second report")


async def test_bang_refuses_an_empty_or_unreadable_command(client, cluster):
    app = HostApp(client)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_run_everywhere(app, cluster)
        await pilot.pause()
        prompt = app.screen
        assert isinstance(prompt, CommandPrompt)
        prompt.query_one(Input).value = "echo 'unclosed"
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is prompt
        assert "cannot read the command" in _text(prompt, ".error")
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, CommandPrompt | RunScreen)


async def test_nvidia_smi_view_is_a_use_of_run(client, cluster):
    app = HostApp(client)
    async with app.run_test(size=(160, 40)) as pilot:
        screen = await open_gpu_compare(app, cluster)
        assert isinstance(app.screen, GpuCompareScreen)
        await wait_until(lambda: screen.done.is_set(), 60, "nvidia-smi in every replica")
        await pilot.pause()
        assert [o.name for o in screen.outcomes] == ["box-0", "box-1", "box-2"]
        title = _text(screen, "#gpu-title")
        assert title.endswith(screen.agreement()) and "replicas" in title
        await pilot.press("f")
        await wait_until(lambda: isinstance(app.screen, RunScreen), 10, "the folded report")
        folded = app.screen
        assert isinstance(folded, RunScreen) and folded.command == ["nvidia-smi"]
        await wait_until(lambda: bool(folded.report), 60, "the folded report")
        assert "(3 replicas)" in folded.report
