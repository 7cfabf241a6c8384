"""Dialog behaviour with a scripted client: what is sent, when, with which
Idempotency-Key; progress while waiting; refusals on the right field; cancel
sends nothing. (test_against_backend.py checks the money against the real
backend.)"""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.widgets import Button, Input, Static

from ecocore.clock import FakeClock
from ecocore.wire import AccountOut, CatalogOut, ClusterOut, EndpointOut, FilesystemOut
from ecotui import dialogs
from ecotui.client.rest import ApiRefusal, BackendUnreachable

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
CATALOG = {
    "regions": [
        {
            "name": "us-east",
            "gpu_budget": 32,
            "gpu_types": [
                {"name": "H100-80GB", "rate_per_gpu_hour": "2.500000", "gpu_counts": [1, 2, 4, 8]}
            ],
        }
    ]
}
CLUSTER = {
    "id": "c1",
    "name": "web",
    "region": "us-east",
    "gpu_type": "H100-80GB",
    "gpu_count": 4,
    "replicas": 3,
    "image": "img",
    "startup_command": None,
    "shared_filesystems": [],
    "termination_grace_seconds": 30,
    "status": "running",
    "status_reason": None,
    "stale": False,
    "created_at": "2026-01-01T08:00:00Z",
    "started_at": "2026-01-01T08:00:00Z",
    "expires_at": "2026-01-01T18:00:00Z",
    "estimated_duration_hours": "10",
    "hourly_rate": "30.000000",
    "burn_rate": "30.000000",
    "cost": {
        "hold": "300.000000",
        "spent": "0.000000",
        "hold_remaining": "300.000000",
        "projected_total": "180.000000",
    },
    "endpoint": {"url": "http://127.0.0.1:9/gpu-clusters/c1/service/", "port": 8000},
    "ready_replicas": 0,
    "replica_states": [],
    "gpu_summary": {"gpus": 0, "mean_utilization": 0.0, "idle_gpus": 0, "telemetry": "simulated"},
}


class ScriptedClient:
    """Answers reads with fixed data (the wire models the REST client returns); mutating
    calls pop the next scripted outcome (an exception to raise, or a value) and are
    recorded with their key."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[str, tuple[Any, ...], str | None]] = []
        self.gate: asyncio.Event | None = None

    async def catalog(self):
        return CatalogOut.model_validate(CATALOG)

    async def filesystems(self):
        return [FilesystemOut(name="weights", description="")]

    async def account(self):
        return AccountOut(
            id="a", name="demo", available="500.000000", balance="500.000000", held="0.000000"
        )

    async def clusters(self, status=None):
        return [ClusterOut.model_validate(CLUSTER)]

    async def _act(self, name, *args, idempotency_key=None):
        self.calls.append((name, args, idempotency_key))
        if self.gate is not None:
            await self.gate.wait()
        outcome = self.outcomes.pop(0) if self.outcomes else ClusterOut.model_validate(CLUSTER)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def launch(self, body, *, idempotency_key=None):
        return await self._act("launch", body, idempotency_key=idempotency_key)

    async def scale(self, ref, n, *, idempotency_key=None):
        return await self._act("scale", ref, n, idempotency_key=idempotency_key)

    async def extend(self, ref, h, *, idempotency_key=None):
        return await self._act("extend", ref, h, idempotency_key=idempotency_key)

    async def stop(self, ref, *, idempotency_key=None):
        return await self._act("stop", ref, idempotency_key=idempotency_key)

    async def resume(self, ref, *, idempotency_key=None):
        return await self._act("resume", ref, idempotency_key=idempotency_key)

    async def terminate(self, ref, *, idempotency_key=None):
        return await self._act("terminate", ref, idempotency_key=idempotency_key)

    async def restart(self, ref, replica=None, *, idempotency_key=None):
        return await self._act("restart", ref, replica, idempotency_key=idempotency_key)

    async def set_endpoint(self, ref, port, *, idempotency_key=None):
        return await self._act("set_endpoint", ref, port, idempotency_key=idempotency_key)

    async def close_endpoint(self, ref, *, idempotency_key=None):
        return await self._act("close_endpoint", ref, idempotency_key=idempotency_key)


class Host(App[None]):
    def __init__(self, client: Any) -> None:
        super().__init__()
        self.client = client
        self.clock = FakeClock(NOW)
        self.tz = UTC
        self.copied: list[str] = []
        self.notes: list[str] = []
        self.results: list[Any] = []

    def compose(self) -> ComposeResult:
        yield Static("host")

    def copy_to_clipboard(self, text: str) -> None:
        self.copied.append(text)
        super().copy_to_clipboard(text)

    def notify(self, message, **kw):  # type: ignore[override]
        self.notes.append(str(message))
        super().notify(message, **kw)


async def settle(pilot):
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def cluster(**kw):
    c = copy.deepcopy(CLUSTER)
    c.update(kw)
    return c


OPENERS = {
    "launch": lambda app: dialogs.open_launch(app, app.results.append),
    "scale": lambda app: dialogs.open_scale(app, cluster(), app.results.append),
    "extend": lambda app: dialogs.open_extend(app, cluster(), app.results.append),
    "endpoint": lambda app: dialogs.open_endpoint(app, cluster(), app.results.append),
    "restart": lambda app: dialogs.open_restart(app, cluster(), "web-1", app.results.append),
    "stop": lambda app: dialogs.open_stop(app, cluster(), app.results.append),
    "resume": lambda app: dialogs.open_resume(app, cluster(status="stopped"), app.results.append),
    "terminate": lambda app: dialogs.open_terminate(app, cluster(), app.results.append),
}


@pytest.mark.parametrize("which", sorted(OPENERS))
@pytest.mark.parametrize("how", ["escape", "button"])
async def test_cancel_sends_nothing(which, how):
    client = ScriptedClient()
    app = Host(client)
    async with app.run_test(size=(80, 24)) as pilot:
        d = OPENERS[which](app)
        await settle(pilot)
        assert app.screen is d
        if how == "escape":
            await pilot.press("escape")
        else:
            d.query_one("#cancel", Button).press()
        await settle(pilot)
        assert app.screen is not d
    assert client.calls == []
    assert app.results == [None]


async def test_scale_retry_after_unreachable_reuses_the_idempotency_key():
    client = ScriptedClient(BackendUnreachable("down"), BackendUnreachable("down"))
    app = Host(client)
    async with app.run_test(size=(80, 24)) as pilot:
        d = OPENERS["scale"](app)
        await settle(pilot)
        d.query_one("#replicas", Input).value = "5"
        d.action_confirm()
        await settle(pilot)
        assert "Cannot reach the backend" in str(d.query_one("#status", Static).render())
        assert app.screen is d
        d.action_confirm()  # same submission: same key
        await settle(pilot)
        d.query_one("#replicas", Input).value = "6"
        d.action_confirm()  # a different request: a new key; this one succeeds
        await settle(pilot)
        assert app.screen is not d
    (n1, a1, k1), (n2, a2, k2), (n3, a3, k3) = client.calls
    assert a1 == a2 == ("c1", 5) and a3 == ("c1", 6)
    assert k1 and k1 == k2 and k3 and k3 != k1
    assert app.results and app.results[0].name == "web"


async def test_progress_is_shown_until_the_backend_answers():
    client = ScriptedClient()
    client.gate = asyncio.Event()
    app = Host(client)
    async with app.run_test(size=(80, 24)) as pilot:
        d = OPENERS["stop"](app)
        await settle(pilot)
        await pilot.click("#confirm")
        await pilot.pause(0.05)
        status = d.query_one("#status", Static)
        assert "Stopping" in str(status.render()) and status.has_class("-progress")
        assert d.query_one("#confirm", Button).disabled
        await pilot.press("escape")  # cannot close while the request is out
        await pilot.pause(0.05)
        assert app.screen is d
        d.action_confirm()  # a second confirm while busy sends nothing more
        client.gate.set()
        await settle(pilot)
        assert app.screen is not d
    assert [c[0] for c in client.calls] == ["stop"]
    assert any("web" in n for n in app.notes)


async def test_402_is_shown_with_what_to_do():
    refusal = ApiRefusal(
        402,
        "insufficient_balance",
        "insufficient balance: the hold needs $120.000000, $20.000000 "
        "available; $100.000000 missing",
    )
    client = ScriptedClient(refusal)
    app = Host(client)
    async with app.run_test(size=(80, 24)) as pilot:
        d = OPENERS["resume"](app)
        await settle(pilot)
        d.action_confirm()
        await settle(pilot)
        text = str(d.query_one("#status", Static).render())
        assert "Not enough credit" in text and "$100.00 missing" in text  # in cents
        assert d.refusal is refusal
        assert not d.query_one("#confirm", Button).disabled  # may try again
        assert app.screen is d


async def test_409_budget_says_what_is_free():
    refusal = ApiRefusal(
        409, "conflict", "over the GPU budget of us-east: 8 of 32 GPUs free", "replicas"
    )
    client = ScriptedClient(refusal)
    app = Host(client)
    async with app.run_test(size=(80, 24)) as pilot:
        d = OPENERS["scale"](app)
        await settle(pilot)
        d.query_one("#replicas", Input).value = "9"
        d.action_confirm()
        await settle(pilot)
        text = str(d.query_one("#status", Static).render())
        assert "8 of 32 GPUs free" in text and "fewer replicas" in text
        assert d.field_error("replicas") == refusal.message
        assert d.query_one("#replicas").has_class("field-invalid")
        # Editing the field clears its mark.
        d.query_one("#replicas", Input).value = "4"
        await settle(pilot)
        assert d.field_error("replicas") is None


@pytest.mark.parametrize(
    "which,field,widget",
    [
        ("scale", "replicas", "replicas"),
        ("extend", "hours", "hours"),
        ("endpoint", "port", "port"),
        ("launch", "name", "name"),
        ("launch", "estimated_duration_hours", "hours"),
        ("launch", "expose.port", "port"),
        ("launch", "shared_filesystems", "shared_fs"),
    ],
)
async def test_422_marks_the_field_with_the_backends_message(which, field, widget):
    refusal = ApiRefusal(422, "invalid_request", f"{field} is out of range", field)
    client = ScriptedClient(refusal)
    app = Host(client)
    async with app.run_test(size=(80, 24)) as pilot:
        d = OPENERS[which](app)
        await settle(pilot)
        d.action_confirm()
        await settle(pilot)
        assert d.field_error(widget) == f"{field} is out of range"
        assert d.query_one(f"#{widget}").has_class("field-invalid")
        assert d.query_one(f"#{widget}-error").has_class("-shown")
        assert app.screen is d


async def test_terminate_needs_the_name_typed():
    client = ScriptedClient()
    app = Host(client)
    async with app.run_test(size=(80, 24)) as pilot:
        d = OPENERS["terminate"](app)
        await settle(pilot)
        assert d.query_one("#confirm", Button).disabled
        await pilot.press("w", "e", "enter")
        await settle(pilot)
        assert client.calls == []
        await pilot.press("b")
        await settle(pilot)
        assert not d.query_one("#confirm", Button).disabled
        await pilot.press("enter")
        await settle(pilot)
    assert [c[0] for c in client.calls] == ["terminate"]
    assert client.calls[0][2]


async def test_endpoint_copies_url_and_curl_line():
    client = ScriptedClient()
    app = Host(client)
    async with app.run_test(size=(80, 24)) as pilot:
        d = OPENERS["endpoint"](app)
        await settle(pilot)
        assert app.screen is d
        await pilot.click("#copy_url")
        await pilot.click("#copy_curl")
        await settle(pilot)
        assert app.copied == [
            CLUSTER["endpoint"]["url"],
            f'curl {CLUSTER["endpoint"]["url"]} -H "Authorization: Bearer eco_YOUR_KEY"',
        ]
        assert client.calls == []


async def test_endpoint_change_port_and_close():
    url = CLUSTER["endpoint"]["url"]
    client = ScriptedClient(EndpointOut(url=url, port=9000), None)
    app = Host(client)
    async with app.run_test(size=(80, 24)) as pilot:
        d = OPENERS["endpoint"](app)
        await settle(pilot)
        d.query_one("#port", Input).value = "9000"
        d.action_confirm()
        await settle(pilot)
        d2 = OPENERS["endpoint"](app)
        await settle(pilot)
        await pilot.click("#close")
        await settle(pilot)
        assert app.screen is not d2
    assert [(c[0], c[1]) for c in client.calls] == [
        ("set_endpoint", ("c1", 9000)),
        ("close_endpoint", ("c1",)),
    ]
    assert app.results == [EndpointOut(url=url, port=9000), {"closed": True}]


async def test_restart_one_replica_or_whole_cluster():
    client = ScriptedClient()
    app = Host(client)
    async with app.run_test(size=(80, 24)) as pilot:
        d = OPENERS["restart"](app)
        await settle(pilot)
        d.action_confirm()
        await settle(pilot)
        d = OPENERS["restart"](app)
        await settle(pilot)
        await pilot.click("#all")
        d.action_confirm()
        await settle(pilot)
    assert [c[1] for c in client.calls] == [("c1", "web-1"), ("c1", None)]


async def test_launch_sends_only_when_confirmed_with_every_field():
    client = ScriptedClient()
    app = Host(client)
    async with app.run_test(size=(80, 30)) as pilot:
        d = OPENERS["launch"](app)
        await settle(pilot)
        await pilot.press(*"inference-a")
        await pilot.press("enter")  # enter moves on, never sends
        await settle(pilot)
        assert client.calls == []
        d.query_one("#gpu_count").value = 4
        d.query_one("#replicas", Input).value = "3"
        d.query_one("#image", Input).value = "ghcr.io/acme/infer:1"
        d.query_one("#hours", Input).value = "10"
        d.query_one("#startup_command", Input).value = "python -m http.server $PORT"
        d.query_one("#shared_fs").select("weights")
        assert str(d.query_one("#expose").label).startswith("off:")
        await pilot.click("#expose")
        await settle(pilot)
        # The checkbox says its state in words, not by colour alone.
        assert str(d.query_one("#expose").label).startswith("on:")
        d.query_one("#port", Input).value = "8080"
        await settle(pilot)
        assert d.preview is not None and d.preview.hold == 300_000_000
        assert d.preview.hourly_rate == 30_000_000 and d.preview.left == 200_000_000
        assert client.calls == []
        await pilot.click("#confirm")
        await settle(pilot)
    ((name, (body,), key),) = client.calls
    assert name == "launch" and key
    assert body == {
        "name": "inference-a",
        "region": "us-east",
        "gpu_type": "H100-80GB",
        "gpu_count": 4,
        "replicas": 3,
        "image": "ghcr.io/acme/infer:1",
        "estimated_duration_hours": "10",
        "startup_command": "python -m http.server $PORT",
        "shared_filesystems": ["weights"],
        "expose": {"port": 8080},
    }


async def test_expiry_warning_offers_extend_in_one_key():
    client = ScriptedClient()
    app = Host(client)
    async with app.run_test(size=(80, 24)) as pilot:
        w = dialogs.open_expiry_warning(app, cluster(expires_at="2026-01-01T12:05:00Z"))
        await settle(pilot)
        assert "expires in 5m 00s" in str(w.query_one("#left", Static).render())
        app.clock.advance(60)
        await pilot.pause(1.1)
        assert "expires in 4m 00s" in str(w.query_one("#left", Static).render())
        await pilot.press("e")
        await settle(pilot)
        assert isinstance(app.screen, dialogs.ExtendDialog)
        assert app.screen.cluster.name == "web"
    assert client.calls == []
