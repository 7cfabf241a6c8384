"""The backend's state directory: where it is, its database, and which runtime its
backend serves with. Every `ecolink` command finds it from `--state-dir`, else
`ECOLINK_STATE_DIR`, else `${XDG_DATA_HOME:-~/.local/share}/ecolink`.

The database is the state directory's SQLite file unless `--database URL` (else
`ECOLINK_DATABASE_URL`) names another: a Postgres database several instances share."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ecolink.runtime.local.users import replica_uids_wanted
from ecolink.store import BUSY_TIMEOUT_MS, Store
from ecolink.store.engine import is_postgres_url

RUNTIME_FILE = "runtime"  # which runtime the state dir's backend serves with


def state_dir_from(arg: str | None) -> Path:
    if arg:
        d = Path(arg).expanduser()
    elif os.environ.get("ECOLINK_STATE_DIR"):
        d = Path(os.environ["ECOLINK_STATE_DIR"]).expanduser()
    else:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        d = Path(base) / "ecolink"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        os.chmod(d, 0o700)
    return d


def database_target(state_dir: Path, database: str | None = None) -> str:
    """The database to open: `database`, else $ECOLINK_DATABASE_URL, else the state
    directory's SQLite file."""
    return database or os.environ.get("ECOLINK_DATABASE_URL") or str(state_dir / "ecolink.db")


def open_store(
    state_dir: Path, busy_timeout_s: float | None = None, database: str | None = None
) -> Store:
    """The store. A SQLite file is brought up to date as it opens (one user, one
    process); a shared Postgres database must be at this ecolink's schema already
    (`ecolink migrate`), or it is refused (`SchemaError`)."""
    timeout_ms = BUSY_TIMEOUT_MS if busy_timeout_s is None else int(busy_timeout_s * 1000)
    target = database_target(state_dir, database)
    return Store(target, busy_timeout_ms=timeout_ms, migrate=not is_postgres_url(target))


def local_single_account(state_dir: Path) -> bool:
    """Whether this state dir's backend runs local replicas as its own user (it
    cannot change uids), so that it may serve one account only."""
    try:
        runtime = (state_dir / RUNTIME_FILE).read_text().strip()
    except OSError:
        runtime = "local"  # the default of `serve`
    return runtime == "local" and not replica_uids_wanted()
