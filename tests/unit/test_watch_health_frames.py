"""The watch feed's per-second `replicas` frames carry each GPU's verdict and reason,
not its readings: the frame of a focused cluster stays near its size without health,
and what the rows show (the verdict and its reason) is the same as the full answer's."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ecocore.gpu_health import GpuHealth, Verdict, XidEvent
from ecolink.api.render_health import brief_health
from ecolink.runtime.base import GpuReading
from ecolink.runtime.gpu_parsers import parse_nvidia_smi_xml
from ecotui.gpu_health import replica_health

DATA = Path(__file__).resolve().parents[1] / "data" / "gpu"


def _replicas(gpus: list[GpuReading]) -> list[dict]:
    return [
        {
            "name": "serve-0",
            "phase": "running",
            "ready": True,
            "telemetry": "nvidia-smi",
            "gpus": [g.as_json() for g in gpus],
        },
        {
            "name": "serve-1",
            "phase": "pending",
            "ready": False,
            "telemetry": "nvidia-smi",
            "gpus": [],
        },
    ]


def _gpu_bytes(replicas: list[dict]) -> float:
    """The mean size of one GPU's object in a frame."""
    sizes = [len(json.dumps(g, separators=(",", ":"))) for r in replicas for g in r["gpus"]]
    return sum(sizes) / len(sizes)


def test_frames_carry_verdict_and_reason_only_and_shrink():
    # Health readings as parsed from a real capture (A100 with four MIG instances),
    # plus an XID so the readings are as long as a sick GPU's.
    gpus = parse_nvidia_smi_xml((DATA / "nvidia-smi-a100-sxm4-v12.xml").read_text())
    sick = [
        dataclasses.replace(
            g,
            verdict=Verdict("failing", "XID 79: fallen off the bus"),
            health=dataclasses.replace(
                g.health or GpuHealth(), xid_events=(XidEvent(79, 1_700_000_000.0),)
            ),
        )
        for g in gpus
    ]
    full = _replicas(sick)
    brief = brief_health(full)
    for r_full, r_brief in zip(full, brief, strict=True):
        assert replica_health(r_brief) == replica_health(r_full)
        for g_full, g_brief in zip(r_full["gpus"], r_brief["gpus"], strict=True):
            assert g_brief["health"] == {
                "verdict": g_full["health"]["verdict"],
                "reason": g_full["health"]["reason"],
            }
            assert {k: v for k, v in g_brief.items() if k != "health"} == {
                k: v for k, v in g_full.items() if k != "health"
            }
    # The replicas given are left whole (the REST answer is built from the same rows).
    assert "ecc_dbe_volatile" in full[0]["gpus"][0]["health"]
    bare = _gpu_bytes(
        [
            {**r, "gpus": [{k: v for k, v in g.items() if k != "health"} for g in r["gpus"]]}
            for r in full
        ]
    )
    before, after = _gpu_bytes(full), _gpu_bytes(brief)
    print(
        f"\nreplicas frame, bytes per GPU: {bare:.0f} without health, {before:.0f} with the "
        f"readings, {after:.0f} with verdict and reason ({before / after:.1f}x smaller)"
    )
    # The verdict and its reason cost one short field; the readings cost several times that.
    assert after - bare < 80 < 3 * (after - bare) < before - bare
