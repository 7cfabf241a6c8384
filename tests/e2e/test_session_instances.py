"""End to end: kept shell sessions across several `ecolink serve` instances on one
Postgres database. A session belongs to the instance that holds it; attaching
through another instance reaches it (relayed), listing through any instance shows
every instance's sessions and who holds them, and the sessions of an instance that
died are reported ended, through the others, without a hang."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import websockets

from support.e2e_helpers import V4, V5, all_ready, connect, exit_code, launch, wait_for
from support.postgres import PostgresServer
from support.server import EcolinkServer

pytestmark = pytest.mark.timeout(180)

# Instances count as gone 3 s after their last heartbeat here (15 s by default).
ALIVE_S = 3


def _sessions(api: httpx.Client, cid: str) -> dict[str, dict[str, Any]]:
    r = api.get(f"/gpu-clusters/{cid}/sessions")
    assert r.status_code == 200, r.text
    return {s["id"]: s for s in r.json()["sessions"]}


def _two_instances(
    factory: Callable[..., EcolinkServer], postgres: PostgresServer
) -> tuple[EcolinkServer, EcolinkServer, str]:
    """Instances A and B on one fresh Postgres database (an instance counts as gone
    after 3 s without a heartbeat), and the key of an account both serve."""
    env = {"ECOLINK_DATABASE_URL": postgres.new_database(), "ECOLINK_INSTANCE_ALIVE_S": "3"}
    a = factory(env=env, account="owner-a")
    b = factory(env=env, account="owner-b")
    return a, b, a.new_account("team", credit="100")


def _instance_at(srv: EcolinkServer) -> str:
    store = srv.store()
    try:
        ids = [i.id for i in store.instances() if i.address == srv.url]
    finally:
        store.close()
    assert len(ids) == 1, ids
    return ids[0]


async def _refused(
    url: str, key: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], float]:
    """The HTTP answer that refuses an attach, and how long it took."""
    t = time.monotonic()
    with pytest.raises(websockets.InvalidStatus) as e:
        await websockets.connect(
            url,
            additional_headers={"Authorization": f"Bearer {key}", **(headers or {})},
            subprotocols=[V5],
            proxy=None,
            open_timeout=30,
        )
    took = time.monotonic() - t
    return e.value.response.status_code, json.loads(e.value.response.body), took


async def test_a_session_held_by_one_instance_is_reached_through_another_and_ends_with_it(
    ecolink_server_factory: Callable[..., EcolinkServer], postgres: PostgresServer
) -> None:
    a, b, key = _two_instances(ecolink_server_factory, postgres)
    with a.client(key=key) as via_a, b.client(key=key) as via_b:
        c = launch(via_a, "box", replicas=2, command="sleep infinity")
        cid = wait_for(via_a, c["id"], all_ready(2), what="ready replicas")["id"]
        a_id, b_id = _instance_at(a), _instance_at(b)
        assert a_id != b_id
        made = {}
        for name, command in (
            ("asks", "read line; echo got-$line; exit 7"),
            ("waits", "sleep 3600"),
            ("shell", None),
        ):
            body: dict[str, Any] = {"tty": name == "shell"}
            if command is not None:
                body["command"] = command
            r = via_a.post(f"/gpu-clusters/{cid}/replicas/box-0/sessions", json=body)
            assert r.status_code == 201, r.text
            assert r.json()["instance"] == a_id
            made[name] = r.json()["id"]

        # Listed through the other instance too (they are in the database), held by A.
        listed = _sessions(via_b, cid)
        assert set(listed) == set(made.values())
        assert all(s["instance"] == a_id and not s["exited"] for s in listed.values())
        assert all(s["ended_reason"] is None for s in listed.values())

        # A request another instance passed on already is never passed on again.
        status, body, _ = await _refused(
            b.ws_url(f"/gpu-clusters/{cid}/sessions/{made['waits']}/attach"),
            key,
            {"x-eco-forwarded-from": a_id},
        )
        assert status == 503 and body["error"]["code"] == "runtime_unavailable", body

        # What the holder refuses is refused as it said it: a record naming A that A
        # does not hold (as if it had ended while B read the record).
        store = b.store()
        try:
            store.save_kept_session(
                {
                    "id": "ses_phantom",
                    "cluster_id": cid,
                    "replica": "box-0",
                    "command": ["sh"],
                    "started_at": 1,
                    "instance_id": a_id,
                }
            )
        finally:
            store.close()
        status, body, _ = await _refused(
            b.ws_url(f"/gpu-clusters/{cid}/sessions/ses_phantom/attach"), key
        )
        assert status == 404 and body["error"]["code"] == "not_found", body
        assert body["error"]["message"] == "no live session 'ses_phantom'"

        # A restart of B does not end A's sessions.
        b.restart()
        assert _instance_at(b) != b_id
        listed = _sessions(via_b, cid)
        assert [(listed[sid]["exited"], listed[sid]["ended_reason"]) for sid in made.values()] == [
            (False, None)
        ] * 3

        # Attached through B: input reaches A's process, its output and exit code come
        # back, and the holder's close ends the relayed socket.
        attach = b.ws_url(f"/gpu-clusters/{cid}/sessions/{made['asks']}/attach")
        ch = await connect(attach, key, (V4,))
        assert ch.protocol == V4  # the caller's subprotocol is the one spoken
        await ch.send_stdin(b"hello\n")
        await ch.run_to_end()
        assert bytes(ch.out) == b"got-hello\n"
        assert exit_code(ch.status) == 7 and ch.closed
        assert ch.ws.close_code == 1000
        deadline = time.monotonic() + 10  # A records the end as it happens
        while not (ended := _sessions(via_b, cid)[made["asks"]])["exited"]:
            assert time.monotonic() < deadline, ended
            await asyncio.sleep(0.05)
        assert (ended["exited"], ended["exit_code"], ended["ended_reason"]) == (True, 7, "exited")

        # A terminal through B and one through A see the same shell, both ways.
        shell = f"/gpu-clusters/{cid}/sessions/{made['shell']}/attach"
        far = await connect(b.ws_url(shell), key)
        near = await connect(a.ws_url(shell), key)
        assert far.protocol == V5
        await far.send_stdin(b"echo far-$((40 + 2))\n")
        await near.until_out(b"far-42")
        await far.until_out(b"far-42")
        await far.resize(91, 17)  # in order with what follows on the same socket
        await far.send_stdin(b"stty size\n")
        await near.until_out(b"17 91")
        assert _sessions(via_a, cid)[made["shell"]]["attached"] == 2
        await far.ws.close()
        await near.ws.close()
        await asyncio.sleep(0.2)
        assert _sessions(via_a, cid)[made["shell"]]["attached"] == 0
        # Ended through B: ended by A, which holds it.
        r = via_b.delete(f"/gpu-clusters/{cid}/sessions/{made['shell']}")
        assert r.status_code == 200, r.text
        assert (r.json()["ended_reason"], r.json()["instance"]) == ("deleted", a_id)
        assert _sessions(via_a, cid)[made["shell"]]["ended_reason"] == "deleted"

        # A dies. While it may still count as alive, attaching through B answers 503
        # at once (it cannot be reached); once it counts as gone, its sessions are
        # reported ended, listed and attached alike, and their records say so.
        waits = b.ws_url(f"/gpu-clusters/{cid}/sessions/{made['waits']}/attach")
        relayed = await connect(waits, key)
        a.kill()
        t = time.monotonic()
        while not relayed.closed:
            await relayed.recv_one(10)
        assert time.monotonic() - t < 10
        assert relayed.ws.close_code == 1011  # the holder went away mid-session
        status, body, took = await _refused(waits, key)
        assert took < 10
        if status == 503:
            assert body["error"]["code"] == "runtime_unavailable"
            assert a_id in body["error"]["message"]
        else:
            assert status == 404 and "instance_gone" in body["error"]["message"]
        deadline = time.monotonic() + ALIVE_S + 10
        while True:
            listed = _sessions(via_b, cid)
            if all(s["exited"] for s in listed.values()):
                break
            assert time.monotonic() < deadline, listed
            await asyncio.sleep(0.2)
        assert {sid: s["ended_reason"] for sid, s in listed.items()} == {
            made["asks"]: "exited",
            made["waits"]: "instance_gone",
            made["shell"]: "deleted",
            "ses_phantom": "instance_gone",
        }
        status, body, took = await _refused(waits, key)
        assert status == 404 and "instance_gone" in body["error"]["message"], body
        assert took < 10
    store = b.store()
    try:
        records = {r["id"]: r for r in store.kept_sessions(cid)}
    finally:
        store.close()
    deadline = time.monotonic() + 10
    assert records[made["waits"]]["instance_id"] == a_id
    while records[made["waits"]]["ended_reason"] != "instance_gone":
        assert time.monotonic() < deadline, records
        await asyncio.sleep(0.2)
        store = b.store()
        try:
            records = {r["id"]: r for r in store.kept_sessions(cid)}
        finally:
            store.close()
    assert records[made["shell"]]["ended_reason"] == "deleted"


def test_a_restarted_instance_ends_its_own_sessions_at_once_and_no_others(
    ecolink_server_factory: Callable[..., EcolinkServer], postgres: PostgresServer
) -> None:
    """A SIGKILLed instance restarted on its state directory reports the sessions
    its previous run held as ended by the restart, at once (its old row still looks
    alive: the default 15 s have not passed), and leaves another instance's open."""
    env = {"ECOLINK_DATABASE_URL": postgres.new_database()}
    a = ecolink_server_factory(env=env, account="owner-a")
    b = ecolink_server_factory(env=env, account="owner-b")
    key = a.new_account("team", credit="100")
    with a.client(key=key) as via_a, b.client(key=key) as via_b:
        ids = {}
        for name, srv, api in (("on-a", a, via_a), ("on-b", b, via_b)):
            c = launch(api, name, replicas=2, command="sleep infinity")
            cid = wait_for(api, c["id"], all_ready(2), what="ready replicas")["id"]
            r = api.post(
                f"/gpu-clusters/{cid}/replicas/{name}-0/sessions",
                json={"command": "sleep 3600", "tty": False},
            )
            assert r.status_code == 201, r.text
            assert r.json()["instance"] == _instance_at(srv)
            ids[name] = (cid, r.json()["id"])
        b_id = _instance_at(b)
        a.kill()
        t = time.monotonic()
        a.restart()
        assert time.monotonic() - t < 15  # A's old row has not gone stale yet
        for api in (via_a, via_b):
            cid, sid = ids["on-a"]
            s = _sessions(api, cid)[sid]
            assert (s["exited"], s["ended_reason"]) == (True, "backend_restart")
            cid, sid = ids["on-b"]
            s = _sessions(api, cid)[sid]
            assert (s["exited"], s["ended_reason"], s["instance"]) == (False, None, b_id)


def test_sessions_are_not_reported_gone_because_the_database_was_away(
    ecolink_server_factory: Callable[..., EcolinkServer], postgres: PostgresServer
) -> None:
    """The database away for twice the liveness bound: no instance could be seen
    meanwhile, so none counts as gone for it; A's session stays open as B lists it
    from its first answer after the database is back, and after."""
    a, b, key = _two_instances(ecolink_server_factory, postgres)
    with a.client(key=key) as via_a, b.client(key=key) as via_b:
        c = launch(via_a, "box", replicas=2, command="sleep infinity")
        cid = wait_for(via_a, c["id"], all_ready(2), what="ready replicas")["id"]
        r = via_a.post(
            f"/gpu-clusters/{cid}/replicas/box-0/sessions",
            json={"command": "sleep 3600", "tty": False},
        )
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        time.sleep(ALIVE_S + 1)  # B has been up long enough to judge others
        postgres.stop()
        try:
            time.sleep(2 * ALIVE_S)
        finally:
            postgres.start()
        deadline = time.monotonic() + 30
        while (r := via_b.get(f"/gpu-clusters/{cid}/sessions")).status_code != 200:
            assert r.status_code == 503, r.text
            assert time.monotonic() < deadline, "B did not recover"
            time.sleep(0.05)
        first = {s["id"]: s for s in r.json()["sessions"]}[sid]
        assert (first["exited"], first["ended_reason"]) == (False, None)
        time.sleep(ALIVE_S + 2)  # B judges again; A has been seen since
        s = _sessions(via_b, cid)[sid]
        assert (s["exited"], s["ended_reason"]) == (False, None)
