"""The one latency model of the trading path: a constant, or seeded draws from a recorded
distribution. The trading stage (feed latency, in the Flink job) and the paper venue (entry and
ack latency, in the execution sink) both use it, so neither imports the other.

Draws come from a ``random.Random`` stream the caller owns and seeds, so a replay or a restored
job draws the same sequence; all values are integer nanoseconds, parsed exactly (no float)."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from udfs.config import PROJECT_ROOT, Config

__all__ = ["NS_PER_MS", "AvailabilityModel", "LatencyModel", "load_latency_samples"]

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
