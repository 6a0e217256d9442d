"""ClickHouse SQL over the Iceberg history, in process (chDB), and the route to a real server.

``bookstream sql FILE_OR_QUERY [--format table|csv|json]`` runs one query of the analysts'
library (``sql/*.sql``, by file name or path) or a query given inline. Before it runs, every
history table of ``udfs/history.py`` is exposed under the name a ClickHouse user expects:

* database ``bookstream``, one table per stream: ``bookstream.events``, ``bookstream.features``,
  ``bookstream.dead_letters``, ``bookstream.stats``, ``bookstream.signals``,
  ``bookstream.orders``, ``bookstream.executions``, ``bookstream.control``, ``bookstream.risk``,
  ``bookstream.quality``, ``bookstream.drift`` (the stream job's drift rows);
* each is ``CREATE TABLE bookstream.<t> ENGINE = IcebergLocal('<table dir>') SETTINGS
  iceberg_metadata_file_path = '<the catalog's current metadata file>'``: the Parquet files are
  read in place, and the snapshot read is the one the catalog says is current (not "the newest
  metadata file in the directory", which an uncommitted writer may have left behind). Being
  tables of the Iceberg engine (not views), they appear in ``system.iceberg_history``, which lists
  their snapshots for time travel (``SETTINGS iceberg_snapshot_id = ...`` or
  ``iceberg_timestamp_ms = ...`` on a query; see ``sql/README.md``);
* a table the catalog does not have (nothing stored yet) is a view with the table's columns that
  fails, when read, with a message naming the table and what to run.

chDB specifics, found by trying them (chDB 4.4, ClickHouse 26.9 engine):

* **Path restriction.** ``icebergLocal`` / ``IcebergLocal`` refuse any path outside the process's
  *working directory* ("File path ... is not inside ." -- ``PATH_ACCESS_DENIED``), whatever
  ``user_files_path`` says (passing it in the connection string changes
  ``system.server_settings`` but not this check). So every statement runs with the working
  directory switched to the common parent of the table directories and switched back after,
  under a process-wide lock (:func:`_in_dir`); a program running other threads that depend on
  the working directory should not call this concurrently with them.
* **One data directory per process.** chDB embeds one server per process, bound to one path;
  a second session on another path fails while the first is open, and a directory may be open
  in only one process. Each :class:`SqlSession` therefore gets a fresh temporary directory
  ``<lake root>/chdb/session-<pid>-XXXX`` (deleted on close; directories left by killed
  processes are removed by the next session) and sessions in one process are serialised.
* **Time zone.** Iceberg ``timestamp`` columns arrive as ``DateTime64(6)`` without a zone; the
  session sets ``session_timezone = 'UTC'`` so minute/hour buckets and printed times are UTC,
  as the MergeTree DDL (``DateTime64(6, 'UTC')``) makes them on a server.

**One query per file** (and per call): a trailing ``;`` is allowed, a second statement is an
error -- the result of a call is one table.

**Analysts' SQL reaches the lake, not the machine.** chDB is ClickHouse in this process, with
its file system, network and environment: unchecked, a query could read ``/etc/passwd`` or
``/proc/self/environ`` (``file()``), write anywhere (``INTO OUTFILE``), fetch URLs or run
programs. Every query given to :func:`run_sql` / :func:`query_rows` / ``bookstream sql`` goes
through two independent barriers:

1. :func:`check_query`, on the statement's tokens (strings and comments cannot hide anything):
   only one read statement (``SELECT``, ``WITH``, ``DESCRIBE``, ``EXPLAIN``); no ``INTO
   OUTFILE`` / ``INFILE``; no table function but the generators of :data:`ALLOWED_TABLE_FUNCTIONS`
   (every other one the engine lists in ``system.table_functions`` is refused: ``file``,
   ``url``, ``executable``, ``s3``, ``hdfs``, ``remote``, ``postgresql``, ``python``,
   ``filesystem``...); none of the scalar functions of :data:`REFUSED_FUNCTIONS` (``file()``
   reads a whole file); no ``system.`` table but those of :data:`ALLOWED_SYSTEM_TABLES`
   (``system.iceberg_history`` for time travel; not ``processes``, ``server_settings``,
   ``named_collections``, ``users``...); no ``SETTINGS`` of :data:`REFUSED_SETTINGS`.
2. the engine: after the tables are set up the session is sealed with ``SET readonly = 1``
   (:meth:`SqlSession.seal`): ClickHouse then refuses any write, DDL, table function that is not a
   generator, and any change of a setting, including ``readonly`` itself. A query's own
   ``SETTINGS name = value`` (``join_use_nulls = 1``, ``iceberg_snapshot_id = ...``) are applied
   with ``SET`` just before the seal; under ``readonly = 1`` ClickHouse accepts a ``SETTINGS``
   clause that repeats the current value, so the query runs as written. Hence a sealed session
   answers one analyst query; :func:`run_sql` opens one per call.

**MergeTree.** ``sql/clickhouse/<t>.sql`` holds one ``CREATE TABLE bookstream.<t>`` per history
table for a ClickHouse server, generated from ``udfs/history.py`` by :func:`ddl_statements`
(``bookstream sql --write-ddl`` rewrites them; a unit test keeps the shipped files equal to the
generated text). ``bookstream sql --mergetree ...`` runs a query on MergeTree copies made in the
chDB session by exactly that DDL and ``INSERT ... SELECT`` from the Iceberg tables, so the same
SQL is checked on both engines. :func:`load_into_clickhouse` loads the lake into a real server
with ``clickhouse-connect`` (the ``clickhouse`` extra: ``uv sync --extra clickhouse``; imported
only there), incrementally by Kafka position.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa

from udfs.audit import AUDIT_STREAM
from udfs.config import PROJECT_ROOT, Config, FeatureConfig
from udfs.history import Stream, streams

__all__ = [
    "ALLOWED_SYSTEM_TABLES",
    "ALLOWED_TABLE_FUNCTIONS",
    "DATABASE",
    "DDL_DIR",
    "REFUSED_FUNCTIONS",
    "REFUSED_SETTINGS",
    "SQL_DIR",
    "ChdbClient",
    "LakeTable",
    "SqlError",
    "SqlRefusedError",
    "SqlSession",
    "check_query",
    "ddl_statements",
    "lake_tables",
    "list_queries",
    "load_into_clickhouse",
    "query_arrow",
    "query_rows",
    "read_query",
    "run_sql",
    "sql_command",
    "write_ddl",
]

SQL_DIR = PROJECT_ROOT / "sql"
DDL_DIR = SQL_DIR / "clickhouse"
DATABASE = "bookstream"
LAKE_DATABASE = "bookstream_lake"
"""Where ``--mergetree`` keeps the Iceberg tables it copies from."""

FORMATS = {"table": "PrettyCompactMonoBlock", "csv": "CSVWithNames"}
_SESSION_SETTINGS = (
    "SET session_timezone = 'UTC'",
    "SET output_format_pretty_color = 0",
    "SET output_format_pretty_single_large_number_tip_threshold = 0",
    "SET output_format_pretty_fallback_to_vertical = 0",
)

_LOCK = threading.RLock()
"""chDB embeds one server per process: one session at a time, and the working directory."""


class SqlError(RuntimeError):
    """A query failed; the message is ClickHouse's (or names the missing file / table)."""


class SqlRefusedError(SqlError):
    """An analyst's statement reaches outside the lake (files, network, programs, the engine's
    own state) or is not a read; the message names what was refused."""


# ---------------------------------------------------------------------------------------------
# the lake's tables


@dataclass(frozen=True)
class LakeTable:
    stream: Stream
    path: Path | None
    """the table's directory, None when the catalog has no such table"""
    metadata: str | None
    """the current metadata file, relative to ``path`` (what the catalog committed)"""
    missing_reason: str = ""

    @property
    def name(self) -> str:
        return self.stream.name


def _history_streams(cfg: Config) -> tuple[Stream, ...]:
    return _tables(cfg.features.depth_levels)


def _tables(depth_levels: int) -> tuple[Stream, ...]:
    """Every table of the lake: one per topic, and the audit table (udfs/audit.py)."""
    return (*streams(depth_levels), AUDIT_STREAM)


def lake_tables(cfg: Config) -> list[LakeTable]:
    """Every history table with its directory and current metadata file, from the catalog.
    A local SQLite catalog that does not exist yet is not created (nothing is stored)."""
    out: list[LakeTable] = []
    if (
        cfg.lake.catalog == "sql"
        and not cfg.lake.catalog_uri
        and not (cfg.lake_dir / "catalog.db").is_file()
    ):
        why = f"no catalog at {cfg.lake_dir / 'catalog.db'}"
        return [LakeTable(s, None, None, why) for s in _history_streams(cfg)]
    from pyiceberg.exceptions import NoSuchTableError

    from jobs.lake import open_catalog, table_dir

    try:
        catalog = open_catalog(cfg)
    except Exception as exc:  # a catalog server down, a bad URI: say which
        raise SqlError(
            f"cannot open the Iceberg catalog ({cfg.lake.catalog}, "
            f"{cfg.catalog_uri if cfg.lake.catalog != 'rest' else cfg.lake.rest_uri}"
            f"): {exc}"
        ) from exc
    for stream in _history_streams(cfg):
        ident = f"{cfg.lake.namespace}.{stream.name}"
        try:
            table = catalog.load_table(ident)
        except NoSuchTableError:
            out.append(LakeTable(stream, None, None, f"the catalog has no table {ident}"))
            continue
        try:
            path = table_dir(table).resolve()
        except ValueError as exc:  # not on a local disk: chDB's icebergLocal cannot read it
            out.append(LakeTable(stream, None, None, str(exc)))
            continue
        meta = Path(urlparse(table.metadata_location).path).resolve()
        try:
            rel = meta.relative_to(path).as_posix()
        except ValueError:  # metadata outside the table directory: let chDB find the newest
            rel = None
        if not path.is_dir():
            out.append(
                LakeTable(
                    stream,
                    None,
                    None,
                    f"{ident} is in the catalog but its directory {path} does not exist",
                )
            )
            continue
        out.append(LakeTable(stream, path, rel))
    return out


# ---------------------------------------------------------------------------------------------
# ClickHouse types and the MergeTree DDL

_LOW_CARDINALITY = frozenset(
    {
        "venue",
        "kind",
        "side",
        "strategy",
        "action",
        "order_type",
        "tif",
        "liquidity",
        "reason_code",
        "stage",
        "source",
        "model_version",
        "command",
    }
)


def _ch_type(t: pa.DataType) -> str:
    if pa.types.is_string(t):
        return "String"
    if pa.types.is_boolean(t):
        return "Bool"
    if pa.types.is_int64(t):
        return "Int64"
    if pa.types.is_int32(t):
        return "Int32"
    if pa.types.is_float64(t):
        return "Float64"
    if pa.types.is_timestamp(t) and t.unit == "us":
        return "DateTime64(6, 'UTC')"
    raise TypeError(f"no ClickHouse type for {t}")


def _key_columns(stream: Stream) -> tuple[str, ...]:
    if stream is AUDIT_STREAM:  # its own order: chain by chain, row by row
        return ("chain", "seq", "event_time")
    lead = ("instrument",) if "instrument" in stream.columns else ()
    return (*lead, "event_time", "_partition", "_offset")


def _sql_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def ddl_statements(depth_levels: int | None = None, database: str = DATABASE) -> dict[str, str]:
    """table name -> ``CREATE TABLE`` of its MergeTree copy, with the columns and types of
    ``udfs/history.py`` (for ``depth_levels`` of imbalance; default: the configured default).

    Key columns (``instrument`` where the table has it, ``event_time``, ``_partition``,
    ``_offset``) are not Nullable: they form the sort key. Every other column is Nullable, as in
    Iceberg (every column optional), so a query gives the same result on both engines."""
    depth = FeatureConfig().depth_levels if depth_levels is None else depth_levels
    out: dict[str, str] = {}
    for stream in _tables(depth):
        keys = _key_columns(stream)
        width = max(len(f.name) for f in stream.arrow_schema) + 2
        cols = []
        for f in stream.arrow_schema:
            base = _ch_type(f.type)
            typ = base if f.name in keys else f"Nullable({base})"
            if f.name in _LOW_CARDINALITY or f.name == "instrument":
                typ = f"LowCardinality({typ})"
            cols.append(f"    {'`' + f.name + '`':<{width}} {typ}")
        source = (
            f"the history table of the topics.{stream.topic_field} topic"
            if stream.topic_field
            else "the hash-chained audit table (udfs/audit.py)"
        )
        header = (
            f"{database}.{stream.name}: {source} as a MergeTree table of a ClickHouse server. "
            f"Generated from "
            f"udfs/history.py by jobs/sql.py (`bookstream sql --write-ddl`); "
            f"tests/unit/test_sql_runner.py keeps this file equal to the generated text. "
            f"Columns: the record's own fields in wire order ({', '.join(stream.columns)}), "
            f"then event_time (exchange time, UTC), _partition and _offset (its Kafka "
            f"position). Key columns are not Nullable; every other column is, as in Iceberg."
        )
        comment = "".join(f"-- {line}\n" for line in textwrap.wrap(header, 96))
        out[stream.name] = (
            comment
            + f"CREATE TABLE IF NOT EXISTS {database}.{stream.name}\n(\n"
            + ",\n".join(cols)
            + "\n)\nENGINE = MergeTree\n"
            f"PARTITION BY toDate(event_time)\n"
            f"ORDER BY ({', '.join(keys)})\n"
        )
    return out


def write_ddl(directory: Path = DDL_DIR, depth_levels: int | None = None) -> list[Path]:
    """Write ``<directory>/<table>.sql`` for every history table; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in ddl_statements(depth_levels).items():
        path = directory / f"{name}.sql"
        path.write_text(text)
        paths.append(path)
    return paths


_MISSING_MARK = "no such table in the lake"


def _missing_view(lt: LakeTable, database: str, cfg: Config) -> str:
    cols = ", ".join(
        f"CAST(NULL, {_sql_quote('Nullable(' + _ch_type(f.type) + ')')}) AS `{f.name}`"
        for f in lt.stream.arrow_schema
    )
    msg = (
        f"{DATABASE}.{lt.name}: {_MISSING_MARK} ({lt.missing_reason}; warehouse "
        f"{cfg.warehouse_dir}): nothing stored yet -- run `bookstream history-sink`"
    )
    return (
        f"CREATE VIEW {database}.{lt.name} AS SELECT * FROM (SELECT {cols}) "
        f"WHERE throwIf(1, {_sql_quote(msg)})"
    )


# ---------------------------------------------------------------------------------------------
# query text


def _statements(text: str) -> list[str]:
    """Split on ``;`` outside quotes and comments; empty statements (only comments) dropped."""
    out, buf, i, n = [], [], 0, len(text)
    meaningful = False
    while i < n:
        c = text[i]
        if c in "'\"`":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            buf.append(text[i : j + 1])
            meaningful = True
            i = j + 1
        elif text.startswith("--", i) or c == "#":
            j = text.find("\n", i)
            j = n if j < 0 else j
            buf.append(text[i:j])
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            buf.append(text[i:j])
            i = j
        elif c == ";":
            if meaningful:
                out.append("".join(buf).strip())
            buf, meaningful = [], False
            i += 1
        else:
            if not c.isspace():
                meaningful = True
            buf.append(c)
            i += 1
    if meaningful:
        out.append("".join(buf).strip())
    return out


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except OSError:  # e.g. a query longer than a file name may be
        return False


def read_query(query_or_file: str | Path) -> tuple[str, str]:
    """``(name, SQL)`` of a library query (``ohlcv_1m`` or ``ohlcv_1m.sql``), a file path or an
    inline query. The text must hold exactly one statement (a trailing ``;`` is fine)."""
    arg = str(query_or_file).strip()
    candidates = [Path(arg), SQL_DIR / arg, SQL_DIR / f"{arg}.sql"] if "\n" not in arg else []
    path = next((p for p in candidates if _is_file(p)), None)
    if path is not None:
        name, text = path.stem, path.read_text()
    elif arg.endswith(".sql") and " " not in arg:
        raise SqlError(f"no such SQL file: {arg} (library: {SQL_DIR})")
    else:
        name, text = "query", arg
    stmts = _statements(text)
    if not stmts:
        raise SqlError(f"{name}: no query in it")
    if len(stmts) > 1:
        raise SqlError(f"{name}: {len(stmts)} statements; one query per file (and per call)")
    return name, stmts[0]


def list_queries(directory: Path = SQL_DIR) -> list[tuple[str, str]]:
    """``(file name, first comment line)`` of every ``*.sql`` of the library."""
    out = []
    for path in sorted(directory.glob("*.sql")):
        first = ""
        for line in path.read_text().splitlines():
            s = line.strip()
            if s.startswith("--"):
                first = s.lstrip("-").strip()
                if first:
                    break
            elif s:
                break
        out.append((path.name, first))
    return out


# ---------------------------------------------------------------------------------------------
# what an analyst's statement may do

READ_STATEMENTS = frozenset({"select", "with", "describe", "desc", "explain"})
ALLOWED_TABLE_FUNCTIONS = frozenset(
    {
        "numbers",
        "numbers_mt",
        "zeros",
        "zeros_mt",
        "primes",
        "generate_series",
        "generateseries",
        "generaterandom",
        "values",
        "sqlstandardvalues",
        "null",
        "view",
    }
)
"""Table functions that only generate rows; every other one of ``system.table_functions``
(files, URLs, programs, object stores, databases, the Python process...) is refused."""
REFUSED_FUNCTIONS = frozenset({"file", "hascolumnintable", "catboostevaluate"})
"""Scalar functions that reach outside: ``file(path)`` returns a file's content,
``hasColumnInTable(host, ...)`` connects to a server, ``catboostEvaluate`` loads a model file."""
ALLOWED_SYSTEM_TABLES = frozenset(
    {
        "iceberg_history",
        "one",
        "numbers",
        "numbers_mt",
        "zeros",
        "zeros_mt",
        "primes",
        "databases",
        "tables",
        "columns",
        "functions",
        "table_functions",
        "formats",
        "data_type_families",
        "time_zones",
        "settings",
    }
)
"""The catalogue and time travel; not the process's state (``processes``, ``stack_trace``,
``server_settings``, ``named_collections``, ``users``, ``grants``, ``macros``, ``disks``...)."""
REFUSED_SETTINGS = frozenset({"readonly", "allow_ddl", "allow_introspection_functions"})
"""And every setting whose name contains ``path`` (which files a reader opens)."""

_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")


@dataclass(frozen=True)
class _Token:
    kind: str
    """``id`` (bare identifier or keyword), ``qid`` (quoted identifier), ``str``, ``num``,
    ``op``"""
    text: str
    """the identifier's name (unquoted), the string's value, the number or the operator"""

    @property
    def name(self) -> str:
        return self.text.lower() if self.kind in ("id", "qid") else ""


def _unescape(body: str) -> str:
    out, i = [], 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            out.append(body[i + 1])
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def _tokens(text: str) -> list[_Token]:  # noqa: C901 - a lexer: one branch per token kind
    """ClickHouse's lexical structure, enough to see every identifier and call: comments
    dropped, strings and quoted identifiers taken whole (a doubled quote or a backslash escapes
    the quote)."""
    out: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif text.startswith("--", i) or c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise SqlRefusedError("unterminated /* comment")
            i = j + 2
        elif c in "'\"`":
            j, parts = i + 1, []
            while True:
                if j >= n:
                    raise SqlRefusedError(f"unterminated {c}...{c} in the query")
                if text[j] == "\\":
                    parts.append(text[j : j + 2])
                    j += 2
                elif text[j] == c and text.startswith(c, j + 1):
                    parts.append(c)
                    j += 2
                elif text[j] == c:
                    break
                else:
                    parts.append(text[j])
                    j += 1
            body = _unescape("".join(parts))
            out.append(_Token("str" if c == "'" else "qid", body))
            i = j + 1
        elif c in _IDENT_START or ord(c) > 127:
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] in "_$" or ord(text[j]) > 127):
                j += 1
            out.append(_Token("id", text[i:j]))
            i = j
        elif c.isdigit() or (c == "." and i + 1 < n and text[i + 1].isdigit()):
            j = i + 1
            while j < n:
                exponent_sign = text[j] in "+-" and text[j - 1] in "eE" and text[i : i + 2] != "0x"
                if not (text[j].isalnum() or text[j] in "._" or exponent_sign):
                    break
                j += 1
            out.append(_Token("num", text[i:j]))
            i = j
        else:
            out.append(_Token("op", c))
            i += 1
    return out


def _setting_value(tokens: list[_Token], i: int) -> tuple[str, int] | None:
    """The SQL text of a literal setting value at ``tokens[i]`` and the index after it."""
    sign = ""
    if i < len(tokens) and tokens[i] == _Token("op", "-"):
        sign, i = "-", i + 1
    if i >= len(tokens):
        return None
    t = tokens[i]
    if t.kind == "num":
        return sign + t.text, i + 1
    if t.kind == "str" and not sign:
        return _sql_quote(t.text), i + 1
    if t.kind == "id" and not sign:
        return t.text, i + 1
    return None


def check_query(  # noqa: C901 - one branch per rule a read statement must keep
    sql: str, table_functions: frozenset[str]
) -> dict[str, str]:
    """Refuse (:class:`SqlRefusedError`) a statement that is not a read or reaches outside the lake;
    ``table_functions``: every table function name the engine knows (lower case). Returns the
    statement's ``SETTINGS`` as ``{name: SQL literal}``, to be applied before the session is
    sealed (see the module's notes)."""
    tokens = _tokens(sql)
    if not tokens:
        raise SqlRefusedError("no statement")
    first = tokens[0]
    if first != _Token("op", "(") and first.name not in READ_STATEMENTS:
        raise SqlRefusedError(
            f"only a read statement ({', '.join(sorted(READ_STATEMENTS))}) may run here, "
            f"not {first.text.upper()!r}"
        )
    settings: dict[str, str] = {}
    for i, t in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if t.kind not in ("id", "qid"):
            continue
        name = t.name
        if t.kind == "id" and name in ("outfile", "infile"):
            raise SqlRefusedError(f"{t.text.upper()}: a query may not read or write files")
        if nxt == _Token("op", "("):
            if name in REFUSED_FUNCTIONS:
                raise SqlRefusedError(f"function {t.text}() reaches outside the lake")
            if name in table_functions and name not in ALLOWED_TABLE_FUNCTIONS:
                raise SqlRefusedError(
                    f"table function {t.text}() reaches outside the lake; only the tables of "
                    f"{DATABASE} and the generators {', '.join(sorted(ALLOWED_TABLE_FUNCTIONS))}"
                )
        if name == "system" and nxt == _Token("op", "."):
            table = tokens[i + 2] if i + 2 < len(tokens) else None
            if table is None or table.name not in ALLOWED_SYSTEM_TABLES:
                shown = table.text if table is not None else ""
                raise SqlRefusedError(
                    f"system.{shown} is not readable here; system tables allowed: "
                    f"{', '.join(sorted(ALLOWED_SYSTEM_TABLES))}"
                )
        if t.kind == "id" and name == "settings":
            j = i + 1
            while j + 1 < len(tokens) and tokens[j].kind == "id":
                key = tokens[j]
                if tokens[j + 1] != _Token("op", "="):
                    break
                if key.name in REFUSED_SETTINGS or "path" in key.name:
                    raise SqlRefusedError(f"setting {key.text} may not be changed here")
                value = _setting_value(tokens, j + 2)
                if value is None:
                    raise SqlRefusedError(f"setting {key.text}: only a literal value here")
                literal, j = value
                if settings.setdefault(key.text, literal) != literal:
                    raise SqlRefusedError(
                        f"setting {key.text}: two values ({settings[key.text]}, {literal})"
                    )
                if j < len(tokens) and tokens[j] == _Token("op", ","):
                    j += 1
                    continue
                break
    return settings


# ---------------------------------------------------------------------------------------------
# the chDB session


@contextlib.contextmanager
def _in_dir(path: Path) -> Iterator[None]:
    """Run with the working directory at ``path`` (chDB's icebergLocal path check)."""
    with _LOCK:
        try:
            before: str | None = os.getcwd()
        except FileNotFoundError:
            before = None
        os.chdir(path)
        try:
            yield
        finally:
            if before is not None:
                with contextlib.suppress(OSError):
                    os.chdir(before)


def _clean_stale_sessions(parent: Path) -> None:
    for d in parent.glob("session-*-*"):
        try:
            pid = int(d.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            pass


class SqlSession:
    """A chDB session with the history exposed as ``bookstream.<table>``.

    ``engine="lake"``: the tables read Iceberg in place. ``engine="mergetree"``: the Iceberg
    tables are exposed as ``bookstream_lake.<t>`` and copied into MergeTree tables
    ``bookstream.<t>`` created by ``ddl`` (default: :func:`ddl_statements` for the config) with
    ``INSERT ... SELECT``. Use as a context manager; one session at a time per process.

    Its methods run the program's own SQL as given; an analyst's goes through
    :meth:`analyst_query` first (as :func:`run_sql` and :func:`query_rows` do)."""

    def __init__(
        self,
        cfg: Config,
        engine: str = "lake",
        ddl: dict[str, str] | None = None,
        row_filters: dict[str, str] | None = None,
    ) -> None:
        if engine not in ("lake", "mergetree"):
            raise ValueError(f"engine must be 'lake' or 'mergetree', not {engine!r}")
        if row_filters is not None and engine != "lake":
            raise ValueError("row_filters work on the lake engine only")
        self.cfg = cfg
        self.engine = engine
        self.ddl = ddl
        self.row_filters = row_filters
        """table -> a ClickHouse condition: ``bookstream.<table>`` is then a view of the
        Iceberg table's rows that meet it (e.g. one run's Kafka positions), so every query,
        the library's included, reads only those rows"""
        self.tables = lake_tables(cfg)
        present = [t.path for t in self.tables if t.path is not None]
        self.root = Path(os.path.commonpath(present)) if present else None
        self._session: Any = None  # a chdb Session while open (chdb ships no type hints)
        self._dir: Path | None = None
        self._locked = False
        self.table_functions: frozenset[str] = frozenset()
        """every table function the engine knows, lower case (for :func:`check_query`)"""
        self.sealed = False
        self.copied: dict[str, int] = {}
        """rows copied into each MergeTree table (engine ``mergetree``)"""

    # -- lifecycle

    def __enter__(self) -> SqlSession:
        _LOCK.acquire()
        self._locked = True
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> None:
        from chdb import session as chdb_session

        parent = self.cfg.lake_dir / "chdb"
        parent.mkdir(parents=True, exist_ok=True)
        _clean_stale_sessions(parent)
        self._dir = Path(tempfile.mkdtemp(prefix=f"session-{os.getpid()}-", dir=parent))
        if self.root is None:
            self.root = self._dir
        self._session = chdb_session.Session(str(self._dir))
        for stmt in _SESSION_SETTINGS:
            self.execute(stmt)
        names = self.arrow("SELECT lower(name) AS name FROM system.table_functions")
        self.table_functions = frozenset(names.column("name").to_pylist())
        lake_db = DATABASE if self.engine == "lake" and self.row_filters is None else LAKE_DATABASE
        self.execute(f"CREATE DATABASE IF NOT EXISTS {lake_db}")
        for t in self.tables:
            if t.path is None:
                self.execute(_missing_view(t, lake_db, self.cfg))
                continue
            settings = (
                f" SETTINGS iceberg_metadata_file_path = {_sql_quote(t.metadata)}"
                if t.metadata
                else ""
            )
            self.execute(
                f"CREATE TABLE {lake_db}.{t.name} ENGINE = "
                f"IcebergLocal({_sql_quote(str(t.path))}){settings}"
            )
        if self.engine == "mergetree":
            self._copy_to_mergetree()
        elif self.row_filters is not None:
            self._filtered_views(self.row_filters)

    def _filtered_views(self, row_filters: dict[str, str]) -> None:
        self.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
        for t in self.tables:
            if t.path is None:  # keep the clear error of a missing table
                self.execute(_missing_view(t, DATABASE, self.cfg))
                continue
            where = row_filters.get(t.name, "1")
            self.execute(
                f"CREATE VIEW {DATABASE}.{t.name} AS SELECT * FROM {LAKE_DATABASE}.{t.name} "
                f"WHERE {where}"
            )

    def _copy_to_mergetree(self) -> None:
        ddl = self.ddl if self.ddl is not None else ddl_statements(self.cfg.features.depth_levels)
        self.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
        for t in self.tables:
            if t.path is None:  # keep the clear error of a missing table
                self.execute(_missing_view(t, DATABASE, self.cfg))
                continue
            self.execute(ddl[t.name])
            cols = ", ".join(f"`{c}`" for c in t.stream.arrow_schema.names)
            self.execute(
                f"INSERT INTO {DATABASE}.{t.name} ({cols}) "
                f"SELECT {cols} FROM {LAKE_DATABASE}.{t.name}"
            )
            self.copied[t.name] = int(
                self.arrow(f"SELECT count() AS n FROM {DATABASE}.{t.name}").column("n")[0].as_py()
            )

    def seal(self, settings: dict[str, str] | None = None) -> None:
        """Apply a checked query's ``SETTINGS`` (from :func:`check_query`), then ``SET readonly =
        1``: from here on the engine refuses writes, DDL, table functions that are not
        generators and any other change of a setting, for the rest of the session."""
        for name, literal in (settings or {}).items():
            self.execute(f"SET {name} = {literal}")
        self.execute("SET readonly = 1")
        self.sealed = True

    def analyst_query(self, sql: str) -> None:
        """Check an analyst's statement (:class:`SqlRefusedError`) and seal the session for it."""
        if self.sealed:
            raise SqlError("this session already answered an analyst's query: open a new one")
        self.seal(check_query(sql, self.table_functions))

    def close(self) -> None:
        try:
            if self._session is not None:
                with contextlib.suppress(Exception):
                    self._session.close()
                self._session = None
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None
        finally:
            if self._locked:
                self._locked = False
                _LOCK.release()

    # -- queries

    def _query(self, sql: str, fmt: str) -> Any:
        if self._session is None:
            raise SqlError("session is closed")
        from chdb import ChdbError

        assert self.root is not None
        with _in_dir(self.root):
            try:
                return self._session.query(sql, fmt)
            except ChdbError as exc:
                msg = str(exc).strip()
                if _MISSING_MARK in msg:  # the missing-table view: its message, not the plan
                    msg = msg.split(": while executing 'FUNCTION throwIf", 1)[0]
                raise SqlError(msg) from None

    def execute(self, sql: str) -> None:
        self._query(sql, "CSV")

    def arrow(self, query: str) -> pa.Table:
        """The result as an Arrow table. Fetched as Parquet: ClickHouse's Arrow output gives a
        ``DateTime`` (e.g. ``toStartOfMinute``) as a bare uint32, its Parquet output as a
        timestamp."""
        import pyarrow.parquet as pq

        data = self._query(query, "Parquet").bytes()
        return pq.read_table(io.BytesIO(data))

    def text(self, query: str, fmt: str = "table") -> str:
        """The result as ``table`` (ClickHouse PrettyCompact), ``csv`` (with a header line) or
        ``json`` (one line: ``{"query", "columns", "rows": [{column: value}], "row_count"}``)."""
        if fmt == "json":
            table = self.arrow(query)
            return (
                json.dumps(
                    {
                        "columns": table.column_names,
                        "rows": _plain_rows(table),
                        "row_count": table.num_rows,
                    },
                    separators=(",", ":"),
                    default=str,
                )
                + "\n"
            )
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of table, csv, json; not {fmt!r}")
        out = self._query(query, FORMATS[fmt])
        text = out.bytes().decode() if hasattr(out, "bytes") else str(out)
        if not text.strip() and fmt == "table":
            return "(0 rows)\n"
        return text


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _plain_rows(table: pa.Table) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in row.items()} for row in table.to_pylist()]


def query_arrow(cfg: Config, query_or_file: str | Path, engine: str = "lake") -> pa.Table:
    """An analyst's query (checked, in a sealed session) as an Arrow table."""
    _name, sql = read_query(query_or_file)
    with SqlSession(cfg, engine) as s:
        s.analyst_query(sql)
        return s.arrow(sql)


def query_rows(
    cfg: Config, query_or_file: str | Path, engine: str = "lake"
) -> list[dict[str, Any]]:
    """The result as Python objects: one dict per row (``datetime`` for times, ``None`` for
    NULL)."""
    return query_arrow(cfg, query_or_file, engine).to_pylist()


def run_sql(
    cfg: Config, query_or_file: str | Path, fmt: str = "table", engine: str = "lake"
) -> str:
    """Run one query (a library name, a file or SQL text) and return its formatted result;
    :class:`SqlError` carries ClickHouse's message, :class:`SqlRefusedError` what was refused."""
    _name, sql = read_query(query_or_file)
    with SqlSession(cfg, engine) as s:
        s.analyst_query(sql)
        return s.text(sql, fmt)


# ---------------------------------------------------------------------------------------------
# a real ClickHouse server


class ChdbClient:
    """The three calls :func:`load_into_clickhouse` makes of a ``clickhouse_connect`` client
    (``command``, ``query(...).result_rows``, ``insert_arrow``), answered by an open
    :class:`SqlSession`: the load path is tested against chDB's MergeTree."""

    @dataclass
    class _Result:
        result_rows: list[tuple]

    def __init__(self, session: SqlSession) -> None:
        self.session = session

    def command(self, sql: str) -> None:
        self.session.execute(sql)

    def query(self, sql: str) -> ChdbClient._Result:
        table = self.session.arrow(sql)
        return self._Result([tuple(r.values()) for r in table.to_pylist()])

    def insert_arrow(self, table: str, arrow_table: pa.Table) -> None:
        cols = ", ".join(f"`{c}`" for c in arrow_table.column_names)
        # chDB's Python() table function reads the local variable ``arrow_table``
        self.session.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM Python(arrow_table)")


def load_into_clickhouse(
    cfg: Config,
    client: Any = None,
    *,
    database: str = DATABASE,
    tables: list[str] | None = None,
    **connect: Any,
) -> dict[str, int]:
    """Create the MergeTree tables on a ClickHouse server and load what the lake holds that the
    server does not, table by table; returns the rows inserted per table.

    ``client``: a ``clickhouse_connect`` client; None: ``clickhouse_connect.get_client(
    **connect)`` (e.g. ``host="localhost", port=8123, username="default", password=""``) --
    it comes with the ``clickhouse`` extra (``uv sync --extra clickhouse``).

    Incremental and idempotent: a row is identified by its Kafka position, so for each table
    only rows with ``_offset`` beyond the server's largest ``_offset`` of their ``_partition``
    are read (pyiceberg, with the filter pushed into the scan) and inserted with
    ``insert_arrow``. A topic deleted and recreated (offsets from 0 again) needs
    ``TRUNCATE TABLE`` on the server and a fresh load."""
    if client is None:
        try:
            import clickhouse_connect  # the `clickhouse` extra: only whoever loads a server
        except ImportError as exc:
            raise SqlError(
                "load_into_clickhouse needs clickhouse-connect (the clickhouse extra: "
                "uv sync --extra clickhouse), or pass a client"
            ) from exc
        client = clickhouse_connect.get_client(**connect)
    from pyiceberg.expressions import And, EqualTo, GreaterThan, In, Not, Or

    from jobs.lake import open_catalog

    catalog = open_catalog(cfg)
    ddl = ddl_statements(cfg.features.depth_levels, database)
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    inserted: dict[str, int] = {}
    for lt in lake_tables(cfg):
        if tables is not None and lt.name not in tables:
            continue
        client.command(ddl[lt.name])
        if lt.path is None:
            inserted[lt.name] = 0
            continue
        have = {
            int(p): int(o)
            for p, o in client.query(
                f"SELECT _partition, max(_offset) FROM {database}.{lt.name} GROUP BY _partition"
            ).result_rows
        }
        row_filter: Any = None
        if have:
            newer = [
                And(EqualTo("_partition", p), GreaterThan("_offset", o))
                for p, o in sorted(have.items())
            ]
            newer.append(Not(In("_partition", set(have))))
            row_filter = newer[0] if len(newer) == 1 else Or(*newer)
        table = catalog.load_table(f"{cfg.lake.namespace}.{lt.name}")
        scan = table.scan(row_filter=row_filter) if row_filter is not None else table.scan()
        rows = scan.to_arrow()
        if rows.num_rows:
            client.insert_arrow(f"{database}.{lt.name}", rows.select(lt.stream.arrow_schema.names))
        inserted[lt.name] = rows.num_rows
    return inserted


# ---------------------------------------------------------------------------------------------
# the command


def sql_command(
    cfg: Config,
    query: str | None,
    *,
    fmt: str = "table",
    list_files: bool = False,
    engine: str = "lake",
    ddl: bool = False,
    write: bool = False,
) -> int:
    """``bookstream sql``: print a query's result (:class:`SqlError` with ClickHouse's message),
    the library (``--list``) or the MergeTree DDL (``--ddl``; ``--write-ddl`` rewrites
    ``sql/clickhouse/``)."""
    if write:
        for path in write_ddl(depth_levels=cfg.features.depth_levels):
            print(path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path)
        return 0
    if ddl:
        print("\n".join(ddl_statements(cfg.features.depth_levels).values()), end="")
        return 0
    if list_files:
        entries = list_queries()
        if fmt == "json":
            print(
                json.dumps(
                    {"queries": [{"file": f, "about": a} for f, a in entries]},
                    separators=(",", ":"),
                )
            )
        else:
            width = max((len(f) for f, _ in entries), default=0)
            for f, about in entries:
                print(f"{f:<{width}}  {about}")
        return 0
    if not query:
        print("bookstream sql: give a file of sql/, a path or a query (or --list)", file=sys.stderr)
        return 2
    # a failing query raises SqlError: the command line prints its message (exit 2)
    sys.stdout.write(run_sql(cfg, query, fmt, engine))
    sys.stdout.flush()
    return 0
