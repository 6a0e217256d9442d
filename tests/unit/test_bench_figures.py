"""The definitions behind ``make bench``'s capture and exec-sink figures (issue 11): what a
level row is, how the core-over-hftbacktest ratio and the chosen transaction cadence are
computed, and that the exec-sink stage's orders are the trading job's. No timing is asserted.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from jobs.bench import core_pass
from jobs.bench_capture import (
    Pass,
    _head,
    best_pass,
    capture_core_pass,
    per_second,
    speedup,
)
from jobs.bench_exec import choose_cadence, cpu_per_1k_inputs, orders_of
from udfs.config import load_config
from udfs.market.adapters.binance import BinanceAdapter
from udfs.market.adapters.sources import SAMPLE_BINANCE, SAMPLE_LOBSTER, Source
from udfs.pipeline import RecordSource, process_record
from udfs.schema import OrderAction, encode_event


def test_ratio_is_their_cpu_time_over_ours() -> None:
    ours, theirs = Pass(rows=600, wall_s=9.0, cpu_s=2.0), Pass(rows=650, wall_s=1.0, cpu_s=8.0)
    assert speedup(ours, theirs) == 4.0  # CPU time on the same file; wall and rows do not count
    assert speedup(theirs, ours) == 0.25
    assert speedup(Pass(1, 0.0, 0.0), theirs) == 0.0  # nothing measured: no ratio, no error
    assert per_second(1_000, 0.5) == 2_000.0
    assert per_second(1_000, 0.0) == 0.0


def test_best_pass_is_the_least_cpu_time() -> None:
    passes = [Pass(10, 1.0, 3.0), Pass(10, 5.0, 2.0), Pass(10, 0.5, 2.5)]
    assert best_pass(passes) == Pass(10, 5.0, 2.0)


def test_level_rows_are_every_record_the_adapter_emits(tmp_path: Path) -> None:
    """A level row: one per price level of a diff or snapshot (refreshes included), per trade,
    per ticker side; the core pass counts exactly the adapter's records from the raw file."""
    head = _head(SAMPLE_BINANCE[0], 400, tmp_path / "head.gz")
    adapter = BinanceAdapter([head])
    kinds = Counter(ev.kind.value for ev in adapter)
    st = adapter.stats
    assert kinds["trade"] == st.trades > 0
    assert kinds["bbo"] == 2 * st.tickers > 0
    assert kinds["level"] > 0 and kinds["snapshot"] > 0
    cfg = load_config().features
    timed = capture_core_pass(head, cfg)
    assert timed.rows == sum(kinds.values()) == st.events
    assert timed.features > 0 and timed.cpu_s > 0


def test_core_counts_the_feature_rows_the_job_function_writes() -> None:
    """The bench's book + features loop does the work the Flink function does per record: as
    many feature rows as :func:`udfs.pipeline.process_record` on the serialised events."""
    cfg = load_config()
    events = list(Source(lobster=[SAMPLE_LOBSTER]).events())
    rows = core_pass(events, cfg.features)
    states: dict = {}
    job_rows = 0
    src = RecordSource("bench", 0, 0)
    for ev in events:
        states[ev.instrument], result = process_record(
            states.get(ev.instrument),
            ev.instrument,
            encode_event(ev),
            src,
            cfg.features,
            cfg.flink.out_of_orderness_ms,
        )
        job_rows += len(result.features)
    assert rows == job_rows > 0


def test_cadence_is_the_smallest_within_10_percent_of_the_cheapest_cpu() -> None:
    def run(sink: float, broker: float, wall_rate: float) -> dict[str, float]:
        return {
            "sink_cpu_s_per_1k_inputs": sink,
            "broker_cpu_s_per_1k_inputs": broker,
            "inputs_per_s": wall_rate,
        }

    # the wall rates move with the machine's other load: they decide nothing
    runs = {
        200: run(0.089, 0.044, 9_000.0),
        1_000: run(0.071, 0.009, 4_900.0),
        5_000: run(0.064, 0.004, 2_000.0),
        20_000: run(0.064, 0.003, 5_600.0),
    }
    assert cpu_per_1k_inputs(runs[200]) == pytest.approx(0.133)
    assert choose_cadence(runs) == 5_000
    assert choose_cadence(runs, slack=0.0) == 20_000
    assert choose_cadence(runs, slack=0.2) == 1_000  # 0.080 <= 1.2 x 0.067


def test_closing_json_line_carries_the_capture_figures(capsys: pytest.CaptureFixture) -> None:
    """``core_rows_per_s`` is the raw-capture level-rows figure, not stage (a)'s events/s;
    ``core_over_hftbacktest`` beside it; both targets judged on them."""
    from jobs.bench import _report

    stage = {"events": 1_000, "events_per_s": 800_000.0}
    results = {
        "core": stage,
        "record": stage,
        "publish": stage,
        "broker": stage,
        "broker_tools": {
            **stage,
            "producer_events_per_s": 9e5,
            "consumer_events_per_s": 8e5,
        },
        "ladder": {"events": 1_000, "rungs": {}},
        "load_after_ladder": 1.0,
        "capture": {
            "capture": "btcusdt_20240808.gz",
            "repeats": 3,
            "hftbacktest_version": "2.4.4",
            "core": {"rows": 634_033, "wall_s": 3.9, "cpu_s": 3.39, "features": 27_861},
            "hftbacktest": {"rows": 661_379, "wall_s": 1.6, "cpu_s": 1.41, "features": 0},
            "hftbacktest_warmup": {"lines": 5_000, "rows": 1, "wall_s": 3.0, "cpu_s": 2.8},
            "core_rows_per_s": 187_037.0,
            "hftbacktest_rows_per_s": 469_742.0,
            "core_over_hftbacktest": 0.42,
            "core_over_hftbacktest_wall": 0.41,
        },
    }
    summary = _report(results)
    assert summary["core_rows_per_s"] == 187_037.0
    assert summary["core_events_per_s"] == 800_000.0
    assert summary["core_over_hftbacktest"] == 0.42
    assert summary["targets_met"]["core >= 1M level rows/s from raw capture"] is False
    assert summary["targets_met"]["core >= 4x hftbacktest's converter"] is False
    out = capsys.readouterr().out
    assert "0.42x on CPU time" in out
    closing = json.loads(out.strip().splitlines()[-1])
    assert closing["core_rows_per_s"] == 187_037.0


@pytest.mark.slow  # loads the ONNX models: ~2 s
def test_exec_stage_orders_end_with_the_jobs_heartbeat_per_instrument(tmp_path: Path) -> None:
    """The exec-sink stage's orders topic: the trading logic's orders and heartbeats for two
    instruments, then one heartbeat per instrument at its newest exchange time plus the feed
    latency bound, as the job's end-of-input timer writes (so the sink can release all)."""
    from udfs.strategy.trading import Trader

    cfg = load_config()
    events = list(Source(lobster=[SAMPLE_LOBSTER]).events())
    events += list(BinanceAdapter([_head(SAMPLE_BINANCE[0], 400, tmp_path / "head.gz")]))
    orders = list(orders_of(events, cfg))
    assert any(o.action is not OrderAction.HEARTBEAT for o in orders), "the sample makes orders"
    latency = Trader.load(cfg).min_feed_latency_ns
    newest: dict[str, int] = {}
    for ev in events:
        newest[ev.instrument] = max(newest.get(ev.instrument, 0), ev.ts_event)
    assert len(newest) == 2
    ends = {o.instrument: o.ts_event for o in orders[-2:] if o.action is OrderAction.HEARTBEAT}
    assert ends == {inst: ts + latency for inst, ts in newest.items()}


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
