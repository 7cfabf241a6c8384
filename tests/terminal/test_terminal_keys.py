"""Key, paste, focus and mouse encodings; the exec client's framing helpers."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from ecotui.client.exec import exec_path, parse_status
from ecotui.terminal import encode_focus, encode_key, encode_mouse, encode_paste


@pytest.mark.parametrize(
    ("key", "char", "app_cursor", "expected"),
    [
        ("a", "a", False, b"a"),
        ("A", "A", False, b"A"),
        ("space", " ", False, b" "),
        ("enter", "\r", False, b"\r"),
        ("tab", "\t", False, b"\t"),
        ("shift+tab", None, False, b"\x1b[Z"),
        ("escape", "\x1b", False, b"\x1b"),
        ("backspace", "\x7f", False, b"\x7f"),
        ("ctrl+h", "\x08", False, b"\x08"),
        ("ctrl+c", "\x03", False, b"\x03"),
        ("ctrl+d", "\x04", False, b"\x04"),
        ("ctrl+z", "\x1a", False, b"\x1a"),
        ("ctrl+space", None, False, b"\x00"),
        ("ctrl+backslash", None, False, b"\x1c"),
        ("up", None, False, b"\x1b[A"),
        ("up", None, True, b"\x1bOA"),
        ("left", None, True, b"\x1bOD"),
        ("home", None, False, b"\x1b[H"),
        ("end", None, True, b"\x1bOF"),
        ("shift+up", None, True, b"\x1b[1;2A"),
        ("ctrl+right", None, False, b"\x1b[1;5C"),
        ("alt+x", "x", False, b"\x1bx"),
        ("ctrl+alt+x", None, False, b"\x1b\x18"),
        ("f1", None, False, b"\x1bOP"),
        ("f4", None, False, b"\x1bOS"),
        ("f5", None, False, b"\x1b[15~"),
        ("f12", None, False, b"\x1b[24~"),
        ("shift+f5", None, False, b"\x1b[15;2~"),
        ("ctrl+f1", None, False, b"\x1b[1;5P"),
        ("delete", None, False, b"\x1b[3~"),
        ("insert", None, False, b"\x1b[2~"),
        ("pageup", None, False, b"\x1b[5~"),
        ("pagedown", None, False, b"\x1b[6~"),
        ("exclamation_mark", "!", False, b"!"),
        ("ü", "ü", False, "ü".encode()),
    ],
)
def test_keys(key: str, char: str | None, app_cursor: bool, expected: bytes) -> None:
    assert encode_key(key, char, app_cursor=app_cursor) == expected


def test_paste_plain_and_bracketed() -> None:
    assert encode_paste("a\nb\r\nc", False) == b"a\rb\rc"
    assert encode_paste("x\x1b[201~y", True) == b"\x1b[200~xy\x1b[201~"


def test_focus_reports() -> None:
    assert (encode_focus(True), encode_focus(False)) == (b"\x1b[I", b"\x1b[O")


def test_mouse_encodings() -> None:
    kw = {"tracking": 1000, "encoding": "sgr"}
    assert encode_mouse("press", 0, 4, 2, **kw) == b"\x1b[<0;5;3M"
    assert encode_mouse("release", 0, 4, 2, **kw) == b"\x1b[<0;5;3m"
    assert encode_mouse("scroll_up", 0, 0, 0, **kw) == b"\x1b[<64;1;1M"
    assert encode_mouse("press", 2, 0, 0, ctrl=True, **kw) == b"\x1b[<18;1;1M"
    assert encode_mouse("move", 0, 1, 1, **kw) is None  # 1000 reports no motion
    assert (
        encode_mouse("move", 0, 1, 1, tracking=1002, encoding="sgr", buttons_down=True)
        == b"\x1b[<32;2;2M"
    )
    assert encode_mouse("move", 0, 1, 1, tracking=1003, encoding="sgr") == b"\x1b[<35;2;2M"
    assert encode_mouse("press", 0, 4, 2, tracking=1000, encoding="") == b"\x1b[M %#"
    assert encode_mouse("release", 1, 4, 2, tracking=1000, encoding="") == b"\x1b[M#%#"
    assert encode_mouse("press", 0, 300, 2, tracking=1000, encoding="") is None
    assert encode_mouse("press", 0, 4, 2, tracking=0, encoding="sgr") is None


def test_exec_status_and_path() -> None:
    assert parse_status(b'{"metadata": {}, "status": "Success"}').exit_code == 0
    st = parse_status(
        {
            "status": "Failure",
            "reason": "NonZeroExitCode",
            "message": "m",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
        }
    )
    assert (st.success, st.exit_code, st.reason) == (False, 3, "NonZeroExitCode")
    assert parse_status(b"junk").exit_code is None
    path = exec_path("c 1", "r-0", ["sh", "-c", "echo a&b"], stdin=True, tty=True)
    parts = urlsplit(path)
    assert parts.path == "/gpu-clusters/c%201/replicas/r-0/exec"
    q = parse_qs(parts.query)
    assert q["command"] == ["sh", "-c", "echo a&b"] and q["stdin"] == ["1"] and q["tty"] == ["1"]
