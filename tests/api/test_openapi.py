"""/openapi.json describes every HTTP route, its request body and its error answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from support.inprocess import inprocess_api

# api.md's routes that this backend serves itself, with the refusals each may give.
EXPECTED: dict[tuple[str, str], set[int]] = {
    ("post", "/auth/session"): {401},
    ("delete", "/auth/session"): {401},
    ("get", "/catalog"): {401},
    ("get", "/filesystems"): {401},
    ("get", "/account"): {401},
    ("get", "/account/ledger"): {401, 404, 422},
    ("post", "/gpu-clusters"): {400, 401, 402, 409, 413, 422, 503},
    ("get", "/gpu-clusters"): {401, 422},
    ("get", "/gpu-clusters/{id}"): {401, 404},
    ("post", "/gpu-clusters/{id}/scale"): {400, 401, 402, 404, 409, 413, 422, 503},
    ("post", "/gpu-clusters/{id}/extend"): {400, 401, 402, 404, 409, 413, 422, 503},
    ("post", "/gpu-clusters/{id}/stop"): {401, 404, 409, 422, 503},
    ("post", "/gpu-clusters/{id}/resume"): {401, 402, 404, 409, 422, 503},
    ("post", "/gpu-clusters/{id}/restart"): {401, 404, 409, 422, 503},
    ("delete", "/gpu-clusters/{id}"): {401, 404, 409, 422, 503},
    ("put", "/gpu-clusters/{id}/endpoint"): {400, 401, 404, 409, 413, 422, 503},
    ("delete", "/gpu-clusters/{id}/endpoint"): {401, 404, 409, 422, 503},
    ("get", "/gpu-clusters/{id}/replicas"): {401, 404},
    ("post", "/gpu-clusters/{id}/replicas/{replica}/restart"): {401, 404, 409, 422, 503},
    ("get", "/gpu-clusters/{id}/metrics"): {401, 404, 422},
    ("get", "/gpu-clusters/{id}/events"): {401, 404},
}
BODIES = {
    ("post", "/gpu-clusters"): "LaunchIn",
    ("post", "/gpu-clusters/{id}/scale"): "ScaleIn",
    ("post", "/gpu-clusters/{id}/extend"): "ExtendIn",
    ("put", "/gpu-clusters/{id}/endpoint"): "EndpointIn",
}


@pytest.fixture(scope="module")
def doc(shared_ecolink_server: Any) -> dict[str, Any]:
    r = httpx.get(shared_ecolink_server.url + "/openapi.json")
    assert r.status_code == 200
    data: dict[str, Any] = r.json()
    return data


async def test_every_route_of_the_app_is_documented(tmp_path: Path) -> None:
    # The app as `ecolink serve` builds it, in this process.
    async with inprocess_api(tmp_path) as api:
        r = await api.client.get("/openapi.json")
        assert r.status_code == 200
        doc = r.json()
        for route in api.app.routes:
            if isinstance(route, APIRoute) and route.include_in_schema:
                for method in route.methods - {"HEAD"}:
                    assert method.lower() in doc["paths"][route.path], (method, route.path)


def test_every_api_md_route_is_described_with_its_refusals(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    for (method, path), statuses in EXPECTED.items():
        op = doc["paths"][path][method]
        documented = {int(s) for s in op["responses"] if s[0] in "45"}
        assert documented == statuses, (method, path, documented)
        for s in statuses:
            ref = op["responses"][str(s)]["content"]["application/json"]["schema"]["$ref"]
            assert ref == "#/components/schemas/ErrorBody"
        ok = [s for s in op["responses"] if s.startswith("2")]
        assert len(ok) == 1, (method, path)
        if ok[0] != "204":
            content = op["responses"][ok[0]]["content"]
            assert "application/json" in content
            ref = content["application/json"]["schema"].get("$ref", "")
            assert ref.split("/")[-1] in schemas, (method, path)
        assert op.get("security") != [], (method, path)
        if method in ("post", "put", "delete"):
            names = [p["name"] for p in op.get("parameters", [])]
            assert "Idempotency-Key" in names or path.startswith("/auth"), (method, path)
    # No stock FastAPI validation schema: every 422 is the error form.
    assert "HTTPValidationError" not in schemas


def test_request_bodies_are_described(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    for (method, path), model in BODIES.items():
        body = doc["paths"][path][method]["requestBody"]
        assert body["required"] is True
        ref = body["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{model}"
        assert model in schemas
    launch = schemas["LaunchIn"]
    assert set(launch["required"]) == {
        "name",
        "region",
        "gpu_type",
        "gpu_count",
        "replicas",
        "image",
        "estimated_duration_hours",
    }
    assert launch["additionalProperties"] is False
    assert launch["properties"]["replicas"]["minimum"] == 2
    assert "pattern" in launch["properties"]["name"]
    expose = launch["properties"]["expose"]
    refs = [x.get("$ref") for x in expose.get("anyOf", [])]
    assert "#/components/schemas/ExposeIn" in refs and "ExposeIn" in schemas


def test_error_form_and_security_are_declared(doc: dict[str, Any]) -> None:
    err = doc["components"]["schemas"]["ErrorBody"]
    assert err["required"] == ["error"]
    detail = doc["components"]["schemas"]["ErrorDetail"]
    assert {"code", "message"} <= set(detail["required"])
    assert {"apiKey", "consoleSession"} <= set(doc["components"]["securitySchemes"])
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    ledger = doc["paths"]["/account/ledger"]["get"]
    assert "text/csv" in ledger["responses"]["200"]["content"]
    assert {p["name"] for p in ledger["parameters"]} == {"cluster_id", "limit", "before", "format"}
