"""ecotui: a terminal operations dashboard for GPU clusters."""

__version__ = "0.1.0"
