"""The tool commands' parsers and handlers, registered by `ecotui.cli`.

`COMMANDS` run against a backend (like every other CLI command); `LOCAL_COMMANDS`
need none (`replay` plays a file)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ecotui.tools import cli_run


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser,
                data: argparse.ArgumentParser) -> None:
    cli_run.add_parser(sub, common, data)


COMMANDS: dict[str, Callable[..., Any]] = {
    "run": cli_run.cmd_run,
}

LOCAL_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}
