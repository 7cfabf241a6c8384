"""What the reliability tests share: small catalogs that bound what a test can start,
black-box money checks (billing.md's invariants read from the API alone, never from
the backend's own audit), polling, and WebSocket helpers for the channel framing."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
from websockets.sync.client import ClientConnection, connect

T = TypeVar("T")

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
STDIN, STDOUT, STDERR, STATUS, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255

# Cheap GPUs and small budgets: whatever a test (or a fuzzer) launches, one account
# never runs more than `budget` replica processes per region.
CATALOG_TEMPLATE = """
[[regions]]
name = "rel-a"
gpu_budget = {budget_a}

[[regions.gpu_types]]
name = "T1"
rate_per_gpu_hour = "{rate}"
gpu_counts = [1, 2]

[[regions]]
name = "rel-b"
gpu_budget = {budget_b}

[[regions.gpu_types]]
name = "T2"
rate_per_gpu_hour = "{rate_b}"
gpu_counts = [1]
"""

REGIONS = {"rel-a": ("T1", (1, 2)), "rel-b": ("T2", (1,))}


def write_catalog(
    path: Path, *, budget_a: int = 8, budget_b: int = 4, rate: str = "0.50", rate_b: str = "0.25"
) -> Path:
    path.write_text(
        CATALOG_TEMPLATE.format(budget_a=budget_a, budget_b=budget_b, rate=rate, rate_b=rate_b)
    )
    return path


def wait_for(
    pred: Callable[[], T], timeout: float = 20.0, interval: float = 0.1, what: str = "condition"
) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def usd(text: str) -> int:
    """A JSON money string to micro-dollars, exactly (no floats)."""
    neg = text.startswith("-")
    whole, _, frac = text.lstrip("-").partition(".")
    assert len(frac) == 6 and whole.isdigit() and frac.isdigit(), f"bad money string {text!r}"
    v = int(whole) * 1_000_000 + int(frac)
    return -v if neg else v


def launch_body(
    name: str,
    *,
    region: str = "rel-a",
    gpu_count: int = 1,
    replicas: int = 2,
    hours: str | float = "1",
    command: str | None = "sleep 3600",
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "region": region,
        "gpu_type": REGIONS[region][0],
        "gpu_count": gpu_count,
        "replicas": replicas,
        "image": "busybox:1.36",
        "estimated_duration_hours": hours,
    }
    if command is not None:
        body["startup_command"] = command
    body.update(extra)
    return body


def ledger_all(client: httpx.Client) -> list[dict[str, Any]]:
    """Every ledger entry of the client's account, oldest first."""
    out: list[dict[str, Any]] = []
    before: int | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if before is not None:
            params["before"] = before
        r = client.get("/account/ledger", params=params)
        assert r.status_code == 200, r.text
        page = r.json()["entries"]
        out.extend(page)
        if len(page) < 1000:
            break
        before = page[-1]["id"]
    out.reverse()
    ids = [e["id"] for e in out]
    assert ids == sorted(set(ids)), "ledger ids must be unique and increasing"
    return out


def check_money(client: httpx.Client, *, where: str = "") -> dict[str, Any]:
    """billing.md's invariants, from the API: available = balance - held >= 0; the
    signed sums reproduce balance and held (and every running total); per cluster
    spent <= hold and its cost block matches its own ledger entries; a stopped,
    terminated or failed cluster holds nothing; no money moves for a cluster that
    is not listed. Returns the account, ledger and clusters it read."""
    # Read the clusters between two account reads: if nothing moved in between, the
    # three views are of one moment (the reaper may post a charge at any time).
    for _ in range(20):
        a1 = client.get("/account").json()
        clusters = client.get("/gpu-clusters").json()["clusters"]
        entries = ledger_all(client)
        a2 = client.get("/account").json()
        if a1 == a2 and (
            not entries
            or (
                usd(entries[-1]["balance_after"]) == usd(a2["balance"])
                and usd(entries[-1]["held_after"]) == usd(a2["held"])
            )
        ):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"{where}: the account kept moving; could not read a stable view")
    acct = a2
    p = f"{where}: " if where else ""
    balance, held = usd(acct["balance"]), usd(acct["held"])
    assert usd(acct["available"]) == balance - held, p + f"available != balance - held: {acct}"
    assert balance - held >= 0, p + f"available below zero: {acct}"
    assert held >= 0, p + f"held below zero: {acct}"

    run_bal = run_held = 0
    per: dict[str, dict[str, int]] = {}
    for e in entries:
        amt = usd(e["amount"])
        kind = e["kind"]
        if kind == "credit":
            assert amt != 0, p + f"zero credit {e}"
            run_bal += amt
        elif kind == "hold":
            assert amt > 0, p + f"hold must be positive {e}"
            run_held += amt
        elif kind == "hold_release":
            assert amt < 0, p + f"hold_release must be negative {e}"
            run_held += amt
        elif kind == "charge":
            assert amt < 0, p + f"charge must be negative {e}"
            run_bal += amt
            run_held += amt
        else:
            raise AssertionError(p + f"unknown ledger kind {e}")
        assert (usd(e["balance_after"]), usd(e["held_after"])) == (run_bal, run_held), (
            p + f"running totals drift at entry {e}"
        )
        assert run_held >= 0 and run_bal - run_held >= 0, p + f"below zero at entry {e}"
        if kind != "credit":
            cid = e["cluster_id"]
            assert cid, p + f"a {kind} without a cluster: {e}"
            m = per.setdefault(cid, {"hold": 0, "released": 0, "spent": 0})
            if kind == "hold":
                m["hold"] += amt
            elif kind == "hold_release":
                m["released"] -= amt
            else:
                m["spent"] -= amt
                assert m["spent"] <= m["hold"], p + f"cluster {cid} charged beyond its holds at {e}"
    assert (run_bal, run_held) == (balance, held), (
        p + f"signed sums {run_bal}/{run_held} != account {balance}/{held}"
    )

    by_id = {c["id"]: c for c in clusters}
    for cid in per:
        assert cid in by_id, p + f"money moved for cluster {cid}, which is not listed"
    for c in clusters:
        m = per.get(c["id"], {"hold": 0, "released": 0, "spent": 0})
        cost = c["cost"]
        got = (usd(cost["hold"]), usd(cost["spent"]), usd(cost["hold_remaining"]))
        want = (m["hold"], m["spent"], m["hold"] - m["released"] - m["spent"])
        assert got == want, p + f"cluster {c['name']} ({c['status']}): cost {cost} != ledger {m}"
        assert m["hold"] > 0, p + f"cluster {c['name']} exists without a launch hold"
        assert m["spent"] <= m["hold"], p + f"cluster {c['name']} spent more than it held"
        remaining = want[2]
        assert remaining >= 0, p + f"cluster {c['name']} holds a negative amount"
        if c["status"] in ("stopped", "terminated", "failed"):
            assert remaining == 0, p + f"{c['status']} cluster {c['name']} still holds {remaining}"
            assert usd(c["burn_rate"]) == 0, p + f"{c['status']} cluster {c['name']} burns"
    return {"account": acct, "entries": entries, "clusters": clusters, "per_cluster": per}


# --------------------------------------------------------------------------- websockets


def ws_connect(
    url: str,
    key: str | None,
    *,
    subprotocols: list[str] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    max_size: int | None = 2**25,
) -> ClientConnection:
    hdrs = dict(headers or {})
    if key is not None:
        hdrs["Authorization"] = f"Bearer {key}"
    return connect(
        url,
        additional_headers=hdrs,
        subprotocols=subprotocols,  # type: ignore[arg-type]
        open_timeout=timeout,
        close_timeout=2,
        max_size=max_size,
        proxy=None,
        legacy=True,
    )


def read_exec(
    ws: ClientConnection, timeout: float = 20.0
) -> tuple[bytes, bytes, dict[str, Any] | None]:
    """Read channel frames until the status frame (or close): stdout, stderr, status."""
    out, err = bytearray(), bytearray()
    status: dict[str, Any] | None = None
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no status frame in time; stdout so far {bytes(out)[-300:]!r}")
        try:
            msg = ws.recv(timeout=left)
        except TimeoutError:
            continue
        except Exception:  # closed
            return bytes(out), bytes(err), status
        if isinstance(msg, str):
            msg = msg.encode()
        if not msg:
            continue
        ch, data = msg[0], msg[1:]
        if ch == STDOUT:
            out += data
        elif ch == STDERR:
            err += data
        elif ch == STATUS:
            status = json.loads(data)
            return bytes(out), bytes(err), status


def exec_once(
    srv_ws_url: Callable[[str], str],
    key: str,
    cluster: str,
    replica: str,
    command: list[str],
    timeout: float = 20.0,
) -> tuple[bytes, bytes, dict[str, Any] | None]:
    q = urlencode([("command", c) for c in command])
    url = srv_ws_url(f"/gpu-clusters/{cluster}/replicas/{replica}/exec?{q}")
    with ws_connect(url, key, subprotocols=[V5]) as ws:
        return read_exec(ws, timeout)


class RawWS:
    """A hand-made WebSocket client over a plain socket, for what a well-behaved
    library refuses to send: bad opcodes, unmasked or oversized frames, invalid UTF-8,
    and connections dropped without a close frame (TCP reset)."""

    def __init__(
        self,
        base_url: str,
        path: str,
        *,
        key: str | None,
        subprotocols: list[str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        host, port = base_url.split("://", 1)[1].rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode(),
            "Sec-WebSocket-Version: 13",
        ]
        if key is not None:
            lines.append(f"Authorization: Bearer {key}")
        if subprotocols:
            lines.append("Sec-WebSocket-Protocol: " + ", ".join(subprotocols))
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            head += chunk
        self.head, _, self.rest = head.partition(b"\r\n\r\n")
        status_line = self.head.split(b"\r\n", 1)[0].decode("latin-1")
        self.status = int(status_line.split()[1]) if len(status_line.split()) > 1 else 0

    def send_frame(
        self,
        opcode: int,
        payload: bytes,
        *,
        fin: bool = True,
        mask: bool = True,
        rsv: int = 0,
        declared_len: int | None = None,
    ) -> None:
        n = len(payload) if declared_len is None else declared_len
        b0 = (0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)
        if n < 126:
            hdr = struct.pack("!BB", b0, (0x80 if mask else 0) | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", b0, (0x80 if mask else 0) | 126, n)
        else:
            hdr = struct.pack("!BBQ", b0, (0x80 if mask else 0) | 127, n)
        if mask:
            m = os.urandom(4)
            masked = (
                bytes(b ^ m[i % 4] for i, b in enumerate(payload))
                if len(payload) < 65536
                else _mask_big(payload, m)
            )
            self.sock.sendall(hdr + m + masked)
        else:
            self.sock.sendall(hdr + payload)

    def read_some(self, timeout: float = 1.0, limit: int = 1 << 20) -> bytes:
        self.sock.settimeout(timeout)
        got = bytearray(self.rest)
        self.rest = b""
        try:
            while len(got) < limit:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                got += chunk
        except (TimeoutError, OSError):
            pass
        return bytes(got)

    def abort(self) -> None:
        """Drop the connection with a TCP reset: no close frame, no FIN handshake."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def _mask_big(payload: bytes, m: bytes) -> bytes:
    key = int.from_bytes((m * ((len(payload) + 3) // 4))[: len(payload)], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(len(payload), "big")


# --------------------------------------------------------------------------- processes


def rss_kib(pid: int) -> int:
    """Resident memory of a process, KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def process_table() -> list[bytes]:
    """Command lines (NUL turned into space) of every live, non-zombie process."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ")
            stat = (d / "stat").read_bytes()
        except OSError:
            continue
        if b") Z " not in stat:
            out.append(cmd)
    return out


def pids_running(needle: str, *, prefix: bool = False) -> list[bytes]:
    """Live processes whose command line contains `needle` (with `prefix`: starts with
    it), zombies left out (Linux /proc)."""
    n = needle.encode()
    return [c for c in process_table() if (c.startswith(n) if prefix else n in c)]
