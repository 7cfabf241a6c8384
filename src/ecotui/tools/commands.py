"""The tool commands' parsers and handlers, registered by `ecotui.cli`.

`COMMANDS` run against a backend (like every other CLI command); `LOCAL_COMMANDS`
need none (`replay` plays a file)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ecotui.cli_io import Parser, Subcommands
from ecotui.tools import cli_cp, cli_portforward, cli_replay, cli_run, cli_shell
from ecotui.tools.common import usage_guard


def add_parsers(sub: Subcommands, common: Parser, data: Parser) -> None:
    cli_run.add_parser(sub, common, data)
    cli_shell.add_parser(sub, common)
    cli_replay.add_parser(sub)
    cli_portforward.add_parser(sub, common)
    cli_cp.add_parser(sub, common)


COMMANDS: dict[str, Callable[..., Any]] = {
    "run": usage_guard(cli_run.cmd_run),
    "shell": usage_guard(cli_shell.cmd_shell),
    "port-forward": usage_guard(cli_portforward.cmd_port_forward),
    "cp": usage_guard(cli_cp.cmd_cp),
}

LOCAL_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "replay": cli_replay.cmd_replay,
}
