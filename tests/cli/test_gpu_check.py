"""scripts/gpu-check says clearly why it cannot run on a machine without a GPU (exit 2),
with NVML failing the way it does there (a stand-in nvidia-ml-py whose init fails)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_check(tmp_path: Path, pynvml_source: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pynvml.py").write_text(pynvml_source)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu-check")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_without_a_driver_it_fails_clearly(tmp_path):
    out = run_check(
        tmp_path, "def nvmlInit():\n    raise OSError('NVML Shared Library Not Found')\n"
    )
    assert out.returncode == 2
    assert "no NVIDIA driver here" in out.stderr and "NVML Shared Library Not Found" in out.stderr
    assert out.stdout == ""


def test_without_gpus_it_fails_clearly(tmp_path):
    out = run_check(
        tmp_path, "def nvmlInit():\n    pass\n\ndef nvmlDeviceGetCount():\n    return 0\n"
    )
    assert out.returncode == 2
    assert "NVML sees no GPU" in out.stderr
