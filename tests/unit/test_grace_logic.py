"""A cluster's own grace between SIGTERM and SIGKILL: the launch field's bounds, the
store column (and its migration), the runtime spec the service builds, and the
pod template the kubernetes runtime makes from it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ecocore.limits import MAX_TERMINATION_GRACE_SECONDS
from ecocore.wire import LaunchIn
from ecolink.runtime.base import ClusterSpec
from ecolink.runtime.kubernetes.apply import Applier
from ecolink.service.core import Core
from ecolink.store import SCHEMA_VERSION, Cluster, Store
from ecolink.store.schema import MIGRATIONS, split_sql

NOW = 1_767_225_600_000_000

BODY: dict[str, Any] = {
    "name": "demo",
    "region": "us-east",
    "gpu_type": "H100-80GB",
    "gpu_count": 1,
    "replicas": 2,
    "image": "python:3.12",
    "estimated_duration_hours": 1,
}


def test_the_launch_field_is_optional_and_bounded() -> None:
    assert LaunchIn.model_validate(BODY).termination_grace_seconds is None
    for ok in (0, 5, MAX_TERMINATION_GRACE_SECONDS):
        got = LaunchIn.model_validate({**BODY, "termination_grace_seconds": ok})
        assert got.termination_grace_seconds == ok
    for bad in (-1, MAX_TERMINATION_GRACE_SECONDS + 1, 2.5, "30", True):
        with pytest.raises(ValidationError) as info:
            LaunchIn.model_validate({**BODY, "termination_grace_seconds": bad})
        assert info.value.errors()[0]["loc"] == ("termination_grace_seconds",)


def _cluster(account_id: str, grace: int | None) -> Cluster:
    return Cluster(
        id="gc_1",
        account_id=account_id,
        name="demo",
        region="us-east",
        gpu_type="H100-80GB",
        gpu_count=1,
        replicas=2,
        image="img",
        startup_command=None,
        shared_filesystems=(),
        rate_per_gpu_hour=2_500_000,
        status="running",
        status_reason=None,
        created_at=NOW,
        started_at=None,
        expires_at=NOW + 3_600_000_000,
        duration_mh=1_000_000,
        endpoint_port=None,
        suspended=False,
        terminated_at=None,
        warned=0,
        hold_total=0,
        released_total=0,
        spent_total=0,
        last_charge_at=NOW,
        version=0,
        termination_grace_seconds=grace,
    )


@pytest.mark.parametrize("grace", [None, 0, 45])
def test_the_store_keeps_the_grace(tmp_path: Path, grace: int | None) -> None:
    store = Store(tmp_path / "e.db")
    with store.tx():
        a = store.create_account("alice", NOW)
        store.insert_cluster(_cluster(a.id, grace))
    store.close()
    store = Store(tmp_path / "e.db")
    got = store.cluster("gc_1")
    assert got is not None and got.termination_grace_seconds == grace
    store.close()


def test_clusters_from_before_the_migration_keep_the_backend_default(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[: SCHEMA_VERSION - 1]:
        for statement in split_sql(script):
            conn.execute(statement)
    conn.execute("INSERT INTO accounts (id, name, created_at) VALUES ('acct_1', 'a', 0)")
    conn.execute(
        "INSERT INTO clusters (id, account_id, name, region, gpu_type, gpu_count, replicas, "
        "image, rate_per_gpu_hour, status, created_at, expires_at, duration_mh, "
        "last_charge_at) VALUES ('gc_old', 'acct_1', 'old', 'us-east', 'H100-80GB', 1, 2, "
        "'img', 1, 'running', 0, 1, 1, 0)"
    )
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")
    conn.commit()
    conn.close()
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION
    old = store.cluster("gc_old")
    assert old is not None and old.termination_grace_seconds is None
    with pytest.raises(sqlite3.IntegrityError), store.tx():
        store.execute("UPDATE clusters SET termination_grace_seconds = -1")
    store.close()


class _Catalog:
    def node_selector(self, region: str, gpu_type: str) -> tuple[tuple[str, str], ...]:
        return ()


@pytest.mark.parametrize("grace", [None, 0, 90])
def test_the_runtime_spec_carries_the_cluster_grace(grace: int | None) -> None:
    core = Core.__new__(Core)
    core.catalog = _Catalog()  # type: ignore[assignment]
    spec = core.spec(_cluster("acct_1", grace), run=True)
    assert spec.termination_grace_s == grace
    assert spec.replicas == 2


def _applier(default: float | None) -> Applier:
    applier = Applier.__new__(Applier)
    applier.termination_grace_s = default
    return applier


def _template_grace(applier: Applier, grace: float | None) -> Any:
    spec = ClusterSpec(
        cluster_id="c1",
        account_id="a1",
        name="k",
        region="us-east",
        gpu_type="H100-80GB",
        gpu_count=1,
        replicas=2,
        image="busybox:1",
        termination_grace_s=grace,
    )
    pod = applier.deployment(spec)["spec"]["template"]["spec"]
    return pod.get("terminationGracePeriodSeconds")


def test_the_deployment_takes_the_cluster_grace_over_the_backend_default() -> None:
    assert _template_grace(_applier(30), 5) == 5
    assert _template_grace(_applier(30), 0) == 0
    assert _template_grace(_applier(30), None) == 30
    assert _template_grace(_applier(12), None) == 12
    # No backend default: kubernetes' own, unless the cluster names one.
    assert _template_grace(_applier(None), None) is None
    assert _template_grace(_applier(None), 7) == 7
