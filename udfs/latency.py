"""Latency of the trading path: the one latency *model* (simulated latencies) and the hops
*measured* on every order (Prometheus histograms, jobs/metrics.py).

The model: a constant, or seeded draws from a recorded distribution. The trading stage (feed
latency, in the Flink job) and the paper venue (entry and ack latency, in the execution sink)
both use it, so neither imports the other. Draws come from a ``random.Random`` stream the caller
owns and seeds, so a replay or a restored job draws the same sequence; all values are integer
nanoseconds, parsed exactly (no float).

The hops, exchange -> receive -> read -> feature -> signal -> order -> ack -> fill, each on the
clock that knows both of its ends (:data:`HOPS`):

* ``exchange_receive``: the record's own ``ts_recv - ts_event`` (the capture's feed latency;
  LOBSTER records carry no receive time: no hop). Observed by the publisher.
* ``receive_read`` .. ``order_out``: wall clock of this run, from the trace the stream job
  puts on every order (Kafka header ``bookstream.hops``: the source's read of the triggering
  event, the batch's entry into Python, features computed, traded signal, order made, the Java
  sink handing it to Kafka; ``jobs/java/.../RoutedSerializer.java``). ``receive_read`` only
  when the trigger's ``ts_recv`` is a time of this run (a live feed, or ``make bench``'s
  re-stamped replay): a replayed file's ``ts_recv`` is hours or years old, no latency.
* ``out_gateway``: the job's Kafka send to the execution sink's read (live sinks only: a
  bounded sink reads a finished job's orders afterwards).
* ``order_ack``, ``ack_fill``: the paper venue's clock (event time plus its modelled
  latencies): decision to ack, ack to first fill.

``tick_to_order`` (the latency SLO, infra/prometheus/rules): the job's read of the triggering
event to the order's send, both on the job's wall clock, so a bounded replay measures it too.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from udfs.config import PROJECT_ROOT, Config

__all__ = [
    "HOPS",
    "HOPS_HEADER",
    "NS_PER_MS",
    "AvailabilityModel",
    "LatencyModel",
    "VenueHops",
    "exchange_receive_ns",
    "hops_trace",
    "job_hops",
    "load_latency_samples",
    "parse_hops_trace",
]

NS_PER_MS = 1_000_000


def load_latency_samples(path: str | Path) -> tuple[int, ...]:
    """Recorded latencies, one ms value per line (decimals allowed; blank lines and ``#``
    comments skipped) -> integer ns, exactly. Relative paths are taken from the project root."""
    p = Path(path)
    if not p.is_absolute():
        p = PROJECT_ROOT / p
    out: list[int] = []
    with p.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            text = raw.split("#", 1)[0].strip()
            if not text:
                continue
            try:
                ms = Decimal(text)
            except InvalidOperation:
                raise ValueError(f"{p}:{lineno}: not a latency in ms: {text!r}") from None
            if not ms.is_finite() or ms < 0:
                raise ValueError(f"{p}:{lineno}: latency must be finite and >= 0, got {text!r}")
            out.append(int(ms * NS_PER_MS))
    if not out:
        raise ValueError(f"{p}: no latency samples")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """``constant_ns``, or (when ``samples`` is set) one sample drawn uniformly per call."""

    constant_ns: int
    samples: tuple[int, ...] | None = None

    @classmethod
    def from_config(cls, constant_ms: int, samples_path: str) -> LatencyModel:
        """The configured constant (ms), or the recorded distribution when a path is given."""
        samples = load_latency_samples(samples_path) if samples_path else None
        return cls(constant_ns=constant_ms * NS_PER_MS, samples=samples)

    @property
    def min_ns(self) -> int:
        """The smallest latency this model can return."""
        return min(self.samples) if self.samples else self.constant_ns

    def draw(self, rng: random.Random) -> int:
        """One latency, ns; consumes a draw from ``rng`` only for a distribution."""
        if self.samples is None:
            return self.constant_ns
        return rng.choice(self.samples)

    def keyed(self, key: str) -> int:
        """One latency chosen by ``key`` alone (a stable hash of it, no stream state): the same
        key gives the same latency in every process, replay and restore, whatever was drawn
        before."""
        if self.samples is None:
            return self.constant_ns
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        return self.samples[int.from_bytes(digest, "big") % len(self.samples)]


@dataclass(frozen=True, slots=True)
class AvailabilityModel:
    """When the live path could first have used a feature row, in event time:
    ``ts_avail = ts_event + feed latency + processing latency`` (ns).

    The feed latency is the trading stage's (``venue.feed_latency_ms``, or one sample of
    ``venue.feed_latency_samples_path`` chosen by the row's instrument, ``seq`` and exchange
    time: :meth:`LatencyModel.keyed`), the processing latency ``features.processing_latency_us``.
    A function of the row alone, so a replay gives the same value."""

    feed: LatencyModel
    processing_ns: int
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: Config) -> AvailabilityModel:
        return cls(
            feed=LatencyModel.from_config(
                cfg.venue.feed_latency_ms, cfg.venue.feed_latency_samples_path
            ),
            processing_ns=cfg.features.processing_latency_us * 1000,
            seed=cfg.venue.latency_seed,
        )

    def ts_avail(self, instrument: str, seq: int, ts_event: int) -> int:
        feed = self.feed.keyed(f"avail:{self.seed}:{instrument}:{seq}:{ts_event}")
        return ts_event + feed + self.processing_ns


HOPS = (
    "exchange_receive",
    "receive_read",
    "read_feature",
    "feature_signal",
    "signal_order",
    "order_out",
    "out_gateway",
    "order_ack",
    "ack_fill",
)
"""The measured hops of the trading path, in order (see the module doc for each one's clock)."""
HOPS_HEADER = "bookstream.hops"
"""Kafka header of an order: its trace, comma-separated wall-clock ns (:func:`hops_trace`, the
Java sink appends its own send time)."""
TRACE_STAMPS = ("read", "py_in", "feature", "signal", "order", "out")
"""The stamps of a full trace, in order."""
MAX_LIVE_RECEIVE_NS = 60 * 1_000_000_000
"""A trigger's ``ts_recv`` older than this when the job read it is no receive time of this run
(a replayed capture): its ``receive_read`` hop is not measured."""


def exchange_receive_ns(ts_event: int, ts_recv: int) -> int | None:
    """An event's feed latency; None when the record has no receive time of its own (LOBSTER:
    ``ts_recv == ts_event``) or the clocks disagree (receive before exchange)."""
    if ts_recv == ts_event or ts_recv < ts_event:
        return None
    return ts_recv - ts_event


def hops_trace(read_ns: int, py_in_ns: int, feature_ns: int, signal_ns: int, order_ns: int) -> str:
    """The trace the stream job puts on an order (the Java sink appends the send time)."""
    return f"{read_ns},{py_in_ns},{feature_ns},{signal_ns},{order_ns}"


def parse_hops_trace(header: bytes | str | None) -> tuple[int, ...] | None:
    """The stamps of a ``bookstream.hops`` header (:data:`TRACE_STAMPS`); None when absent or
    not a full trace of integers (an older job's, or a hand-made order's)."""
    if not header:
        return None
    text = header.decode("ascii", "replace") if isinstance(header, bytes) else header
    try:
        stamps = tuple(int(x) for x in text.split(","))
    except ValueError:
        return None
    return stamps if len(stamps) == len(TRACE_STAMPS) else None


def job_hops(
    trigger_ts_recv: int, trace: tuple[int, ...], received_ns: int | None = None
) -> tuple[list[tuple[str, int]], int]:
    """(hop, ns) of one order's trace, and its tick-to-order (ns). ``received_ns``: the
    execution sink's read of the order (None: not a live read, no ``out_gateway``). A negative
    difference (a stamp skipped, clocks of two hosts) is no latency: left out."""
    read, _py_in, feature, signal, order, out = trace  # py_in: the bench splits on it
    hops: list[tuple[str, int]] = []
    if 0 <= read - trigger_ts_recv <= MAX_LIVE_RECEIVE_NS:
        hops.append(("receive_read", read - trigger_ts_recv))
    for name, a, b in (
        ("read_feature", read, feature),
        ("feature_signal", feature, signal),
        ("signal_order", signal, order),
        ("order_out", order, out),
    ):
        if a and b >= a:
            hops.append((name, b - a))
    if received_ns is not None and received_ns >= out:
        hops.append(("out_gateway", received_ns - out))
    return hops, max(out - read, 0)


class VenueHops:
    """``order_ack`` and ``ack_fill`` on the venue's clock: the decision time of every new
    order until its ack, the ack's time until its first fill. Orders end (reject, cancel, last
    fill) are forgotten, so this holds only working orders."""

    def __init__(self) -> None:
        self.decided: dict[str, int] = {}
        self.acked: dict[str, int] = {}

    def order(self, order_id: str, ts_event: int) -> None:
        self.decided[order_id] = ts_event

    def report(
        self, order_id: str, kind: str, ts_event: int, leaves_qty: int
    ) -> list[tuple[str, int]]:
        """One execution report (``ExecKind`` value) -> the hops it closes."""
        out: list[tuple[str, int]] = []
        if kind == "ack":
            decided = self.decided.pop(order_id, None)
            if decided is not None and ts_event >= decided:
                out.append(("order_ack", ts_event - decided))
            self.acked[order_id] = ts_event
        elif kind == "fill":
            acked = self.acked.pop(order_id, None)
            if acked is not None and ts_event >= acked:
                out.append(("ack_fill", ts_event - acked))
            if leaves_qty == 0:
                self.decided.pop(order_id, None)
        else:  # reject, canceled: the order is done
            self.decided.pop(order_id, None)
            self.acked.pop(order_id, None)
        return out
