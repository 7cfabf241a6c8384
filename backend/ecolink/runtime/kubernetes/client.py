"""Connecting to a Kubernetes API server, as kubectl does.

Finds the kubeconfig (`KUBECONFIG`, which may list several files, then
`~/.kube/config`, then the in-cluster service account), builds the official
client's `ApiClient` for CRUD and watches, and derives what a raw WebSocket
connection to the same server needs (URL, TLS context with the CA and client
certificates, bearer token) for exec and port-forward. `KubeApi` runs the
client's blocking calls in threads and sorts their failures into the runtime's
kinds: unreachable (`RuntimeUnavailable`) or refused (`RuntimeRefused`).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from ecolink.runtime.base import RuntimeRefused, RuntimeUnavailable

Obj = dict[str, Any]

REQUEST_TIMEOUT = (5, 30)
MERGE_PATCH = "application/merge-patch+json"

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass
class KubeTarget:
    """One API server and the credentials to reach it."""

    api_client: k8s_client.ApiClient
    configuration: k8s_client.Configuration
    namespace: str
    context: str | None
    source: str  # "kubeconfig:<path>" or "in-cluster"

    @property
    def server(self) -> str:
        return str(self.configuration.host).rstrip("/")

    def ws_url(self, path: str) -> str:
        parts = urlsplit(self.server)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}{path}"

    def ssl_context(self) -> ssl.SSLContext | None:
        cfg = self.configuration
        if not self.server.startswith("https"):
            return None
        if cfg.verify_ssl:
            ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
            if getattr(cfg, "tls_server_name", None):
                # The server name is checked by websockets' server_hostname.
                pass
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file or None)
        return ctx

    def server_hostname(self) -> str | None:
        name = getattr(self.configuration, "tls_server_name", None)
        return str(name) if name else None

    def auth_headers(self) -> dict[str, str]:
        """The Authorization header, refreshed first where the kubeconfig
        uses an exec plugin or another refreshing provider."""
        cfg = self.configuration
        token = cfg.get_api_key_with_prefix("BearerToken", alias="authorization")
        headers: dict[str, str] = {}
        if token:
            headers["Authorization"] = token if " " in token else f"Bearer {token}"
        elif cfg.username and cfg.password:
            basic = cfg.get_basic_auth_token()
            if basic:
                headers["Authorization"] = basic
        return headers


def _kubeconfig_paths() -> list[str]:
    env = os.environ.get("KUBECONFIG")
    if env:
        return [p for p in env.split(os.pathsep) if p]
    return [os.path.expanduser("~/.kube/config")]


def load_target(namespace: str | None = None, context: str | None = None) -> KubeTarget:
    """Load credentials the way kubectl finds them; raise RuntimeUnavailable
    (with what was tried) when there are none."""
    cfg = k8s_client.Configuration()
    paths = [p for p in _kubeconfig_paths() if os.path.exists(p)]
    ns = namespace
    source: str
    if paths:
        config_file = os.pathsep.join(paths)
        try:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=config_file,
                context=context,
                client_configuration=cfg,
                persist_config=False,
            )
        except (ConfigException, OSError, ValueError) as e:
            raise RuntimeUnavailable(f"cannot load kubeconfig {config_file}: {e}") from e
        if ns is None:
            try:
                contexts, active = k8s_config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                    config_file=config_file
                )
                chosen = active
                if context:
                    chosen = next((c for c in contexts if c["name"] == context), active)
                ns = (chosen or {}).get("context", {}).get("namespace")
            except (ConfigException, OSError):
                ns = None
        source = f"kubeconfig:{config_file}"
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=cfg
            )
        except ConfigException as e:
            raise RuntimeUnavailable(f"in-cluster configuration: {e}") from e
        if ns is None and SERVICE_ACCOUNT_NAMESPACE.exists():
            ns = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        source = "in-cluster"
    else:
        raise RuntimeUnavailable(
            "no Kubernetes credentials: set KUBECONFIG, create ~/.kube/config, "
            "or run inside a cluster"
        )
    # Fail fast when the API server is down: the caller decides about retries.
    cfg.retries = 1
    api_client = k8s_client.ApiClient(configuration=cfg)
    api_client.user_agent = "ecolink"
    return KubeTarget(
        api_client=api_client,
        configuration=cfg,
        namespace=ns or "default",
        context=context,
        source=source,
    )


def unreachable(e: BaseException) -> bool:
    """Whether a client failure means the API server could not be reached (or was
    overloaded), as opposed to an answer."""
    if isinstance(e, ApiException):
        return e.status in (0, None) or e.status >= 500 or e.status == 429
    return isinstance(e, urllib3.exceptions.HTTPError | OSError | TimeoutError)


def refusal(e: ApiException) -> RuntimeRefused:
    """The API server's answer as a refusal, in its own words."""
    try:
        message = json.loads(e.body or "{}").get("message") or e.reason
    except (ValueError, AttributeError):
        message = e.reason
    return RuntimeRefused.from_api_status(e.status, str(message))


class KubeApi:
    """The typed clients of one namespace, and `call` to run one of their methods
    in a thread. `on_unreachable(error)` is told of every call that could not reach
    the API server."""

    def __init__(self, target: KubeTarget) -> None:
        self.target = target
        self.ns = target.namespace
        self.apps = k8s_client.AppsV1Api(target.api_client)
        self.core = k8s_client.CoreV1Api(target.api_client)
        self.on_unreachable: Callable[[str], None] = lambda error: None

    async def call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Obj:
        """Run one client call in a thread; answer the JSON as a dict. An API server
        that cannot be reached raises RuntimeUnavailable; its answers (ApiException)
        pass through for the caller to judge."""

        def run() -> Obj:
            resp = fn(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kw)
            try:
                raw = resp.data
            finally:
                resp.release_conn()
            return json.loads(raw) if raw else {}

        try:
            return await asyncio.to_thread(run)
        except Exception as e:
            if unreachable(e):
                self.on_unreachable(str(e))
                raise RuntimeUnavailable(f"the Kubernetes API server cannot be reached: {e}") from e
            raise
