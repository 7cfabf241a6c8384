"""`ecotui run NAME [--replicas LIST] [--timeout S] [--json] -- CMD...`: one command
on every ready replica at once, the output folded by identity."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from ecotui.cli_io import Parser, Subcommands
from ecotui.client.rest import EcoClient
from ecotui.tools.common import EXIT_OK, EXIT_REFUSED, LateParser, UsageError
from ecotui.tools.fold import parse_selection, render
from ecotui.tools.runner import all_replicas, ready_replicas, run_everywhere


def add_parser(sub: Subcommands, common: Parser, data: Parser) -> None:
    s = sub.add_parser(
        "run",
        parents=[common, data],
        help="run a command on every ready replica, output folded: run NAME -- CMD...",
    )
    s.add_argument("name")
    _options(s)
    s.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD")


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--replicas",
        metavar="LIST",
        help="only these replicas: names, indices or ranges (demo-0,2,4-6)",
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        metavar="S",
        help="end the command on replicas still running after S seconds",
    )


def late_options(
    args: argparse.Namespace,
    add: Callable[[argparse.ArgumentParser], None],
    usage: str,
    *,
    json_flag: bool = False,
    required: bool = True,
) -> list[str]:
    """The command after `--`, with options written between NAME and `--` parsed
    into `args` (argparse stops at the first positional's remainder)."""
    rest = list(args.cmd)
    if "--" in rest:
        i = rest.index("--")
        pre, cmd = rest[:i], rest[i + 1 :]
    elif rest and rest[0].startswith("-") and not required:
        pre, cmd = rest, []  # options only
    else:
        pre, cmd = [], rest
    if pre:
        p = LateParser(prog=f"ecotui {args.command}", add_help=False)
        add(p)
        if json_flag:
            p.add_argument("--json", action="store_true")
        extra, unknown = p.parse_known_args(pre)
        positional = [u for u in unknown if not u.startswith("-")]
        if unknown:
            raise UsageError(
                f"unexpected {' '.join(unknown)!s} before --"
                + (" (put the command after --)" if positional else "")
            )
        for k, v in vars(extra).items():
            if v not in (None, False):
                setattr(args, k, v)
    if not cmd and required:
        raise UsageError(usage)
    return cmd


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from exc
    if not v > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return v


async def cmd_run(client: EcoClient, args: argparse.Namespace) -> int:
    command = late_options(
        args, _options, "run needs a command: ecotui run NAME -- CMD...", json_flag=True
    )
    c = await client.cluster(args.name)
    if args.replicas:
        try:
            targets = parse_selection(args.replicas, all_replicas(c))
        except ValueError as exc:
            names = ", ".join(all_replicas(c)) or "none"
            print(f"ecotui: {c.name}: {exc} (its replicas: {names})", file=sys.stderr)
            return EXIT_REFUSED
        ready = set(ready_replicas(c))
        not_ready = [t for t in targets if t not in ready]
        if not_ready:
            print(f"ecotui: {c.name}: not ready: {', '.join(not_ready)}", file=sys.stderr)
            return EXIT_REFUSED
    else:
        targets = ready_replicas(c)
        if not targets:
            print(f"ecotui: {c.name} has no ready replica ({c.status})", file=sys.stderr)
            return EXIT_REFUSED
    outcomes = await run_everywhere(client, c.id, targets, command, timeout=args.timeout)
    if args.json:
        json.dump([o.as_json() for o in outcomes], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render(outcomes))
    sys.stdout.flush()
    timed_out = [o.name for o in outcomes if o.timed_out]
    if timed_out and not args.json:
        print(
            f"ecotui: timed out after {args.timeout:g} s and ended: {', '.join(timed_out)}",
            file=sys.stderr,
        )
    return EXIT_OK if all(o.ok for o in outcomes) else EXIT_REFUSED
