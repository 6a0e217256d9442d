"""``bookstream page``: a live web page of the trading desk's state, pushed by Server-Sent
Events. One thread reads the trading topics (orders, executions, risk, control) from their
first offsets into a :class:`~udfs.execution.blotter.Blotter`; Starlette serves the page
(``/``), the state as JSON (``/state``) and its stream (``/events``: a snapshot whenever it
changed, at most every ``PUSH_EVERY_S``). Loopback only, like every other service here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

from jobs.kafka_io import KafkaRecord, PartitionReader, first_offsets, make_consumer
from udfs.config import Config
from udfs.execution.blotter import Blotter
from udfs.schema import Control, ExecReport, Order, RiskReport, SchemaError, decode_record

__all__ = ["build_app", "run_page"]

logger = logging.getLogger(__name__)

PUSH_EVERY_S = 0.5


class DeskFeed:
    """The blotter, fed from Kafka by a daemon thread; a lock guards it against the page."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.blotter = Blotter(drawdown_mode=cfg.risk.drawdown_mode)
        self.lock = threading.Lock()
        self.undecodable = 0
        t = cfg.topics
        self._kinds: dict[str, type] = {
            t.orders: Order,
            t.executions: ExecReport,
            t.risk: RiskReport,
            t.control: Control,
        }

    def start(self) -> None:
        threading.Thread(target=self._run, name="desk-feed", daemon=True).start()

    def _run(self) -> None:
        starts = {
            (topic, p): o
            for topic in self._kinds
            for p, o in first_offsets(self.cfg, topic).items()
        }
        reader = PartitionReader(make_consumer(self.cfg, "bookstream-page"), starts)
        for poll in reader.polls():
            if poll.records:
                with self.lock:
                    for rec in poll.records:
                        self._apply(rec)

    def _apply(self, rec: KafkaRecord) -> None:
        kind = self._kinds[rec.topic]
        try:
            if rec.value is None:
                raise SchemaError("record", "tombstone")
            item = decode_record(kind, rec.value)
        except (SchemaError, ValueError, TypeError) as exc:
            # a viewer, not a stage: the stages dead-letter bad records; the page counts them
            self.undecodable += 1
            logger.debug("page: %s[%d]@%d not shown: %s", rec.topic, rec.partition, rec.offset, exc)
            return
        b = self.blotter
        if isinstance(item, Order):
            b.on_order(item)
        elif isinstance(item, ExecReport):
            b.on_report(item)
        elif isinstance(item, RiskReport):
            b.on_risk(item)
        elif isinstance(item, Control):
            b.on_control(item)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            snap = self.blotter.snapshot()
        snap["undecodable"] = self.undecodable
        return snap


def build_app(feed: DeskFeed) -> Any:
    from sse_starlette.sse import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    async def page(_request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE)

    async def state(_request: Request) -> JSONResponse:
        return JSONResponse(feed.snapshot())

    async def events(request: Request) -> EventSourceResponse:
        async def stream() -> AsyncIterator[dict[str, str]]:
            seen = -1
            while not await request.is_disconnected():
                snap = feed.snapshot()
                if snap["version"] != seen:
                    seen = int(snap["version"])
                    yield {"event": "state", "data": json.dumps(snap)}
                await asyncio.sleep(PUSH_EVERY_S)

        return EventSourceResponse(stream(), ping=10)

    return Starlette(routes=[Route("/", page), Route("/state", state), Route("/events", events)])


def run_page(cfg: Config, port: int | None = None) -> None:
    """Serve the page until stopped (SIGINT/SIGTERM: uvicorn's graceful shutdown)."""
    import uvicorn

    feed = DeskFeed(cfg)
    feed.start()
    port = cfg.metrics.page_port if port is None else port
    logger.info("live page on http://%s:%d/", cfg.metrics.host, port)
    uvicorn.run(build_app(feed), host=cfg.metrics.host, port=port, log_level="warning")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bookstream desk</title>
<style>
 body{font:14px system-ui,sans-serif;margin:1.2em;background:#fafafa;color:#222}
 h1{font-size:1.2em;margin:0 0 .6em} .row{display:flex;gap:1em;flex-wrap:wrap}
 .card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:12em}
 .card b{display:block;font-size:1.3em} #mode.HALTED{color:#fff;background:#c0392b}
 #mode.REDUCING{background:#f39c12} #mode.ACTIVE{background:#d5f5e3}
 table{border-collapse:collapse;margin-top:1em;width:100%;background:#fff}
 td,th{border-bottom:1px solid #eee;padding:2px 8px;text-align:right}
 td{font-variant-numeric:tabular-nums}
 td:first-child,th:first-child{text-align:left}
</style></head><body>
<h1>bookstream desk <small id="conn">connecting...</small></h1>
<div class="row">
 <div class="card" id="mode">mode <b id="mode-value">-</b><span id="mode-reason"></span></div>
 <div class="card">equity <b id="equity">-</b>realised <span id="realised">-</span>,
   unrealised <span id="unrealised">-</span>, fees <span id="fees">-</span></div>
 <div class="card">orders <b id="n-orders">0</b>acks <span id="n-acks">0</span>, rejects
   <span id="n-rejects">0</span>, fills <span id="n-fills">0</span></div>
 <div class="card">order &rarr; ack ms <b id="ack-p50">-</b>p95 <span id="ack-p95">-</span>,
   p99 <span id="ack-p99">-</span>; fill p50 <span id="fill-p50">-</span></div>
 <div class="card">positions <b id="positions">-</b></div>
</div>
<table><thead><tr><th>order</th><th>instrument</th><th>side</th><th>price</th><th>qty</th>
<th>filled</th><th>status</th></tr></thead><tbody id="orders"></tbody></table>
<script>
const $ = (id) => document.getElementById(id);
const num = (v) => v === null || v === undefined ? "-" : Number(v).toFixed(2);
function show(s) {
  $("mode").className = "card " + s.mode;
  $("mode-value").textContent = s.mode;
  $("mode-reason").textContent = s.mode_reason;
  $("equity").textContent = num(s.pnl.equity);
  $("realised").textContent = num(s.pnl.realised);
  $("unrealised").textContent = num(s.pnl.unrealised);
  $("fees").textContent = num(s.pnl.fees);
  $("n-orders").textContent = s.counts.orders;
  $("n-acks").textContent = s.counts.acks;
  $("n-rejects").textContent = s.counts.rejects;
  $("n-fills").textContent = s.counts.fills;
  $("ack-p50").textContent = num(s.latency_ms.order_to_ack.p50);
  $("ack-p95").textContent = num(s.latency_ms.order_to_ack.p95);
  $("ack-p99").textContent = num(s.latency_ms.order_to_ack.p99);
  $("fill-p50").textContent = num(s.latency_ms.order_to_fill.p50);
  $("positions").textContent =
    Object.entries(s.positions).map(([k, v]) => k + " " + v).join(", ") || "flat";
  const body = $("orders");
  body.replaceChildren(...s.orders.map((o) => {
    const tr = document.createElement("tr");
    tr.className = "order";
    for (const v of [o.order_id, o.instrument, o.side, o.price, o.quantity, o.filled, o.status]) {
      const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
    }
    return tr;
  }));
}
const source = new EventSource("events");
source.addEventListener("state", (e) => {
  $("conn").textContent = "live";
  show(JSON.parse(e.data));
});
source.onerror = () => { $("conn").textContent = "reconnecting..."; };
</script></body></html>
"""
