"""What every `ecotui` command shares: exit codes, asking before acting, output.

- `confirm(args, question)`: commands that change or cost something ask on a
  terminal; `--yes` (from `YES`, a parent parser) skips the question; without
  a terminal on standard input they refuse with exit 2 rather than hang.
- `say(text)`: human output on stdout, with every control character of text
  that came from a backend or a replica made visible (`safe_text.visible`).
- `print_json(value)`: `--json` output (JSON escapes control characters).
- `err(message)`: an error on stderr, made safe the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from typing import Any, NoReturn, TextIO, TypeAlias

from ecotui.safe_text import visible

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class UsageError(Exception):
    """Exit 2 with this message."""


class Parser(argparse.ArgumentParser):
    """The parser of every `ecotui` command and its parents: usage errors exit 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# What `Parser.add_subparsers()` returns; each command module adds its parser to it.
Subcommands: TypeAlias = "argparse._SubParsersAction[Parser]"


def yes_parent() -> Parser:
    """A parent parser giving a command `-y/--yes`."""
    p = Parser(add_help=False)
    p.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="do not ask for confirmation (needed without a terminal)",
    )
    return p


def json_parent(what: str = "print the backend's JSON answer") -> Parser:
    """A parent parser giving a command `--json`."""
    p = Parser(add_help=False)
    p.add_argument("--json", action="store_true", help=what)
    return p


def needs_yes_message(command: str) -> str:
    return (
        f"{command} needs confirmation; pass --yes (standard input is not a terminal, "
        "so ecotui does not ask)"
    )


def confirm(args: argparse.Namespace, question: str, *, type_name: str | None = None) -> None:
    """Ask before acting; --yes skips; no terminal on stdin: refuse (UsageError).

    type_name: the answer must be this name typed out (for what cannot be undone)."""
    if getattr(args, "yes", False):
        return
    if not sys.stdin.isatty():
        raise UsageError(
            f"{question.rstrip('?')}: needs confirmation; pass --yes "
            "(standard input is not a terminal, so ecotui does not ask)"
        )
    print(visible(question, keep="\n"), file=sys.stderr)
    if type_name is not None:
        sys.stderr.write(f"Type the cluster's name ({visible(type_name)}) to confirm: ")
        sys.stderr.flush()
        answer = sys.stdin.readline().strip()
        if answer != type_name:
            raise UsageError("not confirmed: the name did not match; nothing was changed")
        return
    sys.stderr.write("Proceed? [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise UsageError("not confirmed; nothing was changed")


def say(text: str, out: TextIO | None = None) -> None:
    """A line (or lines) of human output; control characters shown, not obeyed."""
    print(visible(text, keep="\n"), file=out or sys.stdout)


def err(message: str) -> None:
    print(f"ecotui: {visible(message, keep=chr(10))}", file=sys.stderr)


def print_json(value: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    json.dump(value, out, indent=2, sort_keys=False)  # ensure_ascii: controls as \\u001b
    out.write("\n")


WIDTH = 80


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: AbstractSet[int] = frozenset(),
    shrink: int | None = 0,
) -> str:
    """Columns fitted to 80: column `shrink` is cut (with …) when the table is wider
    (None: nothing is cut, values are printed whole)."""
    rows = [[visible(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    total = sum(widths) + 2 * (len(widths) - 1)
    if total > WIDTH and shrink is not None:
        widths[shrink] = max(4, widths[shrink] - (total - WIDTH))

    def fmt(row: Sequence[str]) -> str:
        cells = []
        for i, cell in enumerate(row):
            if len(cell) > widths[i]:
                cell = cell[: widths[i] - 1] + "…"
            cells.append(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]))
        return "  ".join(cells).rstrip()

    return "\n".join([fmt(headers), *(fmt(r) for r in rows)])
