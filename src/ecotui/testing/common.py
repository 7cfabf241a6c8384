"""Constants and small formatters the generated fleet shares."""

from __future__ import annotations

from datetime import UTC, datetime

MICRO = 1_000_000
FIXED_START = datetime(2026, 3, 2, 14, 0, 0, tzinfo=UTC)

REGIONS = ("us-east", "us-west", "eu-central")
GPU_TYPES = (
    ("H100-80GB", 2_500_000, 81559, 700.0),
    ("A100-80GB", 1_600_000, 81920, 400.0),
    ("L40S", 900_000, 46068, 350.0),
)
WORDS = (
    "llama",
    "mistral",
    "embed",
    "whisper",
    "sdxl",
    "rerank",
    "qwen",
    "vision",
    "asr",
    "tts",
    "bert",
    "clip",
)
ROLES = ("serve", "batch", "eval", "api", "infer", "train")


def usd(micros: int) -> str:
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICRO)
    return f"{sign}{whole}.{frac:06d}"


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
