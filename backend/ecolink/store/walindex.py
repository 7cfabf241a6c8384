"""The header of a SQLite database's WAL index (`<db>-shm`): every commit rewrites it,
so comparing it with an earlier read tells whether anyone committed since.

Reading it is one `pread` of 48 bytes: no SQLite call and no lock, so it never waits,
even while another process holds the index's read locks (a SQLite reader then waits
for seconds, whatever its busy timeout). An event loop can look as often as it likes.
"""

from __future__ import annotations

import contextlib
import os

HEADER_BYTES = 48


class WalIndex:
    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    @classmethod
    def open(cls, db_path: str) -> WalIndex | None:
        """The database's WAL index, or None where there is none (yet) to read."""
        try:
            return cls(os.open(db_path + "-shm", os.O_RDONLY))
        except OSError:
            return None

    def header(self) -> bytes:
        """The header as it is now; b"" if it cannot be read (closed, or an error)."""
        if self.fd is None:
            return b""
        try:
            return os.pread(self.fd, HEADER_BYTES, 0)
        except OSError:
            return b""

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
