"""The Feast/Redis settings and the environment feature_store.yaml expands: the password
reaches a shell without ever being printed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from jobs.feast_store import _to_push_frame, feast_env, feast_env_shell, offline_frames
from jobs.training_set import entity_grid
from udfs.config import ConfigError, load_config


def test_redis_and_feast_sections_are_settings(tmp_path: Path) -> None:
    cfg = load_config(env={"BOOKSTREAM_REDIS_PORT": "28379", "BOOKSTREAM_FEAST_REGISTRY_DB": "reg"})
    assert cfg.redis.port == 28379
    assert cfg.feast_registry_uri.startswith("postgresql+psycopg2://")
    assert "/reg?passfile=" in cfg.feast_registry_uri
    with pytest.raises(ConfigError, match="BOOKSTREAM_REDIS_PROT"):
        load_config(env={"BOOKSTREAM_REDIS_PROT": "1"})


def test_feast_env_shell_never_prints_the_password(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cr3t'$(x)\n")
    cfg = load_config(env={"BOOKSTREAM_REDIS_PASSWORD_FILE": str(secret)})
    exports = feast_env_shell(cfg)
    assert "s3cr3t" not in exports
    out = subprocess.run(
        ["bash", "-c", exports + '\nprintf %s "$FEAST_REDIS_PASSWORD"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == feast_env(cfg)["FEAST_REDIS_PASSWORD"] == "s3cr3t'$(x)"


def test_push_frame_keeps_the_last_row_per_instrument_in_topic_order() -> None:
    rows = [
        {"instrument": "A", "ts_event": 10, "ts_avail": 1010, "seq": 1, "mid_px": 1.0},
        {"instrument": "B", "ts_event": 11, "ts_avail": 1011, "seq": 1, "mid_px": 2.0},
        {"instrument": "A", "ts_event": 12, "ts_avail": 6001, "seq": 2, "mid_px": 3.0},
    ]
    frame = _to_push_frame(rows).set_index("instrument")
    assert frame.loc["A", "mid_px"] == 3.0 and frame.loc["B", "mid_px"] == 2.0
    assert frame.loc["A", "event_time"].value == 12
    # the views' timestamp: availability in microseconds, rounded up (6.001 us -> 7 us)
    assert frame.loc["A", "available_time"].value == 7_000


def _lake_rows(rows: list[tuple]) -> pa.Table:
    """(instrument, ts_event, ts_avail or None, offset) as the lake's features table has them."""
    return pa.table(
        {
            "instrument": [r[0] for r in rows],
            "seq": [r[3] for r in rows],
            "ts_event": pa.array([r[1] for r in rows], pa.int64()),
            "ts_avail": pa.array([r[2] for r in rows], pa.int64()),
            "event_time": pa.array([r[1] // 1000 for r in rows], pa.timestamp("us")),
            "_partition": pa.array([0] * len(rows), pa.int32()),
            "_offset": pa.array([r[3] for r in rows], pa.int64()),
        }
    )


def _ts(row: dict) -> dict:
    return {k: pd.Timestamp(v) if k == "available_time" else v for k, v in row.items()}


def test_offline_frames_round_availability_up_and_keep_the_last_of_equal_times() -> None:
    cfg = load_config(env={})
    lag = 6_000_000  # the default 1 ms feed + 5 ms processing
    rows = [
        ("A", 1_000_000_000, 1_006_000_000, 1),
        ("A", 1_000_000_400, 1_006_000_400, 2),  # same us of exchange time as offset 1
        ("A", 1_000_001_000, None, 3),  # written before ts_avail existed: derived
        ("B", 2_000_000_000, 2_006_000_001, 4),
    ]
    frames, derived = offline_frames(cfg, _lake_rows(rows))
    assert derived == 1
    known, naive = frames["as_known_at"].to_pylist(), frames["event_time"].to_pylist()
    # availability rounded up to Feast's microseconds (1006000.4 us -> 1006001 us); offsets 2
    # and 3 then share a microsecond: the last in stream order stays
    assert [r["_offset"] for r in known] == [1, 3, 4]
    assert [r["available_time"].value // 1000 for r in map(_ts, known)] == [
        1_006_000,
        1_006_001,
        2_006_001,
    ]
    assert known[1]["ts_avail"] == 1_000_001_000 + lag
    # exchange time rounded down (the lake's event_time): offsets 1 and 2 share a microsecond,
    # the last in stream order stays
    assert [r["_offset"] for r in naive] == [2, 3, 4]


def test_entity_grid_steps_over_each_instruments_own_rows() -> None:
    offline = pa.table(
        {
            "instrument": ["B", "A", "A", "B"],
            "ts_event": pa.array([5_050_000_000, 1_200_000_000, 3_000_000_000, 6_000_000_000]),
        }
    )
    grid = entity_grid(offline, 0, 10**10, 1000)
    assert list(zip(grid["instrument"], grid["entity_ts_ns"], strict=True)) == [
        ("A", 2_000_000_000),
        ("A", 3_000_000_000),
        ("B", 6_000_000_000),
    ]
    assert [t.value for t in grid["event_timestamp"]] == list(grid["entity_ts_ns"])
    # only rows inside [from, to) span the grid: B's start after the window's end
    window = entity_grid(offline, 0, 3_500_000_000, 1000)
    assert window["entity_ts_ns"].tolist() == [2_000_000_000, 3_000_000_000]
