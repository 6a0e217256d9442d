"""The stream job's Python side, measured per record: ``python -m jobs.bench_python`` (not a
test, not part of ``make bench``: issue 11's profile of the task thread's Python, kept so the
figures can be reproduced).

The function the Flink job runs (:class:`jobs.stream_job.StreamJobFunction`) on the bench's
events (``jobs.bench``: the shipped sample plus, where ``../shared/data`` has it, the first
``--events`` of the Binance USD-M capture), cut into batches of ``--batch`` records per
instrument in arrival order, as MicroBatcher.java hands them over. No JVM: keyed state, context
and timers are dicts (:class:`_Runtime`), as in ``tests/unit/test_stream_batching.py``.

CPU time (``time.process_time``) per event, best of ``--passes``, per stage, each stage the one
before plus one step, so the differences are the components:

    parse     ``parse_batch`` over every batch
    decode    ``udfs.schema.decode_event`` per record
    record    ``udfs.pipeline.process_record`` without a trader: decode, lateness, book,
              quality counters, features, availability
    trading   the same with the trader (signals, orders, drift; two ONNX models per row)
    element   ``StreamJobFunction.process_element``: parsing, the above, keyed state, timers,
              routing and encoding every output

``--digest``: a SHA-256 of every routed output record of the ``element`` stage (wall-clock
fields zeroed), the check that a change kept every output byte. ``--against REF``: the same
measurement on a ``git archive`` of ``REF`` and on this tree in alternating child processes
(same events, same load), digests compared. ``--profile N``: cProfile of ``element``, the top
N functions by own time.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import hashlib
import io
import itertools
import json
import os
import pickle
import pstats
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from udfs.config import PROJECT_ROOT

__all__ = ["main"]

STAGES = ("parse", "decode", "record", "trading", "element")
WALL_CLOCK = re.compile(r'("(?:ts_proc|ts_dead)":)\d+')
"""Fields set from the wall clock when a row is made: zeroed before the digest (as in
``tests/unit/test_stream_batching.py``); an order's latency trace (the hops field) too."""


class _State:
    """ValueState / ListState of one name, per current key, pickled like Flink's."""

    def __init__(self, keys: dict[str, str]) -> None:
        self.keys, self.data = keys, {}  # type: dict[str, str], dict[str, Any]

    def value(self) -> Any:
        raw = self.data.get(self.keys["key"])
        return None if raw is None else pickle.loads(raw)

    def update(self, value: Any) -> None:
        self.data[self.keys["key"]] = pickle.dumps(value)

    def get(self) -> list[Any]:
        return list(self.data.get(self.keys["key"], []))

    def add_all(self, values: list[Any]) -> None:
        self.data.setdefault(self.keys["key"], []).extend(values)

    def clear(self) -> None:
        self.data.pop(self.keys["key"], None)


class _Runtime:
    """Runtime context, keyed context and timer service of one keyed operator, as dicts."""

    def __init__(self) -> None:
        self.keys = {"key": ""}
        self.states: dict[str, _State] = {}  # by descriptor name: the job keeps several
        self.timers: set[tuple[int, str]] = set()

    def get_state(self, desc: Any) -> _State:
        return self.states.setdefault(desc.get_name(), _State(self.keys))

    def get_list_state(self, desc: Any) -> _State:
        return self.get_state(desc)

    def get_current_key(self) -> str:
        return self.keys["key"]

    def timer_service(self) -> _Runtime:
        return self

    def register_event_time_timer(self, ts: int) -> None:
        self.timers.add((ts, self.keys["key"]))


def _batches(source_argv: list[str], limit: int, size: int) -> list[tuple[str, str]]:
    """(key, MicroBatcher.java batch) in the order the batcher hands them over."""
    from jobs.bench import _source_from
    from jobs.stream_job import encode_batch
    from udfs.schema import encode_event

    events = _source_from(source_argv).events()
    if limit:
        events = itertools.islice(events, limit)
    queued: dict[str, list[tuple[int, int, int | None, int, str]]] = {}
    out: list[tuple[str, str]] = []
    for offset, ev in enumerate(events):
        batch = queued.setdefault(ev.instrument, [])
        batch.append((0, offset, ev.ts_event // 1_000_000, 0, encode_event(ev).decode()))
        if len(batch) >= size:
            out.append((ev.instrument, encode_batch(queued.pop(ev.instrument))))
    out.extend((key, encode_batch(batch)) for key, batch in queued.items())
    return out


class _Stages:
    """The stages of :data:`STAGES` over the same batches, each a method returning its CPU
    seconds."""

    def __init__(self, batches: list[tuple[str, str]]) -> None:
        from jobs.stream_job import parse_batch
        from udfs.config import Config
        from udfs.pipeline import RecordSource
        from udfs.strategy.trading import Trader

        self.cfg = Config()
        self.batches = batches
        self.records = [(key, rec[4]) for key, text in batches for rec in parse_batch(text)]
        self.src = RecordSource(self.cfg.topics.events, 0, 0)
        self.trader = Trader.load(self.cfg)
        self.outputs: list[str] = []

    def parse(self) -> float:
        from jobs.stream_job import parse_batch

        t = time.process_time()
        for _key, text in self.batches:
            for _ in parse_batch(text):
                pass
        return time.process_time() - t

    def decode(self) -> float:
        from udfs.schema import decode_event

        t = time.process_time()
        for _key, raw in self.records:
            with contextlib.suppress(Exception):  # a refused record costs what it costs
                decode_event(raw)
        return time.process_time() - t

    def record(self, trader: Any = None) -> float:
        from udfs.latency import AvailabilityModel
        from udfs.pipeline import InstrumentState, process_record

        cfg, src = self.cfg, self.src
        states: dict[str, InstrumentState | None] = {}
        features, quality = cfg.features, cfg.quality
        availability = AvailabilityModel.from_config(cfg)
        bound = cfg.flink.out_of_orderness_ms
        ahead, confirm = cfg.flink.max_ahead_ms, cfg.flink.future_confirm
        t = time.process_time()
        for key, raw in self.records:
            states[key], _ = process_record(
                states.get(key),
                key,
                raw,
                src,
                features,
                bound,
                trader,
                quality,
                ahead,
                confirm,
                availability,
            )
        return time.process_time() - t

    def trading(self) -> float:
        return self.record(self.trader)

    def element(self, keep: bool = False) -> float:
        """The Flink function over every batch; ``keep``: its outputs into :attr:`outputs`,
        end-of-input timers included."""
        from jobs.stream_job import StreamJobFunction

        rt = _Runtime()
        fn = StreamJobFunction(self.cfg, self.trader)
        fn.open(rt)  # the fake runtime context
        kept = self.outputs if keep else None
        t = time.process_time()
        for key, text in self.batches:
            rt.keys["key"] = key
            for out in fn.process_element(text, rt):
                if kept is not None:
                    kept.append(out)
        spent = time.process_time() - t
        if kept is not None:
            for ts, key in sorted(rt.timers):  # end of input: every timer in time order
                rt.keys["key"] = key
                kept.extend(fn.on_timer(ts, rt))
        return spent


def measure(
    source_argv: list[str], limit: int, size: int, passes: int, profile: int, digest: bool
) -> dict[str, Any]:
    """CPU µs per event of each stage in this interpreter (whatever ``udfs``/``jobs`` resolve
    to: this tree or a ``--against`` copy), best of ``passes``."""
    stages = _Stages(_batches(source_argv, limit, size))
    n = len(stages.records)
    result: dict[str, Any] = {
        "events": n,
        "batches": len(stages.batches),
        "root": str(PROJECT_ROOT),
    }
    best = dict.fromkeys(STAGES, float("inf"))
    for _ in range(passes):  # stages interleaved per pass: a load burst hits them all alike
        for name in STAGES:
            best[name] = min(best[name], getattr(stages, name)())
    result.update({f"{name}_us": best[name] / n * 1e6 for name in STAGES})
    if digest:
        stages.element(keep=True)
        result.update(_digest(stages.outputs))
    if profile:
        result["profile"] = _profile(stages.element, profile)
    return result


def _digest(outputs: list[str]) -> dict[str, Any]:
    """How many routed records and the SHA-256 of all of them, wall-clock fields zeroed."""
    from jobs.stream_job import FIELD, RECORD

    h = hashlib.sha256()
    count = 0
    for out in outputs:
        for routed in out.split(RECORD):
            route, key, ts, hops, value = routed.split(FIELD, 4)
            value = WALL_CLOCK.sub(r"\g<1>0", value)
            h.update(FIELD.join((route, key, ts, "0" if hops else "", value)).encode())
            h.update(b"\n")
            count += 1
    return {"outputs": count, "digest": h.hexdigest()}


def _profile(run: Callable[[], float], top: int) -> str:
    """cProfile (CPU time) of one ``run``: the ``top`` functions by own time."""
    prof = cProfile.Profile(time.process_time)
    prof.enable()
    run()
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


def _copy_of(ref: str) -> Path:
    """``git archive`` of ``ref`` under ``.state/bench_python/<ref>``, with this harness in it."""
    dest = PROJECT_ROOT / ".state" / "bench_python" / re.sub(r"[^\w.-]", "_", ref)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", ref], cwd=PROJECT_ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    shutil.copy(Path(__file__), dest / "jobs" / "bench_python.py")
    return dest


def _child(root: Path, child_argv: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(root)}  # before the editable install's path
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.bench_python", "--child", *child_argv],
        cwd=root,
        env=env,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _sources(args: argparse.Namespace) -> list[str]:
    from jobs.bench import SHARED_USDM

    out = ["--sample"]
    if SHARED_USDM.is_file() and not args.sample_only:
        out += ["--binance", str(SHARED_USDM)]
    return out


def _print(label: str, res: dict[str, Any]) -> None:
    us = {name: res[f"{name}_us"] for name in STAGES}
    parts = {
        "parse": us["parse"],
        "decode": us["decode"],
        "book+quality+features": us["record"] - us["decode"],
        "trading": us["trading"] - us["record"],
        "state+routing+encoding": us["element"] - us["trading"] - us["parse"],
        "element (total)": us["element"],
    }
    print(f"{label}: {res['events']:,} events in {res['batches']:,} batches", flush=True)
    for name, value in parts.items():
        print(f"  {name:<24} {value:7.2f} µs/event", flush=True)
    if "digest" in res:
        print(f"  outputs {res['outputs']:,}  sha256 {res['digest']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.bench_python", description=__doc__)
    parser.add_argument("--sample-only", action="store_true", help="the shipped sample only")
    parser.add_argument(
        "--events", type=int, default=300_000, help="the first N events (0: all; default 300k)"
    )
    parser.add_argument("--batch", type=int, default=1000, help="records per batch (default 1000)")
    parser.add_argument("--passes", type=int, default=3, help="best of N passes (default 3)")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile top N")
    parser.add_argument("--digest", action="store_true", help="SHA-256 of every output")
    parser.add_argument("--against", metavar="REF", help="also measure a git ref, alternating")
    parser.add_argument("--rounds", type=int, default=2, help="with --against: rounds each")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)  # the sources, comma-separated
    args = parser.parse_args(argv)
    source = args.source.split(",") if args.source else _sources(args)
    one = [
        "--events",
        str(args.events),
        "--batch",
        str(args.batch),
        "--passes",
        str(args.passes),
        "--profile",
        str(args.profile),
        *(["--digest"] if args.digest or args.against else []),
        "--source=" + ",".join(source),  # one argument: its value starts with "--"
    ]
    if args.child:
        res = measure(source, args.events, args.batch, args.passes, args.profile, args.digest)
        print(json.dumps(res))
        return 0
    load = os.getloadavg()
    print(f"load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}  source {' '.join(source)}", flush=True)
    if not args.against:
        res = _child(PROJECT_ROOT, one)
        _print("this tree", res)
        if res.get("profile"):
            print(res["profile"])
        return 0
    base = _copy_of(args.against)
    results: dict[str, list[dict[str, Any]]] = {args.against: [], "this tree": []}
    for _ in range(args.rounds):
        results[args.against].append(_child(base, one))
        results["this tree"].append(_child(PROJECT_ROOT, one))
    load = os.getloadavg()
    print(f"load after {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}", flush=True)
    for label, runs in results.items():
        best = {k: min(r[k] for r in runs) for k in runs[0] if k.endswith("_us")}
        _print(label, {**runs[0], **best})
    digests = {r["digest"] for runs in results.values() for r in runs}
    same = len(digests) == 1
    print("outputs byte-identical" if same else f"OUTPUTS DIFFER: {digests}", flush=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
