"""Availability time of a feature row (issue 12 §3): ``ts_avail`` = exchange time + the
modelled feed latency + the job's modelled processing latency, in event time, set by the
stream job's own per-record function on the real LOBSTER sample, the same on a second run."""

from __future__ import annotations

from pathlib import Path

from udfs.config import load_config
from udfs.latency import NS_PER_MS, AvailabilityModel, LatencyModel
from udfs.market.adapters.lobster import iter_lobster_events
from udfs.market.adapters.sources import SAMPLE_LOBSTER
from udfs.pipeline import RecordSource, process_record
from udfs.schema import encode_event

SRC = RecordSource("events", 0, 0)


def _rows(model: AvailabilityModel) -> list[dict]:
    cfg = load_config(env={})
    state = None
    rows: list[dict] = []
    for ev in iter_lobster_events(*SAMPLE_LOBSTER):
        state, res = process_record(
            state,
            ev.instrument,
            encode_event(ev),
            SRC,
            cfg.features,
            cfg.flink.out_of_orderness_ms,
            availability=model,
        )
        rows += res.features
    return rows


def test_default_availability_is_exchange_time_plus_feed_and_processing_latency() -> None:
    cfg = load_config(env={})
    model = AvailabilityModel.from_config(cfg)
    rows = _rows(model)
    assert rows, "the sample gives feature rows"
    lag = cfg.venue.feed_latency_ms * NS_PER_MS + cfg.features.processing_latency_us * 1000
    assert lag == 6 * NS_PER_MS  # 1 ms feed + 5 ms processing, the defaults
    assert all(r["ts_avail"] == r["ts_event"] + lag for r in rows)
    # the default argument of process_record is the default settings' model
    state = None
    for ev in list(iter_lobster_events(*SAMPLE_LOBSTER))[:200]:
        state, res = process_record(state, ev.instrument, encode_event(ev), SRC, cfg.features, 2000)
        for r in res.features:
            assert r["ts_avail"] == r["ts_event"] + lag


def test_settings_move_it_and_a_recorded_distribution_draws_per_row(tmp_path: Path) -> None:
    cfg = load_config(
        env={
            "BOOKSTREAM_VENUE_FEED_LATENCY_MS": "3",
            "BOOKSTREAM_FEATURES_PROCESSING_LATENCY_US": "250",
        }
    )
    rows = _rows(AvailabilityModel.from_config(cfg))
    assert all(r["ts_avail"] == r["ts_event"] + 3 * NS_PER_MS + 250_000 for r in rows)

    samples = tmp_path / "feed.txt"
    samples.write_text("0.5\n2\n7.25\n")
    cfg = load_config(env={"BOOKSTREAM_VENUE_FEED_LATENCY_SAMPLES_PATH": str(samples)})
    model = AvailabilityModel.from_config(cfg)
    first, second = _rows(model), _rows(AvailabilityModel.from_config(cfg))
    feeds = [r["ts_avail"] - r["ts_event"] - 5 * NS_PER_MS for r in first]
    assert set(feeds) == {500_000, 2_000_000, 7_250_000}  # every sample used, nothing else
    # a function of the row alone: a replay (a fresh model, fresh state) gives the same values
    assert [r["ts_avail"] for r in first] == [r["ts_avail"] for r in second]


def test_keyed_draw_depends_on_the_key_only() -> None:
    model = LatencyModel(constant_ns=1, samples=(10, 20, 30, 40))
    keys = [f"avail:7:X:{k}:{k * 3}" for k in range(200)]
    once = [model.keyed(k) for k in keys]
    assert once == [model.keyed(k) for k in reversed(keys)][::-1]
    assert set(once) == {10, 20, 30, 40}
    assert LatencyModel(constant_ns=5).keyed("anything") == 5
