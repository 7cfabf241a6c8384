"""A generated fleet: api.md-shaped clusters, account, ledger, events, metrics and
logs for N clusters x R replicas x G GPUs, deterministically from a seed and a
start time.
"""

from __future__ import annotations

import copy
import random
from datetime import datetime, timedelta
from typing import Any

from ecocore.fleet_delta import RowVersions
from ecocore.limits import DEFAULT_TERMINATION_GRACE_SECONDS
from ecotui.testing.common import FIXED_START, GPU_TYPES, MICRO, REGIONS, ROLES, WORDS, iso, usd
from ecotui.testing.telemetry import FleetTelemetry


class GeneratedFleet(FleetTelemetry):
    """N clusters of R replicas with G GPUs each; the first few show every alert and state."""

    def __init__(
        self,
        clusters: int = 10,
        replicas: int = 8,
        gpus: int = 8,
        *,
        seed: int = 7,
        start: datetime = FIXED_START,
        telemetry: str = "simulated",
        balance_usd: int = 25_000,
    ) -> None:
        self.n = clusters
        self.r = replicas
        self.g = gpus
        self.start = start
        self.telemetry = telemetry
        self.rng = random.Random(seed)
        self._gpu_versions: dict[tuple[bool, bool], RowVersions] = {}
        self.balance = balance_usd * MICRO
        self.clusters: dict[str, dict[str, Any]] = {}
        self._events: dict[str, list[dict[str, Any]]] = {}
        self._base_util: dict[str, float] = {}
        self._ledger: list[dict[str, Any]] = []
        for i in range(clusters):
            c = self._make(i)
            self.clusters[c["id"]] = c
        self._build_ledger()

    # -- building ------------------------------------------------------------
    def _make(self, i: int) -> dict[str, Any]:
        rng = self.rng
        cid = f"gc_{i:05d}"
        name = f"{WORDS[i % len(WORDS)]}-{ROLES[(i // len(WORDS)) % len(ROLES)]}"
        if i >= len(WORDS):
            name = f"{name}-{i:03d}"
        region = REGIONS[i % len(REGIONS)]
        gpu_type, rate, mem_total, power_limit = GPU_TYPES[(i // 2) % len(GPU_TYPES)]
        gpu_count = self.g
        replicas = self.r
        status, reason = "running", None
        special = i if i < 10 else None
        # The first clusters show each state and alert once (fixed data for views and tests).
        if special == 1:
            status = "pending"
        elif special == 3:
            status = "stopped"
        elif special == 6:
            status, reason = "failed", "error"
        elif special == 8:
            status, reason = "terminated", "user"
        hours = [4, 12, 24, 48, 8, 2, 6, 10, 3, 72][i % 10]
        created = self.start - timedelta(minutes=rng.randint(30, 600))
        expires = created + timedelta(hours=hours)
        if special == 2:
            expires = self.start + timedelta(minutes=4, seconds=30)
        elif special == 5:
            expires = self.start + timedelta(minutes=22)
        elif expires <= self.start + timedelta(hours=1):
            expires = self.start + timedelta(hours=hours)
        hourly = rate * gpu_count * replicas
        burn = hourly if status in ("running", "pending") else 0
        hold = hourly * hours
        elapsed_h = max(0.0, (self.start - created).total_seconds() / 3600)
        spent = min(hold, int(hourly * min(elapsed_h, hours)))
        if status in ("stopped", "failed", "terminated"):
            spent = min(hold, int(hourly * elapsed_h * 0.5))
        hold_remaining = 0 if status in ("stopped", "failed", "terminated") else hold - spent
        left_h = max(0.0, (expires - self.start).total_seconds() / 3600)
        projected = spent + int(burn * left_h)
        states = []
        ready = 0
        for k in range(replicas if status not in ("stopped", "terminated") else 0):
            phase, rdy, restarts, rreason = "Running", True, 0, None
            node: str | None = f"node-{region}-{(i * 3 + k) % 40:02d}"
            if status == "pending" or (special == 4 and k >= replicas - 1):
                phase, rdy, node = "Pending", False, None
                rreason = "Unschedulable: 0/12 nodes are available: 12 Insufficient nvidia.com/gpu"
            elif special == 7 and k == 1:
                phase, rdy, restarts, rreason = "Running", False, 7, "CrashLoopBackOff"
            elif status == "failed":
                phase, rdy, rreason = "Failed", False, "Error: exit code 1"
            if rdy:
                ready += 1
            states.append(
                {
                    "name": f"{name}-{k}",
                    "index": k,
                    "phase": phase,
                    "ready": rdy,
                    "restarts": restarts,
                    "reason": rreason,
                    "node": node,
                }
            )
        base = 0.0 if status not in ("running",) else rng.uniform(35, 95)
        if special == 0:
            base = 2.0  # idle GPUs
        self._base_util[cid] = base
        cluster = {
            "id": cid,
            "name": name,
            "region": region,
            "gpu_type": gpu_type,
            "gpu_count": gpu_count,
            "replicas": replicas,
            "image": f"ghcr.io/example/{name.split('-')[0]}:1.{i % 7}",
            "startup_command": None,
            "shared_filesystems": ["models"] if i % 4 == 0 else [],
            "termination_grace_seconds": DEFAULT_TERMINATION_GRACE_SECONDS,
            "status": status,
            "status_reason": reason,
            "stale": False,
            "created_at": iso(created),
            "started_at": iso(created + timedelta(seconds=40)),
            "expires_at": iso(expires),
            "estimated_duration_hours": str(hours),
            "hourly_rate": usd(hourly),
            "burn_rate": usd(burn),
            "cost": {
                "hold": usd(hold),
                "spent": usd(spent),
                "hold_remaining": usd(hold_remaining),
                "projected_total": usd(projected),
            },
            "endpoint": (
                {"url": f"http://127.0.0.1:8600/gpu-clusters/{cid}/service/", "port": 8000}
                if i % 3 == 0
                else None
            ),
            "ready_replicas": ready,
            "replica_states": states,
            "gpu_summary": self._summary(cid, 0.0, status, states),
        }
        cluster["traffic"] = self.cluster_traffic(cluster, 0.0)
        self._events[cid] = self._make_events(cid, name, created, status, states, special)
        return cluster

    def _make_events(
        self,
        cid: str,
        name: str,
        created: datetime,
        status: str,
        states: list[dict[str, Any]],
        special: int | None,
    ) -> list[dict[str, Any]]:
        evs = [
            {
                "at": iso(created),
                "kind": "launched",
                "message": f"launched {name} with {self.r} replicas",
            }
        ]
        for s in states:
            if s["ready"]:
                evs.append(
                    {
                        "at": iso(created + timedelta(seconds=30 + s["index"])),
                        "kind": "replica_ready",
                        "message": f"{s['name']} is ready",
                        "replica": s["name"],
                    }
                )
            elif s["phase"] == "Pending":
                evs.append(
                    {
                        "at": iso(created + timedelta(seconds=5)),
                        "kind": "replica_pending",
                        "message": f"{s['name']} is pending: {s['reason']}",
                        "replica": s["name"],
                    }
                )
        if special == 7:
            evs.append(
                {
                    "at": iso(self.start - timedelta(minutes=2)),
                    "kind": "replica_crashed",
                    "message": f"{name}-1 exited with code 1 (restart 7)",
                    "replica": f"{name}-1",
                }
            )
        if status == "failed":
            evs.append(
                {
                    "at": iso(created + timedelta(minutes=3)),
                    "kind": "replica_failed",
                    "message": "replica exited with code 1: CUDA error: out of memory",
                    "replica": f"{name}-0",
                }
            )
        if special == 2:
            evs.append(
                {
                    "at": iso(self.start - timedelta(minutes=25, seconds=30)),
                    "kind": "expiry_warning",
                    "message": f"{name} expires in 30 minutes",
                }
            )
        if status == "stopped":
            evs.append(
                {
                    "at": iso(created + timedelta(hours=1)),
                    "kind": "stopped",
                    "message": "stopped by the user; unused hold released",
                }
            )
        if status == "terminated":
            evs.append(
                {
                    "at": iso(created + timedelta(hours=1)),
                    "kind": "terminated",
                    "message": "terminated by the user",
                }
            )
        return evs

    def _build_ledger(self) -> None:
        entries: list[tuple[datetime, str | None, str, int, str]] = [
            (self.start - timedelta(days=3), None, "credit", self.balance, "demo credit")
        ]
        for c in self.clusters.values():
            created = datetime.fromisoformat(c["created_at"].replace("Z", "+00:00"))
            hold = int(c["cost"]["hold"].replace(".", ""))
            spent = int(c["cost"]["spent"].replace(".", ""))
            entries.append((created, c["id"], "hold", hold, f"launch {c['name']}"))
            if spent:
                entries.append(
                    (
                        created + timedelta(minutes=50),
                        c["id"],
                        "charge",
                        -spent,
                        f"usage of {c['name']}",
                    )
                )
            if c["status"] in ("stopped", "failed", "terminated"):
                entries.append(
                    (
                        created + timedelta(hours=1),
                        c["id"],
                        "hold_release",
                        -(hold - spent),
                        f"{c['status']} {c['name']}",
                    )
                )
        entries.sort(key=lambda e: e[0])
        balance = held = 0
        for n, (at, cid, kind, amount, memo) in enumerate(entries, start=1):
            if kind == "credit":
                balance += amount
            elif kind == "hold":
                held += amount
            elif kind == "hold_release":
                held += amount
            elif kind == "charge":
                balance += amount
                held += amount
            self._ledger.append(
                {
                    "id": n,
                    "at": iso(at),
                    "cluster_id": cid,
                    "kind": kind,
                    "amount": usd(amount),
                    "balance_after": usd(balance),
                    "held_after": usd(held),
                    "memo": memo,
                }
            )
        self._balance, self._held = balance, held

    # -- reading ---------------------------------------------------------------
    @property
    def account(self) -> dict[str, Any]:
        return {
            "id": "acct_demo",
            "name": "demo",
            "balance": usd(self._balance),
            "held": usd(self._held),
            "available": usd(self._balance - self._held),
        }

    def snapshot_frame(self) -> dict[str, Any]:
        return {
            "type": "snapshot",
            "clusters": [copy.deepcopy(c) for c in self.clusters.values()],
            "account": self.account,
        }

    def events(self, cid: str) -> list[dict[str, Any]]:
        return list(self._events.get(cid, []))

    def ledger(
        self, *, cluster_id: str | None = None, limit: int = 100, before: int | None = None
    ) -> list[dict[str, Any]]:
        rows = [
            e
            for e in reversed(self._ledger)
            if (cluster_id is None or e["cluster_id"] == cluster_id)
            and (before is None or e["id"] < before)
        ]
        return rows[:limit]

    def ledger_csv(self, cluster_id: str | None = None) -> str:
        cols = ["id", "at", "cluster_id", "kind", "amount", "balance_after", "held_after", "memo"]
        lines = [",".join(cols)]
        for e in self.ledger(cluster_id=cluster_id, limit=1000):
            lines.append(",".join(str(e[k] if e[k] is not None else "") for k in cols))
        return "\n".join(lines) + "\n"

    def logs(self, cid: str, replica: str, *, previous: bool = False, lines: int = 60) -> str:
        start = self.start - timedelta(seconds=lines)
        out = []
        if previous:
            for k in range(8):
                out.append(f"{iso(start + timedelta(seconds=k))} loading weights shard {k}/8")
            out.append(
                f"{iso(start + timedelta(seconds=9))} RuntimeError: CUDA error: out of memory"
            )
            return "\n".join(out) + "\n"
        for k in range(lines):
            at = iso(start + timedelta(seconds=k))
            if k % 10 == 0:
                out.append(f"{at} INFO  {replica}: GET /health 200 0.4ms")
            else:
                out.append(
                    f"{at} INFO  {replica}: POST /v1/generate 200 {40 + (k * 7) % 90}ms "
                    f"tokens={128 + (k * 31) % 900}"
                )
        return "\n".join(out) + "\n"

    # -- change (benchmark churn) ----------------------------------------------
    def churn(self, count: int, t: float) -> list[dict[str, Any]]:
        """`count` cluster frames with small changes (spent, a restart, ready flaps)."""
        frames = []
        ids = list(self.clusters)
        for _ in range(count):
            cid = ids[self.rng.randrange(len(ids))]
            c = self.clusters[cid]
            if c["status"] != "running":
                continue
            cost = dict(c["cost"])
            spent = int(cost["spent"].replace(".", "")) + 1000
            cost["spent"] = usd(spent)
            c = {**c, "cost": cost}
            self.clusters[cid] = c
            frames.append({"type": "cluster", "cluster": copy.deepcopy(c)})
        return frames
