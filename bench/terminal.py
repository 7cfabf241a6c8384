"""Terminal benchmark: our emulator core and widget against tmux and pyte.

Run: python bench/terminal.py [--quick] [--repeat N] [--floods N]

(a) plain-text flood end to end: `seq 1 1000000` typed into a shell in a
    120x40 terminal, until the last line is on screen. Ours: the shell in a
    PTY -> our core -> the TerminalView widget (capped frame rate, dirty rows)
    in a headless Textual app; the time stops when the widget paints the row
    "1000000". tmux: the same shell in a detached 120x40 tmux session, the
    time stops when `capture-pane` shows that row. Ratio = tmux time / ours
    (>= 1: we are at least as fast).
(b) core throughput against pyte 0.8.2 on the same bytes, fed in 4 KiB
    chunks as a PTY delivers them: SGR-coloured lines, full-screen
    cursor-addressed redraws, CJK text (and plain lines for reference);
    CPU time of the process, so other load on the machine does not skew it.
(c) Ctrl-C stops a `yes` flood: from the key press to the shell's prompt
    painted; keystroke-to-screen latency: from a key press to its echo painted.

Medians of --repeat runs (runs of the two sides interleaved, so a busy
machine slows both alike); (a) takes --floods floods of each side per run, as
one flood on a busy machine can take several times the usual. Needs tmux and pyte.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT / "src", ROOT / "backend"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from textual.app import App, ComposeResult  # noqa: E402
from textual.strip import Strip  # noqa: E402

from ecotui.terminal import Terminal  # noqa: E402
from ecotui.terminal.localpty import LocalPty  # noqa: E402
from ecotui.widgets.terminal import TerminalView  # noqa: E402

COLS, ROWS = 120, 40
PROMPT = "READY> "
CHUNK = 4096


# -- workloads for (b) -------------------------------------------------------------------------
def sgr_lines(n: int) -> bytes:
    """Coloured log/highlighter output: 16, 256 and truecolor (a 24-colour theme)."""
    r = random.Random(1)
    theme = [f"38;2;{r.randrange(256)};{r.randrange(256)};{r.randrange(256)}" for _ in range(24)]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(8):
            k = r.randrange(4)
            if k == 0:
                sgr = f"\x1b[{30 + r.randrange(8)}m"
            elif k == 1:
                sgr = f"\x1b[1;{90 + r.randrange(8)}m"
            elif k == 2:
                sgr = f"\x1b[38;5;{r.randrange(256)}m"
            else:
                sgr = f"\x1b[{r.choice(theme)}m"
            parts.append(f"{sgr}word{r.randrange(1000)} ")
        out.append("".join(parts) + "\x1b[0m\r\n")
    return "".join(out).encode()


def redraws(frames: int) -> bytes:
    """Full-screen redraws as top/htop/vim make them: every row addressed, coloured, erased."""
    r = random.Random(2)
    out = []
    for f in range(frames):
        out.append("\x1b[H")
        for y in range(ROWS):
            body = "".join(chr(33 + r.randrange(90)) for _ in range(COLS - 10))
            out.append(f"\x1b[{y + 1};1H\x1b[{30 + (y + f) % 8}m{body}\x1b[0m\x1b[K")
    return "".join(out).encode()


def cjk(n: int) -> bytes:
    r = random.Random(3)
    alphabet = "漢字仮名交じり文中文字符한국어テキスト"
    return "".join(
        "".join(r.choice(alphabet) for _ in range(50)) + "\r\n" for _ in range(n)
    ).encode()


def plain(n: int) -> bytes:
    return "".join(f"{i}\r\n" for i in range(1, n + 1)).encode()


def _chunks(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


# CPU time of this process: the core is single-threaded and CPU-bound, and CPU
# time is not inflated when other programs on the machine take the cores.
_clock = time.process_time


def time_ours(chunks: list[bytes]) -> float:
    term = Terminal(COLS, ROWS)
    t0 = _clock()
    for c in chunks:
        term.feed(c)
    return _clock() - t0


def time_pyte(chunks: list[bytes]) -> float:
    import pyte

    screen = pyte.Screen(COLS, ROWS)
    stream = pyte.ByteStream(screen)
    t0 = _clock()
    for c in chunks:
        stream.feed(c)
    return _clock() - t0


def bench_core(repeat: int, quick: bool) -> list[tuple[str, float, float, float | None]]:
    scale = 4 if quick else 1
    workloads = [
        ("SGR-coloured lines", sgr_lines(20000 // scale), 10.0),
        ("full-screen redraws", redraws(200 // scale), 5.0),
        ("CJK text", cjk(20000 // scale), 5.0),
        ("plain lines (reference)", plain(200000 // scale), None),
    ]
    results = []
    for name, data, target in workloads:
        chunks = _chunks(data)
        ours, theirs = [], []
        for _ in range(repeat):
            ours.append(time_ours(chunks))
            theirs.append(time_pyte(chunks))
        mo, mp = statistics.median(ours), statistics.median(theirs)
        mb = len(data) / 1e6
        results.append((name, mb / mo, mb / mp, target))
    return results


# -- the widget in a headless app, fed by a shell in a PTY -------------------------------------
class _Probe(TerminalView):
    """The widget, noting when a painted row matches what a measurement waits for."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.want: Callable[[int, str], bool] | None = None
        self.seen_at: float | None = None
        self.seen = asyncio.Event()

    def expect(self, want: Callable[[int, str], bool]) -> None:
        self.seen_at = None
        self.seen.clear()
        self.want = want

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        if self.want is not None and self.seen_at is None and self.want(y, strip.text):
            self.seen_at = time.perf_counter()
            self.seen.set()
        return strip


async def _seen(tv: _Probe, timeout: float) -> bool:
    """Wait for the painted row without polling (polling would slow the loop it measures)."""
    try:
        await asyncio.wait_for(tv.seen.wait(), timeout)
    except TimeoutError:
        return False
    return True


class _BenchApp(App[None]):
    def compose(self) -> ComposeResult:
        yield _Probe(id="term", cols=COLS, rows=ROWS, fps=30)


def _shell_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "TERM": "xterm-256color",
        "PS1": PROMPT,
        "LANG": "C.UTF-8",
        "HOME": tempfile.gettempdir(),
    }


async def _wait(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.002)
    return False


async def bench_widget(flood_runs: int, ctrl_c_runs: int, keystrokes: int, count: int) -> dict:
    app = _BenchApp()
    out: dict[str, list[float]] = {"flood": [], "ctrl_c": [], "key": []}
    async with app.run_test(size=(COLS, ROWS)) as pilot:
        tv = app.query_one(_Probe)
        pty = LocalPty(["bash", "--norc", "--noprofile", "-i"], COLS, ROWS, env=_shell_env())
        tv.input_sink = pty.write
        tv.resize_sink = pty.resize
        pty.start(tv.feed)
        tv.focus()
        await _wait(lambda: any(r.startswith(PROMPT) for r in tv.screen_text()), 10)
        await pilot.pause(0.2)
        last = str(count)

        for _ in range(flood_runs):
            await pilot.press("ctrl+l")
            await pilot.pause(0.2)
            await pilot.press(*f"seq 1 {count}")
            await pilot.pause(0.1)
            tv.expect(lambda y, text: text.rstrip() == last)
            t0 = time.perf_counter()
            await pilot.press("enter")
            await _seen(tv, 120)
            assert tv.seen_at is not None, "the flood's last line never showed"
            out["flood"].append(tv.seen_at - t0)
            tv.want = None
            await _wait(lambda: tv.term.display()[tv.term.y].startswith(PROMPT), 10)

        for _ in range(ctrl_c_runs):
            await pilot.press(*"yes", "enter")
            await pilot.pause(0.5)  # let the flood run
            tv.expect(lambda y, text: y == tv.term.y and text.rstrip() == PROMPT.rstrip())
            t0 = time.perf_counter()
            await pilot.press("ctrl+c")
            await _seen(tv, 10)
            assert tv.seen_at is not None, "Ctrl-C did not bring the prompt back"
            out["ctrl_c"].append(tv.seen_at - t0)
            tv.want = None
            await pilot.pause(0.1)

        await pilot.press("ctrl+l")
        await pilot.pause(0.2)
        typed = ""
        for i in range(keystrokes):
            ch = "abcdefghijklmnopqrstuvwxyz"[i % 26]
            typed += ch
            expect = PROMPT + typed
            tv.expect(lambda y, text, expect=expect: text.rstrip() == expect)  # type: ignore[misc]
            t0 = time.perf_counter()
            await pilot.press(ch)
            await _seen(tv, 5)
            if tv.seen_at is not None:
                out["key"].append(tv.seen_at - t0)
            if len(typed) >= 60:
                await pilot.press("ctrl+u")
                typed = ""
                await pilot.pause(0.05)
        pty.close()
    return out


def bench_tmux(runs: int, count: int) -> list[float]:
    sock = f"bench{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp, "tmux.conf")
        conf.write_text("set -g status off\nset -g history-limit 10000\n")
        base = ["tmux", "-L", sock, "-f", str(conf)]
        env = dict(os.environ, **_shell_env())
        env.pop("TMUX", None)
        times = []
        try:
            subprocess.run(
                base
                + [
                    "new-session",
                    "-d",
                    "-s",
                    "b",
                    "-x",
                    str(COLS),
                    "-y",
                    str(ROWS),
                    "bash --norc --noprofile -i",
                ],
                check=True,
                env=env,
            )

            def screen() -> list[str]:
                return subprocess.run(
                    base + ["capture-pane", "-p", "-t", "b"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.splitlines()

            deadline = time.perf_counter() + 10
            while (
                not any(r.startswith(PROMPT) for r in screen()) and time.perf_counter() < deadline
            ):
                time.sleep(0.02)
            for _ in range(runs):
                subprocess.run(base + ["send-keys", "-t", "b", "C-l"], check=True)
                time.sleep(0.2)
                subprocess.run(base + ["send-keys", "-t", "b", f"seq 1 {count}"], check=True)
                time.sleep(0.1)
                t0 = time.perf_counter()
                subprocess.run(base + ["send-keys", "-t", "b", "Enter"], check=True)
                while True:
                    if str(count) in (r.rstrip() for r in screen()):
                        break
                    if time.perf_counter() - t0 > 120:
                        raise RuntimeError("tmux never showed the last line")
                    time.sleep(0.005)
                times.append(time.perf_counter() - t0)
                time.sleep(0.3)
        finally:
            subprocess.run(base + ["kill-server"], check=False)
    return times


def _ms(v: float) -> str:
    return f"{v * 1000:.0f} ms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller workloads (a smoke run)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--floods",
        type=int,
        default=3,
        help="(a): floods per side in each repeat (a busy machine makes single runs vary)",
    )
    args = ap.parse_args(argv)
    if not shutil.which("tmux"):
        print("tmux is needed for (a)", file=sys.stderr)
        return 2
    count = 100_000 if args.quick else 1_000_000
    rep = max(1, args.repeat)
    floods = max(1, args.floods)

    print(
        f"(a) plain-text flood: `seq 1 {count}` in a {COLS}x{ROWS} shell, until the last line shows"
    )
    ours: list[float] = []
    theirs: list[float] = []
    widget: dict[str, list[float]] = {"ctrl_c": [], "key": []}
    for i in range(rep):
        theirs += bench_tmux(floods, count)
        res = asyncio.run(
            bench_widget(floods, 2 if i < rep - 1 else 3, 40 if not args.quick else 15, count)
        )
        ours += res["flood"]
        widget["ctrl_c"] += res["ctrl_c"]
        widget["key"] += res["key"]
    mo, mt = statistics.median(ours), statistics.median(theirs)
    print(
        f"    ours (PTY -> core -> widget, 30 fps): median {_ms(mo)}  runs {[_ms(t) for t in ours]}"
    )
    print(
        f"    tmux (until capture-pane shows it):   median {_ms(mt)}  runs {[_ms(t) for t in theirs]}"
    )
    print(f"    ratio tmux/ours = {mt / mo:.2f}  (target >= 1)")

    print("(b) emulator-core throughput against pyte (same bytes, 4 KiB chunks)")
    for name, ours_mbs, pyte_mbs, target in bench_core(max(rep, 5), args.quick):
        ratio = ours_mbs / pyte_mbs
        goal = f"(target >= {target:g}x)" if target else ""
        print(
            f"    {name:26s} ours {ours_mbs:6.1f} MB/s  pyte {pyte_mbs:5.2f} MB/s  "
            f"ratio {ratio:5.1f}x {goal}"
        )

    print("(c) interactivity through the widget")
    cc = widget["ctrl_c"]
    print(
        f"    Ctrl-C stops a `yes` flood, prompt on screen: median {_ms(statistics.median(cc))}, "
        f"max {_ms(max(cc))} over {len(cc)} runs (target <= 200 ms)"
    )
    keys = sorted(widget["key"])
    p99 = keys[min(len(keys) - 1, int(round(0.99 * (len(keys) - 1))))]
    print(
        f"    keystroke to screen: median {_ms(statistics.median(keys))}, p99 {_ms(p99)} "
        f"over {len(keys)} keys"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
