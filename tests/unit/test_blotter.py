"""The desk blotter (udfs/execution/blotter.py) behind the live page: what it shows for a known
sequence of trading records, including reports read before their order."""

from __future__ import annotations

from udfs.execution.blotter import Blotter, decimal_text, percentiles_ms
from udfs.schema import (
    Control,
    ControlCommand,
    ExecKind,
    ExecReport,
    Order,
    OrderAction,
    OrderSide,
    OrderType,
    RiskReport,
)

MS = 1_000_000


def _order(oid: str, ts: int, price: int = 58571) -> Order:
    return Order(
        order_id=oid,
        instrument="AAPL.XNAS",
        strategy="t",
        action=OrderAction.NEW,
        side=OrderSide.BUY,
        order_type=OrderType.LIMIT,
        price=price,
        quantity=10,
        price_exp=-2,
        size_exp=0,
        ts_event=ts,
        source_seq=1,
    )


def _report(oid: str, kind: ExecKind, ts: int, qty: int = 0, leaves: int = 10) -> ExecReport:
    return ExecReport(
        report_id=f"{oid}:{kind.value}:{ts}",
        order_id=oid,
        instrument="AAPL.XNAS",
        kind=kind,
        ts_event=ts,
        fill_qty=qty,
        leaves_qty=leaves,
    )


def test_orders_reports_risk_and_controls_make_the_desk_view() -> None:
    b = Blotter()
    b.on_order(_order("a", 100 * MS))
    b.on_report(_report("a", ExecKind.ACK, 103 * MS))
    b.on_report(_report("b", ExecKind.ACK, 205 * MS))  # read before its order
    b.on_order(_order("b", 200 * MS, price=58500))
    b.on_report(_report("a", ExecKind.FILL, 150 * MS, qty=10, leaves=0))
    b.on_risk(
        RiskReport(
            ts_event=300 * MS,
            var_99=1.0,
            es_99=2.0,
            drawdown=0.5,
            equity=12.5,
            realised_pnl=13.0,
            unrealised_pnl=0.25,
            fees=0.75,
            positions={"AAPL.XNAS": 10},
        )
    )
    snap = b.snapshot()
    assert snap["counts"] == {"orders": 2, "acks": 2, "rejects": 0, "fills": 1, "cancels": 0}
    orders = snap["orders"]
    assert isinstance(orders, list)
    assert [(o["order_id"], o["price"], o["status"], o["filled"]) for o in orders] == [
        ("b", "585", "working", 0),
        ("a", "585.71", "filled", 10),
    ]
    latency = snap["latency_ms"]
    assert isinstance(latency, dict)
    assert latency["order_to_ack"] == {"p50": 3.0, "p95": 5.0, "p99": 5.0, "max": 5.0, "n": 2}
    assert latency["order_to_fill"]["p50"] == 50.0
    assert snap["positions"] == {"AAPL.XNAS": 10} and snap["pnl"]["equity"] == 12.5  # type: ignore[index]
    assert snap["mode"] == "ACTIVE"
    b.on_control(Control(ControlCommand.KILL, "", "desk: stop", 400 * MS))
    assert b.snapshot()["mode"] == "HALTED" and b.mode_reason == "kill: desk: stop"
    b.on_control(Control(ControlCommand.KILL_TRIPPED, "", "drawdown", 500 * MS))
    assert b.mode == "REDUCING"  # the sink's guard: risk.drawdown_mode
    b.on_control(Control(ControlCommand.RESUME, "", "", 600 * MS))
    assert b.mode == "ACTIVE" and b.version == 9


def test_prices_are_exact_decimal_text_and_percentiles_nearest_rank() -> None:
    assert decimal_text(58571, -2) == "585.71" and decimal_text(1, -8) == "0.00000001"
    assert decimal_text(12, 3) == "12000" and decimal_text(0, -2) == "0"
    from collections import deque

    p = percentiles_ms(deque(n * MS for n in range(1, 101)))
    assert (p["p50"], p["p95"], p["p99"], p["max"], p["n"]) == (50.0, 95.0, 99.0, 100.0, 100)
    assert percentiles_ms(deque())["n"] == 0
