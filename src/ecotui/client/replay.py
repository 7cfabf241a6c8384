"""A generated fleet and a replayed watch feed, standing in for the network.

Used where the dashboard needs fixed, repeatable data: snapshot tests, the
screenshots script and the benchmark. `GeneratedFleet` produces api.md-shaped
clusters, account, ledger, events, metrics and logs for N clusters x R
replicas x G GPUs, deterministically from a seed and a start time.
`ReplayFrameSource` is a frame source with the watch client's interface
(`frames()`, `focus()`, `close()`) that yields frames a test pushes, and
answers focus with replicas frames like the backend does. `fleet_transport`
answers the REST routes the dashboard reads from the same fleet (an
`httpx.MockTransport` for `EcoClient(transport=...)`). No textual here.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import random
import re
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from ecocore.fleet_delta import RowVersions
from ecocore.gpu_health import (
    GpuHealth,
    GpuProcess,
    Verdict,
    XidEvent,
    brief_replicas,
    evaluate,
    worst,
)
from ecotui.client.watch import connection_frame

MICRO = 1_000_000
FIXED_START = datetime(2026, 3, 2, 14, 0, 0, tzinfo=UTC)

REGIONS = ("us-east", "us-west", "eu-central")
GPU_TYPES = (("H100-80GB", 2_500_000, 81559, 700.0), ("A100-80GB", 1_600_000, 81920, 400.0),
             ("L40S", 900_000, 46068, 350.0))
WORDS = ("llama", "mistral", "embed", "whisper", "sdxl", "rerank", "qwen", "vision", "asr", "tts",
         "bert", "clip")
ROLES = ("serve", "batch", "eval", "api", "infer", "train")


def usd(micros: int) -> str:
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICRO)
    return f"{sign}{whole}.{frac:06d}"


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class GeneratedFleet:
    """N clusters of R replicas with G GPUs each; the first few show every alert and state."""

    def __init__(self, clusters: int = 10, replicas: int = 8, gpus: int = 8, *, seed: int = 7,
                 start: datetime = FIXED_START, telemetry: str = "simulated",
                 balance_usd: int = 25_000) -> None:
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
            node = f"node-{region}-{(i * 3 + k) % 40:02d}"
            if status == "pending" or (special == 4 and k >= replicas - 1):
                phase, rdy, node = "Pending", False, None
                rreason = ("Unschedulable: 0/12 nodes are available: "
                           "12 Insufficient nvidia.com/gpu")
            elif special == 7 and k == 1:
                phase, rdy, restarts, rreason = "Running", False, 7, "CrashLoopBackOff"
            elif status == "failed":
                phase, rdy, rreason = "Failed", False, "Error: exit code 1"
            if rdy:
                ready += 1
            states.append({"name": f"{name}-{k}", "index": k, "phase": phase, "ready": rdy,
                           "restarts": restarts, "reason": rreason, "node": node})
        base = 0.0 if status not in ("running",) else rng.uniform(35, 95)
        if special == 0:
            base = 2.0  # idle GPUs
        self._base_util[cid] = base
        cluster = {
            "id": cid, "name": name, "region": region, "gpu_type": gpu_type,
            "gpu_count": gpu_count, "replicas": replicas,
            "image": f"ghcr.io/example/{name.split('-')[0]}:1.{i % 7}",
            "startup_command": None, "shared_filesystems": ["models"] if i % 4 == 0 else [],
            "status": status, "status_reason": reason, "stale": False,
            "created_at": iso(created), "started_at": iso(created + timedelta(seconds=40)),
            "expires_at": iso(expires), "estimated_duration_hours": str(hours),
            "hourly_rate": usd(hourly), "burn_rate": usd(burn),
            "cost": {"hold": usd(hold), "spent": usd(spent), "hold_remaining": usd(hold_remaining),
                     "projected_total": usd(projected)},
            "endpoint": ({"url": f"http://127.0.0.1:8600/gpu-clusters/{cid}/service/", "port": 8000}
                         if i % 3 == 0 else None),
            "ready_replicas": ready, "replica_states": states,
            "gpu_summary": self._summary(cid, 0.0, status, states),
        }
        cluster["traffic"] = self.cluster_traffic(cluster, 0.0)
        self._events[cid] = self._make_events(cid, name, created, status, states, special)
        return cluster

    def _make_events(self, cid: str, name: str, created: datetime, status: str,
                     states: list[dict[str, Any]], special: int | None) -> list[dict[str, Any]]:
        evs = [{"at": iso(created), "kind": "launched",
                "message": f"launched {name} with {self.r} replicas"}]
        for s in states:
            if s["ready"]:
                evs.append({"at": iso(created + timedelta(seconds=30 + s["index"])),
                            "kind": "replica_ready", "message": f"{s['name']} is ready",
                            "replica": s["name"]})
            elif s["phase"] == "Pending":
                evs.append({"at": iso(created + timedelta(seconds=5)), "kind": "replica_pending",
                            "message": f"{s['name']} is pending: {s['reason']}", "replica": s["name"]})
        if special == 7:
            evs.append({"at": iso(self.start - timedelta(minutes=2)), "kind": "replica_crashed",
                        "message": f"{name}-1 exited with code 1 (restart 7)", "replica": f"{name}-1"})
        if status == "failed":
            evs.append({"at": iso(created + timedelta(minutes=3)), "kind": "replica_failed",
                        "message": "replica exited with code 1: CUDA error: out of memory",
                        "replica": f"{name}-0"})
        if special == 2:
            evs.append({"at": iso(self.start - timedelta(minutes=25, seconds=30)),
                        "kind": "expiry_warning", "message": f"{name} expires in 30 minutes"})
        if status == "stopped":
            evs.append({"at": iso(created + timedelta(hours=1)), "kind": "stopped",
                        "message": "stopped by the user; unused hold released"})
        if status == "terminated":
            evs.append({"at": iso(created + timedelta(hours=1)), "kind": "terminated",
                        "message": "terminated by the user"})
        return evs

    def _build_ledger(self) -> None:
        entries: list[tuple[datetime, str | None, str, int, str]] = [
            (self.start - timedelta(days=3), None, "credit", self.balance, "demo credit")]
        for c in self.clusters.values():
            created = datetime.fromisoformat(c["created_at"].replace("Z", "+00:00"))
            hold = int(c["cost"]["hold"].replace(".", ""))
            spent = int(c["cost"]["spent"].replace(".", ""))
            entries.append((created, c["id"], "hold", hold, f"launch {c['name']}"))
            if spent:
                entries.append((created + timedelta(minutes=50), c["id"], "charge", -spent,
                                f"usage of {c['name']}"))
            if c["status"] in ("stopped", "failed", "terminated"):
                entries.append((created + timedelta(hours=1), c["id"], "hold_release",
                                -(hold - spent), f"{c['status']} {c['name']}"))
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
            self._ledger.append({"id": n, "at": iso(at), "cluster_id": cid, "kind": kind,
                                 "amount": usd(amount), "balance_after": usd(balance),
                                 "held_after": usd(held), "memo": memo})
        self._balance, self._held = balance, held

    # -- reading ---------------------------------------------------------------
    @property
    def account(self) -> dict[str, Any]:
        return {"id": "acct_demo", "name": "demo", "balance": usd(self._balance),
                "held": usd(self._held), "available": usd(self._balance - self._held)}

    def snapshot_frame(self) -> dict[str, Any]:
        return {"type": "snapshot", "clusters": [copy.deepcopy(c) for c in self.clusters.values()],
                "account": self.account}

    def _util(self, cid: str, replica: int, gpu: int, t: float) -> float:
        base = self._base_util.get(cid, 0.0)
        if base <= 0:
            return 0.0
        if base < 5:
            return round(1.0 + (replica + gpu) % 3 * 0.5, 1)
        wobble = 18 * math.sin(t / 23.0 + replica * 0.9 + gpu * 0.37) + 6 * math.sin(t / 7.0 + gpu)
        return round(max(0.0, min(100.0, base + wobble)), 1)

    def _sick(self, cid: str, replica: int, gpu: int) -> str | None:
        """Which GPUs are unwell (fixed): cluster 7's GPU 0/3 fell off the bus, cluster
        5's GPU 1/2 is thermally throttled; in large fleets a few more of each."""
        i = int(cid[3:])
        if (i == 7 or (i >= 10 and i % 211 == 17)) and replica == 0 and gpu == 3:
            return "failing"
        if (i == 5 or (i >= 10 and i % 97 == 13)) and replica == 1 and gpu == 2:
            return "degraded"
        return None

    def gpu_health(self, cid: str, replica: int, gpu: int, t: float) -> dict[str, Any]:
        """A health reading (api.md's shape) for one generated GPU, with its verdict."""
        now = self.start.timestamp() + t
        sick = self._sick(cid, replica, gpu)
        u = self._util(cid, replica, gpu, t)
        c = self.clusters.get(cid)
        mem_total = next((g[2] for g in GPU_TYPES if c and g[0] == c["gpu_type"]), 81920)
        name = c["name"] if c else cid
        h = GpuHealth(
            xid_events=(XidEvent(79, self.start.timestamp() - 420),) if sick == "failing" else (),
            ecc_sbe_volatile=0, ecc_dbe_volatile=0, ecc_sbe_aggregate=2, ecc_dbe_aggregate=0,
            retired_pages_sbe=0, retired_pages_dbe=0, retired_pages_pending=False,
            remap_correctable=0, remap_uncorrectable=0, remap_pending=False, remap_failed=False,
            throttle={"thermal": 720.0 + max(0.0, t)} if sick == "degraded" else {},
            sm_clock_mhz=1380 if sick == "degraded" else 1980, sm_clock_max_mhz=1980,
            mem_clock_mhz=2619, pcie_gen=5, pcie_gen_max=5, pcie_width=16, pcie_width_max=16,
            pcie_replays=0, nvlink_links=18, nvlink_crc_errors=0, nvlink_replay_errors=0,
            nvlink_recovery_errors=0, mig_mode=False, mig_instances=(),
            processes=(GpuProcess(4100 + gpu, "python", int(mem_total * (0.1 + 0.8 * u / 100)),
                                  f"{name}-{replica}"),),
        )
        v = evaluate(h, now)
        return {**h.as_json(), **v.as_json()}

    def _summary(self, cid: str, t: float, status: str,
                 states: list[dict[str, Any]]) -> dict[str, Any]:
        running = [s for s in states if s["phase"] == "Running"]
        if status != "running" or not running:
            return {"gpus": 0, "mean_utilization": None, "idle_gpus": 0, "telemetry": self.telemetry,
                    "health": {"verdict": "unknown", "reason": "no GPUs", "failing": 0,
                               "degraded": 0}}
        utils = [self._util(cid, s["index"], g, t) for s in running for g in range(self.g)]
        sick = [self._sick(cid, s["index"], g) for s in running for g in range(self.g)]
        failing, degraded = sick.count("failing"), sick.count("degraded")
        verdict = worst(
            [Verdict("ok")]
            + ([Verdict("failing", "XID 79: GPU has fallen off the bus")] if failing else [])
            + ([Verdict("degraded", "thermal throttling for 12m00s")] if degraded else []))
        return {"gpus": len(utils), "mean_utilization": round(sum(utils) / len(utils), 1),
                "idle_gpus": sum(1 for u in utils if u < 5.0), "telemetry": self.telemetry,
                "health": {"verdict": verdict.level, "reason": verdict.reason,
                           "failing": failing, "degraded": degraded}}

    def summaries_frame(self, t: float) -> dict[str, Any]:
        out = {}
        traffic = {}
        for cid, c in self.clusters.items():
            s = self._summary(cid, t, c["status"], c["replica_states"])
            c["gpu_summary"] = s
            out[cid] = s
            traffic[cid] = c["traffic"] = self.cluster_traffic(c, t)
        return {"type": "summaries", "clusters": out, "traffic": traffic}

    def replica_traffic(self, c: dict[str, Any], s: dict[str, Any],
                        t: float) -> dict[str, Any] | None:
        """The service URL's traffic to one replica, as the backend's front counts it:
        none without a public URL or for a replica not running; the idle cluster (the
        first) gets no requests; cluster 9's third replica answers some with 5xx."""
        if c["endpoint"] is None or c["status"] != "running" or s["phase"] != "Running":
            return None
        i, k = int(c["id"][3:]), int(s["index"])
        path = "pod-ip" if i % 2 else "port-forward"
        if i == 0:
            return {"path": path, "requests_per_s": 0.0, "errors_5xx_per_s": 0.0,
                    "statuses": {f"{n}xx": 0 for n in range(1, 6)}, "in_flight": 0,
                    "latency_p50_ms": None, "latency_p99_ms": None}
        rps = round(6 + (i * 7 + k * 3) % 19 + 3 * math.sin(t / 11.0 + k), 1)
        errors = round(0.4 + 0.1 * math.sin(t / 5.0), 1) if (i == 9 and k == 2) else 0.0
        p50 = float(40 + (i * 5 + k * 13) % 50)
        return {"path": path, "requests_per_s": rps, "errors_5xx_per_s": errors,
                "statuses": {"1xx": 0, "2xx": int((rps - errors) * 10), "3xx": 0,
                             "4xx": k % 2, "5xx": int(errors * 10)},
                "in_flight": (i + k) % 4, "latency_p50_ms": p50,
                "latency_p99_ms": round(p50 * 3.2, 1)}

    def cluster_traffic(self, c: dict[str, Any], t: float) -> dict[str, Any] | None:
        parts = [r for r in (self.replica_traffic(c, s, t) for s in c["replica_states"]) if r]
        if c["endpoint"] is None or c["status"] != "running" or not parts:
            return None
        return {"requests_per_s": round(sum(r["requests_per_s"] for r in parts), 2),
                "errors_5xx_per_s": round(sum(r["errors_5xx_per_s"] for r in parts), 2),
                "in_flight": sum(r["in_flight"] for r in parts),
                "path": ",".join(sorted({r["path"] for r in parts}))}

    def gpu_reading(self, cid: str, replica: int, gpu: int, t: float) -> dict[str, Any]:
        c = self.clusters[cid]
        _, _, mem_total, power_limit = next(g for g in GPU_TYPES if g[0] == c["gpu_type"])
        u = self._util(cid, replica, gpu, t)
        return {"index": gpu, "uuid": f"GPU-{cid[3:]}-{replica:02d}-{gpu:02d}",
                "name": f"NVIDIA {c['gpu_type']}", "utilization": u,
                "memory_used_mib": int(mem_total * (0.1 + 0.8 * u / 100)),
                "memory_total_mib": mem_total,
                "temperature_c": round(32 + u * 0.45, 1),
                "power_w": round(60 + (power_limit - 60) * u / 100, 1), "power_limit_w": power_limit,
                "health": self.gpu_health(cid, replica, gpu, t)}

    def fleet_gpus_answer(self, t: float = 0.0, *, unhealthy: bool = False, brief: bool = False,
                          since: str | None = None) -> dict[str, Any]:
        """`GET /gpus` with `since` as the backend answers it: what changed since a
        version this fleet gave (the whole list for a version it does not keep)."""
        whole = self.fleet_gpus(t, unhealthy=unhealthy, brief=brief)
        versions = self._gpu_versions.setdefault((unhealthy, brief), RowVersions())
        return {**versions.answer(whole["gpus"], since), "health": whole["health"]}

    def fleet_gpus(self, t: float = 0.0, *, unhealthy: bool = False,
                   brief: bool = False) -> dict[str, Any]:
        """The `GET /gpus` answer: every GPU of the live clusters (`brief`: health as
        verdict and reason, without building every reading)."""
        rows: list[dict[str, Any]] = []
        verdicts = []
        reasons = {"failing": "XID 79: GPU has fallen off the bus",
                   "degraded": "thermal throttling for 12m00s"}
        for cid, c in self.clusters.items():
            if c["status"] not in ("running", "pending", "stopping"):
                continue
            _, per_gpu, mem_total, power_limit = next(
                g for g in GPU_TYPES if g[0] == c["gpu_type"])
            for s in c["replica_states"]:
                if s["phase"] != "Running":
                    continue
                for gi in range(c["gpu_count"]):
                    if brief:
                        u = self._util(cid, s["index"], gi, t)
                        sick = self._sick(cid, s["index"], gi)
                        h = {"verdict": sick or "ok", "reason": reasons.get(sick or "")}
                        g = {"index": gi, "uuid": f"GPU-{cid[3:]}-{s['index']:02d}-{gi:02d}",
                             "name": f"NVIDIA {c['gpu_type']}", "utilization": u,
                             "memory_used_mib": int(mem_total * (0.1 + 0.8 * u / 100)),
                             "memory_total_mib": mem_total,
                             "temperature_c": round(32 + u * 0.45, 1),
                             "power_w": round(60 + (power_limit - 60) * u / 100, 1)}
                    else:
                        g = self.gpu_reading(cid, s["index"], gi, t)
                        h = g["health"]
                    verdicts.append(Verdict(h["verdict"], h["reason"]))
                    if unhealthy and h["verdict"] not in ("degraded", "failing"):
                        continue
                    rows.append({
                        "cluster_id": cid, "cluster": c["name"], "region": c["region"],
                        "replica": s["name"], "index": g["index"], "uuid": g["uuid"],
                        "name": g["name"], "utilization": g["utilization"],
                        "memory_used_mib": g["memory_used_mib"],
                        "memory_total_mib": g["memory_total_mib"],
                        "temperature_c": g["temperature_c"], "power_w": g["power_w"],
                        "telemetry": self.telemetry,
                        "idle_cost_per_hour": usd(per_gpu if g["utilization"] < 5.0 else 0),
                        "health": {"verdict": h["verdict"], "reason": h["reason"]} if brief else h,
                    })
        overall = worst(verdicts)
        return {"gpus": rows, "health": {
            "verdict": overall.level, "reason": overall.reason,
            "failing": sum(1 for v in verdicts if v.level == "failing"),
            "degraded": sum(1 for v in verdicts if v.level == "degraded")}}

    def replicas_list(self, cid: str, t: float) -> list[dict[str, Any]]:
        c = self.clusters[cid]
        out = []
        for s in c["replica_states"]:
            gpus = ([self.gpu_reading(cid, s["index"], g, t) for g in range(c["gpu_count"])]
                    if s["phase"] == "Running" else [])
            out.append({**s, "gpus": gpus, "telemetry": self.telemetry,
                        "traffic": self.replica_traffic(c, s, t)})
        return out

    def replicas_frame(self, cid: str, t: float) -> dict[str, Any]:
        # As the backend's feed: verdict and reason per GPU; the readings via REST.
        return {"type": "replicas", "cluster_id": cid,
                "replicas": brief_replicas(self.replicas_list(cid, t))}

    def metrics(self, cid: str, *, window_s: int = 600, interval_s: int = 5) -> dict[str, Any]:
        c = self.clusters[cid]
        reps = []
        end = self.start.timestamp()
        for s in c["replica_states"]:
            if s["phase"] != "Running":
                continue
            gpus = []
            for g in range(c["gpu_count"]):
                samples = []
                for k in range(window_s // interval_s, 0, -1):
                    t = end - k * interval_s
                    r = self.gpu_reading(cid, s["index"], g, t - end)
                    samples.append([iso(datetime.fromtimestamp(t, UTC)), r["utilization"],
                                    r["memory_used_mib"], r["temperature_c"], r["power_w"]])
                sick = self._sick(cid, s["index"], g)
                changes = [[iso(self.start - timedelta(minutes=20)), "ok", None]]
                if sick:
                    h = self.gpu_health(cid, s["index"], g, 0.0)
                    at = self.start - timedelta(minutes=7 if sick == "failing" else 12)
                    changes.append([iso(at), h["verdict"], h["reason"]])
                gpus.append({"index": g, "uuid": f"GPU-{cid[3:]}-{s['index']:02d}-{g:02d}",
                             "samples": samples, "health": changes})
            reps.append({"name": s["name"], "gpus": gpus})
        return {"interval_s": interval_s, "replicas": reps}

    def events(self, cid: str) -> list[dict[str, Any]]:
        return list(self._events.get(cid, []))

    def ledger(self, *, cluster_id: str | None = None, limit: int = 100,
               before: int | None = None) -> list[dict[str, Any]]:
        rows = [e for e in reversed(self._ledger)
                if (cluster_id is None or e["cluster_id"] == cluster_id)
                and (before is None or e["id"] < before)]
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
            out.append(f"{iso(start + timedelta(seconds=9))} RuntimeError: CUDA error: out of memory")
            return "\n".join(out) + "\n"
        for k in range(lines):
            at = iso(start + timedelta(seconds=k))
            if k % 10 == 0:
                out.append(f"{at} INFO  {replica}: GET /health 200 0.4ms")
            else:
                out.append(f"{at} INFO  {replica}: POST /v1/generate 200 {40 + (k * 7) % 90}ms "
                           f"tokens={128 + (k * 31) % 900}")
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


class ReplayFrameSource:
    """A frame source fed by the test or benchmark (stands in for the /watch socket)."""

    def __init__(self, frames: Iterable[dict[str, Any]] = (), *,
                 on_focus: Callable[[list[str]], Iterable[dict[str, Any]]] | None = None,
                 connected: bool = True) -> None:
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._initial = list(frames)
        self._on_focus = on_focus
        self._connected = connected
        self.focused: list[str] = []
        self.focus_calls = 0
        self._closed = False

    def push(self, *frames: dict[str, Any]) -> None:
        for f in frames:
            self._queue.put_nowait(f)

    def drop(self, *, retry_in: float = 4.0, attempt: int = 1, now: datetime | None = None,
             error: str = "connection lost") -> None:
        """The connection went away: what the watch client reports then."""
        when = (now or datetime.now(UTC)) + timedelta(seconds=retry_in)
        self.push(connection_frame("reconnecting", attempt=attempt, next_retry_at=when, error=error))

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.push(connection_frame("connected"), snapshot)

    async def focus(self, cluster_ids: Iterable[str]) -> None:
        self.focused = list(cluster_ids)
        self.focus_calls += 1
        if self._on_focus is not None:
            for f in self._on_focus(self.focused):
                self._queue.put_nowait(f)

    async def close(self) -> None:
        self._closed = True
        self._queue.put_nowait(None)

    async def frames(self) -> AsyncIterator[dict[str, Any]]:
        if self._connected:
            yield connection_frame("connected")
        for f in self._initial:
            yield f
        while not self._closed:
            f = await self._queue.get()
            if f is None:
                break
            yield f


class _FollowStream(httpx.AsyncByteStream):
    """The tail, then an open stream until the reader goes away."""

    def __init__(self, head: bytes) -> None:
        self.head = head

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        return None


_CLUSTER_ROUTE = re.compile(r"^/gpu-clusters/([^/]+)(?:/(.*))?$")


def fleet_transport(fleet: GeneratedFleet) -> httpx.MockTransport:
    """REST answers from the generated fleet, for `EcoClient(transport=...)`."""

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        q = request.url.params
        if path == "/healthz":
            return httpx.Response(200, json={"status": "ok", "version": "demo"})
        if path == "/account":
            return httpx.Response(200, json=fleet.account)
        if path == "/catalog":
            return httpx.Response(200, json={"regions": [
                {"name": region, "gpu_budget": 256, "gpu_types": [
                    {"name": name, "rate_per_gpu_hour": usd(rate), "gpu_counts": [1, 2, 4, 8]}
                    for name, rate, _mem, _power in GPU_TYPES]}
                for region in REGIONS]})
        if path == "/filesystems":
            return httpx.Response(200, json={"filesystems": [
                {"name": "models", "description": "shared model weights"}]})
        if path == "/account/ledger":
            cid = q.get("cluster_id") or None
            if q.get("format") == "csv":
                return httpx.Response(200, text=fleet.ledger_csv(cid),
                                      headers={"content-type": "text/csv"})
            before = int(q["before"]) if q.get("before") else None
            return httpx.Response(200, json={"entries": fleet.ledger(
                cluster_id=cid, limit=int(q.get("limit") or 100), before=before)})
        if path == "/gpu-clusters":
            return httpx.Response(200, json={"clusters": list(fleet.clusters.values())})
        if path == "/gpus":
            return httpx.Response(200, json=fleet.fleet_gpus_answer(
                unhealthy=q.get("unhealthy") in ("1", "true"), brief=q.get("brief") in ("1", "true"),
                since=q.get("since")))
        m = _CLUSTER_ROUTE.match(path)
        if m:
            ref, rest = m.group(1), m.group(2) or ""
            c = fleet.clusters.get(ref) or next(
                (x for x in fleet.clusters.values() if x["name"] == ref), None)
            if c is None:
                return httpx.Response(404, json={"error": {"code": "not_found",
                                                           "message": f"no cluster {ref}"}})
            cid = c["id"]
            if request.method != "GET":
                return httpx.Response(409, json={"error": {"code": "conflict",
                                                           "message": "this feed is read-only"}})
            if rest == "":
                return httpx.Response(200, json=c)
            if rest == "replicas":
                return httpx.Response(200, json={"replicas": fleet.replicas_list(cid, 0.0)})
            if rest == "metrics":
                return httpx.Response(200, json=fleet.metrics(cid))
            if rest == "events":
                return httpx.Response(200, json={"events": fleet.events(cid)})
            if rest == "sessions":
                return httpx.Response(200, json={"sessions": []})
            lm = re.match(r"^replicas/([^/]+)/logs$", rest)
            if lm:
                text = fleet.logs(cid, lm.group(1), previous=q.get("previous") in ("1", "true"))
                if q.get("follow") in ("1", "true"):
                    # A follow stays open after the tail, as the backend's does.
                    return httpx.Response(200, stream=_FollowStream(text.encode()),
                                          headers={"content-type": "text/plain"})
                return httpx.Response(200, text=text, headers={"content-type": "text/plain"})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path}})

    return httpx.MockTransport(answer)


def dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"))
