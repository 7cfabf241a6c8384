"""The terminal emulator core used by the shell widget (pure Python, no textual).

`Terminal` turns a program's output into a screen of styled lines plus a
scrollback; `keys` turns key presses, pastes and mouse events into the bytes
a program expects. See `emulator.py` for why this is our own core.
"""

from .emulator import Terminal
from .keys import encode_focus, encode_key, encode_mouse, encode_paste
from .line import Line
from .style import StyleTable

__all__ = [
    "Line",
    "StyleTable",
    "Terminal",
    "encode_focus",
    "encode_key",
    "encode_mouse",
    "encode_paste",
]
