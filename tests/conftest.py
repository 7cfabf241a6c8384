"""Shared fixtures: a real `ecolink serve` (uvicorn, loopback, local runtime) and clients.

Fixture names are stable; other test folders rely on them.

`ecolink_server` (function scope) -> `EcolinkServer`: a fresh `ecolink serve` subprocess
  on a free 127.0.0.1 port, its own tmp state dir, the local runtime, the packaged
  catalog, and an account "test" with $10,000.000000 of credit.
    .url          "http://127.0.0.1:PORT"   (.port: PORT)
    .key          the account's API key ("eco_...")
    .account      the account's name ("test")
    .state_dir    pathlib.Path of the state dir
    .proc         the subprocess.Popen of the server
    .log_path     where the server's stdout and stderr go
    .cli(*args, check=True, timeout=60) -> subprocess.CompletedProcess
                  runs `python -m ecolink ARGS --state-dir STATE_DIR` (text output)
    .new_account(name, credit="1000") -> str   a new account with that credit; its key
    .client(key=None) -> httpx.Client           authenticated (default: .key); caller closes
    .ws_url(path) -> str                        "ws://127.0.0.1:PORT" + path
    .kill()       SIGKILL the server (replicas keep running until the next start)
    .stop()       SIGTERM and wait for a clean exit (`ecolink stop` does the same)
    .restart()    start the server again on the same state dir, same port if free
    .start(port=0) start it (factory with start=False; restart() does stop + start)
    .close()      stop it and kill any replica a SIGKILLed server left behind
    .store()      an `ecolink.store.Store` on the server's database (caller closes)
`api` (function scope) -> httpx.Client with `base_url=ecolink_server.url` and the key.
`ecolink_server_factory` (function scope) -> callable(**opts) -> EcolinkServer, for
  servers with options: catalog=PATH (a catalog TOML file), credit="10000",
  extra_args=[...] (more `ecolink serve` flags), env={...}, start=True (False: call
  .start() yourself), verify=True|CA_PATH (for --tls-cert servers; .client() uses it),
  account="test" (the name of the account it makes: servers sharing one database
  through env={"ECOLINK_DATABASE_URL": ...} need one each).
  All are stopped at teardown.
`shared_ecolink_server` (module scope) -> EcolinkServer shared by a test module.
`fresh_api` (function scope) -> httpx.Client for a NEW account ($10,000) on the shared
  server: tests in one module share the process but never see each other's clusters.
  `fresh_api.account_key` is its key.

Replicas in tests should run `"startup_command": "sleep infinity"` unless a test needs
the built-in demo service.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT / "backend", ROOT / "src"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from support import service_harness  # noqa: E402 - after the path set-up
from support.postgres import PostgresServer  # noqa: E402
from support.server import EcolinkServer  # noqa: E402

_postgres: PostgresServer | None = None


def postgres_server() -> PostgresServer:
    """One throwaway Postgres server for this test process (started on first use)."""
    global _postgres
    if _postgres is None:
        _postgres = PostgresServer()
    return _postgres


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _postgres is not None:
        _postgres.close()


@pytest.fixture
def postgres() -> PostgresServer:
    """The test process's Postgres server (`new_database()` for a migrated database)."""
    return postgres_server()


@pytest.fixture(params=["sqlite", "postgres"])
def engine(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[], str]]:
    """Run the test on each store engine: returns a callable that makes a new database
    of that engine (a SQLite `:memory:` one, or a migrated Postgres database) and its
    target for `Store`; `make_service()` without a store uses it too."""
    if request.param == "postgres":
        server = postgres_server()
        factory: Callable[[], str] = server.new_database
    else:
        factory = service_harness.memory_database
    monkeypatch.setattr(service_harness, "new_database", factory)
    yield factory
    service_harness.close_made()


@pytest.fixture
def ecolink_server_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., EcolinkServer]]:
    servers: list[EcolinkServer] = []

    def make(
        *,
        catalog: str | os.PathLike[str] | None = None,
        credit: str = "10000",
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        start: bool = True,
        verify: str | bool = True,
        account: str = "test",
    ) -> EcolinkServer:
        d = tmp_path_factory.mktemp("ecolink")
        srv = EcolinkServer(
            d,
            catalog=str(catalog) if catalog else None,
            credit=credit,
            extra_args=extra_args,
            env=env,
            verify=verify,
            account=account,
        )
        servers.append(srv)
        if start:
            srv.start()
        return srv

    yield make
    for srv in servers:
        srv.close()


@pytest.fixture
def ecolink_server(ecolink_server_factory: Callable[..., EcolinkServer]) -> EcolinkServer:
    return ecolink_server_factory()


@pytest.fixture
def api(ecolink_server: EcolinkServer) -> Iterator[httpx.Client]:
    with ecolink_server.client() as client:
        yield client


@pytest.fixture(scope="module")
def shared_ecolink_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EcolinkServer]:
    srv = EcolinkServer(tmp_path_factory.mktemp("ecolink-shared"))
    srv.start()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def fresh_api(shared_ecolink_server: EcolinkServer) -> Iterator[httpx.Client]:
    key = shared_ecolink_server.new_account("acct-" + secrets.token_hex(4), "10000")
    with shared_ecolink_server.client(key) as client:
        client.account_key = key  # type: ignore[attr-defined]
        yield client


# Markers: `slow` for every test that starts processes (a backend, replicas, a
# shell, tmux, the control plane, a script), `k8s` for the kubernetes tier. A fast
# local run is `scripts/test -m "not slow"`; CI runs everything. Whole folders and
# files are marked here; a single test in an otherwise fast file carries
# `@pytest.mark.slow` itself.
_SLOW_DIRS = {"api", "e2e", "reliability", "security", "k8s", "runtime"}
_SLOW_FIXTURES = {
    "ecolink_server",
    "ecolink_server_factory",
    "shared_ecolink_server",
    "fresh_api",
    "api",
    "k8s_env",
    "live_backend",
}
_SLOW_FILES = {
    "test_widget_shell.py",
    "test_widget_sessions.py",
    "test_terminal_corpus.py",
    "test_live_backend.py",
    "test_against_backend.py",
    "test_commands.py",
    "test_scripts_run.py",
    "test_gpu_check.py",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        rel = Path(str(item.fspath)).relative_to(ROOT / "tests")
        if rel.parts[0] == "k8s":
            item.add_marker(pytest.mark.k8s)
        fixtures = set(getattr(item, "fixturenames", ()))
        if rel.parts[0] in _SLOW_DIRS or rel.name in _SLOW_FILES or fixtures & _SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)
