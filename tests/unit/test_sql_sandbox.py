"""Analysts' SQL reaches the lake, not the machine (jobs/sql.py): every way a query once read
files, wrote files, made requests or changed its own limits is refused by the statement check
(through the public entry points: run_sql, query_rows, `bookstream sql`), and, for what the
engine can enforce, refused again by the sealed session (readonly = 1) when the check is
bypassed. Legitimate queries (strings and comments that merely mention the names, generators,
the catalogue, time-travel settings) still run. The sql/ library itself runs sealed in
test_sql_runner.py and tests/integration/test_sql.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.sql import (
    ALLOWED_TABLE_FUNCTIONS,
    SqlError,
    SqlRefusedError,
    SqlSession,
    check_query,
    query_rows,
    run_sql,
    sql_command,
)
from udfs.config import Config, load_config

PASSWD_LINE = "root:x:0:0"


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """An empty lake: the tables are the 'nothing stored yet' views; enough for the check."""
    state = tmp_path_factory.mktemp("sandbox-state")
    return load_config(env={"BOOKSTREAM_STATE_DIR": str(state)})


@pytest.fixture(scope="module")
def table_functions(cfg: Config) -> frozenset[str]:
    with SqlSession(cfg) as s:
        return s.table_functions


HOSTILE = {
    "file table function": "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "file function": "SELECT file('/etc/passwd')",
    "environment": "SELECT file('/proc/self/environ')",
    "quoted name": "SELECT * FROM `file`('/etc/passwd', 'LineAsString')",
    "comment before (": "SELECT FiLe /* hidden */ ('/etc/passwd')",
    "inside a lambda": "SELECT arrayMap(p -> file(p), ['/etc/passwd'])",
    "in a CTE": "WITH (SELECT file('/etc/passwd')) AS x SELECT x",
    "url": "SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')",
    "executable": "SELECT * FROM executable('x.sh', 'TSV', 'a String')",
    "s3": "SELECT * FROM s3('http://127.0.0.1:9/bucket/x.csv', 'CSV')",
    "hdfs": "SELECT * FROM hdfs('hdfs://127.0.0.1:9/x', 'TSV', 'a String')",
    "remote": "SELECT * FROM remote('127.0.0.1:9', system.one)",
    "postgresql": "SELECT * FROM postgresql('127.0.0.1:9', 'db', 't', 'u', 'p')",
    "filesystem listing": "SELECT * FROM filesystem('/etc')",
    "python objects": "SELECT * FROM python(cfg)",
    "merge over system": "SELECT * FROM merge('system', '^processes$')",
    "into outfile": "SELECT 1 INTO OUTFILE 'out.csv'",
    "set readonly": "SET readonly = 0",
    "settings readonly": "SELECT 1 SETTINGS readonly = 0",
    "settings path": "SELECT 1 SETTINGS format_schema_path = '/etc'",
    "insert into function": "INSERT INTO FUNCTION file('x.csv', 'CSV') SELECT 1",
    "create File table": "CREATE TABLE t (a String) ENGINE = File(CSV, '/tmp/x.csv')",
    "system.processes": "SELECT query FROM system.processes",
    "system.server_settings": "SELECT * FROM system.server_settings",
    "system.named_collections": "SELECT * FROM system.named_collections",
    "quoted system": 'SELECT * FROM "system"."stack_trace"',
    "describe system": "DESCRIBE TABLE system.users",
}


@pytest.mark.parametrize("sql", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_query_refused(cfg: Config, sql: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a relative OUTFILE would land here
    with pytest.raises(SqlRefusedError):
        run_sql(cfg, sql, "csv")
    with pytest.raises(SqlRefusedError):
        query_rows(cfg, sql)
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_and_prints_nothing_of_the_file(cfg: Config, capsys) -> None:
    with pytest.raises(SqlRefusedError, match=r"file\(\) reaches outside the lake"):
        sql_command(cfg, "SELECT file('/etc/passwd')", fmt="csv")
    out, err = capsys.readouterr()
    assert PASSWD_LINE not in out + err


LEGITIMATE = {
    "names in a string": ("SELECT 'file(/etc/passwd) INTO OUTFILE' AS s", "file("),
    "names in a comment": ("SELECT 2 AS n -- file('/etc/passwd')", "2"),
    "a column called file": ("SELECT file FROM (SELECT 3 AS file)", "3"),
    "generator": ("SELECT sum(number) AS s FROM numbers(5)", "10"),
    "catalogue": ("SELECT count() > 0 AS c FROM system.table_functions", "\n1"),
    "query settings": ("SELECT 4 AS n SETTINGS join_use_nulls = 1, max_threads = 2", "4"),
    "negative setting": ("SELECT 5 AS n SETTINGS max_result_rows = 0", "5"),
}


@pytest.mark.parametrize("sql, expect", LEGITIMATE.values(), ids=LEGITIMATE.keys())
def test_legitimate_query_runs(cfg: Config, sql: str, expect: str) -> None:
    assert expect in run_sql(cfg, sql, "csv").lower()


def test_settings_are_returned_and_checked(table_functions: frozenset[str]) -> None:
    got = check_query(
        "SELECT 1 FROM (SELECT 1 SETTINGS max_threads = 2) "
        "SETTINGS iceberg_snapshot_id = 37, join_use_nulls = 1, date_time_output_format = 'iso'",
        table_functions,
    )
    assert got == {
        "max_threads": "2",
        "iceberg_snapshot_id": "37",
        "join_use_nulls": "1",
        "date_time_output_format": "'iso'",
    }
    with pytest.raises(SqlRefusedError, match="two values"):
        check_query("SELECT 1 FROM (SELECT 1 SETTINGS a_b = 1) SETTINGS a_b = 2", table_functions)
    with pytest.raises(SqlRefusedError, match="literal"):
        check_query("SELECT 1 SETTINGS max_threads = (SELECT 1)", table_functions)


def test_every_allowed_table_function_exists(table_functions: frozenset[str]) -> None:
    """A typo in the allow-list would silently refuse nothing more; the check relies on the
    engine's own list for what to refuse, so it must know the refused ones too."""
    assert table_functions >= ALLOWED_TABLE_FUNCTIONS
    for name in ("file", "url", "executable", "s3", "hdfs", "remote", "python", "filesystem"):
        assert name in table_functions


ENGINE_REFUSES = {
    "file table function": "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "url": "SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')",
    "executable": "SELECT * FROM executable('x.sh', 'TSV', 'a String')",
    "hdfs": "SELECT * FROM hdfs('hdfs://127.0.0.1:9/x', 'TSV', 'a String')",
    "remote": "SELECT * FROM remote('127.0.0.1:9', system.one)",
    "set readonly": "SET readonly = 0",
    "create File table": "CREATE TABLE t (a String) ENGINE = File(CSV, '/tmp/x.csv')",
    "insert into function": "INSERT INTO FUNCTION file('x.csv', 'CSV') SELECT 1",
    "another setting": "SELECT 1 SETTINGS max_threads = 3",
}


@pytest.mark.parametrize("sql", ENGINE_REFUSES.values(), ids=ENGINE_REFUSES.keys())
def test_sealed_session_refuses_without_the_check(cfg: Config, sql: str, tmp_path: Path) -> None:
    """Second barrier: the statement check bypassed (the session's own methods), the engine
    still refuses, by readonly = 1."""
    with SqlSession(cfg) as s:
        s.seal({"max_threads": "2"})
        with pytest.raises(SqlError, match="readonly"):
            s.text(sql, "csv")
        assert s.text("SELECT 1 SETTINGS max_threads = 2", "csv").split() == ['"1"', "1"]
    assert not (tmp_path / "x.csv").exists()


def test_session_answers_one_analyst_query(cfg: Config) -> None:
    with SqlSession(cfg) as s:
        s.analyst_query("SELECT 1")
        with pytest.raises(SqlError, match="already answered"):
            s.analyst_query("SELECT 2")
