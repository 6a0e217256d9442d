"""The hops of the trading path as udfs.latency extracts them (the histograms' inputs):
trace parsing, which hops a trace gives on which condition, the venue's hops per order."""

from __future__ import annotations

from udfs.latency import (
    HOPS,
    MAX_LIVE_RECEIVE_NS,
    VenueHops,
    exchange_receive_ns,
    job_hops,
    parse_hops_trace,
)

MS = 1_000_000
TRACE = (1_000 * MS, 1_002 * MS, 1_003 * MS, 1_004 * MS, 1_005 * MS, 1_006 * MS)
"""read, py_in, feature, signal, order, out (wall clock ns)"""


def test_a_trace_is_six_integer_stamps_or_nothing() -> None:
    assert parse_hops_trace(b",".join(str(t).encode() for t in TRACE)) == TRACE
    assert parse_hops_trace(",".join(map(str, TRACE))) == TRACE
    assert parse_hops_trace(None) is None
    assert parse_hops_trace(b"") is None
    assert parse_hops_trace(b"1,2,3,4") is None  # an older job's 3-stamp trace + the sink's
    assert parse_hops_trace(b"1,2,x,4,5,6") is None


def test_job_hops_and_tick_to_order_from_a_replayed_trigger() -> None:
    # a replayed capture: its ts_recv is a day before this run, no receive -> read latency
    hops, tick_to_order = job_hops(TRACE[0] - 86_400_000 * MS, TRACE)
    assert hops == [
        ("read_feature", 3 * MS),
        ("feature_signal", 1 * MS),
        ("signal_order", 1 * MS),
        ("order_out", 1 * MS),
    ]
    assert tick_to_order == 6 * MS


def test_live_trigger_and_live_gateway_read_add_their_hops() -> None:
    hops, _ = job_hops(TRACE[0] - 7 * MS, TRACE, received_ns=TRACE[-1] + 2 * MS)
    assert hops[0] == ("receive_read", 7 * MS)
    assert hops[-1] == ("out_gateway", 2 * MS)
    assert [h for h, _ in hops] == [
        h for h in HOPS if h not in ("exchange_receive", "order_ack", "ack_fill")
    ]
    # just beyond the live bound: no receive hop
    hops, _ = job_hops(TRACE[0] - MAX_LIVE_RECEIVE_NS - 1, TRACE)
    assert "receive_read" not in dict(hops)


def test_a_stamp_missing_or_out_of_order_gives_no_negative_latency() -> None:
    no_signal = (*TRACE[:3], 0, *TRACE[4:])  # an order from no traded signal: signal stamp 0
    hops, _ = job_hops(0, no_signal)
    assert all(ns >= 0 for _, ns in hops)
    assert "signal_order" not in dict(hops) and "feature_signal" not in dict(hops)
    hops, tick_to_order = job_hops(0, (*TRACE[:5], TRACE[0] - 1))  # out before read: another clock
    assert "order_out" not in dict(hops) and tick_to_order == 0


def test_feed_latency_only_where_the_record_has_a_receive_time() -> None:
    assert exchange_receive_ns(5 * MS, 7 * MS) == 2 * MS  # Binance: E and the capture's clock
    assert exchange_receive_ns(5 * MS, 5 * MS) is None  # LOBSTER: ts_recv = ts_event
    assert exchange_receive_ns(5 * MS, 4 * MS) is None  # clocks disagree


def test_venue_hops_decision_to_ack_to_first_fill() -> None:
    venue = VenueHops()
    venue.order("o1", 100 * MS)
    assert venue.report("o1", "ack", 103 * MS, 10) == [("order_ack", 3 * MS)]
    assert venue.report("o1", "fill", 150 * MS, 4) == [("ack_fill", 47 * MS)]
    assert venue.report("o1", "fill", 160 * MS, 0) == []  # only the first fill
    assert not venue.decided and not venue.acked  # done: forgotten
    venue.order("o2", 200 * MS)
    assert venue.report("o2", "reject", 202 * MS, 0) == []
    assert venue.report("o3", "ack", 5 * MS, 1) == []  # an order read before a restart
    venue.report("o3", "canceled", 6 * MS, 0)
    assert not venue.decided and not venue.acked
