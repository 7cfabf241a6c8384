"""The size limit of a tunnelled WebSocket's client messages, checked as bytes pass."""

from __future__ import annotations


class FrameGuard:
    """Follows the frames a WebSocket client sends (headers only; payload bytes are
    counted, never copied) and says when a message grows over `limit`."""

    __slots__ = ("limit", "left", "head", "message")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = 0  # payload bytes of the current frame still to pass
        self.head = b""  # a frame header cut by a read
        self.message = 0  # bytes of the data message being fragmented so far

    def feed(self, data: bytes) -> bool:
        """False when `data` takes a message over the limit."""
        i = 0
        n = len(data)
        while i < n:
            if self.left:
                take = min(self.left, n - i)
                self.left -= take
                i += take
                continue
            head = self.head + data[i : i + 14]
            if len(head) < 2:
                self.head = head
                return True
            b0, b1 = head[0], head[1]
            size = b1 & 0x7F
            need = 2 + (4 if b1 & 0x80 else 0) + (2 if size == 126 else 8 if size == 127 else 0)
            if len(head) < need:
                self.head = head
                return True
            if size == 126:
                size = int.from_bytes(head[2:4], "big")
            elif size == 127:
                size = int.from_bytes(head[2:10], "big")
            i += need - len(self.head)
            self.head = b""
            if not b0 & 0x08:  # a data frame (continuation, text, binary)
                total = (self.message if b0 & 0x0F == 0 else 0) + size
                if total > self.limit:
                    return False
                self.message = 0 if b0 & 0x80 else total
            self.left = size
        return True
