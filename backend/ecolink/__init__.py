"""ecolink: the GPU-cluster API, billing ledger and runtimes behind ecotui."""

from ecocore.version import VERSION as __version__

__all__ = ["__version__"]
