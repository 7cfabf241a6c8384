"""The limits a cluster request must keep, written once for the API and the dashboard."""

from __future__ import annotations

from ecocore.money import MICRO

# A cluster's name: a DNS label of 1 to 40 characters.
NAME_PATTERN = r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$"
NAME_MAX = 40

MIN_REPLICAS = 1
MAX_REPLICAS = 1000

# Durations in micro-hours: at least 0.01 h per launch or extension, at most 720 h in total.
MIN_MICRO_HOURS = 10_000
MAX_TOTAL_MICRO_HOURS = 720 * MICRO

MAX_STARTUP_COMMAND_BYTES = 4096

# Seconds a replica has between SIGTERM and SIGKILL (stop, terminate, expiry).
MIN_TERMINATION_GRACE_SECONDS = 0
MAX_TERMINATION_GRACE_SECONDS = 3600
DEFAULT_TERMINATION_GRACE_SECONDS = 30
