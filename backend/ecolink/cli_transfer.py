"""`ecolink export FILE` and `ecolink import FILE`: a whole state as JSON Lines, read
in one consistent snapshot, and loaded into a new, empty database (such as a team's
Postgres) in one transaction (see `ecolink.store.transfer`)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import TextIO

from ecolink.cli_common import CliError
from ecolink.state_dir import database_target, open_store, state_dir_from


def _summary(counts: dict[str, int]) -> str:
    return ", ".join(f"{table} {n}" for table, n in counts.items())


def cmd_transfer(args: argparse.Namespace, out: TextIO) -> int:
    from ecolink.store.engine import redact
    from ecolink.store.migrate import HEAD
    from ecolink.store.transfer import export_to, import_rows, read_export

    state_dir = state_dir_from(args.state_dir)
    label = redact(database_target(state_dir, args.database))
    if args.cmd == "export":
        store = open_store(state_dir, database=args.database)
        try:
            if args.file == "-":
                counts = export_to(store, sys.stdout)
                sys.stdout.flush()
                out = sys.stderr  # stdout holds the export
            else:
                # Written aside and renamed: a failed export leaves no half a file.
                path = Path(args.file)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                try:
                    with open(tmp, "w", encoding="utf-8") as f:
                        counts = export_to(store, f)
                    os.replace(tmp, path)
                except OSError as exc:
                    raise CliError(f"cannot write {args.file}: {exc}") from exc
                finally:
                    with contextlib.suppress(OSError):
                        tmp.unlink()
        finally:
            store.close()
        print(f"exported {label} (schema {HEAD}): {_summary(counts)}", file=out)
        return 0

    try:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            text = Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {args.file}: {exc}") from exc
    _, rows = read_export(text.splitlines())  # the whole file checked before any write
    store = open_store(state_dir, database=args.database)
    try:
        counts = import_rows(store, rows)
    finally:
        store.close()
    print(f"imported into {label} (schema {HEAD}): {_summary(counts)}", file=out)
    return 0
