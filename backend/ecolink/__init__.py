"""ecolink: the GPU-cluster API, billing ledger and runtimes behind ecotui."""

__version__ = "0.1.0"
