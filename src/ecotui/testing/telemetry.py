"""GPU readings, replica summaries, traffic and metrics of the generated fleet."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

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
from ecotui.testing.common import GPU_TYPES, iso, usd


class FleetTelemetry:
    """The generated fleet's live readings: GPU utilisation and health, replica
    summaries and traffic, the fleet GPU list and the metrics history (a mixin of
    `GeneratedFleet`, which owns the attributes below)."""

    g: int
    start: datetime
    telemetry: str
    clusters: dict[str, dict[str, Any]]
    _base_util: dict[str, float]
    _gpu_versions: dict[tuple[bool, bool], RowVersions]

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
            ecc_sbe_volatile=0,
            ecc_dbe_volatile=0,
            ecc_sbe_aggregate=2,
            ecc_dbe_aggregate=0,
            retired_pages_sbe=0,
            retired_pages_dbe=0,
            retired_pages_pending=False,
            remap_correctable=0,
            remap_uncorrectable=0,
            remap_pending=False,
            remap_failed=False,
            throttle={"thermal": 720.0 + max(0.0, t)} if sick == "degraded" else {},
            sm_clock_mhz=1380 if sick == "degraded" else 1980,
            sm_clock_max_mhz=1980,
            mem_clock_mhz=2619,
            pcie_gen=5,
            pcie_gen_max=5,
            pcie_width=16,
            pcie_width_max=16,
            pcie_replays=0,
            nvlink_links=18,
            nvlink_crc_errors=0,
            nvlink_replay_errors=0,
            nvlink_recovery_errors=0,
            mig_mode=False,
            mig_instances=(),
            processes=(
                GpuProcess(
                    4100 + gpu,
                    "python",
                    int(mem_total * (0.1 + 0.8 * u / 100)),
                    f"{name}-{replica}",
                ),
            ),
        )
        v = evaluate(h, now)
        return {**h.as_json(), **v.as_json()}

    def _summary(
        self, cid: str, t: float, status: str, states: list[dict[str, Any]]
    ) -> dict[str, Any]:
        running = [s for s in states if s["phase"] == "Running"]
        if status != "running" or not running:
            return {
                "gpus": 0,
                "mean_utilization": 0.0,
                "idle_gpus": 0,
                "telemetry": self.telemetry,
                "health": {"verdict": "unknown", "reason": "no GPUs", "failing": 0, "degraded": 0},
            }
        utils = [self._util(cid, s["index"], g, t) for s in running for g in range(self.g)]
        sick = [self._sick(cid, s["index"], g) for s in running for g in range(self.g)]
        failing, degraded = sick.count("failing"), sick.count("degraded")
        verdict = worst(
            [Verdict("ok")]
            + ([Verdict("failing", "XID 79: GPU has fallen off the bus")] if failing else [])
            + ([Verdict("degraded", "thermal throttling for 12m00s")] if degraded else [])
        )
        return {
            "gpus": len(utils),
            "mean_utilization": round(sum(utils) / len(utils), 1),
            "idle_gpus": sum(1 for u in utils if u < 5.0),
            "telemetry": self.telemetry,
            "health": {
                "verdict": verdict.level,
                "reason": verdict.reason,
                "failing": failing,
                "degraded": degraded,
            },
        }

    def summaries_frame(self, t: float) -> dict[str, Any]:
        out = {}
        traffic = {}
        for cid, c in self.clusters.items():
            s = self._summary(cid, t, c["status"], c["replica_states"])
            c["gpu_summary"] = s
            out[cid] = s
            traffic[cid] = c["traffic"] = self.cluster_traffic(c, t)
        return {"type": "summaries", "clusters": out, "traffic": traffic}

    def replica_traffic(
        self, c: dict[str, Any], s: dict[str, Any], t: float
    ) -> dict[str, Any] | None:
        """The service URL's traffic to one replica, as the backend's front counts it:
        none without a public URL or for a replica not running; the idle cluster (the
        first) gets no requests; cluster 9's third replica answers some with 5xx."""
        if c["endpoint"] is None or c["status"] != "running" or s["phase"] != "Running":
            return None
        i, k = int(c["id"][3:]), int(s["index"])
        path = "pod-ip" if i % 2 else "port-forward"
        if i == 0:
            return {
                "path": path,
                "requests_per_s": 0.0,
                "errors_5xx_per_s": 0.0,
                "statuses": {f"{n}xx": 0 for n in range(1, 6)},
                "in_flight": 0,
                "latency_p50_ms": None,
                "latency_p99_ms": None,
            }
        rps = round(6 + (i * 7 + k * 3) % 19 + 3 * math.sin(t / 11.0 + k), 1)
        errors = round(0.4 + 0.1 * math.sin(t / 5.0), 1) if (i == 9 and k == 2) else 0.0
        p50 = float(40 + (i * 5 + k * 13) % 50)
        return {
            "path": path,
            "requests_per_s": rps,
            "errors_5xx_per_s": errors,
            "statuses": {
                "1xx": 0,
                "2xx": int((rps - errors) * 10),
                "3xx": 0,
                "4xx": k % 2,
                "5xx": int(errors * 10),
            },
            "in_flight": (i + k) % 4,
            "latency_p50_ms": p50,
            "latency_p99_ms": round(p50 * 3.2, 1),
        }

    def cluster_traffic(self, c: dict[str, Any], t: float) -> dict[str, Any] | None:
        parts = [r for r in (self.replica_traffic(c, s, t) for s in c["replica_states"]) if r]
        if c["endpoint"] is None or c["status"] != "running" or not parts:
            return None
        return {
            "requests_per_s": round(sum(r["requests_per_s"] for r in parts), 2),
            "errors_5xx_per_s": round(sum(r["errors_5xx_per_s"] for r in parts), 2),
            "in_flight": sum(r["in_flight"] for r in parts),
            "path": ",".join(sorted({r["path"] for r in parts})),
        }

    def gpu_reading(self, cid: str, replica: int, gpu: int, t: float) -> dict[str, Any]:
        c = self.clusters[cid]
        _, _, mem_total, power_limit = next(g for g in GPU_TYPES if g[0] == c["gpu_type"])
        u = self._util(cid, replica, gpu, t)
        return {
            "index": gpu,
            "uuid": f"GPU-{cid[3:]}-{replica:02d}-{gpu:02d}",
            "name": f"NVIDIA {c['gpu_type']}",
            "utilization": u,
            "memory_used_mib": int(mem_total * (0.1 + 0.8 * u / 100)),
            "memory_total_mib": mem_total,
            "temperature_c": round(32 + u * 0.45, 1),
            "power_w": round(60 + (power_limit - 60) * u / 100, 1),
            "power_limit_w": power_limit,
            "health": self.gpu_health(cid, replica, gpu, t),
        }

    def fleet_gpus_answer(
        self,
        t: float = 0.0,
        *,
        unhealthy: bool = False,
        brief: bool = False,
        since: str | None = None,
    ) -> dict[str, Any]:
        """`GET /gpus` with `since` as the backend answers it: what changed since a
        version this fleet gave (the whole list for a version it does not keep)."""
        whole = self.fleet_gpus(t, unhealthy=unhealthy, brief=brief)
        versions = self._gpu_versions.setdefault((unhealthy, brief), RowVersions())
        return {**versions.answer(whole["gpus"], since), "health": whole["health"]}

    def fleet_gpus(
        self, t: float = 0.0, *, unhealthy: bool = False, brief: bool = False
    ) -> dict[str, Any]:
        """The `GET /gpus` answer: every GPU of the live clusters (`brief`: health as
        verdict and reason, without building every reading)."""
        rows: list[dict[str, Any]] = []
        verdicts = []
        reasons = {
            "failing": "XID 79: GPU has fallen off the bus",
            "degraded": "thermal throttling for 12m00s",
        }
        for cid, c in self.clusters.items():
            if c["status"] not in ("running", "pending", "stopping"):
                continue
            _, per_gpu, mem_total, power_limit = next(g for g in GPU_TYPES if g[0] == c["gpu_type"])
            for s in c["replica_states"]:
                if s["phase"] != "Running":
                    continue
                for gi in range(c["gpu_count"]):
                    g: dict[str, Any]
                    h: dict[str, Any]
                    if brief:
                        u = self._util(cid, s["index"], gi, t)
                        sick = self._sick(cid, s["index"], gi)
                        h = {"verdict": sick or "ok", "reason": reasons.get(sick or "")}
                        g = {
                            "index": gi,
                            "uuid": f"GPU-{cid[3:]}-{s['index']:02d}-{gi:02d}",
                            "name": f"NVIDIA {c['gpu_type']}",
                            "utilization": u,
                            "memory_used_mib": int(mem_total * (0.1 + 0.8 * u / 100)),
                            "memory_total_mib": mem_total,
                            "temperature_c": round(32 + u * 0.45, 1),
                            "power_w": round(60 + (power_limit - 60) * u / 100, 1),
                        }
                    else:
                        g = self.gpu_reading(cid, s["index"], gi, t)
                        h = g["health"]
                    verdicts.append(Verdict(h["verdict"], h["reason"]))
                    if unhealthy and h["verdict"] not in ("degraded", "failing"):
                        continue
                    rows.append(
                        {
                            "cluster_id": cid,
                            "cluster": c["name"],
                            "region": c["region"],
                            "replica": s["name"],
                            "index": g["index"],
                            "uuid": g["uuid"],
                            "name": g["name"],
                            "utilization": g["utilization"],
                            "memory_used_mib": g["memory_used_mib"],
                            "memory_total_mib": g["memory_total_mib"],
                            "temperature_c": g["temperature_c"],
                            "power_w": g["power_w"],
                            "telemetry": self.telemetry,
                            "idle_cost_per_hour": usd(per_gpu if g["utilization"] < 5.0 else 0),
                            "health": {"verdict": h["verdict"], "reason": h["reason"]}
                            if brief
                            else h,
                        }
                    )
        overall = worst(verdicts)
        return {
            "gpus": rows,
            "health": {
                "verdict": overall.level,
                "reason": overall.reason,
                "failing": sum(1 for v in verdicts if v.level == "failing"),
                "degraded": sum(1 for v in verdicts if v.level == "degraded"),
            },
        }

    def replicas_list(self, cid: str, t: float) -> list[dict[str, Any]]:
        c = self.clusters[cid]
        out = []
        for s in c["replica_states"]:
            gpus = (
                [self.gpu_reading(cid, s["index"], g, t) for g in range(c["gpu_count"])]
                if s["phase"] == "Running"
                else []
            )
            out.append(
                {
                    **s,
                    "gpus": gpus,
                    "telemetry": self.telemetry,
                    "traffic": self.replica_traffic(c, s, t),
                }
            )
        return out

    def replicas_frame(self, cid: str, t: float) -> dict[str, Any]:
        # As the backend's feed: verdict and reason per GPU; the readings via REST.
        return {
            "type": "replicas",
            "cluster_id": cid,
            "replicas": brief_replicas(self.replicas_list(cid, t)),
        }

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
                    samples.append(
                        [
                            iso(datetime.fromtimestamp(t, UTC)),
                            r["utilization"],
                            r["memory_used_mib"],
                            r["temperature_c"],
                            r["power_w"],
                        ]
                    )
                sick = self._sick(cid, s["index"], g)
                changes = [[iso(self.start - timedelta(minutes=20)), "ok", None]]
                if sick:
                    h = self.gpu_health(cid, s["index"], g, 0.0)
                    at = self.start - timedelta(minutes=7 if sick == "failing" else 12)
                    changes.append([iso(at), h["verdict"], h["reason"]])
                gpus.append(
                    {
                        "index": g,
                        "uuid": f"GPU-{cid[3:]}-{s['index']:02d}-{g:02d}",
                        "samples": samples,
                        "health": changes,
                    }
                )
            reps.append({"name": s["name"], "gpus": gpus})
        return {"interval_s": interval_s, "replicas": reps}
