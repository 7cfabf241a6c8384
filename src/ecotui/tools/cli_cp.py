"""`ecotui cp SRC DST`: one side `NAME[/REPLICA]:PATH`, the other a local path or `-`.

`NAME:PATH` is the first ready replica, or every ready replica with `--all`
(uploads and downloads go in parallel, at most `PARALLEL` at a time; downloads
land in DST/REPLICA/). A progress bar with
rate and ETA goes to a terminal's stderr; piped, cp is quiet."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Sequence

from ecotui.cli_io import Parser, Subcommands
from ecotui.client.rest import EcoClient
from ecotui.tools.common import EXIT_OK, EXIT_REFUSED, UsageError, err
from ecotui.tools.copy import CopyError, RemotePath, download, parse_location, upload
from ecotui.tools.runner import all_replicas, ready_replicas

# Copies to or from --all replicas that run at once.
PARALLEL = 8


async def _bounded(jobs: Sequence[Awaitable[object]]) -> list[BaseException | None]:
    """Run the copies, at most PARALLEL at a time; each one's error (or None)."""
    gate = asyncio.Semaphore(PARALLEL)

    async def one(job: Awaitable[object]) -> None:
        async with gate:
            await job

    results = await asyncio.gather(*(one(j) for j in jobs), return_exceptions=True)
    return [r if isinstance(r, BaseException) else None for r in results]


def add_parser(sub: Subcommands, common: Parser) -> None:
    s = sub.add_parser(
        "cp",
        parents=[common],
        help="copy files to or from replicas: cp SRC NAME[/REPLICA]:PATH, "
        "cp NAME[/REPLICA]:PATH DST ('-': stdin/stdout)",
    )
    s.add_argument("src")
    s.add_argument("dst")
    s.add_argument(
        "--all",
        action="store_true",
        help="NAME:PATH means every ready replica (default: the first ready one)",
    )


async def _targets(client: EcoClient, where: RemotePath, every: bool) -> tuple[str, list[str]]:
    c = await client.cluster(where.cluster)
    if where.replica is not None:
        if where.replica not in all_replicas(c):
            names = ", ".join(all_replicas(c)) or "none"
            raise CopyError(f"{c.name} has no replica {where.replica} (its replicas: {names})")
        return c.id, [where.replica]
    ready = ready_replicas(c)
    if not ready:
        raise CopyError(f"{c.name} has no ready replica ({c.status})")
    return c.id, ready if every else ready[:1]


async def cmd_cp(client: EcoClient, args: argparse.Namespace) -> int:
    src, dst = parse_location(args.src), parse_location(args.dst)
    if (src is None) == (dst is None):
        raise UsageError(
            "one side of cp must be NAME[/REPLICA]:PATH and the other a local path or -"
        )
    try:
        if dst is not None:  # upload
            if args.src != "-" and not os.path.lexists(args.src):
                raise CopyError(f"{args.src}: no such file or directory")
            if args.src == "-" and args.all:
                raise UsageError("--all cannot copy standard input (it can be read once)")
            cid, replicas = await _targets(client, dst, args.all)
            results = await _bounded([upload(client, cid, r, args.src, dst.path) for r in replicas])
            failed = [(r, e) for r, e in zip(replicas, results, strict=True) if e is not None]
            for r, e in failed:
                if not isinstance(e, CopyError | OSError):
                    raise e
                err(f"{r}: {e}" if len(replicas) > 1 else str(e))
            return EXIT_REFUSED if failed else EXIT_OK
        assert src is not None
        cid, replicas = await _targets(client, src, args.all)
        if len(replicas) == 1:
            await download(client, cid, replicas[0], src.path, args.dst)
            return EXIT_OK
        if args.dst == "-" or not os.path.isdir(args.dst):
            raise UsageError(
                "with --all, DST must be an existing directory (one folder per "
                "replica is made in it)"
            )
        jobs = []
        for r in replicas:
            into = os.path.join(args.dst, r)
            os.makedirs(into, exist_ok=True)
            jobs.append(download(client, cid, r, src.path, into))
        results = await _bounded(jobs)
        failed = [(r, e) for r, e in zip(replicas, results, strict=True) if e is not None]
        for r, e in failed:
            if not isinstance(e, CopyError | OSError):
                raise e
            err(f"{r}: {e}")
        return EXIT_REFUSED if failed else EXIT_OK
    except CopyError as e:
        err(str(e))
        return EXIT_REFUSED
    except OSError as e:
        err(f"{e.filename or ''}: {e.strerror or e}".lstrip(": "))
        return EXIT_REFUSED
    finally:
        sys.stdout.flush()
