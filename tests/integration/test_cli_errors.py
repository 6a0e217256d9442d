"""Expected errors of ``bookstream``: one line on stderr naming the problem and the fix, exit
status 2, no traceback (``-v`` shows it); ``--version``; every subcommand's ``--help`` has a
description and an example. Each case runs the installed command in a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from it_helpers import BOOKSTREAM, PROJECT_ROOT, free_port

from jobs.cli import build_parser

SAMPLE_DIR = PROJECT_ROOT / "data"


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BOOKSTREAM), *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


CASES = {
    "config typo": (["topics"], {"BOOKSTREAM_KAFKA_PROT": "1"}, r"kafka\.prot.*bookstream config"),
    "bad config value": (
        ["topics"],
        {"BOOKSTREAM_STRATEGY_EXECUTION": "twapp"},
        r"strategy\.execution.*twapp.*direct, twap, pov",
    ),
    "stopped broker": (["topics"], {"BOOKSTREAM_KAFKA_PORT": "FREE"}, r"no Kafka broker.*make up"),
    "stopped broker, job": (
        ["stream-job", "--bounded"],
        {"BOOKSTREAM_KAFKA_PORT": "FREE"},
        r"no Kafka broker.*make up",
    ),
    "missing file": (
        ["verify-book", "--lobster", "/no/such/m.csv", "/no/such/o.csv"],
        {},
        r"/no/such/m\.csv.*check the path",
    ),
    "bad SQL": (["sql", "SELECT 1 +"], {}, r"Syntax error.*correct the statement"),
    "SQL outside the lake": (
        ["sql", "SELECT file('/etc/passwd')"],
        {},
        r"file\(\) reaches outside the lake",
    ),
    "stopped Flink cluster": (
        ["jobs"],
        {"BOOKSTREAM_FLINK_CLUSTER_REST_PORT": "FREE"},
        r"no Flink session cluster answers at http://127\.0\.0\.1:\d+.*make cluster-up",
    ),
    "missing config file": (
        ["config"],
        {"BOOKSTREAM_CONFIG": "/no/such/bookstream.toml"},
        r"/no/such/bookstream\.toml does not exist",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_expected_error_is_one_line_exit_2_and_v_shows_the_traceback(case: str) -> None:
    args, env, pattern = CASES[case]
    env = {k: str(free_port()) if v == "FREE" else v for k, v in env.items()}
    proc = _run(args, **env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert re.search(pattern, lines[0]), lines[0]
    # -v after the subcommand: the same error, with its traceback
    verbose = _run([*args, "-v"], **env)
    assert verbose.returncode == 2 and "Traceback (most recent call last)" in verbose.stderr


def test_version_and_v_before_the_subcommand() -> None:
    proc = _run(["--version"])
    assert proc.returncode == 0 and re.fullmatch(
        r"bookstream \d+\.\d+\.\d+\S*", proc.stdout.strip()
    )
    proc = _run(["-v", "config", "--json"])
    assert proc.returncode == 0, proc.stderr


def test_every_subcommand_help_has_a_description_and_an_example() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    names = sorted(set(sub.choices))
    assert {"config", "doctor", "stream-job", "run-job", "sql"} <= set(names)
    for name in names:
        proc = _run([name, "--help"])
        assert proc.returncode == 0, (name, proc.stderr)
        text = proc.stdout
        _usage, _, rest = text.partition("\n\n")
        description = rest.split("\n\n")[0].strip()
        assert description and not description.startswith(("positional", "options")), (name, text)
        assert re.search(r"example:\n  (\S+=\S+ )*bookstream \S", text), (name, text)


def test_python_dash_m_module_runs_the_same_parser() -> None:
    """A job module's ``main`` is the command line's parser (one parser per command)."""
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.execution_sink", "--help"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "bookstream exec-sink" in proc.stdout, proc.stderr
    assert "example:" in proc.stdout


def test_config_prints_toml_with_origins_that_loads_back(tmp_path) -> None:
    proc = _run(["config"], BOOKSTREAM_FLINK_PARALLELISM="2")
    assert proc.returncode == 0, proc.stderr
    assert "parallelism = 2  # env BOOKSTREAM_FLINK_PARALLELISM" in proc.stdout
    assert 'catalog = "sql"  # default' in proc.stdout
    saved = tmp_path / "bookstream.toml"
    saved.write_text(proc.stdout)
    again = _run(["config", "--json"], BOOKSTREAM_CONFIG=str(saved))
    values = json.loads(again.stdout.strip().splitlines()[-1])
    assert values["flink.parallelism"] == {"value": 2, "from": f"file {saved}"}
