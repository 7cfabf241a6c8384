"""The `ecolink` command: `serve`, `stop`, and the admin commands (`accounts`, `keys`,
`filesystems`). Every command finds its state directory from `--state-dir`, else
`ECOLINK_STATE_DIR`, else `${XDG_DATA_HOME:-~/.local/share}/ecolink`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ecolink import __version__
from ecolink.cli_common import CliError, now_us, table
from ecolink.cli_sessions import cmd_sessions
from ecolink.leadership import ELECTION_MODES
from ecolink.runtime.local.users import single_account_note
from ecolink.state_dir import local_single_account, open_store, state_dir_from
from ecolink.store import StoreError

if TYPE_CHECKING:
    import uvicorn

    from ecolink.api.context import AppContext
    from ecolink.front.server import FrontGroup
    from ecolink.store import Account, Store
    from ecolink.wiring import ServeConfig

DEFAULT_PORT = 8765
ACCOUNT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FS_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MAX_CREDIT_MICROS = 10**9 * 10**6  # one billion dollars per entry keeps sums far from overflow

log = logging.getLogger("ecolink")


# --------------------------------------------------------------------------- serve


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def _write_server_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def serve_config(args: argparse.Namespace) -> ServeConfig:
    """The checked flags of `ecolink serve` (CliError when they do not go together)."""
    from ecolink.api.edge_rules import normalize_suffix
    from ecolink.wiring import ServeConfig

    if args.log_format not in ("text", "json"):
        raise CliError(f"ECOLINK_LOG_FORMAT={args.log_format!r}: use text or json")
    if args.leader_election not in ELECTION_MODES:
        raise CliError(
            f"ECOLINK_LEADER_ELECTION={args.leader_election!r}: use auto, lease, postgres or none"
        )
    tls = bool(args.tls_cert or args.tls_key)
    if tls and not (args.tls_cert and args.tls_key):
        raise CliError("--tls-cert and --tls-key go together")
    if not is_loopback(args.host) and not tls and not args.insecure_http:
        raise CliError(
            f"refusing to serve plain HTTP on {args.host}, which is not a loopback address: "
            "give --tls-cert and --tls-key, or --insecure-http if something in front "
            "terminates TLS"
        )
    service_domain = None
    if args.service_domain:
        try:
            service_domain = normalize_suffix(args.service_domain)
        except ValueError as exc:
            raise CliError(f"--service-domain: {exc}") from None
    return ServeConfig(
        state_dir=state_dir_from(args.state_dir),
        runtime=args.runtime,
        namespace=args.namespace,
        kube_context=args.context,
        catalog_path=args.catalog,
        public_url=args.public_url,
        tls=tls,
        service_domain=service_domain,
        max_websockets_per_account=args.max_websockets_per_account,
        max_portforwards_per_account=args.max_portforwards_per_account,
        db_busy_timeout_s=args.db_busy_timeout,
        database=args.database,
        replica_disk_quota_mib=args.replica_disk_quota,
        replica_disk_check_s=args.replica_disk_check,
        max_clock_step_s=args.max_clock_step,
        termination_grace_s=args.termination_grace_seconds,
        leader_election=args.leader_election,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from ecolink.wiring import SetupError, build_context

    config = serve_config(args)
    state_dir = config.state_dir
    lock_file = open(state_dir / "serve.lock", "a+")  # noqa: SIM115 - held while serving
    try:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise CliError(f"another ecolink serve is running on {state_dir}") from None
        try:
            ctx = build_context(config)
        except SetupError as exc:
            raise CliError(str(exc)) from exc
        try:
            return _serve(args, ctx)
        finally:
            ctx.store.close()
    finally:
        lock_file.close()


def _listen_unix(path: Path) -> socket.socket:
    """The API app's private socket: only this user (the front) reaches it."""
    with contextlib.suppress(OSError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(4096)
    return sock


def _uvicorn_config(app: Any, args: argparse.Namespace) -> uvicorn.Config:
    import uvicorn

    from ecolink.api.edge_rules import MAX_FRAME

    return uvicorn.Config(
        app,
        log_level=args.log_level,
        lifespan="on",
        timeout_graceful_shutdown=10,
        # Behind the front, which owns the public socket: only it can reach this
        # unix socket, and it sets X-Forwarded-For/-Proto on every request.
        timeout_keep_alive=75,
        access_log=args.access_log,
        proxy_headers=True,
        forwarded_allow_ips="*",
        # No WebSocket message larger than the largest any route takes is ever
        # buffered; each route's own, smaller limit is the auth middleware's.
        ws_max_size=MAX_FRAME,
    )


def _serve(args: argparse.Namespace, ctx: AppContext) -> int:
    """Bind the public and the private socket, then run the API server and the front
    until a signal asks them to stop."""
    import uvicorn
    import uvloop

    from ecolink.api.app import create_app
    from ecolink.front.server import bind_socket
    from ecolink.observe.logs import apply_log_format

    workers = args.workers or os.cpu_count() or 1
    sock = bind_socket(args.host, args.port, reuse_port=workers > 1)
    api_socket = ctx.state_dir / "api.sock"
    api_sock = _listen_unix(api_socket)
    scheme = "https" if ctx.tls else "http"
    url = f"{scheme}://{_url_host(args.host)}:{sock.getsockname()[1]}"
    # The served address is known only now that the socket is bound.
    ctx.public_url = (args.public_url or url).rstrip("/")
    if ctx.presence is not None:  # where other instances on the database reach this one
        ctx.presence.address = os.environ.get("ECOLINK_ADVERTISE_URL") or url
    config = _uvicorn_config(create_app(ctx), args)
    front = _front(args, ctx, sock, api_socket, workers, scheme)
    redact_logs()  # after uvicorn.Config: it sets up its handlers
    apply_log_format(args.log_format)
    os.environ["ECOLINK_LOG_FORMAT"] = args.log_format  # for the front's workers
    server = uvicorn.Server(config)
    server_json = ctx.state_dir / "server.json"
    pid = os.getpid()

    # uvicorn handles SIGTERM/SIGINT while it serves (graceful shutdown), then re-raises
    # the signal with the handler that was there before. Ours asks for that same
    # shutdown (also when the signal comes before uvicorn installed its own), so the
    # clean-up below still runs and the process exits 0.
    def on_signal(*_: object) -> None:
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        uvloop.run(_run(server, front, api_sock, args, url, ctx.state_dir))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(api_socket)
        with contextlib.suppress(OSError, ValueError):
            if json.loads(server_json.read_text()).get("pid") == pid:
                server_json.unlink()
    return 0 if server.started else 1


def _front(
    args: argparse.Namespace,
    ctx: AppContext,
    sock: socket.socket,
    api_socket: Path,
    workers: int,
    scheme: str,
) -> FrontGroup:
    from ecolink.front.proxy import FrontConfig
    from ecolink.front.server import SCHEDULING, FrontGroup, connection_cap

    if args.front_scheduling not in SCHEDULING:  # (the variable's value, unchecked by argparse)
        raise SystemExit(
            f"ecolink serve: ECOLINK_FRONT_SCHEDULING must be batch or normal, "
            f"not {args.front_scheduling!r}"
        )

    cfg = FrontConfig(
        head_timeout=args.head_timeout,
        max_connections=connection_cap(workers, args.max_connections),
        max_per_address=args.max_connections_per_address,
        scheme=scheme,
        policy=args.load_balancing,
        public_url=ctx.public_url or "",
        service_domain=ctx.service_domain,
        max_websockets_per_account=ctx.max_websockets_per_account,
        scheduling=args.front_scheduling,
    )
    return FrontGroup(
        ctx,
        host=args.host,
        sock=sock,
        api_socket=str(api_socket),
        workers=workers,
        cfg=cfg,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )


async def _run(
    server: uvicorn.Server,
    front: FrontGroup,
    api_sock: socket.socket,
    args: argparse.Namespace,
    url: str,
    state_dir: Path,
) -> None:
    """The API server on its unix socket; once it is up, the front, server.json and
    the log's rotation; the front stops accepting as soon as a stop is asked."""
    task = asyncio.create_task(server.serve(sockets=[api_sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if server.started:
        await front.start()

        async def stop_accepting() -> None:
            while not server.should_exit:
                await asyncio.sleep(0.05)
            front.stop_accepting()

        watcher = asyncio.create_task(stop_accepting())
        if args.log_file:
            from ecolink.front.logfile import keep_bounded

            rotation = asyncio.create_task(keep_bounded(Path(args.log_file), args.log_max_bytes))
        _write_server_json(
            state_dir / "server.json",
            {"url": url, "pid": os.getpid(), "version": __version__, "runtime": args.runtime},
        )
        from ecolink.front import compiled

        print(
            f"ecolink {__version__} serving on {url} (state dir {state_dir}); "
            f"{compiled.describe()}; {front.scheduling}",
            file=sys.stderr,
            flush=True,
        )
    try:
        await task
    finally:
        if server.started:
            watcher.cancel()
            if args.log_file:
                rotation.cancel()
            await front.stop()


def _alive(pid: int) -> bool:
    """True while the process runs (an exited one its parent has not reaped yet counts
    as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


_SECRETS = (
    (re.compile(r"(?i)\b(bearer\s+)[^\s,;'\"]+"), r"\1***"),
    (re.compile(r"(?i)(eco_session=)[^;\s'\"]+"), r"\1***"),
    (re.compile(r"eco_[A-Za-z0-9_-]{8,}"), "eco_***"),
)


def _redact(text: str) -> str:
    for pattern, repl in _SECRETS:
        text = pattern.sub(repl, text)
    return text


class RedactSecrets(logging.Filter):
    """Keeps API keys and session tokens out of every log line (at debug level the
    WebSocket handshake logs request headers, Authorization and Cookie included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: _redact(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        return True


def redact_logs() -> None:
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(RedactSecrets())


def cmd_stop(args: argparse.Namespace) -> int:
    state_dir = state_dir_from(args.state_dir)
    path = state_dir / "server.json"
    try:
        info = json.loads(path.read_text())
        pid = int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        print(f"no ecolink server runs on {state_dir}", file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        with contextlib.suppress(OSError):
            path.unlink()
        print(
            f"the server (pid {pid}) was not running; removed a stale server.json", file=sys.stderr
        )
        return 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            print(f"stopped the server (pid {pid})")
            return 0
        time.sleep(0.1)
    print(f"the server (pid {pid}) did not stop within {args.timeout} s", file=sys.stderr)
    return 1


# --------------------------------------------------------------------------- admin


def _credit(store: Store, account_id: str, micros: int, memo: str) -> None:
    from ecocore.money import format_usd

    if micros == 0:
        raise CliError("the amount must not be zero")
    if abs(micros) > MAX_CREDIT_MICROS:
        raise CliError("the amount is too large")
    acct = store.account(account_id)
    if acct is not None and acct.available + micros < 0:
        raise CliError(
            f"a debit of ${format_usd(-micros)} would leave the account below zero "
            f"(available ${format_usd(acct.available)})"
        )
    store.post(account_id, None, "credit", micros, memo, now_us())


def _reread(store: Store, acct: Account) -> Account:
    """The account as it is now (its balance after what was just written)."""
    return store.account(acct.id) or acct


def _parse_usd(text: str) -> int:
    from ecocore.money import MoneyError, usd_to_micros

    try:
        return usd_to_micros(text.lstrip("$"))
    except MoneyError as exc:
        raise CliError(f"{text!r} is not a dollar amount ({exc})") from exc


def cmd_accounts(args: argparse.Namespace, out: TextIO) -> int:
    from ecocore.money import format_usd

    store = open_store(state_dir_from(args.state_dir), database=args.database)
    try:
        if args.accounts_cmd == "create":
            if not ACCOUNT_NAME_RE.match(args.name):
                raise CliError("an account name is 1 to 64 letters, digits, '.', '_' or '-'")
            micros = _parse_usd(args.credit) if args.credit is not None else 0
            if micros < 0:
                raise CliError("the starting credit cannot be negative")
            with store.tx():
                existing = store.accounts()
                if existing and local_single_account(state_dir_from(args.state_dir)):
                    raise CliError(
                        f"refusing a second account: {single_account_note()}, and "
                        f"account {existing[0].name!r} exists. Run the backend as root "
                        "(each account's replicas then run under their own uid), or use "
                        "another state directory for this account"
                    )
                try:
                    acct = store.create_account(args.name, now_us())
                except StoreError as exc:
                    raise CliError(str(exc)) from exc
                if micros:
                    _credit(store, acct.id, micros, "initial credit")
            acct = _reread(store, acct)
            print(
                f"created account {acct.name} ({acct.id}) with balance ${format_usd(acct.balance)}",
                file=out,
            )
        elif args.accounts_cmd == "credit":
            micros = _parse_usd(args.amount)
            with store.tx():
                found = store.account_by_name(args.name)
                if found is None:
                    raise CliError(f"no account named {args.name!r}")
                _credit(store, found.id, micros, args.memo or "credit")
            acct = _reread(store, found)
            print(
                f"account {acct.name}: balance ${format_usd(acct.balance)}, "
                f"available ${format_usd(acct.available)}",
                file=out,
            )
        else:
            rows = [("NAME", "ID", "BALANCE", "HELD", "AVAILABLE")]
            for a in store.accounts():
                rows.append(
                    (
                        a.name,
                        a.id,
                        format_usd(a.balance),
                        format_usd(a.held),
                        format_usd(a.available),
                    )
                )
            table(rows, out)
    finally:
        store.close()
    return 0


def cmd_keys(args: argparse.Namespace, out: TextIO) -> int:
    from ecolink.store import rfc3339

    store = open_store(state_dir_from(args.state_dir), database=args.database)
    try:
        if args.keys_cmd == "create":
            with store.tx():
                acct = store.account_by_name(args.account)
                if acct is None:
                    raise CliError(f"no account named {args.account!r}")
                key = store.create_api_key(acct.id, now_us())
            # The key is shown this once (only its hash is kept), as the last word.
            print(
                f"created an API key for account {acct.name}; store it now, it is not "
                f"shown again: {key}",
                file=out,
            )
        elif args.keys_cmd == "list":
            rows = [("PREFIX", "ACCOUNT", "CREATED", "STATUS")]
            for k in store.api_keys():
                status = f"revoked {rfc3339(k.revoked_at)[:19]}Z" if k.revoked_at else "active"
                rows.append((k.prefix, k.account_name, rfc3339(k.created_at)[:19] + "Z", status))
            table(rows, out)
        else:
            prefix = args.prefix.strip()
            if len(prefix) < 5:
                raise CliError("give at least the first 5 characters of the key")
            active = [
                k
                for k in store.api_keys()
                if k.revoked_at is None
                and (k.prefix.startswith(prefix) or prefix.startswith(k.prefix))
            ]
            if not active:
                raise CliError(f"no active key starts with {prefix!r}")
            if len(active) > 1:
                raise CliError(f"{prefix!r} matches {len(active)} keys; give more characters")
            with store.tx():
                store.revoke_api_keys(active[0].prefix, now_us())
            print(f"revoked key {active[0].prefix} of account {active[0].account_name}", file=out)
    finally:
        store.close()
    return 0


def cmd_filesystems(args: argparse.Namespace, out: TextIO) -> int:
    from ecolink.runtime.local.layout import scan_filesystems

    state_dir = state_dir_from(args.state_dir)
    if args.fs_cmd == "create":
        if not FS_NAME_RE.match(args.name):
            raise CliError("a filesystem name is a DNS label: lowercase letters, digits, '-'")
        d = state_dir / "filesystems" / args.name
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        if args.description:
            (d / ".description").write_text(args.description + "\n")
        print(f"created filesystem {args.name} at {d}", file=out)
    else:
        rows = [("NAME", "DESCRIPTION")]
        for fs in scan_filesystems(state_dir):
            rows.append((fs["name"], fs["description"]))
        table(rows, out)
    return 0


# --------------------------------------------------------------------------- parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    from ecolink.api.edge_rules import MAX_PORTFORWARDS_PER_ACCOUNT, MAX_WEBSOCKETS_PER_ACCOUNT

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        default=argparse.SUPPRESS,
        help="state directory (default: $ECOLINK_STATE_DIR, else the XDG data dir)",
    )
    common.add_argument(
        "--database",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="a postgresql:// database shared by several instances (default: "
        "$ECOLINK_DATABASE_URL, else the state directory's SQLite file)",
    )

    p = argparse.ArgumentParser(
        prog="ecolink", parents=[common], description="The ecolink GPU-cluster backend."
    )
    p.add_argument("--version", action="version", version=f"ecolink {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", parents=[common], help="run the API server")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    s.add_argument("--runtime", choices=["local", "kubernetes"], default="local")
    s.add_argument("--namespace", default=None, help="kubernetes namespace")
    s.add_argument("--context", default=None, help="kubeconfig context")
    s.add_argument("--catalog", default=None, help="catalog TOML file (default: built in)")
    s.add_argument(
        "--public-url",
        default=None,
        help="base of public service URLs (default: the address served on)",
    )
    s.add_argument(
        "--service-domain",
        default=None,
        metavar="SUFFIX",
        help="serve each cluster's service URL on its own origin, "
        "gc-ID.SUFFIX (needs wildcard DNS and certificate for *.SUFFIX)",
    )
    s.add_argument(
        "--max-websockets-per-account",
        type=_positive_int,
        default=MAX_WEBSOCKETS_PER_ACCOUNT,
        metavar="N",
        help=f"WebSockets one account may hold open at once (default {MAX_WEBSOCKETS_PER_ACCOUNT})",
    )
    s.add_argument(
        "--max-portforwards-per-account",
        type=_positive_int,
        default=MAX_PORTFORWARDS_PER_ACCOUNT,
        metavar="N",
        help="port-forward connections one account may hold open at once, counted apart "
        f"from the other WebSockets (default {MAX_PORTFORWARDS_PER_ACCOUNT})",
    )
    s.add_argument("--tls-cert", default=None)
    s.add_argument("--tls-key", default=None)
    s.add_argument(
        "--insecure-http", action="store_true", help="allow plain HTTP on a non-loopback address"
    )
    s.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    s.add_argument("--access-log", action="store_true")
    s.add_argument(
        "--leader-election",
        choices=ELECTION_MODES,
        default=os.environ.get("ECOLINK_LEADER_ELECTION") or "auto",
        help="who does the periodic work among instances: a Kubernetes Lease, a Postgres "
        "advisory lock, or none (this instance alone); auto: the Lease in-cluster, else "
        "the lock on Postgres, else none (default: $ECOLINK_LEADER_ELECTION, else auto)",
    )
    s.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=os.environ.get("ECOLINK_LOG_FORMAT") or "text",
        help="json: one JSON object a line, with the request id "
        "(default: $ECOLINK_LOG_FORMAT, else text)",
    )
    s.add_argument(
        "--db-busy-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long a write waits for a database another process holds "
        "before the request answers 503 (default 10)",
    )
    s.add_argument(
        "--replica-disk-quota",
        type=float,
        default=10240.0,
        metavar="MIB",
        help="local runtime: a replica whose working dir grows past this is "
        "stopped, with the reason shown (default 10240 MiB)",
    )
    s.add_argument(
        "--replica-disk-check",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="local runtime: how often replicas' disk use is checked (default 10)",
    )
    s.add_argument(
        "--max-clock-step",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="wall-clock steps forward larger than this (and every step "
        "backwards) are logged and not followed (default 60)",
    )
    s.add_argument(
        "--termination-grace-seconds",
        type=float,
        metavar="S",
        default=float(os.environ.get("ECOLINK_TERMINATION_GRACE_SECONDS") or 30),
        help="after SIGTERM at stop, terminate or expiry, how long a replica has "
        "to drain before it is killed (default 30, or "
        "ECOLINK_TERMINATION_GRACE_SECONDS)",
    )
    s.add_argument(
        "--workers",
        type=int,
        default=0,
        help="front processes on the listening address (default: the cores)",
    )
    s.add_argument(
        "--head-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="a request head must arrive within this (else 408)",
    )
    s.add_argument(
        "--max-connections",
        type=int,
        default=None,
        help="client connections per front process (default: from the fd limit)",
    )
    s.add_argument("--max-connections-per-address", type=int, default=1024)
    s.add_argument(
        "--log-file",
        default=None,
        help="the file this server's output goes to: kept under --log-max-bytes",
    )
    s.add_argument("--log-max-bytes", type=int, default=20 * 1024 * 1024)
    s.add_argument(
        "--load-balancing",
        choices=["least-outstanding", "round-robin"],
        default="least-outstanding",
    )
    s.add_argument(
        "--front-scheduling",
        choices=["batch", "normal"],
        default=os.environ.get("ECOLINK_FRONT_SCHEDULING") or "batch",
        help="how the kernel schedules the front's event loops: batch (SCHED_BATCH, "
        "the default: a busy front does not crowd out the replicas it feeds on "
        "shared cores) or normal (or ECOLINK_FRONT_SCHEDULING)",
    )

    st = sub.add_parser("stop", parents=[common], help="stop the server of the state dir")
    st.add_argument("--timeout", type=float, default=60.0)

    a = sub.add_parser("accounts", parents=[common], help="manage accounts")
    asub = a.add_subparsers(dest="accounts_cmd", required=True)
    ac = asub.add_parser("create", parents=[common])
    ac.add_argument("name")
    ac.add_argument("--credit", default=None, metavar="USD")
    acr = asub.add_parser("credit", parents=[common])
    acr.add_argument("name")
    acr.add_argument("amount", metavar="USD")
    acr.add_argument("--memo", default=None)
    asub.add_parser("list", parents=[common])

    k = sub.add_parser("keys", parents=[common], help="manage API keys")
    ksub = k.add_subparsers(dest="keys_cmd", required=True)
    kc = ksub.add_parser("create", parents=[common])
    kc.add_argument("--account", required=True)
    ksub.add_parser("list", parents=[common])
    kr = ksub.add_parser("revoke", parents=[common])
    kr.add_argument("prefix")

    se = sub.add_parser("sessions", parents=[common], help="manage console sessions")
    sesub = se.add_subparsers(dest="sessions_cmd", required=True)
    sl = sesub.add_parser("list", parents=[common], help="live console sessions")
    sl.add_argument("--account", default=None)
    sr = sesub.add_parser("revoke", parents=[common], help="end console sessions")
    sr.add_argument("id", nargs="?", default=None, help="a session id (or its first characters)")
    sr.add_argument("--account", default=None, help="every session of this account")
    sr.add_argument(
        "--key", default=None, metavar="PREFIX", help="every session minted by this key"
    )

    f = sub.add_parser("filesystems", parents=[common], help="manage shared filesystems")
    fsub = f.add_subparsers(dest="fs_cmd", required=True)
    fc = fsub.add_parser("create", parents=[common])
    fc.add_argument("name")
    fc.add_argument("--description", default=None)
    fsub.add_parser("list", parents=[common])

    sub.add_parser(
        "migrate",
        parents=[common],
        help="bring the database's schema up to this ecolink's (run before serving a "
        "new version on a shared database)",
    )
    ex = sub.add_parser(
        "export", parents=[common], help="write every row of the database to a file"
    )
    ex.add_argument("file", metavar="FILE", help="JSON Lines file (- for stdout)")
    im = sub.add_parser(
        "import", parents=[common], help="load an export into a new, empty database"
    )
    im.add_argument("file", metavar="FILE", help="a file `ecolink export` wrote (- for stdin)")
    return p


def cmd_migrate(args: argparse.Namespace, out: TextIO) -> int:
    """Bring the database to this ecolink's schema; each revision commits whole, so
    an interrupted run leaves the last one finished and the next run completes it."""
    from ecolink.state_dir import database_target
    from ecolink.store.engine import redact
    from ecolink.store.migrate import migrate

    target = database_target(state_dir_from(args.state_dir), args.database)
    before, after = migrate(target)
    if before == after:
        print(f"{redact(target)}: schema revision {after}, up to date", file=out)
    else:
        print(f"{redact(target)}: schema revision {before or 'none'} -> {after}", file=out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "state_dir"):
        args.state_dir = None
    if not hasattr(args, "database"):
        args.database = None
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.cmd == "serve":
            logging.getLogger().setLevel(args.log_level.upper())
            return cmd_serve(args)
        if args.cmd == "stop":
            return cmd_stop(args)
        if args.cmd == "accounts":
            return cmd_accounts(args, sys.stdout)
        if args.cmd == "keys":
            return cmd_keys(args, sys.stdout)
        if args.cmd == "filesystems":
            return cmd_filesystems(args, sys.stdout)
        if args.cmd == "sessions":
            return cmd_sessions(args, sys.stdout)
        if args.cmd == "migrate":
            return cmd_migrate(args, sys.stdout)
        if args.cmd in ("export", "import"):
            from ecolink.cli_transfer import cmd_transfer

            return cmd_transfer(args, sys.stdout)
    except CliError as exc:
        print(f"ecolink: {exc}", file=sys.stderr)
        return 1
    except StoreError as exc:  # a schema refused, a database out of reach
        print(f"ecolink: {exc}", file=sys.stderr)
        return 1
    parser.error("unknown command")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
