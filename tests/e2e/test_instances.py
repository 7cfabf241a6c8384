"""End to end: several `ecolink serve` instances on one Postgres database. Any
instance answers any request; an account's credit is never spent twice through two
instances; a change made through one reaches the `/watch` clients of the others
within a second; the schema is moved by `ecolink migrate` only."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from ecolink.store.migrate import HEAD
from support.postgres import PostgresServer
from support.server import ROOT, EcolinkServer, _env

LAUNCH: dict[str, Any] = {
    "region": "us-east",
    "gpu_type": "H100-80GB",  # $2.50 per GPU-hour: 1 GPU, 2 replicas, 1 hour hold $5
    "gpu_count": 1,
    "replicas": 2,
    "image": "busybox:1.36",
    "estimated_duration_hours": 1,
    "startup_command": "sleep 600",
}


def _instances(
    factory: Callable[..., EcolinkServer], postgres: PostgresServer, n: int
) -> list[EcolinkServer]:
    env = {"ECOLINK_DATABASE_URL": postgres.new_database()}
    return [factory(env=env, account=f"owner{i}") for i in range(n)]


def test_launches_through_three_instances_never_spend_the_same_credit_twice(
    ecolink_server_factory: Callable[..., EcolinkServer], postgres: PostgresServer
) -> None:
    servers = _instances(ecolink_server_factory, postgres, 3)
    key = servers[0].new_account("team", credit="20")  # room for exactly 4 holds
    answers: list[httpx.Response] = []
    lock = threading.Lock()
    start = threading.Barrier(12)

    def send(srv: EcolinkServer, i: int) -> None:
        with srv.client(key=key, timeout=60) as c:
            start.wait()
            r = c.post("/gpu-clusters", json={**LAUNCH, "name": f"job{i}"})
        with lock:
            answers.append(r)

    threads = [threading.Thread(target=send, args=(servers[i % 3], i)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    codes = sorted(r.status_code for r in answers)
    assert len(answers) == 12
    assert codes.count(201) + codes.count(202) == 4, [r.text for r in answers]
    assert all(c in (201, 202, 402) for c in codes), [r.text for r in answers]
    refused = [r.json() for r in answers if r.status_code == 402]
    assert all(e["error"]["code"] == "insufficient_balance" for e in refused)
    # Every instance sees the same account: $10 held in full, nothing overdrawn.
    for srv in servers:
        with srv.client(key=key) as c:
            acct = c.get("/account").json()
        assert acct["balance"] == "20.000000"
        assert acct["held"] == "20.000000" and acct["available"] == "0.000000"
    store = servers[0].store()
    try:
        assert store.audit() == []
        assert len(store.list_clusters(None, statuses=["pending", "running"])) == 4
    finally:
        store.close()


def test_a_change_through_one_instance_reaches_watch_clients_of_another_within_a_second(
    ecolink_server_factory: Callable[..., EcolinkServer], postgres: PostgresServer
) -> None:
    a, b = _instances(ecolink_server_factory, postgres, 2)
    key = a.new_account("team", credit="100")

    async def main() -> float:
        async with websockets.connect(
            b.ws_url("/watch"), additional_headers={"Authorization": f"Bearer {key}"}
        ) as ws:
            snapshot = json.loads(await ws.recv())
            assert snapshot["type"] == "snapshot" and snapshot["clusters"] == []
            async with httpx.AsyncClient(
                base_url=a.url, headers={"Authorization": f"Bearer {key}"}
            ) as c:
                sent = time.monotonic()
                r = await c.post("/gpu-clusters", json={**LAUNCH, "name": "seen"})
                assert r.status_code in (201, 202), r.text
                cid = r.json()["id"]
            deadline = sent + 10
            while time.monotonic() < deadline:
                frame = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
                if frame["type"] == "cluster" and frame["cluster"]["id"] == cid:
                    return time.monotonic() - sent
            raise AssertionError("the launch never reached the other instance's watch")

    took = asyncio.run(main())
    assert took < 1.0, f"{took:.3f} s from the launch's answer to the other instance's frame"


def test_serve_refuses_a_database_behind_this_schema_and_migrate_moves_it(
    ecolink_server_factory: Callable[..., EcolinkServer],
    postgres: PostgresServer,
    tmp_path: Path,
) -> None:
    url = postgres.new_database(migrated=False)

    def ecolink(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ecolink", *args, "--state-dir", str(tmp_path)],
            env={**_env(), "ECOLINK_DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    for refused in (ecolink("serve", "--port", "0"), ecolink("accounts", "list")):
        assert refused.returncode == 1
        assert "schema revision none" in refused.stderr
        assert "ecolink migrate" in refused.stderr
    first = ecolink("migrate")
    assert first.returncode == 0 and f"none -> {HEAD}" in first.stdout
    again = ecolink("migrate")
    assert again.returncode == 0 and "up to date" in again.stdout
    srv = ecolink_server_factory(env={"ECOLINK_DATABASE_URL": url})
    with srv.client() as c:
        assert c.get("/account").json()["balance"] == "10000.000000"


def test_an_interrupted_migration_is_completed_by_the_next(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """Revision 0002 waits on a lock a test connection holds; `migrate` is SIGKILLed
    there. Revision 0001 stays whole, 0002 left nothing behind, and the next run
    finishes the job."""
    import psycopg

    url = postgres.new_database(migrated=False)
    argv = [sys.executable, "-m", "ecolink", "migrate", "--state-dir", str(tmp_path)]
    env = {**_env(), "ECOLINK_DATABASE_URL": url}
    # Revision 0001 alone first, so that the table 0002 alters exists to be locked.
    from ecolink.store.migrate import _upgrade_to

    _upgrade_to(url, "0001")
    with psycopg.connect(url) as blocker:
        blocker.execute("LOCK TABLE console_sessions IN ACCESS EXCLUSIVE MODE")
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        with psycopg.connect(url, autocommit=True) as watcher:
            while time.monotonic() < deadline:
                waiting = watcher.execute(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted"
                ).fetchone()
                if waiting and waiting[0]:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the migration never reached the locked table")
        proc.kill()
        proc.wait(10)
        blocker.rollback()
    with psycopg.connect(url, autocommit=True) as check:
        assert check.execute("SELECT version_num FROM alembic_version").fetchone() == ("0001",)
        columns = {
            r[0]
            for r in check.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'console_sessions'"
            )
        }
        assert "key_id" not in columns
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert f"0001 -> {HEAD}" in done.stdout


def test_every_instance_answers_503_while_the_database_is_away_and_recovers_by_itself(
    ecolink_server_factory: Callable[..., EcolinkServer], postgres: PostgresServer
) -> None:
    """The database server stops for 30 s under two instances: every request that
    needs it is answered 503 at once, none crashes, `/readyz` says so, and both serve
    again once it is back, without a restart and with nothing half-written."""
    servers = _instances(ecolink_server_factory, postgres, 2)
    key = servers[0].new_account("team", credit="100")
    clients = [srv.client(key=key, timeout=30) for srv in servers]
    try:
        r = clients[0].post("/gpu-clusters", json={**LAUNCH, "name": "before"})
        assert r.status_code == 201, r.text
        before = clients[1].get("/account").json()
        postgres.stop()
        try:
            away_until = time.monotonic() + 30
            rounds = 0
            while time.monotonic() < away_until or rounds < 2:
                for i, c in enumerate(clients):
                    for method, path, body in (
                        ("GET", "/account", None),
                        ("GET", "/gpu-clusters", None),
                        ("POST", "/gpu-clusters", {**LAUNCH, "name": f"during{rounds}{i}"}),
                        ("POST", "/gpu-clusters/before/extend", {"hours": 1}),
                    ):
                        t = time.monotonic()
                        r = c.request(method, path, json=body)
                        took = time.monotonic() - t
                        assert r.status_code == 503, (method, path, r.text)
                        assert r.json()["error"]["code"] == "store_unavailable"
                        assert took < 5, f"{method} {path} took {took:.1f} s"
                    assert c.get("/readyz").status_code == 503
                    assert c.get("/healthz").status_code == 200  # alive all along
                rounds += 1
                time.sleep(1)
            assert all(srv.proc is not None and srv.proc.poll() is None for srv in servers)
        finally:
            postgres.start()
        deadline = time.monotonic() + 20
        for c in clients:
            while c.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "an instance did not recover"
                time.sleep(0.2)
            assert c.get("/account").json() == before
        r = clients[1].post("/gpu-clusters", json={**LAUNCH, "name": "after"})
        assert r.status_code == 201, r.text
        names = {x["name"] for x in clients[0].get("/gpu-clusters").json()["clusters"]}
        assert names == {"before", "after"}
    finally:
        for c in clients:
            c.close()
    store = servers[0].store()
    try:
        assert store.audit() == []
    finally:
        store.close()


def test_a_second_instance_with_another_catalog_is_refused(
    ecolink_server_factory: Callable[..., EcolinkServer],
    postgres: PostgresServer,
    tmp_path: Path,
) -> None:
    url = postgres.new_database()
    first = ecolink_server_factory(env={"ECOLINK_DATABASE_URL": url})
    cheaper = tmp_path / "catalog.toml"
    cheaper.write_text(
        (ROOT / "backend" / "ecolink" / "catalog.toml")
        .read_text()
        .replace('rate_per_gpu_hour = "2.50"', 'rate_per_gpu_hour = "1.25"')
    )
    assert cheaper.read_text() != (ROOT / "backend" / "ecolink" / "catalog.toml").read_text()
    second = ecolink_server_factory(
        env={"ECOLINK_DATABASE_URL": url}, catalog=cheaper, start=False, account="other"
    )
    with pytest.raises(RuntimeError):
        second.start()
    said = second.log_path.read_text()
    assert "serves a different catalog" in said and first.url in said
    # The same catalog, written differently, is the same catalog.
    reordered = tmp_path / "same.toml"
    reordered.write_text(
        "# the packaged catalog\n" + (ROOT / "backend/ecolink/catalog.toml").read_text()
    )
    third = ecolink_server_factory(
        env={"ECOLINK_DATABASE_URL": url}, catalog=reordered, account="third"
    )
    with third.client() as c:
        assert c.get("/account").status_code == 200
    # Once the first is gone (a clean stop), a new catalog may start.
    first.stop()
    third.stop()
    second.start()
    with second.client() as c:
        assert c.get("/account").status_code == 200


def _leading(srv: EcolinkServer) -> bool:
    """Whether `srv` reports itself the leader (`ecolink_leader` on /metrics)."""
    if srv.proc is None or srv.proc.poll() is not None:
        return False
    try:
        with srv.client(timeout=5) as c:
            text = c.get("/metrics").text
    except httpx.HTTPError:
        return False
    return any(
        line.split()[-1] == "1.0"
        for line in text.splitlines()
        if line.startswith("ecolink_leader ")
    )


def test_killing_leaders_at_random_moments_misses_no_expiry_and_charges_nothing_twice(
    ecolink_server_factory: Callable[..., EcolinkServer], postgres: PostgresServer
) -> None:
    """Three instances; the leader (who expires and charges) is SIGKILLed at random
    moments while three clusters run out. Another takes over within 15 s each time;
    every cluster ends expired, charged exactly its held time, once."""
    rng = random.Random(19)
    servers = _instances(ecolink_server_factory, postgres, 3)
    key = servers[0].new_account("team", credit="100")
    ids = []
    for i, hours in enumerate((0.01, 0.02, 0.03)):  # 36, 72 and 108 s
        with servers[i].client(key=key) as c:
            r = c.post(
                "/gpu-clusters",
                json={**LAUNCH, "name": f"short{i}", "estimated_duration_hours": hours},
            )
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    store = servers[0].store()
    try:
        last_expiry = max(c.expires_at for c in (store.cluster(i) for i in ids) if c is not None)
    finally:
        store.close()
    takeovers: list[float] = []
    while time.time() * 1_000_000 < last_expiry + 5_000_000:
        leaders = [s for s in servers if _leading(s)]
        assert len(leaders) <= 1, "two instances lead at once"
        if not leaders:
            time.sleep(0.2)
            continue
        time.sleep(rng.uniform(0, 3))
        victim = leaders[0]
        victim.kill()
        killed = time.monotonic()
        while not any(_leading(s) for s in servers if s is not victim):
            assert time.monotonic() - killed < 15, "no instance took over within 15 s"
            time.sleep(0.1)
        takeovers.append(time.monotonic() - killed)
        victim.start()
    assert len(takeovers) >= 3, takeovers
    # Whoever leads now finishes what came due.
    deadline = time.monotonic() + 30
    store = servers[0].store()
    try:
        while True:
            clusters = [store.cluster(i) for i in ids]
            if all(c is not None and c.status == "terminated" for c in clusters):
                break
            assert time.monotonic() < deadline, [c and c.status for c in clusters]
            time.sleep(0.5)
        for c in clusters:
            assert c is not None
            assert c.status_reason == "expired"
            # Charged exactly to its expiry: what it held, posted once.
            assert c.spent_total == c.hold_total
            charges = [e for e in store.ledger_all() if e.cluster_id == c.id and e.kind == "charge"]
            assert -sum(e.amount for e in charges) == c.spent_total
            assert c.terminated_at is not None
            assert c.terminated_at - c.expires_at < 20_000_000, "the expiry came late"
        assert store.audit() == []
    finally:
        store.close()
