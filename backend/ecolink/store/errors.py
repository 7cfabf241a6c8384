"""What a store call raises when it is refused or the database is out of reach."""

from __future__ import annotations


class StoreError(Exception):
    """A store call refused: a constraint, a missing row, a write outside a
    transaction, a nested transaction, or a database newer than this code."""


class StoreBusy(StoreError):
    """The database could not be written (locked past the busy timeout, or a disk
    error); the transaction was rolled back, so nothing of it was stored."""


class StoreUnavailable(StoreBusy):
    """The database could not be read in time (locked past the busy timeout, or a
    disk error): a read only, so nothing was changed."""


__all__ = ["StoreBusy", "StoreError", "StoreUnavailable"]
