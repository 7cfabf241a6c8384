"""A throwaway Postgres server for tests: `initdb` into a temporary directory, one
server on a free loopback port, one database per test made from a migrated template.

The server binaries come from the system's Postgres packages (`scripts/test` installs
them where they are missing). When the tests run as root, the server runs as the
`postgres` user, since Postgres refuses to run as root. No binaries is a failure, not
a skip: the Postgres tests never skip.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

START_TIMEOUT_S = 30.0


def _bindir() -> Path:
    """The directory of `initdb` and `pg_ctl`: on PATH, else the newest version under
    /usr/lib/postgresql (where Debian puts them)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not candidates:
        raise RuntimeError(
            "Postgres server binaries (initdb, pg_ctl) are not installed: scripts/test "
            "installs them (Debian package postgresql)"
        )
    return Path(candidates[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One Postgres server of its own data directory, stopped by `stop()`."""

    def __init__(self, root: Path | None = None) -> None:
        self.bindir = _bindir()
        self.root = Path(root or tempfile.mkdtemp(prefix="ecolink-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.port = _free_port()
        self.user = "ecolink"
        self._as: list[str] = []
        self._counter = itertools.count(1)
        self.template = "ecolink_template"
        if os.geteuid() == 0:
            # Postgres refuses to run as root: the server runs as the postgres user.
            pwd.getpwnam("postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self.root.mkdir(parents=True, exist_ok=True)
        self.sock.mkdir(exist_ok=True)
        if self._as:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sock, "postgres")
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        self.start()

    def _run(self, argv: list[str]) -> None:
        out = subprocess.run(self._as + argv, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {out.stdout}\n{out.stderr}")

    @property
    def base_url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}"

    def url(self, database: str = "postgres") -> str:
        return f"{self.base_url}/{database}"

    def start(self) -> None:
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.sock} -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                opts,
                "-l",
                str(self.root / "server.log"),
                "-w",
                "-t",
                str(int(START_TIMEOUT_S)),
                "start",
            ]
        )

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(RuntimeError):
            self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "stop"])

    def sql(self, statement: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    def new_database(self, *, migrated: bool = True) -> str:
        """A new empty database (from the migrated template when `migrated`); its URL."""
        name = f"t{os.getpid()}_{next(self._counter)}"
        if migrated:
            self._ensure_template()
            self.sql(f"CREATE DATABASE {name} TEMPLATE {self.template}")
        else:
            self.sql(f"CREATE DATABASE {name}")
        return self.url(name)

    def _ensure_template(self) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            row = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.template,)
            ).fetchone()
        if row is not None:
            return
        self.sql(f"CREATE DATABASE {self.template}")
        from ecolink.store.migrate import migrate

        migrate(self.url(self.template))
        # Nobody may stay connected to a template that is copied.
        self.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE datname = '{self.template}' AND pid <> pg_backend_pid()"
        )

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()


def wait_ready(url: str, timeout: float = START_TIMEOUT_S) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
