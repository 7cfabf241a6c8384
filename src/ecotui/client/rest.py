"""REST client for the ecolink API (api.md), used by the dashboard and the CLI.

Every JSON answer comes back as its `ecocore.wire` model, the ones the backend builds its
answers from (an answer that is not one is an `ApiRefusal` saying where it is not).

Every mutating call sends an `Idempotency-Key` (a fresh one unless the caller
passes its own, so a retry of the same action can reuse it). Non-2xx answers
raise `ApiRefusal` carrying api.md's error form; a backend that cannot be
reached raises `BackendUnreachable`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from ecocore.wire import (
    AccountOut,
    CatalogOut,
    ClusterOut,
    EndpointOut,
    EventOut,
    FilesystemOut,
    Health,
    LedgerEntryOut,
    MetricsOut,
    ReplicaOut,
    ReplicaStateOut,
    SessionOut,
)
from ecocore.wire_health import FleetGpusOut
from ecotui.client.auth import BearerAuth

_M = TypeVar("_M", bound=BaseModel)


class ClientError(Exception):
    pass


class BackendUnreachable(ClientError):
    """The backend could not be reached (connection refused, a timeout, a broken
    connection): any `httpx.TransportError`."""


class ApiRefusal(ClientError):
    """The backend answered with its error form."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def __str__(self) -> str:
        where = f" ({self.field})" if self.field else ""
        return f"{self.message}{where}"


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


class EcoClient:
    """Async client for one backend with one API key."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self._auth = BearerAuth(api_key)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            auth=self._auth,
            timeout=timeout,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> EcoClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- plumbing ---------------------------------------------------------
    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        headers: dict[str, str] = {}
        if method in ("POST", "PUT", "DELETE"):
            headers["Idempotency-Key"] = idempotency_key or new_idempotency_key()
        try:
            resp = await self._http.request(method, path, json=json, params=params, headers=headers)
        except httpx.TransportError as exc:  # timeouts, network and protocol errors alike
            raise BackendUnreachable(f"cannot reach the backend at {self.base_url}: {exc}") from exc
        if resp.status_code >= 400:
            raise _refusal(resp)
        return resp

    async def _json(self, method: str, path: str, **kw: Any) -> dict[str, Any] | None:
        """The answer's JSON object (None for an empty answer)."""
        resp = await self.request(method, path, **kw)
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ApiRefusal(
                resp.status_code,
                "error",
                f"the backend's answer to {method} {path} is not a JSON object",
            )
        return data

    async def _object(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        data = await self._json(method, path, **kw)
        if data is None:
            raise ApiRefusal(204, "error", f"the backend's answer to {method} {path} is empty")
        return data

    async def _model(self, model: type[_M], method: str, path: str, **kw: Any) -> _M:
        """The answer parsed as its wire model (an `ApiRefusal` when it is not one)."""
        return _parse(model, await self._object(method, path, **kw), method, path)

    async def _models(
        self, model: type[_M], key: str, method: str, path: str, **kw: Any
    ) -> list[_M]:
        """The list under `key` of the answer, each item parsed as its wire model."""
        return [
            _parse(model, item, method, path) for item in await self._list(key, method, path, **kw)
        ]

    async def _list(self, key: str, method: str, path: str, **kw: Any) -> list[dict[str, Any]]:
        """The list under `key` of the answer (`{"clusters": [...]}`)."""
        items = (await self._object(method, path, **kw)).get(key)
        if not isinstance(items, list):
            raise ApiRefusal(
                200, "error", f"the backend's answer to {method} {path} has no {key!r} list"
            )
        return items

    # -- open routes ------------------------------------------------------
    async def healthz(self) -> Health:
        return await self._model(Health, "GET", "/healthz")

    # -- catalog, account, ledger ----------------------------------------
    async def catalog(self) -> CatalogOut:
        return await self._model(CatalogOut, "GET", "/catalog")

    async def filesystems(self) -> list[FilesystemOut]:
        return await self._models(FilesystemOut, "filesystems", "GET", "/filesystems")

    async def account(self) -> AccountOut:
        return await self._model(AccountOut, "GET", "/account")

    async def ledger(
        self, *, cluster_id: str | None = None, limit: int | None = None, before: int | None = None
    ) -> list[LedgerEntryOut]:
        params = {
            k: v
            for k, v in {"cluster_id": cluster_id, "limit": limit, "before": before}.items()
            if v is not None
        }
        return await self._models(
            LedgerEntryOut, "entries", "GET", "/account/ledger", params=params
        )

    async def ledger_csv(self, *, cluster_id: str | None = None, limit: int | None = None) -> str:
        params: dict[str, Any] = {"format": "csv"}
        if cluster_id:
            params["cluster_id"] = cluster_id
        if limit:
            params["limit"] = limit
        return (await self.request("GET", "/account/ledger", params=params)).text

    # -- clusters ---------------------------------------------------------
    async def clusters(self, status: str | None = None) -> list[ClusterOut]:
        params = {"status": status} if status else None
        return await self._models(ClusterOut, "clusters", "GET", "/gpu-clusters", params=params)

    async def cluster(self, ref: str) -> ClusterOut:
        return await self._model(ClusterOut, "GET", f"/gpu-clusters/{ref}")

    async def launch(
        self, body: dict[str, Any], *, idempotency_key: str | None = None
    ) -> ClusterOut:
        return await self._model(
            ClusterOut, "POST", "/gpu-clusters", json=body, idempotency_key=idempotency_key
        )

    async def scale(
        self, ref: str, replicas: int, *, idempotency_key: str | None = None
    ) -> ClusterOut:
        return await self._model(
            ClusterOut,
            "POST",
            f"/gpu-clusters/{ref}/scale",
            json={"replicas": replicas},
            idempotency_key=idempotency_key,
        )

    async def extend(
        self, ref: str, hours: str, *, idempotency_key: str | None = None
    ) -> ClusterOut:
        return await self._model(
            ClusterOut,
            "POST",
            f"/gpu-clusters/{ref}/extend",
            json={"hours": hours},
            idempotency_key=idempotency_key,
        )

    async def stop(self, ref: str, *, idempotency_key: str | None = None) -> ClusterOut:
        return await self._model(
            ClusterOut, "POST", f"/gpu-clusters/{ref}/stop", idempotency_key=idempotency_key
        )

    async def resume(self, ref: str, *, idempotency_key: str | None = None) -> ClusterOut:
        return await self._model(
            ClusterOut, "POST", f"/gpu-clusters/{ref}/resume", idempotency_key=idempotency_key
        )

    async def restart(
        self, ref: str, replica: str | None = None, *, idempotency_key: str | None = None
    ) -> ClusterOut | ReplicaStateOut:
        """The cluster (a rolling restart of every replica) or the one replica restarted."""
        if replica:
            return await self._model(
                ReplicaStateOut,
                "POST",
                f"/gpu-clusters/{ref}/replicas/{replica}/restart",
                idempotency_key=idempotency_key,
            )
        return await self._model(
            ClusterOut, "POST", f"/gpu-clusters/{ref}/restart", idempotency_key=idempotency_key
        )

    async def terminate(self, ref: str, *, idempotency_key: str | None = None) -> ClusterOut:
        return await self._model(
            ClusterOut, "DELETE", f"/gpu-clusters/{ref}", idempotency_key=idempotency_key
        )

    async def set_endpoint(
        self, ref: str, port: int, *, idempotency_key: str | None = None
    ) -> EndpointOut:
        return await self._model(
            EndpointOut,
            "PUT",
            f"/gpu-clusters/{ref}/endpoint",
            json={"port": port},
            idempotency_key=idempotency_key,
        )

    async def close_endpoint(self, ref: str, *, idempotency_key: str | None = None) -> None:
        await self._json("DELETE", f"/gpu-clusters/{ref}/endpoint", idempotency_key=idempotency_key)

    async def replicas(self, ref: str) -> list[ReplicaOut]:
        return await self._models(ReplicaOut, "replicas", "GET", f"/gpu-clusters/{ref}/replicas")

    async def fleet_gpus(
        self, *, unhealthy: bool = False, brief: bool = False, since: str | None = None
    ) -> FleetGpusOut:
        """Every GPU of the account's live clusters with its health (`GET /gpus`); `brief`:
        the verdict and reason only; `since`: what changed since that answer's version."""
        params: dict[str, str] = {
            k: "true" for k, on in (("unhealthy", unhealthy), ("brief", brief)) if on
        }
        if since:
            params["since"] = since
        return await self._model(FleetGpusOut, "GET", "/gpus", params=params or None)

    async def metrics(self, ref: str, since: str | None = None) -> MetricsOut:
        params = {"since": since} if since else None
        return await self._model(MetricsOut, "GET", f"/gpu-clusters/{ref}/metrics", params=params)

    async def events(self, ref: str) -> list[EventOut]:
        return await self._models(EventOut, "events", "GET", f"/gpu-clusters/{ref}/events")

    async def logs(
        self, ref: str, replica: str, *, tail: int | None = None, previous: bool = False
    ) -> str:
        params: dict[str, Any] = {}
        if tail is not None:
            params["tail"] = tail
        if previous:
            params["previous"] = 1
        return (
            await self.request("GET", f"/gpu-clusters/{ref}/replicas/{replica}/logs", params=params)
        ).text

    async def follow_logs(
        self, ref: str, replica: str, *, tail: int | None = None, previous: bool = False
    ) -> AsyncIterator[bytes]:
        params: dict[str, Any] = {"follow": 1}
        if tail is not None:
            params["tail"] = tail
        if previous:
            params["previous"] = 1
        try:
            async with self._http.stream(
                "GET", f"/gpu-clusters/{ref}/replicas/{replica}/logs", params=params, timeout=None
            ) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise _refusal(resp)
                async for chunk in resp.aiter_bytes():
                    yield chunk
        except httpx.TransportError as exc:  # also a read error mid-stream
            raise BackendUnreachable(f"cannot reach the backend at {self.base_url}: {exc}") from exc

    # -- sessions ---------------------------------------------------------
    async def create_session(
        self,
        ref: str,
        replica: str,
        *,
        command: list[str] | str | None = None,
        tty: bool = True,
        width: int | None = None,
        height: int | None = None,
    ) -> SessionOut:
        body: dict[str, Any] = {"tty": tty}
        if command:
            body["command"] = command
        if width and height:  # the terminal's size from the start (no resize race)
            body["width"] = int(width)
            body["height"] = int(height)
        return await self._model(
            SessionOut, "POST", f"/gpu-clusters/{ref}/replicas/{replica}/sessions", json=body
        )

    async def sessions(self, ref: str) -> list[SessionOut]:
        return await self._models(SessionOut, "sessions", "GET", f"/gpu-clusters/{ref}/sessions")

    async def end_session(self, ref: str, sid: str) -> None:
        await self._json("DELETE", f"/gpu-clusters/{ref}/sessions/{sid}")

    # -- websockets -------------------------------------------------------
    def ws_url(self, path: str) -> str:
        if self.base_url.startswith("https://"):
            return "wss://" + self.base_url[len("https://") :] + path
        return "ws://" + self.base_url[len("http://") :] + path

    def auth_headers(self) -> dict[str, str]:
        """The credentials for a WebSocket handshake (the same as every REST call's)."""
        return self._auth.headers()


def _parse(model: type[_M], data: object, method: str, path: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the answer"
        raise ApiRefusal(
            200,
            "error",
            f"the backend's answer to {method} {path} is not "
            f"a {model.__name__} ({where}: {first['msg']})",
        ) from exc


def _refusal(resp: httpx.Response) -> ApiRefusal:
    try:
        err = resp.json()["error"]
        return ApiRefusal(
            resp.status_code, err.get("code", "error"), err.get("message", ""), err.get("field")
        )
    except Exception:
        return ApiRefusal(resp.status_code, "error", resp.text[:200] or resp.reason_phrase)


def wire_json(answer: BaseModel) -> dict[str, Any]:
    """An answer model as the API sent it: the backend serialises its answers through the
    same models with these options, so this is its JSON (None fields and money strings
    included)."""
    return answer.model_dump(mode="json")


# A cluster as the REST client answers it, or as the dashboard's model keeps it (the
# watch feed's JSON object of the same cluster).
ClusterArg = ClusterOut | Mapping[str, Any]


def as_cluster(cluster: ClusterArg) -> ClusterOut:
    """The cluster as its wire model: an answer as it is, a record of the watch feed
    parsed (pydantic's ValidationError when it is no cluster of api.md)."""
    return cluster if isinstance(cluster, ClusterOut) else ClusterOut.model_validate(cluster)
