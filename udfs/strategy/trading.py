"""The trading stage of the stream job: feature row -> signals -> target position -> orders.

Per instrument, after each feature row (``udfs.pipeline``):

1. the rule strategy (``udfs.strategy.signals``) and, when models are configured, the traded ONNX
model
   and the shadow model (``udfs.strategy.model``) each update their direction; a :class:`Signal` is
   emitted whenever one changes (shadow signals carry ``traded=False``: recorded, never traded);
2. A/B split: :func:`udfs.strategy.signals.model_traded` (stable hash of the instrument) decides
whether
   the model or the rule trades this instrument;
3. the traded strategy's new direction is sized (``udfs.strategy.sizing``: volatility target,
capped by
   fractional Kelly for the model, whose edge is ``(2p - 1) * rv``, and by the notional limit)
   into a target position in lots;
4. ``udfs.strategy.orders.orders_for_target`` turns the difference to the position already ordered
into
   one order with a deterministic id (strategy, instrument, seq, exchange time); its
   ``ts_event`` is the decision time, exchange time plus the configured feed latency. The
   previous order of the strategy is cancelled first (a CANCEL with its id): a new decision
   replaces the old one, so stale passive orders do not keep filling against the new view;
5. ``strategy.execution`` sends that order as it is (``direct``), as TWAP child slices spread
   over ``twap_horizon_ms`` of event time, or as POV children released as the instrument's
   trades print (``pov_participation`` of the traded volume), all with deterministic ids.

The stage tracks the position it has *ordered* (not filled: fills come back from the execution
sink, a separate job); that is the standard open-loop design of a signal stage, and it keeps the
stage a pure function of the event stream, so a replay re-creates the same orders.

Every ``heartbeat_ms`` of event time it also emits a heartbeat on the orders topic (see
``OrderAction.HEARTBEAT``).
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from dataclasses import dataclass, field, replace

from udfs.config import PROJECT_ROOT, Config
from udfs.latency import LatencyModel
from udfs.schema import (
    TRADE_KINDS,
    DriftRow,
    L2Event,
    Order,
    OrderAction,
    OrderSide,
    OrderType,
    Signal,
)
from udfs.strategy.drift import DriftMonitor, DriftWindow
from udfs.strategy.model import ModelState, OnnxModel, model_signal
from udfs.strategy.orders import PovSlicer, orders_for_target, twap_children
from udfs.strategy.registry import Assignment, ModelRef, Registry, canary_routed
from udfs.strategy.signals import RULE_STRATEGY, RuleState, model_traded, rule_signal
from udfs.strategy.sizing import instrument_capital, load_capital_weights, target_position_lots

__all__ = ["ModelUnavailableError", "RecordedTraders", "Trader", "TradingState", "heartbeat"]

logger = logging.getLogger(__name__)

HEARTBEAT_MS = 100
"""Event-time spacing of heartbeats on the orders topic."""


@dataclass(slots=True)
class TradingState:
    """Per-instrument trading state (part of the Flink keyed state)."""

    rule: RuleState = field(default_factory=RuleState)
    model: ModelState = field(default_factory=ModelState)
    shadow: ModelState = field(default_factory=ModelState)
    """``model``, ``shadow``: unused since the registry (kept so that older snapshots, which
    hold them, still unpickle; their values seed ``models`` there)"""
    models: dict[str, ModelState] = field(default_factory=dict)
    """per model name: a promoted or rolled-back model keeps its state"""
    position: int = 0
    """lots ordered so far by the traded strategy (open loop)"""
    signals: int = 0
    orders: int = 0
    last_heartbeat_ts: int = 0
    working: list[Order] = field(default_factory=list)
    """orders of the traded strategy's last decision (the order, or its TWAP/POV children):
    cancelled when the next decision replaces it"""
    pov: PovSlicer | None = None
    """the POV parent being worked, released against the instrument's trades"""
    feed_rng: random.Random | None = None
    """seeded stream of feed-latency draws (when a recorded distribution is configured)"""
    drift: DriftWindow = field(default_factory=DriftWindow)
    """the live model's open drift window (``udfs.strategy.drift``)"""


def heartbeat(instrument: str, ts_event: int, seq: int) -> Order:
    return Order(
        order_id="",
        instrument=instrument,
        strategy="",
        action=OrderAction.HEARTBEAT,
        side=OrderSide.BUY,
        order_type=OrderType.LIMIT,
        price=0,
        quantity=0,
        price_exp=0,
        size_exp=0,
        ts_event=ts_event,
        source_seq=seq,
    )


class ModelUnavailableError(RuntimeError):
    """A model of a recorded assignment can no longer be loaded as it was (file gone or
    changed): the records traded under it cannot be replayed as they were traded."""


def _ref(model: OnnxModel | None) -> ModelRef | None:
    if model is None:
        return None
    return ModelRef(model.path, model.name, model.version, model.sha256)


def _model_file(path: str) -> OnnxModel:
    """The model at ``path`` (relative to the project root, as the registry names it)."""
    model = OnnxModel.load(PROJECT_ROOT / path)
    model.path = path
    return model


def _recorded_model(ref: ModelRef | None) -> OnnxModel | None:
    if ref is None:
        return None
    full = PROJECT_ROOT / ref.path
    if not ref.path or not full.is_file() or not full.with_suffix(".json").is_file():
        raise ModelUnavailableError(
            f"model {ref.name} v{ref.version}: {full} (or its .json) no longer exists"
        )
    model = _model_file(ref.path)
    if model.sha256 != ref.sha256:
        raise ModelUnavailableError(
            f"model {ref.name} v{ref.version}: {full} changed since (sha256 "
            f"{model.sha256[:16]}..., recorded {ref.sha256[:16]}...)"
        )
    return model


class Trader:
    """Stateless between calls (state lives in :class:`TradingState`); picklable, so the Flink
    function can carry it to its workers. Models travel as bytes inside :class:`OnnxModel`."""

    def __init__(
        self,
        cfg: Config,
        model: OnnxModel | None = None,
        shadow: OnnxModel | None = None,
        canary_share: float = 0.0,
    ) -> None:
        self.strategy = cfg.strategy
        self.sizing = cfg.sizing
        weights_path = cfg.sizing.capital_weights_path
        self.capital_weights = (
            load_capital_weights(PROJECT_ROOT / weights_path) if weights_path else None
        )
        """per-instrument capital shares (e.g. HRP), None: each sized on the whole capital"""
        self.feed_latency_model = LatencyModel.from_config(
            cfg.venue.feed_latency_ms, cfg.venue.feed_latency_samples_path
        )
        self.latency_seed = cfg.venue.latency_seed
        self.min_feed_latency_ns = self.feed_latency_model.min_ns
        """heartbeats use the smallest possible feed latency: no later decision can be
        stamped before a heartbeat already sent"""
        self.signal_ns = 0
        """wall clock of the last traded signal (the orders' latency trace, udfs.latency)"""
        self._set_models(model, shadow, canary_share)

    def _set_models(
        self, model: OnnxModel | None, shadow: OnnxModel | None, canary_share: float
    ) -> None:
        self.model = model
        """the registry's live model"""
        self.shadow = shadow
        """the registry's canary: scored on every row, trades ``canary_share`` of the
        instruments the model trades (0: a shadow)"""
        self.canary_share = canary_share
        self.drift = (
            None
            if model is None
            else DriftMonitor.of_model(
                model.metadata, self.strategy.drift_every_rows, self.strategy.drift_psi_alert
            )
        )
        """the live model's drift windows (None: off, or its card has no drift_reference)"""
        self.assignment = Assignment(_ref(model), _ref(shadow), canary_share)
        """the exact models and share this trader trades under (kept per instrument in the
        job's keyed state: a restore replays under it, see :class:`RecordedTraders`)"""

    @staticmethod
    def load(cfg: Config) -> Trader:
        """The registry's live and canary models (:mod:`udfs.strategy.registry`; paths
        relative to the project root): the configured ``model_path`` and
        ``shadow_model_path`` until ``bookstream model`` changes them."""

        def _load(path: str) -> OnnxModel | None:
            if not path:
                return None
            if not (PROJECT_ROOT / path).is_file():
                raise FileNotFoundError(
                    f"model file {PROJECT_ROOT / path} not found (strategy.model_path / "
                    "strategy.shadow_model_path; `python "
                    "models/train_model.py` writes them)"
                )
            return _model_file(path)

        reg = Registry.load(
            cfg.model_registry_path,
            live=cfg.strategy.model_path,
            canary=cfg.strategy.shadow_model_path,
        )
        return Trader(cfg, _load(reg.live), _load(reg.canary), reg.canary_share)

    def under(self, assignment: Assignment) -> Trader:
        """This trader's settings with the models of ``assignment``, loaded again from the
        recorded files and checked against the recorded hashes
        (:class:`ModelUnavailableError`: a file gone or changed)."""
        if assignment == self.assignment:
            return self
        trader = copy.copy(self)
        trader._set_models(
            _recorded_model(assignment.live),
            _recorded_model(assignment.canary),
            assignment.canary_share,
        )
        return trader

    def _model_states(self, state: TradingState) -> dict[str, ModelState]:
        try:
            return state.models
        except AttributeError:  # a snapshot from before the registry: its two slots by name
            seeded = {}
            if self.model is not None:
                seeded[self.model.name] = state.model
            if self.shadow is not None:
                seeded[self.shadow.name] = state.shadow
            state.models = seeded
            return seeded

    def on_drift(self, state: TradingState, row: dict, watermark: int) -> list[DriftRow]:
        """The drift rows of the live model's windows that feature ``row`` and the
        instrument's ``watermark`` (exchange time, ns) close (``udfs.strategy.drift``)."""
        if self.drift is None:
            return []
        try:
            window = state.drift
        except AttributeError:  # a snapshot from before drift windows: a first window
            window = state.drift = DriftWindow()
        return self.drift.on_row(window, row["instrument"], row, watermark)

    def feed_latency(self, state: TradingState, instrument: str) -> int:
        """Exchange -> decision latency, ns: the constant, or a draw from the recorded
        distribution with a per-instrument seeded stream kept in the keyed state (so a replay
        and a restored job draw the same sequence)."""
        if self.feed_latency_model.samples is None:
            return self.feed_latency_model.constant_ns
        if state.feed_rng is None:
            state.feed_rng = random.Random(f"feed:{self.latency_seed}:{instrument}")
        return self.feed_latency_model.draw(state.feed_rng)

    def _execute(self, state: TradingState, parent: Order, decision_ts: int) -> list[Order]:
        """How a decision's order goes out (``strategy.execution``): at once (``direct``),
        as TWAP slices over ``twap_horizon_ms`` of event time, or as POV children released
        against the market's trades (none at once)."""
        algo = self.strategy.execution
        if algo == "twap":
            return twap_children(
                parent,
                decision_ts,
                decision_ts + self.strategy.twap_horizon_ms * 1_000_000,
                self.strategy.twap_slices,
            )
        if algo == "pov":
            state.pov = PovSlicer(parent, self.strategy.pov_participation)
            return []
        return [parent]

    def on_features(
        self, state: TradingState, row: dict, ev: L2Event | None = None
    ) -> tuple[list[Signal], list[Order]]:
        """Signals and orders after feature ``row``; ``ev`` is the event that produced it
        (its trades feed a POV parent)."""
        instrument = row["instrument"]
        model_arm = self.model is not None and model_traded(instrument, self.strategy.model_share)
        canary_arm = (
            model_arm
            and self.shadow is not None
            and self.canary_share > 0
            and canary_routed(instrument, self.canary_share)
        )
        signals: list[Signal] = []

        rule = rule_signal(state.rule, row, self.strategy)
        if rule is not None:
            rule.traded = not model_arm
            signals.append(rule)
        models = self._model_states(state)
        model = live_state = None
        if self.model is not None:
            live_state = models.get(self.model.name) or models.setdefault(
                self.model.name, ModelState()
            )
            model = model_signal(
                self.model, live_state, row, self.strategy, traded=model_arm and not canary_arm
            )
            if model is not None:
                signals.append(model)
        shadow = canary_state = None
        if self.shadow is not None:
            canary_state = models.get(self.shadow.name) or models.setdefault(
                self.shadow.name, ModelState()
            )
            shadow = model_signal(self.shadow, canary_state, row, self.strategy, traded=canary_arm)
            if shadow is not None:
                signals.append(shadow)
        state.signals += len(signals)

        orders: list[Order] = []
        traded = (shadow if canary_arm else model) if model_arm else rule
        if traded is not None:
            self.signal_ns = time.time_ns()
            decision_ts = row["ts_event"] + self.feed_latency(state, instrument)
            edge = None
            if model_arm:
                traded_state = canary_state if canary_arm else live_state
                assert traded_state is not None
                p = traded_state.last_score
                edge = (2 * p - 1) * float(row["rv"]) if math.isfinite(p) else None
            capital = (
                None
                if self.capital_weights is None
                else instrument_capital(self.sizing, self.capital_weights, instrument)
            )
            target = target_position_lots(traded.direction, row, self.sizing, edge, capital)
            strategy = traded.strategy if model_arm else RULE_STRATEGY
            parents = [
                replace(order, ts_event=decision_ts, trigger_ts_recv=row["ts_recv"])
                for order in orders_for_target(state.position, target, row, strategy)
            ]
            if parents:
                # a new decision replaces the previous one: what still rests of a stale view
                # must not keep filling (the venue ignores the cancel of a finished order)
                orders += [
                    replace(
                        w, action=OrderAction.CANCEL, ts_event=decision_ts, source_seq=row["seq"]
                    )
                    for w in state.working
                ]
                state.pov = None
                state.working = self._execute(state, parents[0], decision_ts)
                orders += state.working
                state.orders += len(state.working)
            state.position = target
        if state.pov is not None and ev is not None and ev.kind in TRADE_KINDS:
            children = [
                replace(
                    c,
                    ts_event=c.ts_event + self.feed_latency(state, instrument),
                    trigger_ts_recv=ev.ts_recv,
                )
                for c in state.pov.on_trade(ev)
            ]
            orders += children
            state.working += children
            state.orders += len(children)
            if state.pov.done:
                state.pov = None

        ts = row["ts_event"]
        if ts - state.last_heartbeat_ts >= HEARTBEAT_MS * 1_000_000 or orders:
            orders.append(heartbeat(instrument, ts + self.min_feed_latency_ns, row["seq"]))
            state.last_heartbeat_ts = ts
        return signals, orders


class RecordedTraders:
    """The traders a restore replays under, by recorded assignment (:meth:`Assignment.to_json`;
    "" for a job without trading), each built once: the current one, and one per assignment
    the keyed state recorded before the registry changed (:meth:`Trader.under`)."""

    def __init__(self, cfg: Config, current: Trader | None) -> None:
        self.current_text = "" if current is None else current.assignment.to_json()
        """what this job trades under: recorded for each key it processes"""
        self._current = current
        self._cfg = cfg if current is None else None  # a job without trading builds one lazily
        self._by_text: dict[str, Trader | None] = {"": None, self.current_text: current}

    def of(self, recorded: str, key: str) -> Trader | None:
        """The trader of ``recorded``, the assignment ``key``'s logged records were traded
        under. A model file that is gone or changed: :class:`ModelUnavailableError` naming
        the key, the model and its path (replaying under another model would rebuild orders
        and a position the job never had)."""
        if recorded in self._by_text:
            return self._by_text[recorded]
        assignment = Assignment.from_json(recorded)
        base = self._current
        if base is None:
            assert self._cfg is not None
            base = Trader(self._cfg)
        try:
            trader = base.under(assignment)
        except ModelUnavailableError as exc:
            raise ModelUnavailableError(
                f"instrument {key}: its records since the last snapshot were traded under "
                f"{assignment.describe()} and must be replayed under it, but {exc}; restore "
                "that file (the registry's changes name every model that was live or canary)"
            ) from exc
        self._by_text[recorded] = trader
        return trader
