"""Exec (v5 and v4 framing), interactive shells, resize, stdin close, exit codes,
kept sessions (detach, reattach with replay, several clients) and logs, through a
real backend and real replica processes."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import websockets

from support.e2e_helpers import (
    V4,
    V5,
    all_ready,
    connect,
    exec_url,
    exit_code,
    launch,
    marked_processes,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cluster(fresh_api):
    c = launch(fresh_api, "box", command="sleep infinity")
    return wait_for(fresh_api, c["id"], all_ready(2), what="2 ready replicas")


@pytest.mark.parametrize("proto", [V5, V4])
async def test_exec_echo_streams_and_exit_codes(shared_ecolink_server, fresh_api, cluster, proto):
    srv, key, cid = shared_ecolink_server, fresh_api.account_key, cluster["id"]
    ch = await connect(exec_url(srv, cid, "box-1", ["echo", "hello", "world"]), key, (proto,))
    assert ch.protocol == proto
    await ch.run_to_end()
    assert bytes(ch.out) == b"hello world\n" and ch.status == {"metadata": {}, "status": "Success"}
    # Without a tty stdout and stderr stay apart; the exit code comes in the status.
    ch = await connect(
        exec_url(srv, cid, "box-0", ["sh", "-c", "echo out; echo err >&2; exit 3"]), key, (proto,)
    )
    await ch.run_to_end()
    assert (bytes(ch.out), bytes(ch.err)) == (b"out\n", b"err\n")
    assert ch.status["reason"] == "NonZeroExitCode" and exit_code(ch.status) == 3
    assert ch.status["message"] == "command terminated with non-zero exit code: 3"
    # The exec ran in the replica: its working dir and environment.
    ch = await connect(
        exec_url(srv, cid, "box-1", ["sh", "-c", "echo $ECO_REPLICA_NAME $PORT"]), key, (proto,)
    )
    await ch.run_to_end()
    name, port = bytes(ch.out).split()
    assert name == b"box-1" and int(port) > 0


async def test_interactive_shell_with_resize(shared_ecolink_server, fresh_api, cluster):
    srv, key, cid = shared_ecolink_server, fresh_api.account_key, cluster["id"]
    ch = await connect(exec_url(srv, cid, "box-0", ["sh"], tty=1, stdin=1), key)
    await ch.resize(100, 30)
    await ch.send_stdin(b"stty size\n")
    await ch.until_out(b"30 100")
    await ch.resize(132, 43)
    await asyncio.sleep(0.1)
    await ch.send_stdin(b"stty size; tty\n")
    await ch.until_out(b"43 132")
    await ch.until_out(b"/dev/pts/")
    await ch.send_stdin(b"echo $((6 * 7))\n")
    await ch.until_out(b"42")
    await ch.send_stdin(b"exit 4\n")
    await ch.run_to_end()
    assert exit_code(ch.status) == 4


async def test_login_shell_by_default(shared_ecolink_server, fresh_api, cluster):
    ch = await connect(
        exec_url(shared_ecolink_server, cluster["id"], "box-0", tty=1, stdin=1),
        fresh_api.account_key,
    )
    await ch.send_stdin(b"echo shell=$0; exit\n")
    await ch.until_out(b"shell=")
    await ch.run_to_end()
    assert b"bash" in ch.out or b"sh" in ch.out
    assert exit_code(ch.status) == 0


async def test_stdin_close_ends_cat(shared_ecolink_server, fresh_api, cluster):
    ch = await connect(
        exec_url(shared_ecolink_server, cluster["id"], "box-0", ["cat"], stdin=1),
        fresh_api.account_key,
        (V5,),
    )
    payload = b"line one\n" + bytes(range(256)) * 200
    await ch.send_stdin(payload)
    await ch.close_stdin()
    await ch.run_to_end()
    assert bytes(ch.out) == payload and exit_code(ch.status) == 0


async def test_big_output_arrives_whole_and_in_order(shared_ecolink_server, fresh_api, cluster):
    ch = await connect(
        exec_url(
            shared_ecolink_server,
            cluster["id"],
            "box-0",
            ["sh", "-c", "seq 1 200000; echo done >&2"],
        ),
        fresh_api.account_key,
    )
    await ch.run_to_end(timeout=60)
    assert bytes(ch.out) == "".join(f"{i}\n" for i in range(1, 200001)).encode()
    assert bytes(ch.err) == b"done\n" and exit_code(ch.status) == 0


async def test_exec_refusals(shared_ecolink_server, fresh_api, cluster):
    srv, key, cid = shared_ecolink_server, fresh_api.account_key, cluster["id"]
    for url, k, status in [
        (exec_url(srv, cid, "box-0", ["true"]), None, 401),
        (exec_url(srv, cid, "box-0", ["true"]), "eco_nope", 401),
        (exec_url(srv, cid, "box-9", ["true"]), key, 404),
        (exec_url(srv, "no-such-cluster", "box-0", ["true"]), key, 404),
        (exec_url(srv, cid, "box-0", ["true"], tty="maybe"), key, 422),
    ]:
        headers = {"Authorization": f"Bearer {k}"} if k else {}
        with pytest.raises(websockets.InvalidStatus) as e:
            await websockets.connect(url, additional_headers=headers, subprotocols=[V5], proxy=None)
        assert e.value.response.status_code == status, url
    # A program that does not exist: exit code 127 and a message, like a shell.
    ch = await connect(exec_url(srv, cid, "box-0", ["no-such-program-xyz"]), key)
    await ch.run_to_end()
    assert exit_code(ch.status) == 127 and b"no-such-program-xyz" in ch.err
    # The same for kept sessions, and their other refusals.
    base = f"/gpu-clusters/{cid}/replicas/box-0/sessions"
    r = fresh_api.post(base, json={"command": ["no-such-program-xyz"]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "command"
    assert fresh_api.post(base, json={"tty": "yes"}).status_code == 422
    assert fresh_api.post(base, json={"command": 5}).status_code == 422
    assert fresh_api.post(base, content=b"{not json").status_code == 400
    assert (
        fresh_api.post(f"/gpu-clusters/{cid}/replicas/box-9/sessions", json={}).status_code == 404
    )
    assert httpx.post(srv.url + base, json={}).status_code == 401
    assert fresh_api.delete(f"/gpu-clusters/{cid}/sessions/ses_nope").status_code == 404


async def test_client_disconnect_ends_the_exec(shared_ecolink_server, fresh_api, cluster):
    srv, key, cid = shared_ecolink_server, fresh_api.account_key, cluster["id"]
    before = set(marked_processes(srv.state_dir, cid))
    ch = await connect(exec_url(srv, cid, "box-0", ["sh", "-c", "yes | cat"]), key)
    await ch.recv_one()
    assert len(set(marked_processes(srv.state_dir, cid)) - before) >= 2
    ch.ws.transport.abort()  # gone without a goodbye, mid-stream
    deadline = time.monotonic() + 10
    while set(marked_processes(srv.state_dir, cid)) - before:
        assert time.monotonic() < deadline, "the exec outlived its client"
        await asyncio.sleep(0.05)


async def test_sessions_detach_reattach_and_share(shared_ecolink_server, fresh_api, cluster):
    srv, key, cid = shared_ecolink_server, fresh_api.account_key, cluster["id"]
    r = fresh_api.post(f"/gpu-clusters/{cid}/replicas/box-1/sessions", json={"command": ["sh"]})
    assert r.status_code == 201, r.text
    s = r.json()
    assert s["replica"] == "box-1" and s["tty"] is True and s["exited"] is False
    attach = srv.ws_url(f"/gpu-clusters/{cid}/sessions/{s['id']}/attach")
    a = await connect(attach, key)
    await a.send_stdin(b"echo marker-$((40 + 2))\n")
    await a.until_out(b"marker-42")
    await a.ws.close()  # detach: the shell keeps running
    await asyncio.sleep(0.2)
    listed = fresh_api.get(f"/gpu-clusters/{cid}/sessions").json()["sessions"]
    assert [(x["id"], x["exited"], x["attached"]) for x in listed] == [(s["id"], False, 0)]
    # Two clients attach: both get the earlier output replayed, then the same live output.
    b = await connect(attach, key)
    c = await connect(attach, key, (V4,))
    await b.until_out(b"marker-42")
    await c.until_out(b"marker-42")
    assert fresh_api.get(f"/gpu-clusters/{cid}/sessions").json()["sessions"][0]["attached"] == 2
    await c.send_stdin(b"echo from-c-$((1 + 1))\n")
    await b.until_out(b"from-c-2")
    await c.until_out(b"from-c-2")
    await b.resize(90, 33)
    await b.send_stdin(b"stty size\n")
    await c.until_out(b"33 90")
    # Ending it: every client gets the status and is closed; the record says why.
    r = fresh_api.delete(f"/gpu-clusters/{cid}/sessions/{s['id']}")
    assert r.status_code == 200 and r.json()["ended_reason"] == "deleted"
    await b.run_to_end()
    await c.run_to_end()
    assert b.status is not None and b.status["status"] == "Failure"
    listed = fresh_api.get(f"/gpu-clusters/{cid}/sessions").json()["sessions"]
    assert listed[0]["exited"] is True and listed[0]["ended_reason"] == "deleted"
    # Attaching to an ended session: 404 before the upgrade.
    with pytest.raises(websockets.InvalidStatus) as e:
        await websockets.connect(
            attach,
            additional_headers={"Authorization": f"Bearer {key}"},
            subprotocols=[V5],
            proxy=None,
        )
    assert e.value.response.status_code == 404


async def test_session_exit_and_replay_of_a_megabyte(shared_ecolink_server, fresh_api, cluster):
    srv, key, cid = shared_ecolink_server, fresh_api.account_key, cluster["id"]
    # Output made while nobody is attached is kept (the last MiB at least).
    script = "seq 1 300000; echo the-end; exit 6"  # about 2 MB
    r = fresh_api.post(
        f"/gpu-clusters/{cid}/replicas/box-0/sessions", json={"command": script, "tty": False}
    )
    s = r.json()
    assert s["command"] == ["sh", "-c", script] and s["tty"] is False
    deadline = time.monotonic() + 20
    while not fresh_api.get(f"/gpu-clusters/{cid}/sessions").json()["sessions"][0]["exited"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    rec = fresh_api.get(f"/gpu-clusters/{cid}/sessions").json()["sessions"][0]
    assert rec["exit_code"] == 6 and rec["ended_reason"] == "exited"
    a = await connect(srv.ws_url(f"/gpu-clusters/{cid}/sessions/{s['id']}/attach"), key)
    await a.run_to_end()
    full = "".join(f"{i}\n" for i in range(1, 300001)).encode() + b"the-end\n"
    assert len(a.out) >= 1024 * 1024
    assert full.endswith(bytes(a.out)) and exit_code(a.status) == 6


async def test_slow_client_is_dropped_not_buffered(shared_ecolink_server, fresh_api, cluster):
    srv, key, cid = shared_ecolink_server, fresh_api.account_key, cluster["id"]
    r = fresh_api.post(
        f"/gpu-clusters/{cid}/replicas/box-0/sessions",
        json={"command": "sleep 1; seq 1 3000000; sleep 30", "tty": False},
    )
    s = r.json()
    attach = srv.ws_url(f"/gpu-clusters/{cid}/sessions/{s['id']}/attach")
    # A client that never reads, with tiny socket buffers, and one that keeps up.
    stuck = await websockets.connect(
        attach,
        additional_headers={"Authorization": f"Bearer {key}"},
        subprotocols=[V5],
        proxy=None,
        max_queue=1,
        write_limit=1024,
        max_size=None,
    )
    stuck.transport.pause_reading()
    fast = await connect(attach, key)
    want = "".join(f"{i}\n" for i in range(1, 3000001)).encode()
    deadline = time.monotonic() + 60
    while len(fast.out) < len(want):
        assert time.monotonic() < deadline
        assert await fast.recv_one(30)
    assert bytes(fast.out) == want  # nothing lost for the client keeping up
    stuck.transport.resume_reading()
    with pytest.raises(websockets.ConnectionClosed) as e:
        while True:
            await asyncio.wait_for(stuck.recv(), 20)
    assert e.value.rcvd is not None and e.value.rcvd.code == 4008
    fresh_api.delete(f"/gpu-clusters/{cid}/sessions/{s['id']}")
    await fast.ws.close()


def test_logs_tail_follow_and_previous(shared_ecolink_server, fresh_api):
    cmd = (
        'n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; echo "run $n"; '
        'for i in 1 2 3 4 5 6 7 8; do echo "tick $n.$i"; sleep 0.25; done; exit 2'
    )
    c = launch(fresh_api, "logger", replicas=2, command=cmd)
    cid = c["id"]
    wait_for(fresh_api, cid, all_ready(2))
    url = f"/gpu-clusters/{cid}/replicas/logger-0/logs"
    got = b""
    t0 = time.monotonic()
    with fresh_api.stream("GET", url, params={"follow": 1}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        for chunk in r.iter_bytes():
            got += chunk
            if b"tick 1.4" in got:
                break
    assert got.startswith(b"run 1\ntick 1.1\n")
    assert time.monotonic() - t0 < 5
    wait_for(
        fresh_api,
        cid,
        lambda x: (
            x["replica_states"][0]["restarts"] >= 1 and x["replica_states"][0]["phase"] == "Running"
        ),
        timeout=30,
    )
    time.sleep(0.3)
    prev = fresh_api.get(url, params={"previous": 1}).content
    assert prev.startswith(b"run 1\n") and b"tick 1.8\n" in prev
    cur = fresh_api.get(url).content
    assert cur.startswith(b"run 2\n")
    assert fresh_api.get(url, params={"tail": 1, "previous": "true"}).content == b"tick 1.8\n"
    assert fresh_api.get(url, params={"tail": "x"}).status_code == 422
    assert fresh_api.get(f"/gpu-clusters/{cid}/replicas/logger-7/logs").status_code == 404
    r = httpx.get(shared_ecolink_server.url + url)
    assert r.status_code == 401
    reason = fresh_api.get(f"/gpu-clusters/{cid}").json()["replica_states"][0]["reason"]
    assert "exited with code 2" in reason


async def test_attach_says_how_many_bytes_are_replayed(shared_ecolink_server, fresh_api, cluster):
    """`x-eco-replay-bytes` on the upgrade answer: the kept output before live output."""
    from ecocore.wire import SessionOut
    from ecotui.client.exec import attach_session
    from ecotui.client.rest import EcoClient

    client = EcoClient(shared_ecolink_server.url, fresh_api.account_key)
    try:
        info = await client.create_session(
            cluster["id"], "box-0", command=["sh", "-c", "echo kept-$((40+2)); exec cat"], tty=False
        )
        assert isinstance(info, SessionOut)
        sid = info.id
        first = await attach_session(client, cluster["id"], sid)
        got = b""
        async for _ch, data in first.frames():
            got += data
            if b"kept-42\n" in got:
                break
        await first.close()
        again = await attach_session(client, cluster["id"], sid)
        assert again.replay_bytes == len(got) == len(b"kept-42\n")
        await again.send_stdin(b"live\n")
        seen = b""
        async for _ch, data in again.frames():
            seen += data
            if b"live\n" in seen:
                break
        assert (
            seen[: again.replay_bytes] == b"kept-42\n" and seen[again.replay_bytes :] == b"live\n"
        )
        await again.close()
    finally:
        await client.aclose()
