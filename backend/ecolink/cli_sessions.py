"""`ecolink sessions list|revoke`: the console sessions (`eco_session` cookies) that
are alive, and ending them. A session also ends with the API key that minted it
(`ecolink keys revoke`)."""

from __future__ import annotations

import argparse
import re
from typing import TextIO

from ecolink.cli_common import CliError, now_us, table
from ecolink.state_dir import open_store, state_dir_from

_HEX = re.compile(r"^[0-9a-f]{4,64}$")


def cmd_sessions(args: argparse.Namespace, out: TextIO) -> int:
    from ecolink.store import rfc3339

    store = open_store(state_dir_from(args.state_dir), database=args.database)
    try:
        account_id = None
        if args.account is not None:
            acct = store.account_by_name(args.account)
            if acct is None:
                raise CliError(f"no account named {args.account!r}")
            account_id = acct.id
        if args.sessions_cmd == "list":
            rows: list[tuple[str, ...]] = [("ID", "ACCOUNT", "KEY", "CREATED", "EXPIRES")]
            for s in store.console_sessions(now_us()):
                if account_id is not None and s.account_id != account_id:
                    continue
                rows.append(
                    (
                        s.id,
                        s.account_name,
                        s.key_prefix,
                        rfc3339(s.created_at)[:19] + "Z",
                        rfc3339(s.expires_at)[:19] + "Z",
                    )
                )
            table(rows, out)
            return 0
        ident = args.id.strip().lower() if args.id else None
        if ident is None and account_id is None and args.key is None:
            raise CliError("say which sessions to end: an ID, --account NAME or --key PREFIX")
        if ident is not None and not _HEX.match(ident):
            raise CliError(
                "a session id is at least 4 hexadecimal characters (see `ecolink sessions list`)"
            )
        key_prefix = None
        if args.key is not None:
            prefix = args.key.strip()
            keys = [
                k
                for k in store.api_keys()
                if k.prefix.startswith(prefix) or prefix.startswith(k.prefix)
            ]
            if len(prefix) < 5 or len(keys) != 1:
                raise CliError(f"{prefix!r} names no single key; give more characters")
            key_prefix = keys[0].prefix
        if ident is not None:
            live = [s for s in store.console_sessions(now_us()) if s.id.startswith(ident[:12])]
            if len(live) > 1:
                raise CliError(f"{ident!r} matches {len(live)} sessions; give more characters")
        with store.tx():
            n = store.revoke_console_sessions(
                id_prefix=ident, account_id=account_id, key_prefix=key_prefix
            )
        if n == 0:
            raise CliError("no session matches")
        print(f"ended {n} console session{'s' if n != 1 else ''}", file=out)
        return 0
    finally:
        store.close()
