"""ONNX models scored on the book features, with their metadata, and the model's signals.

A model is two files side by side: ``<name>.onnx`` (float32 input ``features`` of shape
``[N, F]``, output ``probabilities`` of shape ``[N, 2]``, column 1 = P(up move)) and
``<name>.json`` (written by ``models/train_model.py``): the input features *in order*, the model
version, the training window and sources, the label definition, the threshold it was evaluated
with and its metrics.

The input vector is built from a feature dict (:meth:`udfs.market.features.FeatureRow.to_dict`) by
:func:`feature_vector`, the *same* function the training script uses, so training and serving
cannot drift apart. A feature name is either a key of the feature dict (``imbalance_3``) or one
of the derived features of :data:`DERIVED`:

* ``microprice_dev = (microprice - mid) / spread`` (in [-0.5, 0.5]; 0 if ``spread`` is 0);
* ``ofi_norm = clip(ofi / (bid_depth + ask_depth), -1, 1)`` (0 if the depth is 0);
* ``ofi_window_norm = tanh(ofi_window / (bid_depth + ask_depth))`` (0 if the depth is 0);
* ``trade_sign = sign(trade_signed_volume)`` (-1, 0, +1).

:class:`OnnxModel` is shipped to Flink workers by pickling: it carries the model *bytes* (a few
KB), creates its onnxruntime session lazily on first use and drops it when pickled.

The session is created -- and onnxruntime imported -- on a short-lived thread of its own
(:func:`_on_fresh_thread`); only ``run`` is called on the caller's thread. This is what lets
the job score models in PyFlink's thread mode: PEMJA gives every embedded Python operator its
own ``PyThreadState`` (``PyThreadState_New``), and Flink chains several of them on one task
thread (the side outputs' identity maps and the process function). CPython's ``PyGILState_*``
API maps an OS thread to the *first* of its thread states, so on that task thread
``PyGILState_Ensure`` -- which pybind11 calls when an extension module initialises
(``PyInit_onnxruntime_pybind11_state`` -> ``get_internals``) -- sees a thread state that is not
the current one, concludes the GIL is not held and waits for it: the thread deadlocks on the GIL
it holds itself. A fresh thread has exactly one thread state, so ``PyGILState_Ensure`` works
there; ``InferenceSession.run`` only releases and re-takes the GIL with the current thread state
(pybind11's ``gil_scoped_release``), which is safe on any thread.

Model direction (:func:`model_signal`): with ``p`` = P(up) and ``T = cfg.model_threshold``,
``p > T`` -> +1, ``p < 1 - T`` -> -1, otherwise 0 (no edge either way: flat). The direction is a
function of the current row only; a :class:`~udfs.schema.Signal` is emitted only when it changes.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from udfs.config import PROJECT_ROOT, StrategyConfig
from udfs.schema import Signal
from udfs.strategy.registry import model_digest

__all__ = [
    "DERIVED",
    "FeatureVector",
    "MissingFeatureError",
    "ModelState",
    "OnnxModel",
    "feature_vector",
    "model_direction",
    "model_signal",
]


class MissingFeatureError(KeyError):
    """A feature row lacks a value the model needs; ``feature`` names the missing key."""

    def __init__(self, feature: str, needed_by: str, model: str = "") -> None:
        super().__init__(feature)
        self.feature = feature
        self.needed_by = needed_by
        self.model = model

    def __str__(self) -> str:
        via = "" if self.needed_by == self.feature else f" (needed by {self.needed_by!r})"
        where = f"model {self.model!r}: " if self.model else ""
        return f"{where}feature row has no {self.feature!r}{via}"


def _microprice_dev(r: dict[str, Any]) -> float:
    spread = float(r["spread"])
    return (float(r["microprice"]) - float(r["mid"])) / spread if spread else 0.0


def _ofi_norm(r: dict[str, Any]) -> float:
    depth = float(r["bid_depth"]) + float(r["ask_depth"])
    return min(1.0, max(-1.0, float(r["ofi"]) / depth)) if depth else 0.0


def _ofi_window_norm(r: dict[str, Any]) -> float:
    depth = float(r["bid_depth"]) + float(r["ask_depth"])
    return math.tanh(float(r["ofi_window"]) / depth) if depth else 0.0


def _trade_sign(r: dict[str, Any]) -> float:
    v = r["trade_signed_volume"]
    return 1.0 if v > 0 else -1.0 if v < 0 else 0.0


DERIVED: dict[str, tuple[tuple[str, ...], Callable[[dict[str, Any]], float]]] = {
    "microprice_dev": (("microprice", "mid", "spread"), _microprice_dev),
    "ofi_norm": (("ofi", "bid_depth", "ask_depth"), _ofi_norm),
    "ofi_window_norm": (("ofi_window", "bid_depth", "ask_depth"), _ofi_window_norm),
    "trade_sign": (("trade_signed_volume",), _trade_sign),
}
"""Derived feature name -> (feature-dict keys it reads, function of the row)."""


def feature_vector(row: dict[str, Any], names: Sequence[str], model: str = "") -> list[float]:
    """The model input for one feature dict: one float per name, in ``names``' order. Raises
    :class:`MissingFeatureError` naming the first missing key."""
    out: list[float] = []
    for name in names:
        derived = DERIVED.get(name)
        if derived is None:
            if name not in row:
                raise MissingFeatureError(name, name, model)
            out.append(float(row[name]))
        else:
            keys, fn = derived
            for key in keys:
                if key not in row:
                    raise MissingFeatureError(key, name, model)
            out.append(fn(row))
    return out


class FeatureVector:
    """:func:`feature_vector` for one list of names, prepared once (the stream scores every
    feature row with two models and bins it for drift: ~3.5 -> ~1 µs per call). The values are
    the same floats in the same order; a missing key goes through :func:`feature_vector`, which
    raises the same :class:`MissingFeatureError`."""

    __slots__ = ("_spec", "model", "names")

    def __init__(self, names: Sequence[str], model: str = "") -> None:
        self.names = tuple(names)
        self.model = model
        self._spec: tuple[tuple[str, Callable[[dict[str, Any]], float] | None], ...] = tuple(
            (name, DERIVED[name][1] if name in DERIVED else None) for name in self.names
        )

    def __call__(self, row: dict[str, Any]) -> list[float]:
        try:
            return [float(row[name]) if fn is None else fn(row) for name, fn in self._spec]
        except KeyError:
            return feature_vector(row, self.names, self.model)  # raises the precise error


_T = TypeVar("_T")


def _on_fresh_thread(fn: Callable[[], _T], name: str = "onnxruntime-init") -> _T:
    """``fn()`` run on a new thread (the caller waits): its result, or its exception re-raised.
    For the one-off onnxruntime calls that go through ``PyGILState_Ensure`` (module import,
    session creation), which deadlock on a PEMJA task thread (see the module docstring)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # handed to the caller, raised there
            box["error"] = exc

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


class OnnxModel:
    """An ONNX binary classifier and its metadata. ``score`` returns P(up) per row."""

    def __init__(self, onnx_bytes: bytes, metadata: dict[str, Any]) -> None:
        for key in ("name", "version", "features"):
            if key not in metadata:
                raise ValueError(f"model metadata has no {key!r}")
        self._bytes = onnx_bytes
        self.metadata = metadata
        self.name: str = metadata["name"]
        self.version: str = str(metadata["version"])
        self.features: tuple[str, ...] = tuple(metadata["features"])
        self.input_name: str = metadata.get("input_name", "features")
        self.path = ""
        """the file it was loaded from, as named by whoever loaded it ("": built from bytes)"""
        self.sha256: str = model_digest(onnx_bytes, metadata)
        """what exactly is scored: a model's files reloaded are checked against it"""
        self._session: Any = None
        self._output: str = ""
        self._vector = FeatureVector(self.features, self.name)
        self._row_run: Callable[..., list[Any]] | None = None
        """the session's run for :meth:`score_one` (see :meth:`_prepare_row_scoring`)"""
        self._row_input: np.ndarray | None = None
        """:meth:`score_one`'s ``[1, F]`` input, filled in place per row"""
        self._row_feed: dict[str, np.ndarray] = {}
        self._row_outputs: list[str] = []

    @classmethod
    def load(cls, path: str | Path) -> OnnxModel:
        """Load ``<path>`` (.onnx; relative paths from the project root) and the ``.json`` beside
        it."""
        p = Path(path)
        if not p.is_absolute() and not p.exists():
            p = PROJECT_ROOT / p
        meta_path = p.with_suffix(".json")
        if not meta_path.is_file():
            raise FileNotFoundError(f"model metadata not found: {meta_path}")
        model = cls(p.read_bytes(), json.loads(meta_path.read_text()))
        model.path = str(path)
        return model

    # --- lazy session, dropped when pickled -------------------------------------------------

    @property
    def session(self) -> Any:
        if self._session is None:
            # import and session creation on a thread of their own: see the module docstring
            self._session, self._output = _on_fresh_thread(self._new_session)
        return self._session

    def _new_session(self) -> tuple[Any, str]:
        """A checked onnxruntime session of the model and the name of its probabilities
        output."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # one stream task = one thread; no pool per worker
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(
            self._bytes, sess_options=opts, providers=["CPUExecutionProvider"]
        )
        inputs = [i.name for i in sess.get_inputs()]
        if inputs != [self.input_name]:
            raise ValueError(
                f"model {self.name!r}: ONNX inputs {inputs}, metadata says [{self.input_name!r}]"
            )
        width = sess.get_inputs()[0].shape[-1]
        if isinstance(width, int) and width != len(self.features):
            raise ValueError(
                f"model {self.name!r}: ONNX input width {width}, metadata "
                f"lists {len(self.features)} features"
            )
        outputs = [o.name for o in sess.get_outputs()]
        return sess, "probabilities" if "probabilities" in outputs else outputs[-1]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_session"] = None
        state["_output"] = ""
        state["_row_run"] = state["_row_input"] = None
        state["_row_feed"], state["_row_outputs"] = {}, []
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # --- scoring ----------------------------------------------------------------------------

    def vector(self, row: dict[str, Any]) -> np.ndarray:
        """float32 input vector (shape ``[F]``) for one feature dict, in the metadata's order."""
        return np.asarray(self._vector(row), dtype=np.float32)

    def matrix(self, rows: Sequence[dict[str, Any]]) -> np.ndarray:
        """float32 input matrix (shape ``[N, F]``)."""
        if not rows:
            return np.zeros((0, len(self.features)), dtype=np.float32)
        vector = self._vector
        return np.asarray([vector(r) for r in rows], dtype=np.float32)

    def score_matrix(self, x: np.ndarray) -> np.ndarray:
        """P(up) (float64, shape ``[N]``) for a prepared ``[N, F]`` input."""
        if x.shape[0] == 0:
            return np.zeros(0)
        sess = self.session
        (proba,) = sess.run(
            [self._output], {self.input_name: np.ascontiguousarray(x, dtype=np.float32)}
        )
        return np.asarray(proba, dtype=np.float64)[:, 1]

    def score(self, rows: Sequence[dict[str, Any]]) -> np.ndarray:
        """P(up) per row, one onnxruntime call for the batch."""
        return self.score_matrix(self.matrix(rows))

    def score_one(self, row: dict[str, Any]) -> float:
        """P(up) for one row (the stream path): the same single-row ``[1, F]`` run as
        ``score_matrix(vector(row)[None, :])``, so the same bits (``tests/unit/test_model.py``),
        with the input array, the feed and the output list made once per session instead of
        per row. One caller at a time (each Flink subtask unpickles its own model)."""
        x = self._row_input
        if x is None:
            x = self._prepare_row_scoring()
        x[0] = self._vector(row)  # float -> float32 as np.asarray(..., dtype=np.float32) rounds
        assert self._row_run is not None
        (proba,) = self._row_run(self._row_outputs, self._row_feed, None)
        return float(proba[0, 1])

    def _prepare_row_scoring(self) -> np.ndarray:
        """The ``[1, F]`` input, its feed and the run :meth:`score_one` calls. ``run`` of the
        session's binding (``InferenceSession._sess``) where onnxruntime has one: its public
        ``run`` checks the same fixed feed on every call (input names, OrtValue ownership, graph
        capture), ~2 µs of Python per row; the binding runs the same kernels."""
        sess = self.session
        x = np.zeros((1, len(self.features)), dtype=np.float32)
        self._row_feed = {self.input_name: x}
        self._row_outputs = [self._output]
        binding = getattr(sess, "_sess", None)
        self._row_run = binding.run if binding is not None else sess.run
        self._row_input = x
        return x

    def __repr__(self) -> str:
        return f"OnnxModel({self.name!r}, version={self.version!r}, features={self.features})"


@dataclass(slots=True)
class ModelState:
    """Per-(instrument, model) state (Flink keyed state: small and picklable)."""

    direction: int = 0
    rows: int = 0
    changes: int = 0
    last_score: float = math.nan


def model_direction(p: float, threshold: float) -> int:
    """``p > T`` -> +1, ``p < 1 - T`` -> -1, else 0."""
    if p > threshold:
        return 1
    if p < 1.0 - threshold:
        return -1
    return 0


def model_signal(
    model: OnnxModel, state: ModelState, row: dict[str, Any], cfg: StrategyConfig, traded: bool
) -> Signal | None:
    """Score one feature row and update ``state``; a :class:`Signal` (strategy
    ``onnx:<name>``, score = P(up), ``model_version`` from the metadata, ``traded`` as given:
    False for a shadow model) when the direction changed, else None."""
    p = model.score_one(row)
    new = model_direction(p, cfg.model_threshold)
    state.rows += 1
    state.last_score = p
    if new == state.direction:
        return None
    state.direction = new
    state.changes += 1
    return Signal(
        instrument=row["instrument"],
        strategy=f"onnx:{model.name}",
        ts_event=row["ts_event"],
        seq=row["seq"],
        score=p,
        direction=new,
        traded=traded,
        model_version=model.version,
    )
