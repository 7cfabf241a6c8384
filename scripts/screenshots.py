"""Export SVG screenshots of the running dashboard (fixed clock, generated fleet) into screenshots/.

    python scripts/screenshots.py                # every shot
    python scripts/screenshots.py clusters help  # only these

Each shot is a name, a terminal size and an async function that drives the app
to the view; add yours to SHOTS. The fleet and feed come from
`ecotui.testing` (the same generated data the snapshot tests use), so the
pictures are the same on every run and need no backend.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT / "src", ROOT / "backend"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from textual.pilot import Pilot  # noqa: E402
from textual.widgets import Input  # noqa: E402

from ecotui.app import EcoApp  # noqa: E402
from ecotui.client.rest import EcoClient  # noqa: E402
from ecotui.testing import (  # noqa: E402
    FIXED_START,
    GeneratedFleet,
    ReplayFrameSource,
    fleet_transport,
)

OUT = ROOT / "screenshots"


class FixedClock:
    def __init__(self, start: datetime = FIXED_START) -> None:
        self.t = start

    def now(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


@dataclass
class Demo:
    app: EcoApp
    fleet: GeneratedFleet
    source: ReplayFrameSource
    clock: FixedClock


def demo(clusters: int = 12) -> Demo:
    fleet = GeneratedFleet(clusters)
    clock = FixedClock()
    source = ReplayFrameSource(
        [fleet.snapshot_frame()],
        on_focus=lambda ids: [fleet.replicas_frame(i, 0.0) for i in ids if i in fleet.clusters],
    )
    for k in range(12):  # a minute of summaries: sparklines with a shape
        source.push(fleet.summaries_frame(5.0 * k))
    client = EcoClient("http://demo.invalid", "eco_demo", transport=fleet_transport(fleet))
    app = EcoApp(None, client=client, frame_source=source, clock=clock, tz=UTC, refresh_hz=20)
    return Demo(app, fleet, source, clock)


async def until(pilot: Pilot, cond: Callable[[], object], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise TimeoutError("the view did not appear in time")
        await pilot.pause(0.05)


def shows(app: EcoApp, text: str) -> bool:
    return text in "\n".join(s.text for s in app.screen._compositor.render_strips())


async def settle(pilot: Pilot) -> None:
    await pilot.pause(0.2)
    for inp in pilot.app.screen.query(Input):
        inp.cursor_blink = False
    pilot.app.clear_notifications()
    await pilot.pause(0.1)


async def clusters_view(pilot: Pilot, d: Demo) -> None:
    await until(pilot, lambda: shows(d.app, "12 clusters"))


async def clusters_grouped(pilot: Pilot, d: Demo) -> None:
    await until(pilot, lambda: shows(d.app, "12 clusters"))
    await pilot.press("m")
    await until(pilot, lambda: shows(d.app, "group: region"))


async def cluster_view(pilot: Pilot, d: Demo) -> None:
    await until(pilot, lambda: shows(d.app, "12 clusters"))
    d.app.open_cluster("gc_00007")
    await until(pilot, lambda: getattr(d.app.screen, "_loaded", False))
    await until(pilot, lambda: shows(d.app, "vision-serve-7"))


async def logs_view(pilot: Pilot, d: Demo) -> None:
    await cluster_view(pilot, d)
    await pilot.press("l")
    await until(pilot, lambda: shows(d.app, "60 lines"))


async def account_view(pilot: Pilot, d: Demo) -> None:
    await until(pilot, lambda: shows(d.app, "12 clusters"))
    await pilot.press("a")
    await until(pilot, lambda: shows(d.app, "28 entries"))


async def help_screen(pilot: Pilot, d: Demo) -> None:
    await until(pilot, lambda: shows(d.app, "12 clusters"))
    await pilot.press("question_mark")
    await until(pilot, lambda: shows(d.app, "ecotui help"))


async def reconnecting(pilot: Pilot, d: Demo) -> None:
    await until(pilot, lambda: shows(d.app, "12 clusters"))
    d.source.drop(retry_in=8, attempt=3, now=d.clock.now())
    await until(pilot, lambda: shows(d.app, "reconnecting"))


async def light_theme(pilot: Pilot, d: Demo) -> None:
    await until(pilot, lambda: shows(d.app, "12 clusters"))
    await pilot.press("T")


async def launch_dialog(pilot: Pilot, d: Demo) -> None:
    await until(pilot, lambda: shows(d.app, "12 clusters"))
    await pilot.press("n")
    await until(pilot, lambda: shows(d.app, "Launch a cluster"))
    await pilot.press(*"inference-b")
    await until(pilot, lambda: shows(d.app, "inference-b"))


async def scale_dialog(pilot: Pilot, d: Demo) -> None:
    await cluster_view(pilot, d)
    await pilot.press("plus")
    await until(pilot, lambda: shows(d.app, "Scale"))


async def cluster_events(pilot: Pilot, d: Demo) -> None:
    await cluster_view(pilot, d)
    await pilot.press("3")
    await until(pilot, lambda: shows(d.app, "exited with code"))


async def command_line(pilot: Pilot, d: Demo) -> None:
    await until(pilot, lambda: shows(d.app, "12 clusters"))
    await pilot.press("colon", *"cluster ", "v")
    await until(pilot, lambda: shows(d.app, "vision-serve"))


async def gpus_view(pilot: Pilot, d: Demo) -> None:
    await until(pilot, lambda: shows(d.app, "12 clusters"))
    await pilot.press("H")
    await until(
        pilot,
        lambda: (
            type(d.app.screen).__name__ == "GpusScreen" and getattr(d.app.screen, "loaded", False)
        ),
    )


async def gpu_detail(pilot: Pilot, d: Demo) -> None:
    await gpus_view(pilot, d)
    await pilot.press("enter")
    await until(pilot, lambda: type(d.app.screen).__name__ == "GpuDetailScreen")
    await until(pilot, lambda: shows(d.app, "fallen off the bus"))


Drive = Callable[[Pilot, Demo], Awaitable[None]]

# (file name without .svg, terminal size, driver)
SHOTS: list[tuple[str, tuple[int, int], Drive]] = [
    ("clusters", (160, 48), clusters_view),
    ("clusters-80x24", (80, 24), clusters_view),
    ("clusters-grouped", (160, 48), clusters_grouped),
    ("cluster", (160, 48), cluster_view),
    ("cluster-80x24", (80, 24), cluster_view),
    ("cluster-events-80x24", (80, 24), cluster_events),
    ("command-line-80x24", (80, 24), command_line),
    ("logs", (160, 48), logs_view),
    ("account", (160, 48), account_view),
    ("help", (160, 48), help_screen),
    ("reconnecting", (120, 30), reconnecting),
    ("clusters-light", (160, 48), light_theme),
    ("launch-80x24", (80, 24), launch_dialog),
    ("scale", (120, 36), scale_dialog),
    ("gpus", (160, 48), gpus_view),
    ("gpus-80x24", (80, 24), gpus_view),
    ("gpu-detail", (160, 48), gpu_detail),
]


async def shoot(name: str, size: tuple[int, int], drive: Drive, out: Path) -> Path:
    d = demo()
    path = out / f"{name}.svg"
    async with d.app.run_test(size=size) as pilot:
        await drive(pilot, d)
        await settle(pilot)
        path.write_text(d.app.export_screenshot(title=f"ecotui · {name}"), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="shots to take (default: all)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    wanted = [s for s in SHOTS if not args.names or s[0] in args.names]
    if args.names and len(wanted) != len(args.names):
        known = ", ".join(s[0] for s in SHOTS)
        parser.error(f"unknown shot; known: {known}")
    for name, size, drive in wanted:
        path = asyncio.run(shoot(name, size, drive, args.out))
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    main()
