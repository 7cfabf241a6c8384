"""The REST client's plumbing: one bearer-auth place, every transport failure as
BackendUnreachable (also mid-stream), answers that are not JSON objects refused."""

from __future__ import annotations

import httpx
import pytest

from ecotui.client.rest import ApiRefusal, BackendUnreachable, EcoClient


def client_with(handler) -> EcoClient:
    return EcoClient("http://backend.test", "eco_k", transport=httpx.MockTransport(handler))


async def test_every_call_carries_the_bearer_key_and_the_websockets_get_the_same():
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        return httpx.Response(200, json={"id": "a", "name": "x", "balance": "1.000000",
                                         "held": "0.000000", "available": "1.000000"})

    async with client_with(handler) as client:
        account = await client.account()
        await client.scale("c1", 3)
        assert account["available"] == "1.000000"
        assert client.auth_headers() == {"Authorization": "Bearer eco_k"}
    assert seen == ["Bearer eco_k", "Bearer eco_k"]


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ReadError, httpx.WriteError,
                                   httpx.PoolTimeout, httpx.WriteTimeout, httpx.ReadTimeout,
                                   httpx.RemoteProtocolError, httpx.CloseError, httpx.ProxyError])
async def test_any_transport_error_is_backend_unreachable(error):
    def handler(request: httpx.Request) -> httpx.Response:
        raise error("boom", request=request)

    async with client_with(handler) as client:
        with pytest.raises(BackendUnreachable, match="cannot reach the backend at http://backend.test"):
            await client.clusters()


class _BreaksMidStream(httpx.AsyncByteStream):
    async def __aiter__(self):
        yield b"line 1\n"
        raise httpx.ReadError("connection reset")


async def test_a_log_stream_broken_mid_way_is_backend_unreachable():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_BreaksMidStream())

    got: list[bytes] = []
    async with client_with(handler) as client:
        with pytest.raises(BackendUnreachable):
            async for chunk in client.follow_logs("c1", "web-0"):
                got.append(chunk)
    assert got == [b"line 1\n"]


async def test_an_answer_that_is_not_a_json_object_is_refused_in_words():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=["not", "an", "object"])

    async with client_with(handler) as client:
        with pytest.raises(ApiRefusal, match="not a JSON object"):
            await client.cluster("c1")


async def test_a_list_answer_without_its_list_is_refused():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"something": []})

    async with client_with(handler) as client:
        with pytest.raises(ApiRefusal, match="no 'clusters' list"):
            await client.clusters()
