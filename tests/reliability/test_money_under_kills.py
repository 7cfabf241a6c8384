"""Money under faults: SIGKILL the backend at random moments of random action sequences
(launch, scale, extend, stop, resume, terminate, endpoint), in the middle of requests
as well as between them, restart it each time, and after every restart check
billing.md's invariants from the API, that every cluster's state matches its ledger
and its processes, and that retrying the interrupted request with the same
`Idempotency-Key` never places a second hold.

Also: a cluster that expires while the backend is down is charged up to `expires_at`
and not a micro-dollar more. `ecolink serve` has no test clock, so that part waits
out a real 0.01 h (36 s) duration; it overlaps with the kill loop to save time.
"""

from __future__ import annotations

import os
import random
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from support.reliability import (
    REGIONS,
    check_money,
    launch_body,
    pids_running,
    process_table,
    usd,
    wait_for,
    write_catalog,
)

KILLS = int(os.environ.get("ECO_KILLS", "50"))
ACTIONS = ("launch", "scale", "extend", "stop", "resume", "terminate", "endpoint", "close_endpoint")
# Answers that depend only on what the request did (fields that may move between two
# renderings of the same cluster, like replica_states or cost.spent, are left out).
STABLE = (
    "id",
    "name",
    "status",
    "replicas",
    "expires_at",
    "estimated_duration_hours",
    "created_at",
    "endpoint",
)


@dataclass
class Request:
    action: str
    method: str
    path: str
    body: dict[str, Any] | None
    key: str
    target: str | None  # the cluster name it acts on (launch: the new name)
    response: httpx.Response | None = None
    error: BaseException | None = None


@dataclass
class World:
    rng: random.Random
    tag_base: int
    names: dict[str, int] = field(default_factory=dict)  # cluster name -> process tag

    def tag(self, name: str) -> str:
        # A unique `sleep N` per cluster: its processes can be counted in /proc.
        return f"sleep {self.tag_base + self.names[name]} "


def _stable(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: answer.get(k) for k in STABLE}


def pick_request(world: World, client: httpx.Client) -> Request | None:
    rng = world.rng
    clusters = client.get("/gpu-clusters").json()["clusters"]
    live = [c for c in clusters if c["status"] not in ("terminated", "failed")]
    action = rng.choice(ACTIONS) if live else "launch"
    if action == "launch" or (len(live) < 2 and rng.random() < 0.5):
        name = f"k{len(world.names):03d}-{secrets.token_hex(2)}"
        world.names[name] = len(world.names)
        region = rng.choice(sorted(REGIONS))
        body = launch_body(
            name,
            region=region,
            gpu_count=rng.choice(REGIONS[region][1]),
            replicas=rng.randint(2, 3),
            hours=rng.choice(["0.5", "2", "7.25", 30]),
            command=world.tag(name).strip(),
        )
        return Request("launch", "POST", "/gpu-clusters", body, secrets.token_hex(8), name)
    c = rng.choice(live)
    ref = rng.choice([c["id"], c["name"]])
    base = f"/gpu-clusters/{ref}"
    key = secrets.token_hex(8)
    if action == "scale":
        return Request(
            action, "POST", base + "/scale", {"replicas": rng.randint(2, 4)}, key, c["name"]
        )
    if action == "extend":
        return Request(
            action,
            "POST",
            base + "/extend",
            {"hours": rng.choice([0.5, "1.25", 3])},
            key,
            c["name"],
        )
    if action == "stop":
        return Request(action, "POST", base + "/stop", None, key, c["name"])
    if action == "resume":
        return Request(action, "POST", base + "/resume", None, key, c["name"])
    if action == "terminate":
        return Request(action, "DELETE", base, None, key, c["name"])
    if action == "endpoint":
        return Request(
            action, "PUT", base + "/endpoint", {"port": rng.randint(1024, 65535)}, key, c["name"]
        )
    return Request(action, "DELETE", base + "/endpoint", None, key, c["name"])


def send(client: httpx.Client, req: Request) -> httpx.Response:
    return client.request(req.method, req.path, json=req.body, headers={"Idempotency-Key": req.key})


def send_in_background(client: httpx.Client, req: Request) -> threading.Thread:
    def run() -> None:
        try:
            req.response = send(client, req)
        except BaseException as exc:  # the kill cuts it off
            req.error = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def holds_since(entries: list[dict[str, Any]], mark: int, cluster_id: str) -> int:
    return sum(
        1
        for e in entries
        if e["id"] > mark and e["kind"] == "hold" and e["cluster_id"] == cluster_id
    )


def check_retry(client: httpx.Client, req: Request, mark: int, where: str) -> None:
    """Retry the interrupted request twice with its key: one hold at most, and a
    retry of a request that was answered gives that answer."""
    r1 = send(client, req)
    r2 = send(client, req)
    assert r1.status_code < 500 and r2.status_code < 500, (where, r1.text, r2.text)
    assert r1.status_code == r2.status_code, (where, req.action, r1.text, r2.text)
    if r1.status_code < 300 and r1.content:
        assert _stable(r1.json()) == _stable(r2.json()), (where, r1.text, r2.text)
    first = req.response
    if first is not None and first.status_code < 300:
        assert r1.status_code == first.status_code, (where, first.text, r1.text)
        if first.content:
            assert _stable(first.json()) == _stable(r1.json()), (where, first.text, r1.text)
    view = check_money(client, where=where + " after the retries")
    named = [c for c in view["clusters"] if c["name"] == req.target]
    if req.action == "launch":
        created = [
            c
            for c in named
            if view["per_cluster"].get(c["id"])
            and min(e["id"] for e in view["entries"] if e["cluster_id"] == c["id"]) > mark
        ]
        assert len(created) <= 1, f"{where}: the launch made {len(created)} clusters"
        if r1.status_code == 201:
            assert len(created) == 1 and created[0]["id"] == r1.json()["id"], where
    for c in named:
        n = holds_since(view["entries"], mark, c["id"])
        assert n <= 1, f"{where}: {req.action} of {c['name']} placed {n} holds across retries"


def check_runtime(client: httpx.Client, world: World, where: str) -> None:
    """Every cluster ends in a settled state whose processes match it: the desired
    count of replicas while it runs, none once stopped or terminated."""
    problems: list[str] = []

    def settled() -> bool:
        problems.clear()
        clusters = client.get("/gpu-clusters").json()["clusters"]
        table = process_table()
        for c in clusters:
            if c["name"] not in world.names:
                continue
            tag = world.tag(c["name"]).encode()
            n = sum(1 for cmd in table if cmd.startswith(tag))
            want = c["replicas"] if c["status"] in ("pending", "running") else 0
            if c["status"] in ("pending", "stopping", "terminating") or n != want:
                problems.append(
                    f"{c['name']} {c['status']} replicas={c['replicas']} "
                    f"processes={n} {c['replica_states']}"
                )
        return not problems

    try:
        wait_for(settled, 30, 0.2, "settled clusters")
    except AssertionError:
        raise AssertionError(
            f"{where}: clusters not settled with matching processes: {problems}"
        ) from None


@pytest.fixture(scope="module")
def expiring_while_down(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A backend with a 0.01 h cluster, killed right after the launch. Requested by the
    kill test too, so that the 36 s of waiting overlap with its kills."""
    from support.server import EcolinkServer

    d = tmp_path_factory.mktemp("expiry")
    # $3.6 per GPU-hour: 2 replicas x 1 GPU for 36 s is exactly $0.072000.
    catalog = write_catalog(d / "catalog.toml", rate="3.6", rate_b="3.6")
    srv = EcolinkServer(d / "state", catalog=str(catalog), credit="100")
    srv.start()
    try:
        with srv.client() as c:
            r = c.post(
                "/gpu-clusters", json=launch_body("short", hours="0.01", command="sleep 3601")
            )
            assert r.status_code == 201, r.text
            short = r.json()
            r = c.post("/gpu-clusters", json=launch_body("parked", hours="5", command="sleep 3602"))
            assert r.status_code == 201, r.text
            parked = c.post("/gpu-clusters/parked/stop").json()
            before = check_money(c, where="before the kill")
        srv.kill()
        yield {
            "srv": srv,
            "short": short,
            "parked": parked,
            "before": before,
            "killed_at": time.time(),
        }
    finally:
        srv.close()


def test_money_survives_sigkill(
    ecolink_server_factory: Any, tmp_path: Any, expiring_while_down: Any
) -> None:
    seed = int(os.environ.get("ECO_KILL_SEED", secrets.randbits(32)))
    rng = random.Random(seed)
    catalog = write_catalog(tmp_path / "catalog.toml", budget_a=8, budget_b=4)
    srv = ecolink_server_factory(catalog=catalog, credit="400")
    world = World(rng, tag_base=rng.randrange(10**8, 9 * 10**8, 1000))
    client = srv.client(timeout=15)
    stats: dict[str, Any] = {
        "mid_request": 0,
        "between": 0,
        "answered_before_kill": 0,
        "retries": 0,
        "actions": 0,
    }
    spent_s = {"restart": 0.0, "checks": 0.0}
    try:
        for kill in range(1, KILLS + 1):
            where = f"kill {kill} (ECO_KILL_SEED={seed})"
            for _ in range(rng.randint(0, 2)):
                req = pick_request(world, client)
                if req is not None:
                    r = send(client, req)
                    stats["actions"] += 1
                    assert r.status_code < 500, (where, req.action, r.text)
            pending: Request | None = None
            mark = ledger_mark(client)
            if rng.random() < 0.7:
                pending = pick_request(world, client)
            if pending is not None:
                t = send_in_background(srv.client(timeout=15), pending)
                # From "not yet read" through "runtime applied" to "answered".
                time.sleep(rng.choice([0, 0.001, 0.005, 0.01, 0.02, 0.04, 0.08]) * rng.random())
                srv.kill()
                t.join(20)
                assert not t.is_alive()
                stats["mid_request"] += 1
                if pending.response is not None:
                    stats["answered_before_kill"] += 1
            else:
                srv.kill()
                stats["between"] += 1
            t0 = time.monotonic()
            srv.restart()
            spent_s["restart"] += time.monotonic() - t0
            t0 = time.monotonic()
            if str(client.base_url).rstrip("/") != srv.url:
                client.close()
                client = srv.client(timeout=15)
            check_money(client, where=where)
            if pending is not None:
                check_retry(client, pending, mark, where)
                stats["retries"] += 1
            check_runtime(client, world, where)
            audit_problems = _audit(srv)
            assert not audit_problems, (where, audit_problems)
            spent_s["checks"] += time.monotonic() - t0
        final = check_money(client, where="the end")
        print(
            f"\nkills: {KILLS} (seed {seed}); {stats}; clusters {len(final['clusters'])}, "
            f"ledger entries {len(final['entries'])}; seconds in restarts and checks: "
            f"{spent_s['restart']:.0f}, {spent_s['checks']:.0f}"
        )
        assert stats["mid_request"] >= KILLS // 3
    finally:
        client.close()


def ledger_mark(client: httpx.Client) -> int:
    entries = client.get("/account/ledger", params={"limit": 1}).json()["entries"]
    return entries[0]["id"] if entries else 0


def _audit(srv: Any) -> list[str]:
    store = srv.store()
    try:
        return list(store.audit())
    finally:
        store.close()


def test_expiry_while_down_charges_only_to_expires_at(expiring_while_down: Any) -> None:
    info = expiring_while_down
    srv = info["srv"]
    short = info["short"]
    expires = _ts(short["expires_at"])
    # Stay down past expiry (a no-op when the kill test already took that long).
    time.sleep(max(0.0, expires - time.time() + 2.0))
    srv.restart()
    with srv.client() as c:

        def terminated() -> dict[str, Any] | None:
            got = c.get("/gpu-clusters/" + short["id"]).json()
            return got if got["status"] == "terminated" else None

        done = wait_for(terminated, 20, what="the overdue cluster terminated on start")
        assert done["status_reason"] == "expired", done
        view = check_money(c, where="after the expiry while down")
        hold = usd(short["cost"]["hold"])
        assert hold == 72_000, short["cost"]
        entries = [e for e in view["entries"] if e["cluster_id"] == short["id"]]
        spent = -sum(usd(e["amount"]) for e in entries if e["kind"] == "charge")
        released = -sum(usd(e["amount"]) for e in entries if e["kind"] == "hold_release")
        # 36 s at $7.20/h is $0.072000: charged in full up to expires_at, never past it.
        created = _ts(short["created_at"])
        assert abs((expires - created) - 36.0) < 1e-3, short
        assert spent == 72_000, (spent, entries)
        assert released == 0, entries
        assert usd(done["cost"]["spent"]) == spent and usd(done["cost"]["hold_remaining"]) == 0
        kinds = [e["kind"] for e in c.get(f"/gpu-clusters/{short['id']}/events").json()["events"]]
        assert "expired" in kinds, kinds
        # Stopped before the kill: not a micro-dollar while down, still stopped.
        parked = c.get("/gpu-clusters/parked").json()
        assert parked["status"] == "stopped", parked
        assert parked["cost"] == info["parked"]["cost"], (parked["cost"], info["parked"]["cost"])
        wait_for(
            lambda: not pids_running("sleep 3601 ") and not pids_running("sleep 3602 "),
            15,
            what="no replica process of the expired or stopped cluster",
        )


def _ts(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
