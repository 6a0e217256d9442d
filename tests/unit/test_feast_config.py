"""The Feast/Redis settings and the environment feature_store.yaml expands: the password
reaches a shell without ever being printed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from jobs.feast_store import _to_push_frame, feast_env, feast_env_shell
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
