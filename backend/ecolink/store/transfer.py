"""Moving a whole state from one database to another (`ecolink export` / `import`),
e.g. from the embedded SQLite file to a team's Postgres.

The file is JSON Lines: a header line (`format`, `version`, the schema revision and
each table's row count), then one line per row, `{"table": ..., "row": {column:
value}}`, tables in foreign-key order. Values are JSON integers, strings and nulls;
bytes are `{"base64": "..."}`. The export reads every table in one read transaction,
so the file is one consistent snapshot even while a server writes.

The import writes into an empty database at the same schema revision, every row in
one transaction, ids kept; on Postgres each identity sequence then moves past the
largest id so new rows get new ones. The ledger audit runs before the commit: an
import that would break a ledger invariant is rolled back, and so is every other
refusal, so a refused import leaves the database as it was.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator
from typing import IO, Any

from ecolink.store.database import StoreError
from ecolink.store.engine import PostgresEngine
from ecolink.store.facade import Store
from ecolink.store.migrate import HEAD, current_revision

FORMAT = "ecolink-export"
VERSION = 1
# Every table, parents before children; each with the columns that order its rows.
TABLES: dict[str, str] = {
    "accounts": "id",
    "api_keys": "id",
    "console_sessions": "token_hash",
    "clusters": "id",
    "cluster_segments": "id",
    "ledger": "id",
    "events": "id",
    "idempotency": "account_id, key",
    "kept_sessions": "id",
}
# The tables whose integer ids Postgres hands out from an identity sequence.
IDENTITY_TABLES = ("api_keys", "cluster_segments", "ledger", "events")


class TransferError(StoreError):
    """An export or import refused; nothing was written."""


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    return value


def _decode(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        if set(value) != {"base64"} or not isinstance(value["base64"], str):
            raise TransferError(f"{where}: a value is an object other than {{'base64': ...}}")
        try:
            return base64.b64decode(value["base64"], validate=True)
        except binascii.Error as exc:
            raise TransferError(f"{where}: bad base64: {exc}") from None
    if value is None or isinstance(value, int | str) and not isinstance(value, bool):
        return value
    raise TransferError(f"{where}: a value of type {type(value).__name__} is not allowed")


def export_lines(store: Store) -> Iterator[str]:
    """The export of `store`'s database, line by line (without newlines), read in
    one read transaction."""
    engine = store.engine
    conn = engine.connect(reader=True)
    try:
        if isinstance(engine, PostgresEngine):
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        else:
            conn.execute("BEGIN")  # deferred: the snapshot is taken at the first read
        revision = current_revision(conn)
        counts = {t: int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in TABLES}
        header = {
            "format": FORMAT,
            "version": VERSION,
            "schema_revision": revision,
            "counts": counts,
        }
        yield json.dumps(header, separators=(",", ":"))
        for table, order in TABLES.items():
            cur = conn.execute(f"SELECT * FROM {table} ORDER BY {order}")
            columns = [d[0] for d in cur.description]
            while rows := cur.fetchmany(500):
                for row in rows:
                    record = {c: _encode(v) for c, v in zip(columns, row, strict=True)}
                    yield json.dumps({"table": table, "row": record}, separators=(",", ":"))
        conn.execute("COMMIT")
    finally:
        conn.close()


def export_to(store: Store, out: IO[str]) -> dict[str, int]:
    """Write the export of `store` to `out`; returns the row count of each table."""
    lines = export_lines(store)
    header = next(lines)
    out.write(header + "\n")
    for line in lines:
        out.write(line + "\n")
    counts: dict[str, int] = json.loads(header)["counts"]
    return counts


def read_export(lines: Iterable[str]) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Parse and check an export: its header and each table's rows (values decoded).
    Raises `TransferError` for anything that is not a whole export of this schema."""
    it = iter(enumerate(lines, 1))
    try:
        _, first = next(it)
    except StopIteration:
        raise TransferError("the file is empty: not an ecolink export") from None
    try:
        header = json.loads(first)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise TransferError("line 1 is not an ecolink export header")
    if header.get("version") != VERSION:
        raise TransferError(
            f"export format version {header.get('version')!r}; this ecolink reads {VERSION}"
        )
    if header.get("schema_revision") != HEAD:
        raise TransferError(
            f"the export is of schema revision {header.get('schema_revision')}; this ecolink "
            f"imports {HEAD} only: import it with the ecolink that exported it, then "
            "`ecolink migrate`"
        )
    counts = header.get("counts")
    if not isinstance(counts, dict) or set(counts) != set(TABLES):
        raise TransferError("the header's table counts do not name every table")
    rows: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
    for number, line in it:
        where = f"line {number}"
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise TransferError(f"{where}: not JSON ({exc})") from None
        if not isinstance(item, dict) or set(item) != {"table", "row"}:
            raise TransferError(f"{where}: not a {{'table': ..., 'row': ...}} line")
        table, row = item["table"], item["row"]
        if table not in rows:
            raise TransferError(f"{where}: unknown table {table!r}")
        if not isinstance(row, dict) or not row:
            raise TransferError(f"{where}: the row is not an object")
        rows[table].append({str(c): _decode(v, where) for c, v in row.items()})
    for table, want in counts.items():
        if len(rows[table]) != want:
            raise TransferError(
                f"table {table}: the header counts {want} rows, the file holds "
                f"{len(rows[table])}: the file is cut short or edited"
            )
    return header, rows


def import_rows(store: Store, rows: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    """Insert `rows` (from `read_export`) into `store`'s empty database (opened at
    this ecolink's schema revision, so at the export's) in one transaction; returns the rows written per table. Refuses, writing nothing, a
    database that is not empty, rows that do not fit its tables, or a result the
    ledger audit finds fault with."""
    engine = store.engine
    try:
        with store.tx():
            filled = [t for t in TABLES if store.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone()]
            if filled:
                raise TransferError(
                    f"the database {engine.label} is not empty (rows in {', '.join(filled)}): "
                    "import only into a new database"
                )
            for table, table_rows in rows.items():
                columns = [
                    d[0] for d in store.execute(f"SELECT * FROM {table} LIMIT 0").description
                ]
                for row in table_rows:
                    if set(row) != set(columns):
                        raise TransferError(
                            f"table {table}: a row's columns ({', '.join(sorted(row))}) are "
                            f"not the table's ({', '.join(sorted(columns))})"
                        )
                if table_rows:
                    sql = (
                        f"INSERT INTO {table} ({', '.join(columns)}) "
                        f"VALUES ({', '.join('?' for _ in columns)})"
                    )
                    for row in table_rows:
                        store.execute(sql, [row[c] for c in columns])
            if isinstance(engine, PostgresEngine):
                for table in IDENTITY_TABLES:
                    # The next id handed out is one past the largest kept.
                    store.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"COALESCE(MAX(id), 0) + 1, false) FROM {table}"
                    )
            problems = store.audit()
            if problems:
                raise TransferError(
                    "the imported ledger fails the audit, nothing was imported: "
                    + "; ".join(problems[:10])
                )
    except engine.all_errors as exc:  # a constraint, a value of the wrong type
        raise TransferError(f"a row does not fit the schema, nothing was imported: {exc}") from exc
    return {t: len(r) for t, r in rows.items()}
