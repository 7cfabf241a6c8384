"""Authentication: 401 on every authenticated route without valid credentials (before
the body is even looked at), API keys created, listed and revoked through the CLI, the
eco_session cookie, and the WebSocket refusal before the upgrade."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import websockets

OPEN = {("get", "/healthz"), ("get", "/openapi.json")}


def _routes(url: str) -> list[tuple[str, str]]:
    doc = httpx.get(url + "/openapi.json").json()
    out = []
    for path, ops in doc["paths"].items():
        for method in ops:
            if method in ("get", "post", "put", "delete", "patch"):
                out.append(
                    (
                        method,
                        path.replace("{id}", "demo")
                        .replace("{replica}", "demo-0")
                        .replace("{sid}", "s1")
                        .replace("{path}", "x"),
                    )
                )
    return out


def _is_401(r: httpx.Response) -> None:
    assert r.status_code == 401, (r.request.method, r.request.url, r.text)
    assert r.json() == {
        "error": {"code": "unauthenticated", "message": "missing, wrong or revoked credentials"}
    }


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer eco_wrong"},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Cookie": "eco_session=forged"},
    ],
)
def test_every_authenticated_route_is_401_without_valid_credentials(
    shared_ecolink_server: Any, headers: dict[str, str]
) -> None:
    url = shared_ecolink_server.url
    routes = _routes(url)
    assert len(routes) >= 20
    for method, path in routes:
        if (method, path) in OPEN:
            continue
        # A malformed body must not change the answer: credentials come first.
        r = httpx.request(
            method.upper(),
            url + path,
            headers={**headers, "content-type": "application/json"},
            content=b"{not json",
        )
        _is_401(r)
    for path in ("/nope", "/gpu-clusters/x/y/z"):
        _is_401(httpx.get(url + path, headers=headers))


def test_open_routes_need_no_credentials(shared_ecolink_server: Any) -> None:
    url = shared_ecolink_server.url
    assert httpx.get(url + "/healthz").status_code == 200
    assert httpx.get(url + "/openapi.json").status_code == 200
    # Only GET is open: a POST to /healthz still needs credentials.
    _is_401(httpx.post(url + "/healthz"))


def test_keys_revoked_through_the_cli_stop_working(ecolink_server: Any) -> None:
    key = ecolink_server.cli("keys", "create", "--account", "test").stdout.split()[-1]
    assert key.startswith("eco_")
    with ecolink_server.client(key) as c:
        assert c.get("/account").status_code == 200
        listing = ecolink_server.cli("keys", "list").stdout
        assert key[:12] in listing and key not in listing
        out = ecolink_server.cli("keys", "revoke", key[:12]).stdout
        assert "revoked" in out
        _is_401(c.get("/account"))
    bad = ecolink_server.cli("keys", "revoke", key[:12], check=False)
    assert bad.returncode == 1 and "no active key" in bad.stderr
    # The fixture's key still works.
    with ecolink_server.client() as c:
        assert c.get("/account").status_code == 200


def test_console_session_cookie(shared_ecolink_server: Any) -> None:
    url = shared_ecolink_server.url
    with shared_ecolink_server.client() as c:
        r = c.post("/auth/session")
        assert r.status_code == 201
        assert r.json()["account"]["name"] == "test"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("eco_session=")
        low = cookie.lower()
        assert "httponly" in low and "samesite=strict" in low and "max-age=43200" in low
        assert "secure" not in low.replace("samesite", "")  # plain HTTP on loopback
        token = r.cookies["eco_session"]
    # The cookie opens service URLs only (tests/security): never the API, and it
    # cannot mint another session or end itself without a key.
    browser = httpx.Client(base_url=url, cookies={"eco_session": token})
    _is_401(browser.get("/account"))
    _is_401(browser.post("/auth/session"))
    _is_401(browser.delete("/auth/session"))
    with shared_ecolink_server.client() as c:
        r = c.delete("/auth/session", headers={"Cookie": f"eco_session={token}"})
        assert r.status_code == 204
        assert "max-age=0" in r.headers["set-cookie"].lower()
        store = shared_ecolink_server.store()
        try:
            from ecocore.clock import SystemClock
            from ecolink.store import to_us

            assert store.account_for_session(token, to_us(SystemClock().now())) is None
        finally:
            store.close()
    browser.close()


def test_watch_refuses_bad_credentials_before_the_upgrade(shared_ecolink_server: Any) -> None:
    async def main() -> None:
        with pytest.raises(websockets.InvalidStatus) as exc:
            async with websockets.connect(shared_ecolink_server.ws_url("/watch")):
                pass
        assert exc.value.response.status_code == 401
        with pytest.raises(websockets.InvalidStatus) as exc2:
            async with websockets.connect(
                shared_ecolink_server.ws_url("/watch"),
                additional_headers={"Authorization": "Bearer eco_x"},
            ):
                pass
        assert exc2.value.response.status_code == 401

    asyncio.run(main())
