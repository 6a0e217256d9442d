"""Would a compiled per-record core pay? ``python -m jobs.bench_compiled`` (not a test, not
shipped: issue 11's compiled-core experiment, kept so the figures can be reproduced).

It copies ``udfs/`` under ``.state/compiled/src``, compiles the hot modules there with mypyc
(``MODULES``; mypyc ships with mypy, a dev dependency, and needs setuptools in the venv:
``uv pip install setuptools``), then measures the pure and the compiled copy in alternating
child processes on the same events, in CPU time per event (the machine is shared: wall rates
are not comparable):

    decode   ``udfs.schema.decode_event`` per serialised record
    core     book + features (``jobs.bench`` stage (a))
    record   ``udfs.pipeline.process_record``: decode, lateness, book, quality, features
    trading  the same with the trader (what the stream job runs per record)

whether a record of an unknown schema version is still refused (the typed decoder's bounds),
and whether the keyed state pickled by one loads in the other (a checkpoint written by a
compiled job must restore on a cluster whose Python has only the pure modules, and back).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import itertools
import json
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

from udfs.config import PROJECT_ROOT

__all__ = ["main"]

MODULES = (
    "udfs/schema.py",
    "udfs/market/book.py",
    "udfs/market/features.py",
    "udfs/market/quality.py",
    "udfs/pipeline.py",
)
"""schema.py too: without it ``L2Event`` stays interpreted and the compiled book and features
read its fields through generic attribute look-ups (measured: no gain on the core then)."""
USDM = PROJECT_ROOT.parent / "shared/data/binance/usdm/btcusdt_20240808.gz"
_ORJSON_FALLBACK = """except ImportError:  # pragma: no cover

    def _loads(raw: bytes | str) -> Any:
        return json.loads(raw)
"""
"""mypyc refuses a function defined twice; orjson is a runtime dependency, so the copy drops the
fallback (the source keeps it)."""


def build(dest: Path) -> None:
    """``udfs/`` copied to ``dest`` and ``MODULES`` compiled in place there."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(PROJECT_ROOT / "udfs", dest / "udfs", ignore=shutil.ignore_patterns("*.so"))
    for shared in ("models", "data"):  # the config resolves both from the copy's root
        (dest / shared).symlink_to(PROJECT_ROOT / shared)
    schema = dest / "udfs/schema.py"
    text = schema.read_text()
    if _ORJSON_FALLBACK not in text:
        raise SystemExit("bench_compiled: udfs/schema.py's orjson fallback moved; update the copy")
    schema.write_text(text.replace(_ORJSON_FALLBACK, "except ImportError:\n    raise\n"))
    mypyc = Path(sys.executable).parent / "mypyc"
    if not mypyc.exists() or importlib.util.find_spec("setuptools") is None:
        raise SystemExit("bench_compiled: needs mypy (dev group) and setuptools in the venv")
    subprocess.run([str(mypyc), *MODULES], cwd=dest, check=True, stdout=subprocess.DEVNULL)


def measure(capture: Path, limit: int, state_out: Path | None, state_in: Path | None) -> dict:
    """CPU µs per event of each stage in this interpreter (pure or compiled: whatever
    ``udfs`` resolves to), best of a few passes."""
    from jobs.bench import _source_from, core_pass
    from udfs.config import load_config
    from udfs.market import book as book_module
    from udfs.pipeline import InstrumentState, RecordSource, process_record
    from udfs.schema import SchemaError, decode_event, encode_event
    from udfs.strategy.trading import Trader

    cfg = load_config()
    events = list(itertools.islice(_source_from(["--binance", str(capture)]).events(), limit))
    records = [(ev.instrument, encode_event(ev).decode()) for ev in events]
    src = RecordSource("bench", 0, 0)

    def decode() -> float:
        t = time.process_time()
        for _, raw in records:
            decode_event(raw)
        return time.process_time() - t

    def core() -> float:
        t = time.process_time()
        core_pass(events, cfg.features)
        return time.process_time() - t

    states: dict[str, InstrumentState | None] = {}

    def record(trader: Trader | None) -> float:
        states.clear()
        t = time.process_time()
        for key, raw in records:
            states[key], _ = process_record(
                states.get(key),
                key,
                raw,
                src,
                cfg.features,
                cfg.flink.out_of_orderness_ms,
                trader,
                cfg.quality,
            )
        return time.process_time() - t

    n = len(events)
    out: dict = {"module": book_module.__file__, "events": n}
    # the typed decoder's bounds (msgspec.Meta): a record of an unknown schema version
    unknown_version = encode_event(dataclasses.replace(events[0], v=events[0].v + 1))
    try:
        decode_event(unknown_version)
        out["refuses_unknown_version"] = False
    except SchemaError:
        out["refuses_unknown_version"] = True
    out["decode_us"] = min(decode() for _ in range(3)) / n * 1e6
    out["core_us"] = min(core() for _ in range(3)) / n * 1e6
    out["record_us"] = min(record(None) for _ in range(3)) / n * 1e6
    trader = Trader.load(cfg)
    out["trading_us"] = min(record(trader) for _ in range(2)) / n * 1e6
    if state_out is not None:
        state_out.write_bytes(pickle.dumps(next(iter(states.values()))))
    if state_in is not None:
        try:
            restored = pickle.loads(state_in.read_bytes())
            out["restores_other_state"] = len(restored.book.bids) > 0
        except Exception as exc:  # the finding is the exception itself
            out["restores_other_state"] = f"{type(exc).__name__}: {exc}"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.bench_compiled", description=__doc__)
    parser.add_argument("--events", type=int, default=300_000, help="first N of the capture")
    parser.add_argument("--rounds", type=int, default=2, help="pure/compiled pairs, alternating")
    parser.add_argument("--capture", type=Path, default=USDM, help="a Binance capture (.gz)")
    parser.add_argument("--no-build", action="store_true", help="reuse the last build")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--state-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--state-in", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:  # a child: one interpreter, one variant
        print(
            json.dumps(measure(args.capture.resolve(), args.events, args.state_out, args.state_in))
        )
        return 0
    work = PROJECT_ROOT / ".state/compiled"
    src = work / "src"
    if not args.no_build:
        build(src)
    runs: list[dict] = []
    for i in range(args.rounds):
        # the child's working directory comes first on its sys.path: it decides which udfs/
        for variant, cwd in (("pure", PROJECT_ROOT), ("mypyc", src)):
            other = "mypyc" if variant == "pure" else "pure"
            cmd = [sys.executable, "-m", "jobs.bench_compiled", "--measure"]
            cmd += ["--capture", str(args.capture.resolve()), "--events", str(args.events)]
            cmd += ["--state-out", str(work / f"{variant}.pkl")]
            if i:  # the first round wrote both states: each variant loads the other's
                cmd += ["--state-in", str(work / f"{other}.pkl")]
            done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(done.stderr)
            runs.append({"variant": variant, **json.loads(done.stdout.splitlines()[-1])})
            print(json.dumps(runs[-1]), flush=True)
    summary = {"variant": "ratio pure/mypyc (best of each)"}
    for stage in ("decode_us", "core_us", "record_us", "trading_us"):
        best = {v: min(r[stage] for r in runs if r["variant"] == v) for v in ("pure", "mypyc")}
        summary[stage] = round(best["pure"] / best["mypyc"], 2)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
