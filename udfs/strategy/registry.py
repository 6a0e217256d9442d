"""The model registry: which ONNX model is live, which one is the canary and its share.

A JSON file under the state directory (``strategy.registry_path``), never in the checkout: the
models themselves are files in ``models/`` (``<name>.onnx`` and the ``<name>.json`` metadata or
model card beside it); the registry only names them. Until a first change is made, the
registry is the configuration's: ``strategy.model_path`` live, ``strategy.shadow_model_path``
the canary at share 0 (scored on every row, recorded, never traded: a shadow).

Routing, per instrument and stable (CRC-32, like the rule/model split of
:func:`udfs.strategy.signals.model_traded`): of the instruments the model trades, those whose
``crc32(CANARY_SALT + instrument) / 2**32`` is below ``canary_share`` are traded by the canary,
the rest by the live model. Both models score every row of every instrument and both signals
are recorded, each marked traded or not. Raising the share only moves instruments from live to
canary.

Changes (``bookstream model canary|promote|rollback``) are pure transitions here, each recorded
in ``changes`` with its time and the previous live model. A running job takes a change at its
next start from its checkpoint (``stream-job --restore-latest``): each model's per-instrument
state (its last direction) is kept by model name, so a promoted canary trades on from the
state it built while it was scored in the shadow.

An :class:`Assignment` is what a job actually traded under: the live and canary model files
(path, name, version and a content hash) and the share. The job keeps the one each
instrument's logged records were processed under in its keyed state, so a restore replays
them under that assignment (the orders the job really sent), not under a registry changed
while it was down; the change applies to the records after the restore.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = [
    "CANARY_SALT",
    "Assignment",
    "ModelRef",
    "Registry",
    "RegistryError",
    "canary_routed",
    "model_digest",
    "model_name",
]

CANARY_SALT = "bookstream-canary-v1:"
"""Names the canary assignment; a different string would draw a different set of instruments."""


class RegistryError(ValueError):
    """A registry change that cannot be made (unknown model, nothing to promote)."""


def canary_routed(instrument: str, share: float) -> bool:
    """True when ``instrument`` (one the model trades) is traded by the canary."""
    return zlib.crc32((CANARY_SALT + instrument).encode("utf-8")) / 2**32 < share


def model_name(path: str) -> str:
    """A model's name: its file's stem (``models/book_lr_v2.onnx`` -> ``book_lr_v2``)."""
    return Path(path).stem


def model_digest(onnx_bytes: bytes, metadata: dict[str, Any]) -> str:
    """SHA-256 of a model's ONNX bytes and its metadata (canonical JSON): both decide what it
    scores (the metadata names the features and their order)."""
    h = hashlib.sha256(onnx_bytes)
    h.update(b"\0")
    h.update(json.dumps(metadata, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    return h.hexdigest()


@dataclass(frozen=True)
class ModelRef:
    """One model file exactly: its path as the registry names it (relative to the project
    root), the name and version of its metadata, and :func:`model_digest` of its content."""

    path: str
    name: str
    version: str
    sha256: str


@dataclass(frozen=True)
class Assignment:
    """The models a trader trades under: ``live`` and ``canary`` (None: none) and the canary's
    share. Recorded per instrument in the job's keyed state as :meth:`to_json`."""

    live: ModelRef | None
    canary: ModelRef | None = None
    canary_share: float = 0.0

    def to_json(self) -> str:
        """Canonical text (equal assignments, equal text): compared and stored as is."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Assignment:
        raw = json.loads(text)

        def ref(value: dict[str, Any] | None) -> ModelRef | None:
            return None if value is None else ModelRef(**value)

        return cls(ref(raw["live"]), ref(raw["canary"]), float(raw["canary_share"]))

    def describe(self) -> str:
        """``live book_lr_v1 v1, canary book_lr_v2 v2 at share 0.2`` (logs, errors)."""

        def one(r: ModelRef | None) -> str:
            return "none" if r is None else f"{r.name} v{r.version}"

        return f"live {one(self.live)}, canary {one(self.canary)} at share {self.canary_share}"


@dataclass(frozen=True)
class Registry:
    """``live`` and ``canary``: model paths relative to the project root (``canary`` empty:
    none); ``canary_share`` in [0, 1]; ``changes``: every change made, oldest first."""

    live: str
    canary: str = ""
    canary_share: float = 0.0
    changes: tuple[dict[str, Any], ...] = field(default=())

    def __post_init__(self) -> None:
        if not 0.0 <= self.canary_share <= 1.0:
            raise RegistryError(f"canary_share {self.canary_share} is outside [0, 1]")
        if self.canary_share > 0 and not self.canary:
            raise RegistryError("a canary share without a canary model")
        if self.canary and model_name(self.canary) == model_name(self.live):
            raise RegistryError(f"{model_name(self.live)} cannot be live and canary at once")

    @classmethod
    def load(cls, path: Path, *, live: str, canary: str) -> Registry:
        """The registry in ``path``; the configuration's (``live``, ``canary`` at share 0)
        while no change has been made."""
        if not path.is_file():
            return cls(live=live, canary=canary)
        raw = json.loads(path.read_text())
        try:
            return cls(
                live=str(raw["live"]),
                canary=str(raw.get("canary") or ""),
                canary_share=float(raw.get("canary_share", 0.0)),
                changes=tuple(raw.get("changes", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(f"{path}: not a model registry ({exc})") from exc

    def save(self, path: Path) -> None:
        """Write atomically (a reader sees the old or the new registry, never half)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        body = {**asdict(self), "changes": list(self.changes)}
        tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)

    def view(self) -> dict[str, Any]:
        """What ``bookstream model status`` shows."""
        return {
            "live": model_name(self.live),
            "canary": model_name(self.canary) if self.canary else None,
            "canary_share": self.canary_share,
            "changes": len(self.changes),
        }

    def _changed(self, at: str, action: str, **what: Any) -> tuple[dict[str, Any], ...]:
        return (*self.changes, {"at": at, "action": action, "previous_live": self.live, **what})

    def with_canary(self, path: str, share: float, at: str) -> Registry:
        """``path`` becomes the canary at ``share`` (0: a shadow again)."""
        if model_name(path) == model_name(self.live):
            raise RegistryError(f"{model_name(path)} is the live model already")
        return replace(
            self,
            canary=path,
            canary_share=share,
            changes=self._changed(at, "canary", model=path, share=share),
        )

    def promote(self, name: str, at: str) -> Registry:
        """The canary ``name`` becomes the live model; the former live model becomes the
        canary at share 0 (scored and recorded, so a rollback finds its state warm)."""
        if not self.canary or model_name(self.canary) != name:
            canary = model_name(self.canary) if self.canary else "none"
            raise RegistryError(f"{name} is not the canary (the canary is {canary})")
        return Registry(
            live=self.canary,
            canary=self.live,
            canary_share=0.0,
            changes=self._changed(at, "promote", model=self.canary),
        )

    def rollback(self, name: str, at: str) -> Registry:
        """``name``, live before, is live again: the current live model becomes the canary at
        share 0. Only a model that was live once can be rolled back to."""
        was_live = {model_name(c["previous_live"]) for c in self.changes}
        if name not in was_live:
            raise RegistryError(
                f"{name} was never live (rollback targets: {', '.join(sorted(was_live)) or 'none'})"
            )
        path = next(
            c["previous_live"]
            for c in reversed(self.changes)
            if model_name(c["previous_live"]) == name
        )
        if model_name(path) == model_name(self.live):
            raise RegistryError(f"{name} is live already")
        return Registry(
            live=path,
            canary=self.live,
            canary_share=0.0,
            changes=self._changed(at, "rollback", model=path),
        )
