"""Fakes of Flink's keyed state, runtime context and timer service for unit tests of
:class:`jobs.stream_job.StreamJobFunction` (no JVM): dicts per state name and current key,
values pickled as PyFlink's thread mode does. A "checkpoint" is a deep copy of them."""

from __future__ import annotations

import copy
import pickle
from typing import Any


class FakeState:
    """ValueState / ListState of one name, per current key, pickled like Flink's."""

    def __init__(self, keys: dict) -> None:
        self.keys, self.data = keys, {}

    def value(self) -> Any:
        raw = self.data.get(self.keys["key"])
        return None if raw is None else pickle.loads(raw)

    def update(self, value: Any) -> None:
        self.data[self.keys["key"]] = pickle.dumps(value)

    def get(self) -> list:
        return list(self.data.get(self.keys["key"], []))

    def add_all(self, values: list) -> None:
        self.data.setdefault(self.keys["key"], []).extend(values)

    def clear(self) -> None:
        self.data.pop(self.keys["key"], None)


class FakeRuntime:
    """Runtime context, process context and timer service in one; ``keys["key"]`` is the
    current key."""

    def __init__(self) -> None:
        self.keys = {"key": ""}
        self.states: dict[str, FakeState] = {}
        self.timers: set[tuple[int, str]] = set()

    def get_state(self, desc: Any) -> FakeState:
        return self.states.setdefault(desc.get_name(), FakeState(self.keys))

    def get_list_state(self, desc: Any) -> FakeState:
        return self.get_state(desc)

    def checkpoint(self) -> FakeRuntime:
        """A copy of every state and timer, as a completed checkpoint holds them."""
        return copy.deepcopy(self)

    # the context's part
    def get_current_key(self) -> str:
        return self.keys["key"]

    def timer_service(self) -> FakeRuntime:
        return self

    def register_event_time_timer(self, ts: int) -> None:
        self.timers.add((ts, self.keys["key"]))
