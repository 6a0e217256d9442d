"""The model registry (udfs/strategy/registry.py): its changes, the canary's stable routing, and
the trading stage under it on the real LOBSTER sample (AAPL: an instrument the model trades),
including a promotion across a checkpoint (the keyed state pickled and restored)."""

from __future__ import annotations

import pickle
from functools import cache
from pathlib import Path

import pytest

from udfs.config import load_config
from udfs.market.adapters.lobster import iter_lobster_events
from udfs.market.adapters.sources import SAMPLE_LOBSTER
from udfs.pipeline import process_events
from udfs.schema import L2Event, Order, OrderAction, Signal, decode_record, encode_event
from udfs.strategy.registry import Registry, RegistryError, canary_routed
from udfs.strategy.signals import model_traded
from udfs.strategy.trading import Trader

V1, V2 = "models/book_lr_v1.onnx", "models/book_lr_v2.onnx"


def test_promote_and_rollback_are_recorded_transitions() -> None:
    reg = Registry(live=V1, canary=V2)
    with pytest.raises(RegistryError, match="not the canary"):
        reg.promote("book_lr_v1", "t0")
    with pytest.raises(RegistryError, match="never live"):
        reg.rollback("book_lr_v2", "t0")
    canary = reg.with_canary(V2, 0.25, "t1")
    assert (canary.live, canary.canary, canary.canary_share) == (V1, V2, 0.25)
    promoted = canary.promote("book_lr_v2", "t2")
    assert (promoted.live, promoted.canary, promoted.canary_share) == (V2, V1, 0.0)
    back = promoted.rollback("book_lr_v1", "t3")
    assert (back.live, back.canary) == (V1, V2)
    assert [c["action"] for c in back.changes] == ["canary", "promote", "rollback"]
    assert [c["previous_live"] for c in back.changes] == [V1, V1, V2]
    with pytest.raises(RegistryError):
        Registry(live=V1, canary=V2, canary_share=1.5)
    with pytest.raises(RegistryError):
        Registry(live=V1, canary="", canary_share=0.5)


def test_the_registry_file_round_trips_and_defaults_to_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "models" / "registry.json"
    assert Registry.load(path, live=V1, canary=V2) == Registry(live=V1, canary=V2)
    reg = Registry(live=V1, canary=V2).with_canary(V2, 0.5, "t").promote("book_lr_v2", "u")
    reg.save(path)
    assert Registry.load(path, live="x", canary="y") == reg


def test_canary_routing_is_stable_and_only_grows_with_the_share() -> None:
    names = [f"INST{i}.X" for i in range(2000)]
    at = {s: {n for n in names if canary_routed(n, s)} for s in (0.0, 0.1, 0.5, 1.0)}
    assert at[0.0] == set() and at[1.0] == set(names)
    assert at[0.1] <= at[0.5] and 0.05 < len(at[0.1]) / 2000 < 0.15
    assert {n for n in names if canary_routed(n, 0.5)} == at[0.5]  # same draw every time


# --------------------------------------------------------------- trading under the registry


@cache
def _events() -> tuple[L2Event, ...]:
    return tuple(iter_lobster_events(*SAMPLE_LOBSTER))


def _trader(tmp_path: Path, reg: Registry) -> Trader:
    path = tmp_path / f"registry-{len(list(tmp_path.iterdir()))}.json"
    reg.save(path)
    return Trader.load(load_config(env={"BOOKSTREAM_STRATEGY_REGISTRY_PATH": str(path)}))


def _run(trader: Trader, events, state=None) -> tuple[object, list[Signal], list[Order]]:
    """The pure pipeline over ``events`` of the LOBSTER sample (one instrument: one state)."""
    cfg = load_config()
    states = None if state is None else {events[0].instrument: state}
    states, out = process_events(
        events, cfg.features, cfg.flink.out_of_orderness_ms, trader, states
    )
    (state,) = states.values()
    return state, out.signals, out.orders


def _by(signals: list[Signal], strategy: str) -> list[Signal]:
    return [s for s in signals if s.strategy == strategy]


def _new_orders(orders: list[Order]) -> list[Order]:
    return [o for o in orders if o.action is OrderAction.NEW]


def test_a_full_canary_trades_what_the_live_model_traded_before(tmp_path: Path) -> None:
    events = _events()
    assert model_traded(events[0].instrument, load_config().strategy.model_share)
    _, shadow_sig, shadow_orders = _run(_trader(tmp_path, Registry(live=V1, canary=V2)), events)
    _, canary_sig, canary_orders = _run(
        _trader(tmp_path, Registry(live=V1, canary=V2, canary_share=1.0)), events
    )
    for signals in (shadow_sig, canary_sig):  # both models score every row in both runs
        assert _by(signals, "onnx:book_lr_v1") and _by(signals, "onnx:book_lr_v2")
    # share 0: v2 is a shadow; share 1: it trades and v1 is recorded only
    assert {s.traded for s in _by(shadow_sig, "onnx:book_lr_v2")} == {False}
    assert {s.traded for s in _by(shadow_sig, "onnx:book_lr_v1")} == {True}
    assert {s.traded for s in _by(canary_sig, "onnx:book_lr_v2")} == {True}
    assert {s.traded for s in _by(canary_sig, "onnx:book_lr_v1")} == {False}
    # the same scores either way: routing changes who trades, not what a model says
    strip = [(s.strategy, s.ts_event, s.direction, s.score) for s in shadow_sig]
    assert strip == [(s.strategy, s.ts_event, s.direction, s.score) for s in canary_sig]
    assert {o.strategy for o in _new_orders(shadow_orders)} == {"onnx:book_lr_v1"}
    assert {o.strategy for o in _new_orders(canary_orders)} == {"onnx:book_lr_v2"}
    # the orders follow the canary's direction changes
    assert len(_new_orders(canary_orders)) > 0


def test_a_promotion_across_a_checkpoint_keeps_each_models_state(tmp_path: Path) -> None:
    """Uninterrupted (v1 live, v2 shadow) vs stopped halfway (the keyed state pickled, as a
    checkpoint does), v2 promoted, restored: every model signal after the restore is the
    uninterrupted run's (same time, direction, score: each model continues from its own
    state, kept by name), v2's now traded, v1's recorded only; the orders after it are v2's."""
    events = _events()
    cut = len(events) // 2
    while not events[cut - 1].is_last:
        cut += 1
    reg = Registry(live=V1, canary=V2)
    _, whole_sig, _ = _run(_trader(tmp_path, reg), events)
    state, first_sig, _ = _run(_trader(tmp_path, reg), events[:cut])
    restored = pickle.loads(pickle.dumps(state))
    promoted = _trader(tmp_path, reg.with_canary(V2, 0.5, "t").promote("book_lr_v2", "u"))
    _, after_sig, after_orders = _run(promoted, events[cut:], restored)

    def key(s: Signal) -> tuple:
        return (s.ts_event, s.seq, s.strategy, s.direction, s.score)

    # per row the live model's signal comes first: after the promotion that is v2's
    whole_models = sorted(key(s) for s in whole_sig if s.strategy.startswith("onnx:"))
    split_models = sorted(key(s) for s in first_sig + after_sig if s.strategy.startswith("onnx:"))
    assert len(_by(after_sig, "onnx:book_lr_v2")) > 3
    assert split_models == whole_models
    assert {s.traded for s in _by(after_sig, "onnx:book_lr_v2")} == {True}
    assert {s.traded for s in _by(after_sig, "onnx:book_lr_v1")} == {False}
    assert _new_orders(after_orders)
    assert {o.strategy for o in _new_orders(after_orders)} == {"onnx:book_lr_v2"}


def test_a_snapshot_from_before_the_registry_continues_by_model_name(tmp_path: Path) -> None:
    """Older keyed state holds the two models' states in the slots ``model``/``shadow`` and no
    ``models``: restored, the slots are taken as today's live and canary model's."""
    events = _events()
    cut = len(events) // 3
    while not events[cut - 1].is_last:
        cut += 1
    trader = _trader(tmp_path, Registry(live=V1, canary=V2))
    _, whole_sig, _ = _run(trader, events)
    state, first_sig, _ = _run(trader, events[:cut])
    trading = state.trading
    trading.model = trading.models["book_lr_v1"]
    trading.shadow = trading.models["book_lr_v2"]
    del trading.models  # as pickled before the registry existed
    _, after_sig, _ = _run(trader, events[cut:], pickle.loads(pickle.dumps(state)))
    assert first_sig + after_sig == whole_sig


# ------------------------------------ the Flink function's restore under a changed registry


def _job_cfg(tmp_path: Path, reg: Registry):
    """The configuration of a job started under ``reg`` (the registry file rewritten)."""
    path = tmp_path / "registry.json"
    reg.save(path)
    return load_config(env={"BOOKSTREAM_STRATEGY_REGISTRY_PATH": str(path)})


def _job_orders(fn, rt, events, batch: int = 37) -> list[Order]:
    """``events`` through the Flink function (fake keyed state ``rt``) in batches, as the
    micro-batcher hands them over: the orders it routes, heartbeats included."""
    from jobs.stream_job import FIELD, ORDERS, RECORD, encode_batch

    orders: list[Order] = []
    for i in range(0, len(events), batch):
        chunk = events[i : i + batch]
        rt.keys["key"] = chunk[0].instrument
        text = encode_batch(
            (0, i + j, e.ts_event // 1_000_000, 0, encode_event(e).decode())
            for j, e in enumerate(chunk)
        )
        for out in fn.process_element(text, rt):
            for record in out.split(RECORD):
                route, _key, _ts, _hops, value = record.split(FIELD, 4)
                if route == ORDERS:
                    orders.append(decode_record(Order, value))
    return orders


def _started(cfg, rt, snapshot_every: int = 200):
    """A job (re)started on ``rt``'s keyed state: a new function instance under ``cfg``."""
    from jobs.stream_job import StreamJobFunction

    fn = StreamJobFunction(cfg, Trader.load(cfg), snapshot_every=snapshot_every)
    fn.open(rt)
    return fn


def _traded(state) -> tuple:
    """What the traded strategy has ordered: position, working orders, POV parent."""
    t = state.trading
    return (t.position, list(t.working), t.pov, t.orders)


def test_a_restore_replays_under_the_assignment_the_records_were_traded_under(
    tmp_path: Path,
) -> None:
    """v1 live, v2 shadow; checkpoint (snapshot + a log of records since), v2 promoted while
    the job is down, restored: the restored position and working orders are the ones the job
    ordered (v1's, as uninterrupted), the orders after it are v2's from that position; a second
    crash and a rollback to v1 then replay the records since the first restore under v2."""
    pytest.importorskip("pyflink")
    from _keyed_state import FakeRuntime

    events = list(_events())
    # snapshots every 200 records: the first checkpoint holds a snapshot and a log; none is
    # taken between the two restores, so the second's log would span v1's and v2's records
    cut = len(events) // 3
    cut2 = cut + 50
    reg = Registry(live=V1, canary=V2)
    promoted = reg.with_canary(V2, 0.5, "t").promote("book_lr_v2", "u")
    rolled_back = promoted.rollback("book_lr_v1", "v")
    v1, v2 = _trader(tmp_path, reg), _trader(tmp_path, promoted)
    v1_at_cut, _, v1_orders = _run(v1, events[:cut])
    # the case is real: v2 over the same records would have ordered something else
    assert _traded(_run(v2, events[:cut])[0]) != _traded(v1_at_cut)

    rt = FakeRuntime()
    assert _job_orders(_started(_job_cfg(tmp_path, reg), rt), rt, events[:cut]) == v1_orders
    checkpoint = rt.checkpoint()
    key = events[0].instrument
    assert checkpoint.states["records_since_snapshot"].data[key]  # a log to replay

    # restart under the promoted registry
    rt = checkpoint
    fn = _started(_job_cfg(tmp_path, promoted), rt)
    rt.keys["key"] = key
    assert _traded(fn._state_of(key)) == _traded(v1_at_cut)
    expected_state, _, expected = _run(v2, events[cut:cut2], pickle.loads(pickle.dumps(v1_at_cut)))
    got = _job_orders(fn, rt, events[cut:cut2])
    assert got == expected
    assert {o.strategy for o in _new_orders(got)} == {"onnx:book_lr_v2"}
    cancelled = {o.order_id for o in got if o.action is OrderAction.CANCEL}
    assert cancelled & {o.order_id for o in _new_orders(v1_orders)}  # v1's, really sent

    # crash again, v1 rolled back: the records since the first restore replay under v2
    rt = rt.checkpoint()
    fn = _started(_job_cfg(tmp_path, rolled_back), rt)
    rt.keys["key"] = key
    assert _traded(fn._state_of(key)) == _traded(expected_state)
    _, _, expected = _run(_trader(tmp_path, rolled_back), events[cut2:], expected_state)
    got = _job_orders(fn, rt, events[cut2:])
    assert got == expected
    assert {o.strategy for o in _new_orders(got)} == {"onnx:book_lr_v1"}


@pytest.mark.parametrize("change", ["deleted", "edited"])
def test_a_recorded_model_file_gone_or_changed_stops_the_restore_naming_it(
    tmp_path: Path, change: str
) -> None:
    """Replaying under another model would rebuild orders the job never sent: refused, with
    the instrument, the model and its file in the message."""
    pytest.importorskip("pyflink")
    import shutil

    from _keyed_state import FakeRuntime

    from udfs.config import PROJECT_ROOT
    from udfs.strategy.trading import ModelUnavailableError

    models = tmp_path / "models"
    models.mkdir()
    for suffix in (".onnx", ".json"):
        shutil.copy(PROJECT_ROOT / V2.replace(".onnx", suffix), models)
    copied = models / "book_lr_v2.onnx"
    events = list(_events())[:300]
    rt = FakeRuntime()
    job = _started(_job_cfg(tmp_path, Registry(live=V1, canary=str(copied))), rt, 20_000)
    _job_orders(job, rt, events)
    if change == "deleted":
        copied.unlink()
    else:
        card = copied.with_suffix(".json")
        card.write_text(card.read_text().replace('"version": "2"', '"version": "2b"'))
    fn = _started(_job_cfg(tmp_path, Registry(live=V1, canary=V2, canary_share=0.5)), rt)
    rt.keys["key"] = key = events[0].instrument
    said = "no longer exists" if change == "deleted" else "changed since"
    with pytest.raises(ModelUnavailableError, match=said) as err:
        fn._state_of(key)
    assert key in str(err.value) and "book_lr_v2" in str(err.value)
    assert str(copied) in str(err.value)


def test_a_checkpoint_from_before_assignments_were_recorded_replays_under_the_registry(
    tmp_path: Path,
) -> None:
    """Keyed state without ``assignment_traded_under`` (the state of an older job): its log
    replays under the current registry, as it always did, and the assignment is recorded."""
    pytest.importorskip("pyflink")
    from _keyed_state import FakeRuntime

    events = list(_events())
    cut = len(events) // 2
    cfg = _job_cfg(tmp_path, Registry(live=V1, canary=V2))
    rt = FakeRuntime()
    whole = _job_orders(_started(cfg, rt), rt, events[:cut])
    rt.states.pop("assignment_traded_under")  # as an older job's checkpoint holds it
    fn = _started(cfg, rt)
    whole += _job_orders(fn, rt, events[cut:])
    assert whole == _run(_trader(tmp_path, Registry(live=V1, canary=V2)), events)[2]
    rt.keys["key"] = events[0].instrument
    assert rt.states["assignment_traded_under"].value() == fn.traders.current_text
