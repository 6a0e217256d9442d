"""Fixtures shared by the unit tests: what costs seconds is computed once per session."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from udfs.market.adapters.sources import Source

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="session")
def train_model() -> ModuleType:
    """models/train_model.py, the training script (not a package module)."""
    spec = importlib.util.spec_from_file_location("train_model", MODELS / "train_model.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("train_model", mod)  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def sample_feature_rows(train_model: ModuleType) -> dict[str, list[dict]]:
    """The shipped sample's feature rows per instrument, in feed order: every record through
    the stream job's ``process_record``, as models/train_model.py computes them for training
    (test_model.py, test_signals.py)."""
    return train_model.feature_rows(Source.sample())
