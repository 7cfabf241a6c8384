"""The REST client's plumbing: one bearer-auth place, every transport failure as
BackendUnreachable (also mid-stream), answers that are not JSON objects refused, and
every answer returned as its `ecocore.wire` model."""

from __future__ import annotations

import json

import httpx
import pytest

from ecocore.wire import (
    AccountOut,
    CatalogOut,
    ClusterOut,
    EndpointOut,
    EventOut,
    FilesystemOut,
    GpuOut,
    GpuTypeOut,
    Health,
    LedgerEntryOut,
    MetricsGpuOut,
    MetricsOut,
    MetricsReplicaOut,
    RegionOut,
    ReplicaOut,
    ReplicaStateOut,
    SessionOut,
)
from ecocore.wire_health import FleetGpuOut, FleetGpusOut, HealthSummaryOut
from ecotui.client.rest import ApiRefusal, BackendUnreachable, EcoClient, wire_json
from ecotui.testing import GeneratedFleet, fleet_transport

# An answer as the backend sends it: every field of ClusterOut, None fields, money strings,
# and a field this client does not know yet.
CLUSTER = {
    "id": "gc_1",
    "name": "web",
    "region": "us-east",
    "gpu_type": "H100",
    "gpu_count": 8,
    "replicas": 2,
    "image": "nginx:1",
    "startup_command": None,
    "shared_filesystems": [],
    "termination_grace_seconds": 30,
    "status": "running",
    "status_reason": None,
    "stale": False,
    "created_at": "2026-01-01T00:00:00Z",
    "started_at": None,
    "expires_at": "2026-01-01T10:00:00Z",
    "estimated_duration_hours": 10.0,
    "hourly_rate": "47.840000",
    "burn_rate": "47.840000",
    "cost": {
        "hold": "478.400000",
        "spent": "0.000000",
        "hold_remaining": "478.400000",
        "projected_total": "478.400000",
    },
    "endpoint": {"url": "http://web.test", "port": 8000},
    "ready_replicas": 1,
    "replica_states": [
        {
            "name": "web-0",
            "index": 0,
            "phase": "Running",
            "ready": True,
            "restarts": 0,
            "reason": None,
            "node": None,
        }
    ],
    "gpu_summary": {
        "health": None,
        "gpus": 16,
        "mean_utilization": 0.5,
        "idle_gpus": 0,
        "telemetry": "simulated",
    },
    "traffic": None,
    "added_later": {"x": 1},
}


def client_with(handler) -> EcoClient:
    return EcoClient("http://backend.test", "eco_k", transport=httpx.MockTransport(handler))


async def test_every_call_carries_the_bearer_key_and_the_websockets_get_the_same():
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        if request.url.path == "/account":
            return httpx.Response(
                200,
                json={
                    "id": "a",
                    "name": "x",
                    "balance": "1.000000",
                    "held": "0.000000",
                    "available": "1.000000",
                },
            )
        return httpx.Response(200, json=CLUSTER)

    async with client_with(handler) as client:
        account = await client.account()
        await client.scale("c1", 3)
        assert account.available == "1.000000"
        assert client.auth_headers() == {"Authorization": "Bearer eco_k"}
    assert seen == ["Bearer eco_k", "Bearer eco_k"]


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError,
        httpx.ReadError,
        httpx.WriteError,
        httpx.PoolTimeout,
        httpx.WriteTimeout,
        httpx.ReadTimeout,
        httpx.RemoteProtocolError,
        httpx.CloseError,
        httpx.ProxyError,
    ],
)
async def test_any_transport_error_is_backend_unreachable(error):
    def handler(request: httpx.Request) -> httpx.Response:
        raise error("boom", request=request)

    async with client_with(handler) as client:
        with pytest.raises(
            BackendUnreachable, match="cannot reach the backend at http://backend.test"
        ):
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


async def test_answers_come_back_as_their_wire_models():
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/gpu-clusters" and request.method == "GET":
            return httpx.Response(200, json={"clusters": [CLUSTER, CLUSTER]})
        if path.endswith("/endpoint"):
            return httpx.Response(200, json={"url": "http://web.test", "port": 9000})
        if "/replicas/" in path:
            return httpx.Response(200, json=CLUSTER["replica_states"][0])
        return httpx.Response(200, json=CLUSTER)

    async with client_with(handler) as client:
        listed = await client.clusters()
        assert [type(c) for c in listed] == [ClusterOut, ClusterOut]
        for call in (
            client.cluster("web"),
            client.launch({}),
            client.scale("web", 3),
            client.extend("web", "1"),
            client.stop("web"),
            client.resume("web"),
            client.restart("web"),
            client.terminate("web"),
        ):
            c = await call
            assert isinstance(c, ClusterOut)
            assert (c.name, c.cost.hold, c.replica_states[0].ready) == ("web", "478.400000", True)
        one = await client.restart("web", "web-0")
        assert isinstance(one, ReplicaStateOut) and one.name == "web-0"
        ep = await client.set_endpoint("web", 9000)
        assert isinstance(ep, EndpointOut) and ep.port == 9000


async def test_wire_json_is_the_answer_as_the_backend_sent_it():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=CLUSTER)

    async with client_with(handler) as client:
        c = await client.cluster("web")
    assert json.dumps(wire_json(c), indent=2) == json.dumps(CLUSTER, indent=2)
    account = {
        "id": "a",
        "name": "x",
        "balance": "1.000000",
        "held": "0.000000",
        "available": "1.000000",
    }
    assert wire_json(AccountOut.model_validate(account)) == account


async def test_an_answer_that_is_not_its_model_is_refused_in_words():
    def handler(request: httpx.Request) -> httpx.Response:
        broken = dict(CLUSTER, cost={"hold": "1.000000"})
        return httpx.Response(
            200, json={"clusters": [broken]} if request.url.path.endswith("clusters") else broken
        )

    async with client_with(handler) as client:
        with pytest.raises(
            ApiRefusal,
            match=r"GET /gpu-clusters/web is not a ClusterOut "
            r"\(cost\.spent: Field required\)",
        ):
            await client.cluster("web")
        with pytest.raises(ApiRefusal, match="not a ClusterOut"):
            await client.clusters()


async def test_ledger_entries_come_back_as_models_and_dump_as_sent():
    entry = {
        "id": 7,
        "at": "2026-01-01T00:00:00Z",
        "cluster_id": None,
        "kind": "credit",
        "amount": "100.000000",
        "balance_after": "100.000000",
        "held_after": "0.000000",
        "memo": "welcome",
    }

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["limit"] == "5"
        return httpx.Response(200, json={"entries": [entry]})

    async with client_with(handler) as client:
        (got,) = await client.ledger(limit=5)
    assert isinstance(got, LedgerEntryOut) and (got.id, got.kind) == (7, "credit")
    assert wire_json(got) == entry


SESSION = {
    "id": "ses_1",
    "cluster_id": "gc_00000",
    "replica": "web-0",
    "command": ["bash"],
    "tty": True,
    "started_at": "2026-01-01T00:00:00.000000Z",
    "exited": False,
    "exit_code": None,
    "ended_reason": None,
    "attached": 0,
}


async def test_every_read_comes_back_as_its_wire_model():
    fleet = GeneratedFleet(3, replicas=2, gpus=2)
    cid = next(iter(fleet.clusters))
    answers = fleet_transport(fleet)

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/sessions"):
            if request.method == "POST":
                assert json.loads(request.content) == {"tty": True, "width": 80, "height": 24}
                return httpx.Response(201, json=SESSION)
            return httpx.Response(200, json={"sessions": [SESSION]})
        return await answers.handle_async_request(request)

    client = EcoClient("http://backend.test", "eco_k", transport=httpx.MockTransport(handler))
    async with client:
        assert isinstance(await client.healthz(), Health)
        catalog = await client.catalog()
        assert isinstance(catalog, CatalogOut)
        assert isinstance(catalog.regions[0], RegionOut)
        assert isinstance(catalog.regions[0].gpu_types[0], GpuTypeOut)
        (fs,) = await client.filesystems()
        assert isinstance(fs, FilesystemOut) and fs.name == "models"
        replicas = await client.replicas(cid)
        assert [type(r) for r in replicas] == [ReplicaOut, ReplicaOut]
        assert isinstance(replicas[0].gpus[0], GpuOut)
        metrics = await client.metrics(cid)
        assert isinstance(metrics, MetricsOut) and isinstance(
            metrics.replicas[0], MetricsReplicaOut
        )
        assert isinstance(metrics.replicas[0].gpus[0], MetricsGpuOut)
        events = await client.events(cid)
        assert events and all(isinstance(e, EventOut) for e in events)
        whole = await client.fleet_gpus(brief=True)
        assert isinstance(whole, FleetGpusOut) and whole.since is None
        assert whole.gpus and all(isinstance(g, FleetGpuOut) for g in whole.gpus)
        assert isinstance(whole.health, HealthSummaryOut)
        later = await client.fleet_gpus(brief=True, since=whole.version)
        assert isinstance(later, FleetGpusOut) and later.since == whole.version
        s = await client.create_session(cid, "web-0", width=80, height=24)
        assert isinstance(s, SessionOut) and (s.id, s.command, s.exit_code) == (
            "ses_1",
            ["bash"],
            None,
        )
        (listed,) = await client.sessions(cid)
        assert isinstance(listed, SessionOut) and listed == s
