"""The composition root: `build_context(ServeConfig)` makes the store, the runtime,
telemetry, the service and the kept-session manager, and puts them in one
`AppContext`. `ecolink serve` and the in-process API tests build the same graph.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ecocore.clock import Clock, SystemClock
from ecolink.api.context import AppContext
from ecolink.api.edge_rules import MAX_PORTFORWARDS_PER_ACCOUNT, MAX_WEBSOCKETS_PER_ACCOUNT
from ecolink.catalog import CatalogError, load_catalog
from ecolink.clock import SteadyClock
from ecolink.leadership import ElectionMode, LeadershipError
from ecolink.leadership.choice import choose
from ecolink.presence import Presence, PresenceRefused
from ecolink.runtime.base import Runtime, RuntimeUnavailable
from ecolink.runtime.local import LocalRuntime
from ecolink.runtime.local.users import single_account_note
from ecolink.service import ClusterService
from ecolink.sessions import SessionManager
from ecolink.state_dir import RUNTIME_FILE, local_single_account, open_store
from ecolink.store import Store, StoreError
from ecolink.telemetry import TelemetryHub

log = logging.getLogger("ecolink")

RuntimeKind = Literal["local", "kubernetes"]
MIB = 1024 * 1024


class SetupError(Exception):
    """The backend cannot be set up as configured (the message says why)."""


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """What `ecolink serve` was asked for, checked, minus the sockets and the server."""

    state_dir: Path
    runtime: RuntimeKind = "local"
    namespace: str | None = None
    kube_context: str | None = None
    catalog_path: str | None = None
    # The base of public service URLs; None: the address each request came to.
    public_url: str | None = None
    tls: bool = False
    service_domain: str | None = None
    max_websockets_per_account: int = MAX_WEBSOCKETS_PER_ACCOUNT
    max_portforwards_per_account: int = MAX_PORTFORWARDS_PER_ACCOUNT
    db_busy_timeout_s: float | None = None
    # A database URL (Postgres) instead of the state directory's SQLite file; None:
    # $ECOLINK_DATABASE_URL, else that file.
    database: str | None = None
    replica_disk_quota_mib: float | None = 10240.0
    replica_disk_check_s: float = 10.0
    max_clock_step_s: float = 60.0
    termination_grace_s: float = 30.0
    # None: the system clock (steps of it checked against a clock that never steps).
    clock: Clock | None = None
    # Who does the periodic work (ecolink.leadership.choose, given the store's target).
    leader_election: ElectionMode = "auto"


def build_context(config: ServeConfig) -> AppContext:
    """Everything the API serves with. Raises SetupError, having closed what it
    opened, when the catalog, the accounts or the runtime do not allow serving."""
    try:
        catalog = load_catalog(config.catalog_path)
    except CatalogError as exc:
        raise SetupError(str(exc)) from exc
    clock = config.clock or SteadyClock(SystemClock(), max_step_s=config.max_clock_step_s)
    state_dir = config.state_dir
    try:
        store = open_store(
            state_dir, busy_timeout_s=config.db_busy_timeout_s, database=config.database
        )
    except StoreError as exc:
        raise SetupError(str(exc)) from exc
    with contextlib.suppress(OSError):
        (state_dir / RUNTIME_FILE).write_text(config.runtime + "\n")
    presence = Presence(store, clock, catalog)
    try:
        presence.register()
    except (PresenceRefused, StoreError) as exc:
        store.close()
        raise SetupError(str(exc)) from exc
    try:
        runtime = _runtime(config, clock, store)
    except SetupError:
        store.close()
        raise
    try:
        leadership = choose(config.leader_election, runtime, store.path)
    except LeadershipError as exc:
        store.close()
        raise SetupError(str(exc)) from exc
    telemetry = TelemetryHub(runtime, clock)
    service = ClusterService(
        store, runtime, catalog, clock, tracker=telemetry, leadership=leadership
    )
    sessions = SessionManager(runtime, clock, store=store, state_dir=state_dir)
    sessions.steady_since = presence.steady_since
    return AppContext(
        service=service,
        store=store,
        runtime=runtime,
        clock=clock,
        state_dir=state_dir,
        catalog=catalog,
        telemetry=telemetry,
        sessions=sessions,
        public_url=config.public_url.rstrip("/") if config.public_url else None,
        tls=config.tls,
        stop_replicas_on_shutdown=config.runtime == "local",
        service_domain=config.service_domain,
        max_websockets_per_account=config.max_websockets_per_account,
        max_portforwards_per_account=config.max_portforwards_per_account,
        presence=presence,
    )


def _runtime(config: ServeConfig, clock: Clock, store: Store) -> Runtime:
    """The runtime the configuration names."""
    if config.runtime == "local":
        return _local_runtime(config, clock, store)
    # Imported here: the kubernetes client is a heavy import that local serving skips.
    from ecolink.runtime import kubernetes

    try:
        return kubernetes.create_kubernetes_runtime(
            config.namespace,
            config.kube_context,
            clock,
            termination_grace_s=config.termination_grace_s,
        )
    except RuntimeUnavailable as exc:
        raise SetupError(str(exc)) from exc


def _local_runtime(config: ServeConfig, clock: Clock, store: Store) -> Runtime:
    state_dir = config.state_dir
    if local_single_account(state_dir):
        names = [a.name for a in store.accounts()]
        if len(names) > 1:
            raise SetupError(
                f"{single_account_note()}, and this state directory has "
                f"{len(names)} accounts ({', '.join(names)}): run the backend as root, "
                "or give each account a state directory of its own"
            )
        print(f"ecolink: {single_account_note()}", file=sys.stderr, flush=True)
        log.warning("%s", single_account_note())
    quota = (
        None if config.replica_disk_quota_mib is None else int(config.replica_disk_quota_mib * MIB)
    )
    return LocalRuntime(
        state_dir,
        clock,
        disk_quota_bytes=quota,
        disk_check_interval_s=config.replica_disk_check_s,
        termination_grace_s=config.termination_grace_s,
        drain_in_background=True,
    )
