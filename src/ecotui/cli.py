"""The `ecotui` command: with no subcommand the dashboard; with one, a scriptable
CLI over the same backend and the same validation.

Exit codes scripts can rely on: 0 done, 1 refused by the backend, 2 usage (bad
arguments, or a confirmation needed without --yes), 3 cannot reach the backend.
`exec` exits with the remote command's exit code once it ran.

Actions that change or cost something (launch, scale, extend, restart, stop,
resume, terminate, endpoint) say what they will do and ask first; `--yes` skips
the question, and without a terminal on standard input they never ask: they
refuse (exit 2). Reads take `--json` (shapes in README.md, "The CLI"). Text
from the backend or a replica is printed with its control characters shown
(`safe_text.py`), so it cannot act on the reader's terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import json
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from ecocore.wire import ClusterOut
from ecotui import __version__, cli_gpus, costs, traffic, wording
from ecotui.cli_io import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    WIDTH,
    Parser,
    UsageError,
    confirm,
    json_parent,
    needs_yes_message,
    print_json,
    say,
    table,
    yes_parent,
)
from ecotui.cli_io import err as _err
from ecotui.client.exec import STDOUT, open_exec
from ecotui.client.rest import ApiRefusal, BackendUnreachable, EcoClient, wire_json
from ecotui.completion import script
from ecotui.config import ConfigError, Connection, resolve_connection
from ecotui.safe_text import visible, visible_lines
from ecotui.tools import commands as tools  # run, shell, port-forward, cp, replay
from ecotui.tools.commands import COMMANDS as TOOL_COMMANDS
from ecotui.tools.commands import LOCAL_COMMANDS

# API field names -> the launch flags that set them, for messages.
LAUNCH_FLAGS = {
    "name": "--name",
    "region": "--region",
    "gpu_type": "--gpu-type",
    "gpu_count": "--gpu-count",
    "replicas": "--replicas",
    "image": "--image",
    "estimated_duration_hours": "--hours",
    "startup_command": "--startup-command",
    "shared_filesystems": "--shared-fs",
    "expose": "--expose-port",
    "port": "--expose-port",
    "termination_grace_seconds": "--grace",
}


# -- argument parsing ------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument(
        "--api",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="backend URL (default: ECO_API_URL, the config file, else the local embedded backend)",
    )
    data = json_parent()
    confirm = yes_parent()

    p = Parser(
        prog="ecotui",
        description="GPU cluster dashboard and CLI. With no command, opens the dashboard.",
    )
    p.add_argument(
        "--api",
        metavar="URL",
        default=None,
        help="backend URL (default: ECO_API_URL, the config file, else the local "
        "embedded backend); the key comes from ECO_API_KEY or the config file",
    )
    p.add_argument(
        "--refresh",
        metavar="HZ",
        type=_positive_float,
        default=4.0,
        help="dashboard repaint rate (default 4 per second)",
    )
    p.add_argument("--version", action="version", version=f"ecotui {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    s = sub.add_parser("ls", parents=[common, data], help="list clusters")
    s.add_argument("--status", help="only clusters in this status")

    s = sub.add_parser("show", parents=[common, data], help="one cluster in detail")
    s.add_argument("name")
    cli_gpus.register(sub, common, data)

    s = sub.add_parser("launch", parents=[common, data, confirm], help="launch a cluster")
    s.add_argument("--name", required=True)
    s.add_argument("--region", required=True)
    s.add_argument("--gpu-type", required=True)
    s.add_argument("--gpu-count", required=True, type=int)
    s.add_argument("--replicas", required=True, type=int)
    s.add_argument("--image", required=True)
    s.add_argument("--hours", required=True, help="estimated duration in hours (decimal)")
    s.add_argument("--startup-command")
    s.add_argument(
        "--shared-fs",
        action="append",
        default=[],
        metavar="NAME",
        help="attach a shared filesystem (repeatable)",
    )
    s.add_argument(
        "--expose-port",
        type=int,
        metavar="PORT",
        help="open the public URL, forwarding to this port",
    )
    s.add_argument(
        "--grace",
        type=int,
        metavar="SECONDS",
        help="seconds each replica has after SIGTERM to drain or checkpoint "
        "before it is killed (stop, terminate, expiry; default: the "
        "backend's, 30 unless configured)",
    )

    s = sub.add_parser("scale", parents=[common, data, confirm], help="change the replica count")
    s.add_argument("name")
    s.add_argument("replicas", type=int)

    s = sub.add_parser("extend", parents=[common, data, confirm], help="add hours before expiry")
    s.add_argument("name")
    s.add_argument("hours")

    s = sub.add_parser(
        "restart",
        parents=[common, data, confirm],
        help="restart one replica, or the whole cluster one replica at a time",
    )
    s.add_argument("name")
    s.add_argument("replica", nargs="?")

    for verb, what in (
        ("stop", "stop a cluster (its unused hold is released)"),
        ("resume", "resume a stopped cluster (places a new hold)"),
        ("terminate", "terminate a cluster (cannot be undone)"),
    ):
        s = sub.add_parser(verb, parents=[common, data, confirm], help=what)
        s.add_argument("name")

    s = sub.add_parser(
        "endpoint",
        parents=[common, data, confirm],
        help="open the public URL on PORT, change its port, or --close it",
    )
    s.add_argument("name")
    s.add_argument("port", nargs="?", type=int)
    s.add_argument("--close", action="store_true")

    s = sub.add_parser(
        "logs",
        parents=[
            common,
            json_parent(
                "JSON: {cluster, replica, previous, lines}; with -f one {line} object per line"
            ),
        ],
        help="a replica's output",
    )
    s.add_argument("name")
    s.add_argument("replica")
    s.add_argument("-f", "--follow", action="store_true")
    s.add_argument("--tail", type=int, metavar="N")
    s.add_argument("--previous", action="store_true", help="the run before the last restart")
    s.add_argument(
        "--raw",
        action="store_true",
        help="the bytes as written, even to a terminal (control characters "
        "are otherwise shown, not obeyed)",
    )

    s = sub.add_parser(
        "exec", parents=[common], help="run a command in a replica: exec NAME REPLICA -- CMD..."
    )
    s.add_argument("name")
    s.add_argument("replica")
    s.add_argument("-i", "--stdin", action="store_true", help="pass standard input on")
    s.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD")

    s = sub.add_parser("ledger", parents=[common, data], help="the account's ledger")
    s.add_argument("--csv", action="store_true", help="the ledger as CSV")
    s.add_argument("--cluster", metavar="NAME", help="only this cluster's entries")
    s.add_argument("--limit", type=int, metavar="N")

    s = sub.add_parser(
        "completion", help='print shell completion: eval "$(ecotui completion bash)"'
    )
    s.add_argument("shell", choices=["bash", "zsh", "fish"])

    tools.add_parsers(sub, common, data)
    return p


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not v > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return v


# -- entry point -----------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version (0) or usage (2)
        return int(exc.code or 0)
    if args.command is None:
        return _run_dashboard(args)
    if args.command == "completion":  # needs no backend
        sys.stdout.write(script(args.shell, parser))
        return EXIT_OK
    if args.command == "exec":
        cmd = list(args.cmd)
        if cmd and cmd[0] == "--":
            cmd = cmd[1:]
        if not cmd:
            return _usage("exec needs a command: ecotui exec NAME REPLICA -- CMD...")
        args.cmd = cmd

    if args.command in LOCAL_COMMANDS:  # no backend needed
        return LOCAL_COMMANDS[args.command](args)
    if args.command == "endpoint" and (args.port is None) == (not args.close):
        return _usage("endpoint needs either a PORT or --close")
    if args.command in CONFIRMING and not args.yes and not sys.stdin.isatty():
        # Checked before anything is fetched: a script gets the same answer whether or
        # not the backend is up.
        return _usage(needs_yes_message(args.command))
    try:
        conn = resolve_connection(args.api, None)
    except ConfigError as exc:
        return _usage(str(exc))
    except Exception as exc:  # the embedded backend could not be started or found
        _err(f"cannot reach the backend: {exc}")
        return EXIT_UNREACHABLE
    try:
        return asyncio.run(_run_command(args, conn))
    except KeyboardInterrupt:
        return 130


def _run_dashboard(args: argparse.Namespace) -> int:
    try:
        conn = resolve_connection(args.api, None)
    except ConfigError as exc:
        return _usage(str(exc))
    except Exception as exc:
        _err(f"cannot reach the backend: {exc}")
        return EXIT_UNREACHABLE
    from ecotui.app import run_app  # the dashboard pulls in textual; the CLI does not need it

    run_app(conn, args.refresh)
    return EXIT_OK


async def _run_command(args: argparse.Namespace, conn: Connection) -> int:
    handler: Callable[..., Any] = COMMANDS.get(args.command) or TOOL_COMMANDS[args.command]
    client = EcoClient(conn.url, conn.key)
    try:
        return int(await handler(client, args) or 0)
    except UsageError as exc:
        return _usage(str(exc))
    except ApiRefusal as exc:
        _err(_refusal_words(exc, args))
        return EXIT_REFUSED
    except BackendUnreachable as exc:
        _err(str(exc))
        return EXIT_UNREACHABLE
    finally:
        await client.aclose()


def _usage(message: str) -> int:
    _err(message)
    return EXIT_USAGE


def _refusal_words(exc: ApiRefusal, args: argparse.Namespace) -> str:
    text = wording.refusal_text(exc.status, exc.message, None if exc.status == 422 else exc.field)
    if exc.status == 422 and exc.field:
        flag = LAUNCH_FLAGS.get(exc.field.split(".")[0]) if args.command == "launch" else None
        message = exc.message.removeprefix(f"{exc.field}: ")
        return f"invalid {flag or exc.field}: {message}"
    return text


# -- shared helpers ----------------------------------------------------------------

_print_json = print_json  # the shared helpers (cli_io.py), under their old names here
_confirm = confirm


def _now() -> datetime:
    return datetime.now(UTC)


def _money(value: Any) -> str:
    try:
        return wording.usd(costs.usd_to_micros(value))
    except (costs.MoneyError, TypeError):
        return "-"


def _when(value: str | None) -> str:
    if not value:
        return "-"
    return wording.local_time_text(value, None, now=_now())


def _until(value: str | None) -> str:
    if not value:
        return "-"
    return wording.duration_text(costs.remaining_us(value, _now()))


def _wrap(text: str, indent: str = "") -> str:
    return textwrap.fill(
        text,
        width=WIDTH - 1,
        subsequent_indent=indent,
        break_on_hyphens=False,
        break_long_words=False,
    )


# -- commands -----------------------------------------------------------------------


async def cmd_ls(client: EcoClient, args: argparse.Namespace) -> int:
    clusters = await client.clusters(args.status)
    if args.json:
        _print_json({"clusters": [wire_json(c) for c in clusters]})
        return EXIT_OK
    if not clusters:
        say("No clusters. Launch one with: ecotui launch --help")
        return EXIT_OK
    rows = []
    for c in clusters:
        rows.append(
            [
                c.name,
                c.status,
                c.region,
                f"{c.replicas}x{c.gpu_count} {c.gpu_type}",
                f"{c.ready_replicas}/{c.replicas}",
                _money(c.burn_rate),
                _money(c.cost.spent),
                _until(c.expires_at) if c.status not in ("terminated", "failed") else "-",
            ]
        )
    say(
        table(
            ["NAME", "STATUS", "REGION", "GPUS", "READY", "$/H", "SPENT", "EXPIRES IN"],
            rows,
            right={4, 5, 6},
            shrink=0,
        )
    )
    return EXIT_OK


async def cmd_show(client: EcoClient, args: argparse.Namespace) -> int:
    c = await client.cluster(args.name)
    if args.json:
        _print_json(wire_json(c))
        return EXIT_OK
    say(render_cluster(wire_json(c)))
    return EXIT_OK


def render_cluster(c: dict[str, Any]) -> str:
    cost = c.get("cost") or {}
    total_gpus = int(c["replicas"]) * int(c["gpu_count"])
    lines = [
        f"{c['name']}  {c['status']}"
        + (f" ({c['status_reason']})" if c.get("status_reason") else "")
        + ("  [stale]" if c.get("stale") else ""),
        f"  id           {c['id']}",
        f"  region       {c['region']}",
        f"  gpus         {c['replicas']} replicas x {c['gpu_count']} {c['gpu_type']} "
        f"({total_gpus} GPUs)",
        f"  image        {c.get('image') or '-'}",
    ]
    if c.get("startup_command"):
        # Whole, on one line, so it can be copied (control characters shown, not obeyed).
        lines.append(f"  startup      {visible(c['startup_command'])}")
    if c.get("shared_filesystems"):
        lines.append(f"  filesystems  {', '.join(c['shared_filesystems'])}")
    if c.get("termination_grace_seconds") is not None:
        lines.append(f"  grace        {c['termination_grace_seconds']} s after SIGTERM")
    lines += [
        f"  rate         {_money(c.get('hourly_rate'))}/h (now {_money(c.get('burn_rate'))}/h)",
        f"  hold         {_money(cost.get('hold'))} placed, {_money(cost.get('hold_remaining'))}"
        " still held",
        f"  spent        {_money(cost.get('spent'))}, projected "
        f"{_money(cost.get('projected_total'))}",
        f"  started      {_when(c.get('started_at'))}",
        f"  expires      {_when(c.get('expires_at'))} (in {_until(c.get('expires_at'))})",
    ]
    ep = c.get("endpoint")
    if ep:
        # The URL on a line of its own, never cut: it is there to be copied.
        lines += [f"  endpoint     port {ep['port']}, public URL:", f"    {ep['url']}"]
    else:
        lines.append("  endpoint     none")
    # The service URL's traffic over the last seconds ("—": not known yet).
    lines.append(f"  traffic      {traffic.cluster_summary(c)}")
    health = cli_gpus.health_summary(c)
    if health:
        lines.append(f"  gpu health   {health}")
    states = c.get("replica_states") or []
    lines.append(f"  replicas     {c.get('ready_replicas', 0)}/{c['replicas']} ready")
    if states:
        rows = [
            [
                s["name"],
                s.get("phase") or "-",
                "yes" if s.get("ready") else "no",
                str(s.get("restarts", 0)),
                s.get("reason") or "",
                s.get("node") or "",
            ]
            for s in states
        ]
        replicas = table(
            ["REPLICA", "PHASE", "READY", "RESTARTS", "REASON", "NODE"],
            rows,
            right={3},
            shrink=None,
        )
        lines += ["    " + line for line in replicas.splitlines()]
    # Every value whole: a long one makes its line longer than 80, never cut.
    return "\n".join(visible(line) for line in lines)


async def cmd_launch(client: EcoClient, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "name": args.name,
        "region": args.region,
        "gpu_type": args.gpu_type,
        "gpu_count": args.gpu_count,
        "replicas": args.replicas,
        "image": args.image,
        "estimated_duration_hours": args.hours,
    }
    if args.startup_command is not None:
        body["startup_command"] = args.startup_command
    if args.shared_fs:
        body["shared_filesystems"] = list(args.shared_fs)
    if args.expose_port is not None:
        body["expose"] = {"port": args.expose_port}
    if args.grace is not None:
        body["termination_grace_seconds"] = args.grace
    if not args.yes:
        _confirm(args, await _launch_question(client, args))
    c = await client.launch(body)
    if args.json:
        _print_json(wire_json(c))
    else:
        say(
            _wrap(
                f"Launched {c.name} ({c.id}): {_money(c.hourly_rate)}/h, hold "
                f"{_money(c.cost.hold)}, expires {_when(c.expires_at)}."
            )
        )
        if c.endpoint:
            say(f"Public URL: {c.endpoint.url}")
    return EXIT_OK


async def _launch_question(client: EcoClient, args: argparse.Namespace) -> str:
    what = (
        f"Launch {args.name}: {args.replicas} replicas x {args.gpu_count} {args.gpu_type} "
        f"in {args.region} for {args.hours} h"
    )
    try:
        catalog, account = await asyncio.gather(client.catalog(), client.account())
        rate = costs.catalog_rate(catalog, args.region, args.gpu_type)
        mh = costs.parse_hours(args.hours)
    except (costs.MoneyError, ApiRefusal):
        return what + "?"
    if rate is None:
        return what + "?"
    p = costs.launch_preview(
        rate, args.gpu_count, args.replicas, mh, costs.usd_to_micros(account.available)
    )
    left = (
        f"short by {wording.usd(p.short_by)}"
        if p.short_by
        else f"{wording.usd(p.left)} left of {wording.usd(p.available)}"
    )
    return _wrap(
        f"{what} at {wording.usd(p.hourly_rate)}/h. This places a hold of "
        f"{wording.usd_exact(p.hold)} ({left})."
    )


async def cmd_scale(client: EcoClient, args: argparse.Namespace) -> int:
    c = await client.cluster(args.name)
    if not args.yes:
        per = costs.cluster_per_replica_rate(c)
        r = int(c.replicas)
        new_rate = wording.usd(per * args.replicas)
        if c.status not in costs.ACCRUING_STATUSES:
            money = (
                f"It is {c.status}: only the desired count changes; nothing is held "
                f"now. New rate when it runs: {new_rate}/h."
            )
        elif args.replicas > r:
            hold = costs.cluster_scale_hold(c, args.replicas, _now())
            money = (
                f"New rate {new_rate}/h. Additional hold about {wording.usd_exact(hold)} "
                f"for the {_until(c.expires_at)} remaining."
            )
        else:
            money = f"New rate {new_rate}/h. Scaling down refunds nothing: the hold stays as it is."
        _confirm(args, _wrap(f"Scale {c.name} from {r} to {args.replicas} replicas. {money}"))
    c = await client.scale(c.id, args.replicas)
    if args.json:
        _print_json(wire_json(c))
    else:
        say(
            _wrap(
                f"{c.name}: {c.replicas} replicas, {_money(c.hourly_rate)}/h, "
                f"hold {_money(c.cost.hold)} in all."
            )
        )
    return EXIT_OK


async def cmd_extend(client: EcoClient, args: argparse.Namespace) -> int:
    c = await client.cluster(args.name)
    if not args.yes:
        try:
            mh = costs.parse_hours(args.hours)
        except costs.MoneyError:
            mh = None  # the backend will say what is wrong with it
        if mh is not None:
            new_expiry = costs.add_micro_hours(c.expires_at, mh)
            if c.status in costs.ACCRUING_STATUSES:
                money = (
                    f"Additional hold {wording.usd_exact(costs.cluster_extend_hold(c, mh))}"
                    f" ({args.hours} h x {_money(c.hourly_rate)}/h)."
                )
            else:
                money = f"It is {c.status}: nothing is held now."
            _confirm(
                args,
                _wrap(
                    f"Extend {c.name} by {args.hours} h: it will expire "
                    f"{_when(new_expiry.isoformat())}. {money}"
                ),
            )
        else:
            _confirm(args, f"Extend {c.name} by {args.hours} h?")
    c = await client.extend(c.id, args.hours)
    if args.json:
        _print_json(wire_json(c))
    else:
        say(
            _wrap(
                f"{c.name}: expires {_when(c.expires_at)} "
                f"(in {_until(c.expires_at)}), hold {_money(c.cost.hold)} in all."
            )
        )
    return EXIT_OK


async def cmd_restart(client: EcoClient, args: argparse.Namespace) -> int:
    c = await client.cluster(args.name)
    if args.replica:
        _confirm(
            args,
            _wrap(
                f"Restart {args.replica} of {c.name}: its process is killed "
                "and started again; what runs in it is lost."
            ),
        )
    else:
        _confirm(
            args,
            _wrap(
                f"Restart every replica of {c.name}, one at a time: each "
                "process is killed and started again."
            ),
        )
    answer = await client.restart(c.id, args.replica)
    if args.json:
        _print_json(wire_json(answer))
    elif args.replica:
        say(f"{args.replica}: restarting.")
    else:
        say(f"{c.name}: restarting its replicas one at a time.")
    return EXIT_OK


async def cmd_stop(client: EcoClient, args: argparse.Namespace) -> int:
    c = await client.cluster(args.name)
    if not args.yes:
        held = _money(c.cost.hold_remaining)
        _confirm(
            args,
            _wrap(
                f"Stop {c.name}: its replicas stop, charges are posted up to now and what it "
                f"still holds (about {held}) is released. It still expires "
                f"{_when(c.expires_at)}."
            ),
        )
    c = await client.stop(c.id)
    return _after(
        c, args, f"{c.name}: {c.status}; hold still held {_money(c.cost.hold_remaining)}."
    )


async def cmd_resume(client: EcoClient, args: argparse.Namespace) -> int:
    c = await client.cluster(args.name)
    if not args.yes:
        hold = costs.cluster_resume_hold(c, _now())
        _confirm(
            args,
            _wrap(
                f"Resume {c.name} at {_money(c.hourly_rate)}/h: this places a new hold of "
                f"about {wording.usd_exact(hold)} for the {_until(c.expires_at)} until it "
                f"expires."
            ),
        )
    c = await client.resume(c.id)
    return _after(
        c, args, f"{c.name}: {c.status}, {_money(c.hourly_rate)}/h, expires {_when(c.expires_at)}."
    )


async def cmd_terminate(client: EcoClient, args: argparse.Namespace) -> int:
    c = await client.cluster(args.name)
    if not args.yes:
        held = _money(c.cost.hold_remaining)
        _confirm(
            args,
            _wrap(
                f"Terminate {c.name}: this cannot be undone. Its replicas are deleted, "
                f"charges are posted up to now and the unused hold (about {held}) is released."
            ),
            type_name=c.name,
        )
    c = await client.terminate(c.id)
    return _after(c, args, f"{c.name}: {c.status}; spent {_money(c.cost.spent)}.")


def _after(c: ClusterOut, args: argparse.Namespace, text: str) -> int:
    if args.json:
        _print_json(wire_json(c))
    else:
        say(_wrap(text))
    return EXIT_OK


async def cmd_endpoint(client: EcoClient, args: argparse.Namespace) -> int:
    c = await client.cluster(args.name)
    ep_now = c.endpoint
    if args.close:
        _confirm(
            args,
            _wrap(f"Close the public URL of {c.name}: requests to it are refused from now on."),
        )
    elif ep_now:
        _confirm(
            args,
            _wrap(
                f"Change the public URL of {c.name} from port {ep_now.port} to port {args.port}."
            ),
        )
    else:
        _confirm(
            args,
            _wrap(
                f"Open a public URL for {c.name}, forwarding to port "
                f"{args.port}: anyone with an API key of this account can reach "
                "it."
            ),
        )
    if args.close:
        await client.close_endpoint(c.id)
        if args.json:
            _print_json({"closed": True, "id": c.id})
        else:
            say(f"{c.name}: public URL closed.")
        return EXIT_OK
    ep = await client.set_endpoint(c.id, args.port)
    if args.json:
        _print_json(wire_json(ep))
    else:
        say(f"{c.name}: {ep.url} -> port {ep.port}")
        say(f'curl {ep.url} -H "Authorization: Bearer eco_YOUR_KEY"')
    return EXIT_OK


async def cmd_logs(client: EcoClient, args: argparse.Namespace) -> int:
    c = await client.cluster(args.name)
    out = sys.stdout.buffer
    # To a terminal, a replica's control characters are shown, not obeyed (--raw: obeyed).
    safe = not args.raw and sys.stdout.isatty()
    if args.follow:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        async for chunk in client.follow_logs(
            c.id, args.replica, tail=args.tail, previous=args.previous
        ):
            if args.json:
                pending += decoder.decode(chunk)
                *done, pending = pending.split("\n")
                for line in done:
                    out.write(json.dumps({"line": line}).encode() + b"\n")
            elif safe:
                out.write(visible_lines(decoder.decode(chunk)).encode())
            else:
                out.write(chunk)
            out.flush()
        if args.json and pending:
            out.write(json.dumps({"line": pending}).encode() + b"\n")
        return EXIT_OK
    text = await client.logs(c.id, args.replica, tail=args.tail, previous=args.previous)
    if args.json:
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        _print_json(
            {
                "cluster": c.name,
                "replica": args.replica,
                "previous": bool(args.previous),
                "lines": lines,
            }
        )
        return EXIT_OK
    out.write((visible_lines(text) if safe else text).encode())
    out.flush()
    return EXIT_OK


async def cmd_ledger(client: EcoClient, args: argparse.Namespace) -> int:
    cluster_id = None
    if args.cluster:
        cluster_id = (await client.cluster(args.cluster)).id
    if args.csv:
        text = await client.ledger_csv(cluster_id=cluster_id, limit=args.limit)
        if sys.stdout.isatty():
            text = visible_lines(text)
        sys.stdout.write(text)
        if text and not text.endswith("\n"):
            sys.stdout.write("\n")
        return EXIT_OK
    entries = await client.ledger(cluster_id=cluster_id, limit=args.limit)
    if args.json:
        _print_json({"entries": [wire_json(e) for e in entries]})
        return EXIT_OK
    names: dict[str, str] = {}
    if any(e.cluster_id for e in entries):
        try:
            names = {c.id: c.name for c in await client.clusters()}
        except ApiRefusal:
            names = {}
    rows = []
    for e in entries:
        at = wording.parse_time(e.at).astimezone()
        cid = e.cluster_id
        rows.append(
            [
                str(e.id),
                f"{at:%Y-%m-%d %H:%M}",
                names.get(cid, cid or "-") if cid else "-",
                e.kind,
                _money(e.amount),
                _money(e.balance_after),
                _money(e.held_after),
            ]
        )
    if not rows:
        say("No ledger entries.")
        return EXIT_OK
    say(
        table(
            ["ID", "AT", "CLUSTER", "KIND", "AMOUNT", "BALANCE", "HELD"],
            rows,
            right={0, 4, 5, 6},
            shrink=2,
        )
    )
    return EXIT_OK


# -- exec: one command in a replica, over the exec WebSocket ---------------------------


async def cmd_exec(client: EcoClient, args: argparse.Namespace) -> int:
    """Run the command; its stdout and stderr to ours; its exit code as ours."""
    conn = await open_exec(client, args.name, args.replica, args.cmd, stdin=args.stdin)
    out, err = sys.stdout.buffer, sys.stderr.buffer
    pump = asyncio.create_task(_pump_stdin(conn)) if args.stdin else None
    try:
        async for channel, payload in conn.frames():
            stream = out if channel == STDOUT else err
            stream.write(payload)
            stream.flush()
    finally:
        if pump is not None:
            pump.cancel()
        await conn.close()
    status = conn.status
    if status is None:
        _err("the connection closed before the command's exit status arrived")
        return EXIT_REFUSED
    if status.success:
        return EXIT_OK
    if status.exit_code is None:
        # Not the command's own exit (it could not start, ...): say why.
        _err(status.message or status.reason or "the command failed")
        return EXIT_REFUSED
    return status.exit_code


async def _pump_stdin(conn: Any) -> None:
    fd = sys.stdin.fileno()
    loop = asyncio.get_running_loop()
    while True:
        chunk = await loop.run_in_executor(None, os.read, fd, 65536)
        if not chunk:
            break
        await conn.send_stdin(chunk)
    await conn.close_stdin()  # v5: the command sees the end of its input


CONFIRMING = frozenset(
    {"launch", "scale", "extend", "restart", "stop", "resume", "terminate", "endpoint"}
)

COMMANDS: dict[str, Callable[..., Any]] = {
    "ls": cmd_ls,
    "show": cmd_show,
    "launch": cmd_launch,
    "scale": cmd_scale,
    "extend": cmd_extend,
    "restart": cmd_restart,
    "stop": cmd_stop,
    "resume": cmd_resume,
    "terminate": cmd_terminate,
    "endpoint": cmd_endpoint,
    "logs": cmd_logs,
    "exec": cmd_exec,
    "ledger": cmd_ledger,
    "gpus": cli_gpus.cmd_gpus,
}

__all__ = [
    "main",
    "build_parser",
    "render_cluster",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "EXIT_UNREACHABLE",
]
