"""Regenerate the terminal corpus: real programs' output and tmux's screen for it.

Usage: python tests/terminal/corpus/make_corpus.py [NAME ...]
Needs tmux, vim, less, htop, top, mc, vttest, bash on PATH (Debian: apt-get
install tmux vim less htop procps mc vttest).

For each entry a program runs in a pseudo-terminal of a fixed size (our own
recorder, below) while scripted keys are typed; every byte it writes is kept
in `NAME.bin`. The same bytes are then replayed into a detached tmux pane of
the same size (`stty raw` so the tty adds nothing) and tmux's view of them is
kept in `NAME.json`: `capture-pane -p -e -N` of the screen, the last lines of
its history, the cursor and the alternate-screen flag. The tests feed
`NAME.bin` to our core and compare with `NAME.json`.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MAX_BYTES = 190_000


# -- recording ---------------------------------------------------------------------------
def record(
    argv: list[str],
    cols: int,
    rows: int,
    steps: list[tuple[str, Any]],
    *,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
) -> bytes:
    """Run argv in a PTY of cols x rows, play `steps`, return all its output.

    steps: ("wait", seconds), ("send", bytes), ("until", bytes, timeout): wait
    until the output contains the bytes, ("end", timeout): wait for exit.
    """
    pid, fd = pty.fork()
    if pid == 0:  # child
        try:
            if cwd:
                os.chdir(cwd)
            os.execvpe(argv[0], argv, env or os.environ)
        finally:
            os._exit(127)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    out = bytearray()

    def pump(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                return
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            out.extend(chunk)

    exited = False
    for step in steps:
        kind = step[0]
        if kind == "wait":
            pump(step[1])
        elif kind == "send":
            os.write(fd, step[1])
        elif kind == "until":
            deadline = time.monotonic() + step[2]
            while step[1] not in out and time.monotonic() < deadline:
                pump(0.05)
        elif kind == "end":
            deadline = time.monotonic() + step[1]
            while time.monotonic() < deadline:
                pump(0.05)
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    exited = True
                    pump(0.2)
                    break
    if not exited:
        pump(0.2)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    os.close(fd)
    return bytes(out)


# -- tmux replay -----------------------------------------------------------------------------
def tmux_screen(data: bytes, cols: int, rows: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp, "tmux.conf")
        conf.write_text("set -g status off\nset -g history-limit 2000\n")
        bin_path = Path(tmp, "data.bin")
        bin_path.write_bytes(data)
        sock = f"corpus{os.getpid()}"
        base = ["tmux", "-L", sock, "-f", str(conf)]
        cmd = f"stty raw -echo; cat {bin_path}; sleep 1; tmux -L {sock} wait-for -S replayed; sleep 600"
        subprocess.run(
            base + ["new-session", "-d", "-s", "c", "-x", str(cols), "-y", str(rows), cmd],
            check=True,
        )
        try:
            subprocess.run(base + ["wait-for", "replayed"], check=True, timeout=60)
            time.sleep(0.3)
            screen = subprocess.run(
                base + ["capture-pane", "-p", "-e", "-N", "-t", "c"],
                check=True,
                capture_output=True,
            ).stdout.decode("utf-8", "replace")
            hist = subprocess.run(
                base + ["capture-pane", "-p", "-e", "-N", "-S", "-30", "-E", "-1", "-t", "c"],
                check=True,
                capture_output=True,
            ).stdout.decode("utf-8", "replace")
            info = (
                subprocess.run(
                    base
                    + [
                        "display",
                        "-p",
                        "-t",
                        "c",
                        "#{cursor_x} #{cursor_y} #{alternate_on} #{history_size} #{pane_width} #{pane_height}",
                    ],
                    check=True,
                    capture_output=True,
                )
                .stdout.decode()
                .split()
            )
        finally:
            subprocess.run(base + ["kill-server"], check=False)
    cx, cy, alt, hsize, pw, ph = (int(v) for v in info)
    assert (pw, ph) == (cols, rows), (pw, ph)
    screen_lines = screen.split("\n")[:rows]
    hist_lines = hist.split("\n")[:-1] if hsize else []
    return {
        "cursor": [cx, cy],
        "alternate_on": bool(alt),
        "history_size": hsize,
        "screen": screen_lines,
        "history_tail": hist_lines[-min(30, hsize) :] if hsize else [],
    }


# -- the entries -------------------------------------------------------------------------------
def _env(**extra: str) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "TERM": "xterm-256color",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PS1": "$ ",
        "COLUMNS": "",
        "LINES": "",
    }
    env.update(extra)
    return {k: v for k, v in env.items() if v}


def _sample_tree(root: Path) -> None:
    (root / "src").mkdir()
    (root / "docs").mkdir()
    (root / "build.sh").write_text("#!/bin/sh\necho build\n")
    (root / "build.sh").chmod(0o755)
    (root / "README.md").write_text("hello\n")
    (root / "archive.tar.gz").write_bytes(b"x")
    (root / "image.png").write_bytes(b"x")
    (root / "link-to-src").symlink_to("src")
    (root / "broken-link").symlink_to("nowhere")
    (root / "sticky").mkdir()
    (root / "sticky").chmod(0o1777)
    for i in range(12):
        (root / "src" / f"module_{i:02d}.py").write_text("pass\n")


_PY_SOURCE = '''"""A small module to edit."""

import os


def greet(name: str) -> str:
    # say hello
    return f"hello {name}"


class Counter:
    def __init__(self) -> None:
        self.value = 0

    def bump(self, by: int = 1) -> int:
        self.value += by
        return self.value


if __name__ == "__main__":
    print(greet(os.environ.get("USER", "world")))
'''

_PROGRESS = r"""
import sys, time
w = sys.stdout.write
for i in range(0, 101, 5):
    bar = "#" * (i // 4) + "-" * (25 - i // 4)
    w(f"\rdownloading [\x1b[32m{bar}\x1b[0m] {i:3d}%"); sys.stdout.flush(); time.sleep(0.005)
w("\n")
names = ["layer-a", "layer-b", "layer-c"]
for n in names:
    w(f"{n}: waiting\n")
for step in range(0, 11):
    w(f"\x1b[{len(names)}A")
    for k, n in enumerate(names):
        done = min(10, step + k)
        w(f"\r\x1b[K{n}: \x1b[1;34m{'=' * done}>\x1b[0m{' ' * (10 - done)} {done * 10}%\n")
    sys.stdout.flush(); time.sleep(0.005)
spin = "|/-\\"
for i in range(20):
    w(f"\r\x1b[33m{spin[i % 4]}\x1b[0m working {i}"); sys.stdout.flush(); time.sleep(0.002)
w("\r\x1b[2Kdone\n")
for i in range(3):
    w(f"\x1b[7m epoch {i} \x1b[0m loss=\x1b[38;5;{160 + i}m{1.0 / (i + 1):.4f}\x1b[0m\n")
"""

_CJK = (
    "中文: 你好，世界！这是一个测试。\r\n"
    "日本語: こんにちは、世界。カタカナとひらがな。\r\n"
    "한국어: 안녕하세요 세계\r\n"
    "mixed: abc漢字def テスト 123 ｆｕｌｌｗｉｄｔｈ\r\n"
    "combining: e\u0301 a\u0300 n\u0303 o\u0308 — cafe\u0301 na\u0131\u0308ve\r\n"
    "\x1b[31m红色\x1b[0m \x1b[42m绿底\x1b[0m \x1b[1;4m粗体下划线\x1b[0m\r\n"
    "wrap: 一二三四五六七八九十一二三四五六七八九十一二三四五六七八九十\r\n"
    "odd:x一二三四五六七八九十一二三四五六七八九十一二三四五六七八九十\r\n"
    "overwrite: 漢字漢字\r\x1b[12Cxy\x1b[3Cz\r\n"
    "erase: 漢字漢字漢字\x1b[13G\x1b[K|\r\n"
    "box: ┌─┐│└┘ ░▒▓ ★☆ ← → ↑ ↓\r\n"
)


def _synthetic_vt() -> bytes:
    """Escape sequences real programs use, in one deterministic stream."""
    out = []
    w = out.append
    w("\x1b[2J\x1b[H")
    for i in range(1, 25):
        w(f"line {i:02d} " + "abcdefghij" * 5 + "\r\n")
    w("\x1b[5;15r\x1b[15;1H")  # scroll region, cursor at its bottom
    for i in range(4):
        w(f"\nregion scroll {i}")
    w("\x1b[5;1H\x1b[2L\x1b[7;1H\x1b[1M")  # insert / delete lines
    w("\x1b[8;10H\x1b[3@***\x1b[9;10H\x1b[4P\x1b[10;10H\x1b[5X")  # ICH, DCH, ECH
    w("\x1b[r\x1b[H\x1b[?6h\x1b[3;5r\x1b[1;1Horigin\x1b[?6l\x1b[r")  # origin mode
    w("\x1b[18;1H\x1b[K\tT1\tT2\x1b[3g\x1b[18;30H\x1bH\x1b[18;1H\tX")  # tabs
    w("\x1b[19;1H\x1b[Kx\x1b[5b|")  # REP
    w("\x1b[20;1H\x1b[K\x1b(0lqqqwqqqk\x1b(B ascii \x0ex\x0f ")  # DEC graphics, SO/SI
    w("\x1b[21;75H\x1b[Kwrap-pending-test")  # autowrap across the edge
    w("\x1b[22;1H\x1b[K\x1b[4hINS\x1b[1;1H\x1b[4l")
    w("\x1b[22;1Hab\x1b[4hcd\x1b[4l")
    w("\x1b7\x1b[23;40Hsaved\x1b8restored")
    w("\x1b[24;1H\x1b[K\x1b[44m\x1b[K\x1b[0m")  # EL with a background colour (BCE)
    w("\x1b[1;80H\x1b[?7lNOWRAP\x1b[?7h")
    w("\x1b[12;70Hedge\x1b[K")
    w("\x1b[13;1H\x1b[1J")  # erase above
    w("\x1b[14;1H\x1bM\x1bM\x1bD")  # reverse index, index
    w("\x1b[17;3H\x1b[2K\x1b[43mBCE\x1b[0K\x1b[0m")
    w("\x1b[16;1Hback\x08\x08XY")
    w("\x1b[6;80HZ\x08Q")  # backspace at pending wrap
    return "".join(w_ for w_ in out).encode()


def _sgr_all() -> bytes:
    out = []
    w = out.append
    for i in range(8):
        w(
            f"\x1b[{30 + i}mfg{i}\x1b[0m \x1b[{90 + i}mbr{i}\x1b[0m \x1b[{40 + i}m bg{i} \x1b[0m"
            f" \x1b[{100 + i}m bb{i} \x1b[0m\r\n"
        )
    for row in range(4):
        w("".join(f"\x1b[48;5;{16 + row * 54 + k}m " for k in range(54)) + "\x1b[0m\r\n")
    for row in range(2):
        w(
            "".join(f"\x1b[38;2;{k * 4};{255 - k * 4};{row * 120}m#" for k in range(60))
            + "\x1b[0m\r\n"
        )
    attrs = [
        (1, "bold"),
        (2, "dim"),
        (3, "italic"),
        (4, "underline"),
        (5, "blink"),
        (7, "reverse"),
        (8, "hidden"),
        (9, "strike"),
        (21, "dunder"),
        (53, "over"),
    ]
    w(" ".join(f"\x1b[{a}m{name}\x1b[0m" for a, name in attrs) + "\r\n")
    w("\x1b[1;3;4;31;42mall\x1b[22mnobold\x1b[23mnoit\x1b[24mnoul\x1b[39mdeffg\x1b[49mdefbg\r\n")
    w(
        "\x1b[38:5:208mcolon256\x1b[0m \x1b[38:2::255:100:0mcolonrgb\x1b[0m \x1b[4:3mcurly\x1b[0m\r\n"
    )
    w("\x1b[7;34mrev-blue\x1b[27mnorev\x1b[0m\r\n")
    return "".join(out).encode()


def _cancel_and_links() -> bytes:
    """CAN and SUB inside sequences (they abandon them), OSC 8 hyperlinks (kept as text)."""
    out = [
        "\x1b[2J\x1b[H",
        "csi: \x1b[3\x18mA \x1b[31\x1amB \x1b[1;\x18C\r\n",
        "osc: \x1b]0;title\x18D \x1b]8;;http://x\x1aE\x07\r\n",
        "esc: \x1b(\x18F \x1b#\x1aG \x1b\x18H\r\n",
        "links: \x1b]8;;https://example.com/a\x1b\\\x1b[1mbold link\x1b[0m tail\x1b]8;;\x1b\\ after\r\n",
        "\x1b]8;id=7;https://example.com/b\x07\x1b[32mgreen\x1b]8;;\x07 \x1b[4mund\x1b[24m\r\n",
        "ctl: a\x18b\x1ac\x1b[2;5H\x18\x1a\x1b[7mrev\x1b[27m",
    ]
    return "".join(out).encode()


def _mc_config(home: Path) -> None:
    ini = home / ".config" / "mc" / "ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    ini.write_text("[Layout]\nfree_space=false\n")


def _vttest(keys: list[bytes]) -> Any:
    """vttest driven to one of its screens: it asks for the terminal's identity
    first (answered as a VT100 with AVO), then each key is typed after a pause."""
    steps: list[tuple[str, Any]] = [("wait", 0.3), ("send", b"\x1b[?1;2c"), ("wait", 2.2)]
    for key in keys:
        steps += [("send", key), ("wait", 0.7)]
    return lambda: record(["vttest"], 80, 24, steps, env=_env(HOME="/tmp"))


def entries(tmp: Path) -> dict[str, tuple[int, int, Any]]:
    """name -> (cols, rows, producer returning bytes)."""
    tree = tmp / "tree"
    tree.mkdir()
    _sample_tree(tree)
    src = tmp / "greet.py"
    src.write_text(_PY_SOURCE)
    prog = tmp / "progress.py"
    prog.write_text(_PROGRESS)
    text = tmp / "text.txt"
    text.write_text(
        "".join(f"{i:04d} the quick brown fox jumps over the lazy dog\n" for i in range(300))
    )
    home = tmp / "home"
    home.mkdir()
    env = _env(HOME=str(home))
    py = sys.executable
    isolated = ["unshare", "--pid", "--fork", "--mount-proc"]

    def sh(cmd: str, cols: int, rows: int, wait: float = 1.0) -> Any:
        return lambda: record(
            ["sh", "-c", cmd], cols, rows, [("end", wait + 5)], cwd=str(tree), env=env
        )

    return {
        "ls_color": (
            80,
            24,
            sh(
                "ls --color=always -C; ls --color=always -l --time-style=+X; ls --color=always src",
                80,
                24,
            ),
        ),
        "vim_edit": (
            80,
            24,
            lambda: record(
                ["vim", "--clean", "-n", "-c", "set number", "greet.py"],
                80,
                24,
                [
                    ("wait", 1.0),
                    ("send", b"/Counter\r"),
                    ("wait", 0.3),
                    ("send", b"otext added here\x1b"),
                    ("wait", 0.3),
                    ("send", b":split\r"),
                    ("wait", 0.3),
                    ("send", b"G"),
                    ("wait", 0.5),
                ],
                cwd=str(tmp),
                env=env,
            ),
        ),
        "vim_quit": (
            80,
            24,
            lambda: record(
                ["bash", "--norc", "--noprofile", "-i"],
                80,
                24,
                [
                    ("wait", 0.5),
                    ("send", b"echo before vim\r"),
                    ("wait", 0.3),
                    ("send", b"vim --clean -n greet.py\r"),
                    ("wait", 1.0),
                    ("send", b"jjdd"),
                    ("wait", 0.3),
                    ("send", b":q!\r"),
                    ("wait", 0.5),
                    ("send", b"echo after vim\r"),
                    ("wait", 0.5),
                ],
                cwd=str(tmp),
                env=env,
            ),
        ),
        # In their own PID namespace, so only themselves show in the process list.
        "htop": (
            100,
            30,
            lambda: record(
                isolated + ["htop", "-d", "5", "--no-mouse"],
                100,
                30,
                [("wait", 1.6)],
                cwd=str(tmp),
                env=env,
            ),
        ),
        "top": (
            90,
            25,
            lambda: record(
                isolated + ["top", "-d", "0.5"], 90, 25, [("wait", 1.3)], cwd=str(tmp), env=env
            ),
        ),
        "less": (
            80,
            24,
            lambda: record(
                ["less", "text.txt"],
                80,
                24,
                [
                    ("wait", 0.5),
                    ("send", b" "),
                    ("wait", 0.2),
                    ("send", b"/fox 01\r"),
                    ("wait", 0.3),
                    ("send", b"kk"),
                    ("wait", 0.3),
                ],
                cwd=str(tmp),
                env=env,
            ),
        ),
        "cjk": (41, 16, sh(f"printf '%s' '{_CJK}'", 41, 16)),
        "progress": (
            80,
            24,
            lambda: record([py, "progress.py"], 80, 24, [("end", 10)], cwd=str(tmp), env=env),
        ),
        "bash_readline": (
            40,
            12,
            lambda: record(
                ["bash", "--norc", "--noprofile", "-i"],
                40,
                12,
                [
                    ("wait", 0.5),
                    ("send", b"echo " + b"x" * 50 + b" end"),
                    ("wait", 0.3),
                    ("send", b"\x1b[D" * 10),
                    ("wait", 0.2),
                    ("send", b"\x7f\x7fINS"),
                    ("wait", 0.2),
                    ("send", b"\r"),
                    ("wait", 0.3),
                    ("send", b"printf '\\033[1;32mgreen\\033[0m\\n'\r"),
                    ("wait", 0.5),
                ],
                cwd=str(tmp),
                env=env,
            ),
        ),
        "tmux_nested": (
            80,
            24,
            lambda: record(
                [
                    "tmux",
                    "-L",
                    f"nested{os.getpid()}",
                    "-f",
                    "/dev/null",
                    "new-session",
                    "seq 1 60; sleep 30",
                ],
                80,
                24,
                [
                    ("wait", 1.0),
                    ("send", b'\x02"'),
                    ("wait", 0.5),
                    ("send", b"ls --color=always tree\r"),
                    ("wait", 0.5),
                    ("send", b"\x02%"),
                    ("wait", 0.5),
                    ("send", b"seq 100 140\r"),
                    ("wait", 0.8),
                ],
                cwd=str(tmp),
                env=_env(HOME=str(home), SHELL="/bin/sh"),
            ),
        ),
        "vt_synthetic": (80, 24, lambda: _synthetic_vt()),
        "vt_cancel_links": (80, 24, lambda: _cancel_and_links()),
        # HOME is the temporary directory, so mc shows its paths as ~/...; no free space.
        "mc": (
            80,
            24,
            lambda: (
                _mc_config(tmp)
                or record(
                    ["mc", "-u", "-d", "tree", "tree/src"],
                    80,
                    24,
                    [
                        ("wait", 2.5),
                        ("send", b"\x1b[B\x1b[B\x1b[B"),
                        ("wait", 0.8),
                        ("send", b"\t"),
                        ("wait", 0.8),
                        ("send", b"\x1b[B"),
                        ("wait", 1.5),
                    ],
                    cwd=str(tmp),
                    env=_env(HOME=str(tmp)),
                )
            ),
        ),
        # vttest screens: menu 1 (cursor movements), 2 (screen features), 8 (VT102).
        "vttest_box": (80, 24, _vttest([b"1\r"])),
        "vttest_autowrap": (80, 24, _vttest([b"1\r", b"\r", b"\r"])),
        "vttest_wrap": (80, 24, _vttest([b"2\r"])),
        "vttest_tabs": (80, 24, _vttest([b"2\r", b"\r"])),
        "vttest_80col": (80, 24, _vttest([b"2\r"] + [b"\r"] * 3)),
        "vttest_soft_scroll": (80, 24, _vttest([b"2\r"] + [b"\r"] * 6)),
        "vttest_jump_scroll": (80, 24, _vttest([b"2\r"] + [b"\r"] * 9)),
        "vttest_origin": (80, 24, _vttest([b"2\r"] + [b"\r"] * 10)),
        "vttest_accordion": (80, 24, _vttest([b"8\r"])),
        "vttest_accordion_end": (80, 24, _vttest([b"8\r", b"\r"])),
        "vttest_insert_mode": (80, 24, _vttest([b"8\r", b"\r", b"\r"])),
        "vttest_delete_char": (80, 24, _vttest([b"8\r"] + [b"\r"] * 3)),
        "sgr_all": (80, 24, lambda: _sgr_all()),
    }


def main(argv: list[str]) -> int:
    for tool in ("tmux", "vim", "less", "htop", "top", "mc", "vttest", "bash"):
        if not shutil.which(tool):
            print(f"missing {tool}", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for name, (cols, rows, make) in entries(tmp).items():
            if argv and name not in argv:
                continue
            data = make()
            if name == "tmux_nested":
                subprocess.run(["tmux", "-L", f"nested{os.getpid()}", "kill-server"], check=False)
            if len(data) > MAX_BYTES:
                print(f"{name}: {len(data)} bytes, over the limit; cut", file=sys.stderr)
                data = data[:MAX_BYTES]
            expected = tmux_screen(data, cols, rows)
            (HERE / f"{name}.bin").write_bytes(data)
            meta = {"name": name, "cols": cols, "rows": rows, "bytes": len(data), **expected}
            (HERE / f"{name}.json").write_text(
                json.dumps(meta, indent=1, ensure_ascii=False) + "\n"
            )
            print(
                f"{name}: {len(data)} bytes, cursor {expected['cursor']}, "
                f"alternate {expected['alternate_on']}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
