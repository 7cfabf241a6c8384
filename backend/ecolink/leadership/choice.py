"""Which leadership `serve` runs with."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ecolink.leadership.base import ElectionMode, Leadership, LeadershipError, SoleLeader

if TYPE_CHECKING:
    from ecolink.runtime.base import Runtime


def choose(
    mode: ElectionMode,
    runtime: Runtime,
    database_url: str | None,
    *,
    identity: str | None = None,
) -> Leadership:
    """The leadership `serve` runs with. `auto`: a Lease when the runtime is
    kubernetes with in-cluster credentials, else the advisory lock when the database
    is Postgres, else the sole leader. Raises LeadershipError when a forced choice
    cannot work."""
    postgres = database_url is not None and is_postgres_url(database_url)
    target = getattr(runtime, "target", None)
    in_cluster = runtime.info.name == "kubernetes" and getattr(target, "source", "") == "in-cluster"
    if mode == "auto":
        mode = "lease" if in_cluster else "postgres" if postgres else "none"
    if mode == "none":
        return SoleLeader()
    if mode == "postgres":
        if not postgres:
            raise LeadershipError(
                "--leader-election postgres needs a Postgres database (postgresql://...)"
            )
        from ecolink.leadership.advisory import AdvisoryLockLeadership

        assert database_url is not None
        return AdvisoryLockLeadership(database_url, identity=identity)
    if target is None or runtime.info.name != "kubernetes":
        raise LeadershipError("--leader-election lease needs --runtime kubernetes")
    from ecolink.leadership.lease import LeaseLeadership
    from ecolink.runtime.kubernetes.client import KubeApi

    return LeaseLeadership(KubeApi(target), identity=identity)


def is_postgres_url(url: str) -> bool:
    return url.split(":", 1)[0].lower() in ("postgres", "postgresql", "postgresql+psycopg")
