"""ecotui: a terminal operations dashboard for GPU clusters."""

from ecocore.version import VERSION as __version__

__all__ = ["__version__"]
