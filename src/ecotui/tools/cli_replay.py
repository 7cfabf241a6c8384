"""`ecotui replay FILE [--speed X] [--idle-limit S]`: play an asciicast v2 recording
in this terminal (no backend needed). `FILE` may also be the name of a recording
in the default directory; `--list` shows those."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ecotui.cli_io import Subcommands
from ecotui.tools.asciicast import (
    CastError,
    list_recordings,
    read_cast,
    recordings_dir,
    resize_sequence,
    schedule,
)
from ecotui.tools.common import EXIT_OK, EXIT_REFUSED, EXIT_USAGE
from ecotui.tools.common import positive_float as _positive_float


def add_parser(sub: Subcommands) -> None:
    s = sub.add_parser("replay", help="play a shell recording (asciicast v2) in this terminal")
    s.add_argument("file", nargs="?", help="a .cast file, or a recording's name")
    s.add_argument(
        "--speed",
        type=_positive_float,
        default=1.0,
        metavar="X",
        help="play X times as fast (default 1)",
    )
    s.add_argument(
        "--idle-limit",
        type=_positive_float,
        metavar="S",
        help="wait at most S seconds between two events",
    )
    s.add_argument("--list", action="store_true", help="list the recordings kept by ecotui")


def resolve(name: str) -> Path:
    p = Path(name)
    if p.exists() or os.sep in name:
        return p
    d = recordings_dir()
    for candidate in (d / name, d / f"{name}.cast"):
        if candidate.exists():
            return candidate
    return p


def cmd_replay(args: argparse.Namespace) -> int:
    if args.list:
        for p in list_recordings():
            print(f"{p.name}  {p.stat().st_size} bytes")
        return EXIT_OK
    if not args.file:
        print(
            "ecotui: replay needs a FILE (ecotui replay --list shows the recordings)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    path = resolve(args.file)
    try:
        cast = read_cast(path)
    except FileNotFoundError:
        print(f"ecotui: {path}: no such file", file=sys.stderr)
        return EXIT_REFUSED
    except (CastError, OSError) as exc:
        print(f"ecotui: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    idle = args.idle_limit
    if idle is None and isinstance(cast.header.get("idle_time_limit"), int | float):
        idle = float(cast.header["idle_time_limit"])
    out = sys.stdout.buffer
    try:
        for delay, kind, data in schedule(cast.events, speed=args.speed, idle_limit=idle):
            if delay > 0:
                out.flush()
                time.sleep(delay)
            if kind == "o":
                out.write(data.encode("utf-8"))
            elif kind == "r":
                # The recorded terminal changed size: ask this one to follow (xterm
                # and most emulators honour it; others ignore the request).
                # A malformed size is skipped, the rest still plays.
                seq = resize_sequence(data)
                if seq is not None:
                    out.write(seq.encode("ascii"))
        out.flush()
    except KeyboardInterrupt:
        out.flush()
        return 130
    except BrokenPipeError:
        return EXIT_OK
    return EXIT_OK
