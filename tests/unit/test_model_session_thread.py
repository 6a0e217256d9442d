"""udfs.strategy.model imports onnxruntime and creates its sessions on a thread of their own, which
is
what keeps the trading job working in PyFlink's thread mode (PEMJA): on a PEMJA task thread,
pybind11's ``PyGILState_Ensure`` at the import of ``onnxruntime_pybind11_state`` deadlocks (see
udfs.strategy.model's docstring). The end-to-end check is the Flink job itself
(tests/integration/test_stream_job.py runs the trading job with its models, in thread mode by
default); these tests pin the mechanism."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from udfs.strategy.model import OnnxModel, _on_fresh_thread

ROOT = Path(__file__).resolve().parents[2]

# a fresh interpreter, so that onnxruntime is not imported yet
_PROBE = r"""
import importlib.abc, sys, threading

seen = {}

class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.endswith("onnxruntime_pybind11_state"):
            seen[name] = threading.current_thread().name
        return None

sys.meta_path.insert(0, Spy())

from udfs.strategy.model import DERIVED, OnnxModel

model = OnnxModel.load("models/book_lr_v1.onnx")
assert "onnxruntime" not in sys.modules
row = {"instrument": "X", "ts_event": 0, "seq": 0}
for name in model.features:
    for key in DERIVED[name][0] if name in DERIVED else (name,):
        row[key] = 1.0
model.score_one(row)
print(sorted(set(seen.values())))
"""


def test_onnxruntime_is_imported_off_the_calling_thread() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['onnxruntime-init']"


def test_session_is_created_off_the_calling_thread_and_run_on_it() -> None:
    model = OnnxModel.load(ROOT / "models" / "book_lr_v1.onnx")
    created_on: list[str] = []
    new_session = model._new_session

    def spy() -> tuple:
        created_on.append(threading.current_thread().name)
        return new_session()

    model._new_session = spy  # type: ignore[method-assign]
    sess = model.session
    assert created_on == ["onnxruntime-init"]
    assert model.session is sess  # created once
    assert model._output == "probabilities"


def test_fresh_thread_returns_and_reraises() -> None:
    assert _on_fresh_thread(lambda: threading.current_thread().name) == "onnxruntime-init"
    assert _on_fresh_thread(threading.get_ident) != threading.get_ident()

    def boom() -> None:
        raise ValueError("bad model")

    with pytest.raises(ValueError, match="bad model"):
        _on_fresh_thread(boom)


def test_bad_model_metadata_raises_in_the_caller() -> None:
    src = ROOT / "models" / "book_lr_v1.onnx"
    model = OnnxModel(
        src.read_bytes(),
        {"name": "x", "version": "1", "features": ["imbalance_1"], "input_name": "features"},
    )
    with pytest.raises(ValueError, match="input width"):
        _ = model.session
