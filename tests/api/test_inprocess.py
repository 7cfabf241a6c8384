"""The API app built in this process by the composition root `ecolink serve` uses
(`build_context`), over `httpx.ASGITransport`: credentials, console sessions, and
api.md's order of checks (an unknown cluster is 404 before anything about the query
or body is said)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ecolink.store import to_us
from ecolink.wiring import ServeConfig, SetupError, build_context
from support.inprocess import inprocess_api


async def test_credentials_are_checked_and_the_account_is_answered(tmp_path: Path) -> None:
    async with inprocess_api(tmp_path) as api:
        r = await api.client.get("/account")
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthenticated"
        key = api.new_key("alice")
        r = await api.client.get("/account", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
        assert r.json()["name"] == "alice"
        r = await api.client.get("/healthz")
        assert r.status_code == 200 and r.json()["status"] == "ok"


async def test_a_console_session_is_started_and_ended(tmp_path: Path) -> None:
    async with inprocess_api(tmp_path) as api:
        key = api.new_key("alice")
        auth = {"Authorization": f"Bearer {key}"}
        r = await api.client.post("/auth/session", headers=auth)
        assert r.status_code == 201
        token = r.cookies["eco_session"]
        now = to_us(api.ctx.clock.now())
        owner = api.ctx.store.account_for_session(token, now)
        assert owner is not None and owner.name == "alice"
        # Another account's key does not end alice's session.
        other = api.new_key("bob")
        r = await api.client.delete(
            "/auth/session",
            headers={"Authorization": f"Bearer {other}", "Cookie": f"eco_session={token}"},
        )
        assert r.status_code == 204
        assert api.ctx.store.account_for_session(token, now) is not None
        r = await api.client.delete(
            "/auth/session", headers={**auth, "Cookie": f"eco_session={token}"}
        )
        assert r.status_code == 204
        assert api.ctx.store.account_for_session(token, now) is None


async def test_an_unknown_cluster_is_404_before_a_bad_query_or_body(tmp_path: Path) -> None:
    async with inprocess_api(tmp_path) as api:
        auth = {"Authorization": f"Bearer {api.new_key()}"}
        cases = [
            ("GET", "/gpu-clusters/gc_nope/replicas/r-0/logs?tail=-1", None),
            ("GET", "/gpu-clusters/gc_nope/replicas/r-0/portforward?port=0", None),
            ("POST", "/gpu-clusters/gc_nope/replicas/r-0/sessions", b"not json"),
            ("GET", "/gpu-clusters/gc_nope/sessions", None),
            ("DELETE", "/gpu-clusters/gc_nope/sessions/ses_1", None),
        ]
        for method, path, body in cases:
            r = await api.client.request(method, path, headers=auth, content=body)
            assert r.status_code == 404, (method, path, r.text)
            assert r.json()["error"]["code"] == "not_found"


async def test_the_context_has_its_parts_typed_and_shared(tmp_path: Path) -> None:
    async with inprocess_api(tmp_path, public_url="https://gpu.example/") as api:
        ctx = api.ctx
        assert ctx.public_url == "https://gpu.example"
        assert ctx.telemetry is not None and ctx.sessions is not None
        assert ctx.streams.sessions is ctx.sessions
        assert ctx.hub in ctx.service.observers
        assert ctx.stop_replicas_on_shutdown
        assert ctx.runtime.info.name == "local"


def test_the_config_is_frozen_and_a_bad_catalog_is_refused(tmp_path: Path) -> None:
    config = ServeConfig(state_dir=tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.tls = True  # type: ignore[misc]
    bad = tmp_path / "catalog.toml"
    bad.write_text("this is [not toml")
    with pytest.raises(SetupError):
        build_context(ServeConfig(state_dir=tmp_path, catalog_path=str(bad)))
