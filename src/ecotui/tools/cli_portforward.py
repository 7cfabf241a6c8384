"""`ecotui port-forward NAME [REPLICA] [LOCAL:]REMOTE... [--address ADDR]`.

Listens on 127.0.0.1 (or `--address`) and prints `Forwarding from
127.0.0.1:LOCAL -> REMOTE` for each port; serves until interrupted. Before
listening it checks that the cluster, the replica and each remote port can be
reached (a clear message and exit 1 otherwise); after that a connection that
cannot be carried gets a line on stderr and the forward keeps serving."""

from __future__ import annotations

import argparse
import asyncio
import sys

from ecotui.cli_io import Parser, Subcommands
from ecotui.client.rest import EcoClient
from ecotui.tools.common import EXIT_REFUSED, EXIT_UNREACHABLE, UsageError, err
from ecotui.tools.portforward import Forward, ForwardError, is_port_spec, parse_spec


def add_parser(sub: Subcommands, common: Parser) -> None:
    s = sub.add_parser(
        "port-forward",
        parents=[common],
        help="forward local ports to a replica: port-forward NAME [REPLICA] [LOCAL:]REMOTE...",
    )
    s.add_argument("name")
    s.add_argument(
        "ports",
        nargs="+",
        metavar="[REPLICA] [LOCAL:]REMOTE",
        help="the replica (default: the first ready one) and the ports",
    )
    s.add_argument(
        "--address", default="127.0.0.1", help="the local address to listen on (default 127.0.0.1)"
    )


def _stderr_line(text: str) -> None:
    print(f"ecotui: {text}", file=sys.stderr, flush=True)


async def cmd_port_forward(client: EcoClient, args: argparse.Namespace) -> int:
    words = list(args.ports)
    replica = None
    if words and not is_port_spec(words[0]):
        replica = words.pop(0)
    if not words:
        raise UsageError("port-forward needs at least one port: [LOCAL:]REMOTE")
    specs: list[tuple[int, int]] = []
    for w in words:
        try:
            specs.append(parse_spec(w))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    c = await client.cluster(args.name)
    forwards = [
        Forward(client, c.id, remote, local, args.address, replica, on_line=_stderr_line)
        for local, remote in specs
    ]
    try:
        for f in forwards:
            try:
                await f.check()
            except ForwardError as exc:
                err(f"{c.name}: {exc}")
                return EXIT_UNREACHABLE if exc.unreachable else EXIT_REFUSED
            try:
                await f.start()
            except OSError as exc:
                err(
                    f"cannot listen on {args.address}:{f.local}: "
                    f"{'the port is in use' if exc.errno == 98 else exc.strerror or exc}"
                )
                return EXIT_REFUSED
            print(f"Forwarding from {f.address}:{f.local} -> {f.remote}", flush=True)
        await asyncio.Event().wait()  # until interrupted
    finally:
        for f in forwards:
            await f.close()
    return 0
