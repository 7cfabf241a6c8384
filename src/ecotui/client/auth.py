"""The one place credentials are put on a request: a bearer API key."""

from __future__ import annotations

from collections.abc import Generator

import httpx


def bearer_headers(api_key: str) -> dict[str, str]:
    """The header every REST call and WebSocket handshake carries."""
    return {"Authorization": f"Bearer {api_key}"}


class BearerAuth(httpx.Auth):
    """httpx's auth flow for an ecolink API key."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key

    def headers(self) -> dict[str, str]:
        return bearer_headers(self.api_key)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers.update(self.headers())
        yield request
