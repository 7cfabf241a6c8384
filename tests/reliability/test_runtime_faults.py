"""Runtime faults on the local runtime: replicas that crash, hang, stop themselves or
ignore SIGTERM (terminate and stop still end every process, no cluster gets stuck);
a client that loses its connection in the middle of an action (the action ends in a
clear state and a retry with the same `Idempotency-Key` gives the first answer); and
no shell output lost before a fault (a kept session's replay has everything written
before the client dropped, or before its process crashed).

(The Kubernetes API server stopped and restarted is covered with the kubernetes
runtime's own tests.)
"""

from __future__ import annotations

import json
import random
import secrets
import socket
import struct
import time
from typing import Any

import httpx
import pytest

from support.reliability import (
    STATUS,
    STDIN,
    STDOUT,
    V5,
    RawWS,
    check_money,
    pids_running,
    process_table,
    usd,
    wait_for,
    ws_connect,
)

US_EAST = {
    "region": "us-east",
    "gpu_type": "L40S",
    "gpu_count": 1,
    "replicas": 2,
    "image": "busybox:1.36",
    "estimated_duration_hours": 2,
}


def launch(api: httpx.Client, name: str, command: str, **extra: Any) -> dict[str, Any]:
    r = api.post(
        "/gpu-clusters", json={**US_EAST, "name": name, "startup_command": command, **extra}
    )
    assert r.status_code == 201, r.text
    return r.json()


def tag() -> str:
    """A number that makes a replica's `sleep` findable in /proc."""
    return str(random.randrange(10**8, 10**9))


def alive(needle: str) -> int:
    return len(pids_running(needle))


# --------------------------------------------------------------------------- crashes


def test_crashing_replicas_restart_and_end_cleanly(fresh_api: httpx.Client) -> None:
    api = fresh_api
    t = tag()
    launch(api, "crashy", f"echo start-$ECO_REPLICA_INDEX; sleep 0.2; exit 3 # {t}")
    launch(api, "half", f'[ "$ECO_REPLICA_INDEX" = 0 ] && exit 7; exec sleep {t}')

    def restarted() -> bool:
        states = api.get("/gpu-clusters/crashy").json()["replica_states"]
        return all(s["restarts"] >= 2 for s in states)

    wait_for(restarted, 20, 0.2, "crash-looping replicas restarted twice each")
    events = api.get("/gpu-clusters/crashy/events").json()["events"]
    crashed = [e for e in events if e["kind"] == "replica_crashed"]
    assert len(crashed) >= 4 and "3" in crashed[0]["message"], crashed
    logs = api.get("/gpu-clusters/crashy/replicas/crashy-0/logs", params={"tail": 50})
    assert logs.status_code == 200 and "start-0" in logs.text, logs.text
    half = wait_for(
        lambda: (
            (c := api.get("/gpu-clusters/half").json())["replica_states"][0]["restarts"] >= 1 and c
        ),
        20,
        what="replica 0 of half crashed",
    )
    assert half["replica_states"][1]["restarts"] == 0
    assert half["status"] in ("pending", "running"), half

    # Stop and resume a crash-looping cluster, then terminate both: nothing gets stuck.
    stopped = api.post("/gpu-clusters/crashy/stop")
    assert stopped.status_code == 200, stopped.text
    wait_for(
        lambda: api.get("/gpu-clusters/crashy").json()["status"] == "stopped",
        20,
        what="crash-looping cluster stopped",
    )
    assert api.post("/gpu-clusters/crashy/resume").status_code == 200
    for name in ("crashy", "half"):
        r = api.delete(f"/gpu-clusters/{name}")
        assert r.status_code == 200 and r.json()["status"] in ("terminating", "terminated"), r.text
    wait_for(
        lambda: all(
            c["status"] == "terminated" for c in api.get("/gpu-clusters").json()["clusters"]
        ),
        20,
        what="terminated",
    )
    wait_for(
        lambda: alive(f"# {t}") == 0 and alive(f"sleep {t}") == 0,
        15,
        what="no replica process left",
    )
    check_money(api, where="after crash loops")


# --------------------------------------------------------------------------- stubborn


STUBBORN = {
    # SIGTERM ignored by the shell and (inherited) by its child.
    "deaf": "trap '' TERM INT HUP; echo up; while :; do sleep 1; done # {t}",
    # A double-forked daemon in its own session, ignoring SIGTERM too.
    "daemon": "(trap '' TERM HUP; setsid sh -c \"trap '' TERM HUP; exec sleep {t}\" &); "
    "trap '' TERM; exec sleep {t}",
    # A replica that stopped itself (SIGSTOP): it cannot react to anything but SIGKILL.
    "frozen": "sleep {t} & kill -STOP $$",
    # Output closed, ignores SIGTERM, busy in a loop.
    "hung": "exec >/dev/null 2>&1; trap '' TERM; while :; do sleep 0.5; done # {t}",
}


@pytest.mark.parametrize("kind", sorted(STUBBORN))
def test_replicas_ignoring_sigterm_are_still_ended(fresh_api: httpx.Client, kind: str) -> None:
    api = fresh_api
    t = tag()
    launch(api, kind, STUBBORN[kind].format(t=t))
    wait_for(
        lambda: api.get(f"/gpu-clusters/{kind}").json()["status"] == "running",
        20,
        what=f"{kind} running",
    )
    wait_for(lambda: alive(t) >= 2, 10, what=f"{kind}: processes up")
    time.sleep(0.3)

    # Stop: SIGTERM is ignored, so the runtime must escalate; the cluster ends stopped.
    started = time.monotonic()
    assert api.post(f"/gpu-clusters/{kind}/stop").status_code == 200
    wait_for(
        lambda: api.get(f"/gpu-clusters/{kind}").json()["status"] == "stopped",
        30,
        what=f"{kind} stopped",
    )
    wait_for(lambda: alive(t) == 0, 15, what=f"{kind}: no process after stop")
    stop_s = time.monotonic() - started

    assert api.post(f"/gpu-clusters/{kind}/resume").status_code == 200
    wait_for(lambda: alive(t) >= 2, 15, what=f"{kind}: processes back after resume")
    time.sleep(0.3)
    started = time.monotonic()
    r = api.delete(f"/gpu-clusters/{kind}")
    assert r.status_code == 200, r.text
    wait_for(
        lambda: api.get(f"/gpu-clusters/{kind}").json()["status"] == "terminated",
        30,
        what=f"{kind} terminated",
    )
    wait_for(lambda: alive(t) == 0, 15, what=f"{kind}: no process after terminate")
    term_s = time.monotonic() - started
    # The runtime's grace period is 5 s: escalation, not an endless wait.
    assert stop_s < 25 and term_s < 25, (stop_s, term_s)
    c = api.get(f"/gpu-clusters/{kind}").json()
    assert usd(c["cost"]["hold_remaining"]) == 0 and usd(c["burn_rate"]) == 0, c
    check_money(api, where=kind)


# --------------------------------------------------------------------------- dropped clients


def _raw_request(
    base_url: str,
    method: str,
    path: str,
    key: str,
    body: Any = None,
    idem: str | None = None,
    *,
    send_fraction: float = 1.0,
    linger_s: float = 0.0,
) -> None:
    """Send a request and drop the connection (TCP reset) without reading the answer:
    after `linger_s`, or after only `send_fraction` of the body."""
    host, port = base_url.split("://", 1)[1].rsplit(":", 1)
    payload = b"" if body is None else json.dumps(body).encode()
    head = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host}:{port}",
        f"Authorization: Bearer {key}",
        f"Content-Length: {len(payload)}",
        "Content-Type: application/json",
    ]
    if idem:
        head.append(f"Idempotency-Key: {idem}")
    data = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
    cut = len(data) - len(payload) + int(len(payload) * send_fraction)
    s = socket.create_connection((host, int(port)), timeout=5)
    s.sendall(data[:cut] if send_fraction < 1 else data)
    if linger_s:
        time.sleep(linger_s)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def test_client_dropping_mid_action_ends_clearly(
    shared_ecolink_server: Any, fresh_api: httpx.Client
) -> None:
    srv, api = shared_ecolink_server, fresh_api
    key = api.account_key  # type: ignore[attr-defined]
    rng = random.Random()
    t = tag()

    # A body cut in half: nothing happens; the retry with the same key does it once.
    half_key = secrets.token_hex(8)
    body = {**US_EAST, "name": "dropped", "startup_command": f"exec sleep {t}"}
    _raw_request(srv.url, "POST", "/gpu-clusters", key, body, half_key, send_fraction=0.5)
    time.sleep(0.3)
    assert api.get("/gpu-clusters/dropped").status_code == 404

    steps: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/gpu-clusters", body),
        ("POST", "/gpu-clusters/dropped/scale", {"replicas": 3}),
        ("POST", "/gpu-clusters/dropped/extend", {"hours": "1.5"}),
        ("PUT", "/gpu-clusters/dropped/endpoint", {"port": 8080}),
        ("POST", "/gpu-clusters/dropped/stop", None),
        ("POST", "/gpu-clusters/dropped/extend", {"hours": 1}),
        ("POST", "/gpu-clusters/dropped/resume", None),
        ("POST", "/gpu-clusters/dropped/scale", {"replicas": 2}),
        ("DELETE", "/gpu-clusters/dropped/endpoint", None),
        ("DELETE", "/gpu-clusters/dropped", None),
    ]
    for i, (method, path, payload) in enumerate(steps):
        idem = half_key if i == 0 else secrets.token_hex(8)
        before = api.get("/gpu-clusters/dropped")
        mark = _last_ledger_id(api)
        _raw_request(
            srv.url, method, path, key, payload, idem, linger_s=rng.choice([0.0, 0.002, 0.02, 0.1])
        )
        time.sleep(rng.choice([0.0, 0.05, 0.3]))  # retry while it may still be running
        first = api.request(method, path, json=payload, headers={"Idempotency-Key": idem})
        again = api.request(method, path, json=payload, headers={"Idempotency-Key": idem})
        where = f"{method} {path}"
        assert first.status_code < 300, (where, first.text)
        assert (again.status_code, again.content) == (first.status_code, first.content), where
        after = api.get("/gpu-clusters/dropped").json()
        assert after["status"] not in ("stopping", "terminating") or _settles(api), where
        view = check_money(api, where=where)
        holds = [e for e in view["entries"] if e["id"] > mark and e["kind"] == "hold"]
        assert len(holds) <= 1, (where, holds)
        if path.endswith("/extend") and before.status_code == 200:
            # Exactly once: the expiry moved by the hours asked, not twice that.
            moved = _ts(after["expires_at"]) - _ts(before.json()["expires_at"])
            assert abs(moved - float(payload["hours"]) * 3600) < 0.01, (where, moved)  # type: ignore[index]
        if path.endswith("/scale"):
            assert after["replicas"] == payload["replicas"], where  # type: ignore[index]
    clusters = [c for c in api.get("/gpu-clusters").json()["clusters"] if c["name"] == "dropped"]
    assert len(clusters) == 1 and clusters[0]["status"] == "terminated", clusters
    wait_for(lambda: alive(f"sleep {t}") == 0, 15, what="no replica left")


def _settles(api: httpx.Client) -> bool:
    wait_for(
        lambda: (
            api.get("/gpu-clusters/dropped").json()["status"] not in ("stopping", "terminating")
        ),
        20,
        what="a settled state",
    )
    return True


def _last_ledger_id(api: httpx.Client) -> int:
    entries = api.get("/account/ledger", params={"limit": 1}).json()["entries"]
    return entries[0]["id"] if entries else 0


def _ts(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# --------------------------------------------------------------------------- shell output


def _read_stdout_until(ws: Any, needle: bytes, timeout: float = 20.0) -> tuple[bytes, Any]:
    out = bytearray()
    status = None
    deadline = time.monotonic() + timeout
    while needle not in out and status is None:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} never came; got {bytes(out[-200:])!r}"
        try:
            msg = ws.recv(timeout=left)
        except TimeoutError:
            continue
        if isinstance(msg, bytes) and msg[:1] == bytes([STDOUT]):
            out += msg[1:]
        elif isinstance(msg, bytes) and msg[:1] == bytes([STATUS]):
            status = json.loads(msg[1:])
    return bytes(out), status


def test_no_shell_output_lost_before_a_fault(
    shared_ecolink_server: Any, fresh_api: httpx.Client
) -> None:
    srv, api = shared_ecolink_server, fresh_api
    key = api.account_key  # type: ignore[attr-defined]
    t = tag()
    launch(api, "shells", f"exec sleep {t}")
    wait_for(
        lambda: api.get("/gpu-clusters/shells").json()["ready_replicas"] == 2, 20, what="ready"
    )
    expected = b"".join(b"%d\n" % i for i in range(1, 40001))

    # 1. The client drops (TCP reset) while output streams; a new client gets it all.
    sid = api.post(
        "/gpu-clusters/shells/replicas/shells-0/sessions", json={"command": ["sh"], "tty": False}
    ).json()["id"]
    path = f"/gpu-clusters/shells/sessions/{sid}/attach"
    raw = RawWS(srv.url, path, key=key, subprotocols=[V5])
    assert raw.status == 101, raw.head
    raw.send_frame(0x2, bytes([STDIN]) + b"seq 1 40000; echo END-OF-SEQ\n")
    raw.read_some(0.05, limit=4096)
    raw.abort()
    with ws_connect(srv.ws_url(path), key, subprotocols=[V5]) as ws:
        out, _ = _read_stdout_until(ws, b"END-OF-SEQ\n")
    assert out == expected + b"END-OF-SEQ\n", (len(out), out[:100], out[-100:])

    # 2. The process crashes right after writing (kill -9 of itself) with nobody
    #    attached: the replay still has every byte, then the failure status.
    sid2 = api.post(
        "/gpu-clusters/shells/replicas/shells-1/sessions",
        json={"command": "seq 1 40000; kill -9 $$", "tty": False},
    ).json()["id"]
    wait_for(
        lambda: next(
            s
            for s in api.get("/gpu-clusters/shells/sessions").json()["sessions"]
            if s["id"] == sid2
        )["exited"],
        20,
        what="the session's process died",
    )
    with ws_connect(
        srv.ws_url(f"/gpu-clusters/shells/sessions/{sid2}/attach"), key, subprotocols=[V5]
    ) as ws:
        out, status = _read_stdout_until(ws, b"\x00never\x00")
    assert out == expected, (len(out), out[-100:])
    assert status is not None and status["status"] == "Failure", status
    listed = next(
        s for s in api.get("/gpu-clusters/shells/sessions").json()["sessions"] if s["id"] == sid2
    )
    assert listed["exited"] and listed["exit_code"] != 0, listed

    # 3. A one-shot exec whose client vanishes mid-stream leaves no process behind.
    raw = RawWS(
        srv.url,
        f"/gpu-clusters/shells/replicas/shells-0/exec?command=sh&command=-c&command=yes%20exec-{t}",
        key=key,
        subprotocols=[V5],
    )
    assert raw.status == 101
    raw.read_some(0.1, limit=50_000)
    raw.abort()
    wait_for(
        lambda: not any(f"yes exec-{t}".encode() in c for c in process_table()),
        15,
        what="the dropped exec's process ended",
    )
    assert api.delete("/gpu-clusters/shells").status_code == 200
