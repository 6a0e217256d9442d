"""Local trust, the parts that need no service: configuration values reach the infra/ shell
scripts as data (a value holding quotes, ``$(...)`` or a newline is neither run nor split), the
state directory is its owner's alone, and PyFlink's Python worker pool listens on loopback
only. The services' side (PostgreSQL passwords, the password file's mode, every listener of
Kafka and PostgreSQL on loopback) is tests/integration/test_local_trust.py."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from jobs.doctor import is_loopback, listening_addresses
from udfs.config import PROJECT_ROOT, load_config, secure_state_dir, shell_exports

HOSTILE = "x'; touch {m}/quote; echo '$(touch {m}/subst)`touch {m}/backtick`\"\n$HOME *"


def _hostile_env(tmp_path: Path) -> tuple[dict[str, str], str, Path]:
    marks = tmp_path / "marks"
    marks.mkdir()
    value = HOSTILE.format(m=marks)
    state = tmp_path / f"state $(touch {marks}/state) 'q'"
    env = {
        **os.environ,
        "BOOKSTREAM_STATE_DIR": str(state),
        "BOOKSTREAM_LAKE_POSTGRES_USER": value,
        "BOOKSTREAM_LAKE_POSTGRES_DB": value,
    }
    return env, value, marks


def test_lib_sh_reads_config_values_as_data(tmp_path: Path) -> None:
    env, value, marks = _hostile_env(tmp_path)
    script = (
        'source infra/lib.sh; load_config; printf "%s\\0" '
        '"$POSTGRES_USER" "$POSTGRES_DB" "$BOOKSTREAM_STATE_DIR" "$STATE"'
    )
    out = subprocess.run(
        ["bash", "-c", script], cwd=PROJECT_ROOT, env=env, capture_output=True, check=True
    ).stdout
    user, db, state_dir, state, _ = out.decode().split("\0")
    assert user == value and db == value
    assert state_dir == state == env["BOOKSTREAM_STATE_DIR"]
    assert list(marks.iterdir()) == []  # nothing of the values ran


def test_shell_exports_are_quoted(tmp_path: Path) -> None:
    env, value, marks = _hostile_env(tmp_path)
    exports = shell_exports(load_config(env=env))
    out = subprocess.run(
        ["bash", "-c", exports + '\nprintf "%s\\0" "$POSTGRES_USER"'],
        capture_output=True,
        check=True,
    ).stdout
    assert out.decode() == value + "\0"
    assert list(marks.iterdir()) == []


def test_state_dir_is_its_owners_alone(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    cfg = load_config(env={"BOOKSTREAM_STATE_DIR": str(state)})
    secure_state_dir(cfg)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    state.chmod(0o777)
    subprocess.run(
        ["bash", "-c", "source infra/lib.sh; load_config"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "BOOKSTREAM_STATE_DIR": str(state)},
        check=True,
    )
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    fresh = tmp_path / "fresh" / "state"
    secure_state_dir(load_config(env={"BOOKSTREAM_STATE_DIR": str(fresh)}))
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700


def test_flink_python_worker_pool_listens_on_loopback() -> None:
    pytest.importorskip("pyflink")
    from pyflink.fn_execution.beam.beam_worker_pool_service import (
        BeamFnLoopbackWorkerPoolServicer,
    )

    from jobs.stream_job import worker_pool_on_loopback

    worker_pool_on_loopback()
    # what PyFlink's StreamExecutionEnvironment._open does in local execution
    address = BeamFnLoopbackWorkerPoolServicer().start()
    port = int(address.rsplit(":", 1)[1])
    addrs = listening_addresses(port)
    assert addrs and all(is_loopback(a) for a in addrs), addrs
