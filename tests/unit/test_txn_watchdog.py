"""The execution sink's watchdog on transactional calls (librdkafka can hang in
send_offsets_to_transaction past its own timeout, confluentinc/librdkafka#5456)."""

from __future__ import annotations

import threading

import pytest

from jobs.execution_sink import TransactionStuckError, _within


def test_a_call_that_never_returns_is_named_and_given_up_on() -> None:
    release = threading.Event()
    with pytest.raises(TransactionStuckError, match="send_offsets_to_transaction did not return"):
        _within("send_offsets_to_transaction", release.wait, timeout_s=0.2)
    release.set()


def test_a_call_s_own_error_and_result_come_through() -> None:
    def fails() -> None:
        raise ValueError("fenced")

    with pytest.raises(ValueError, match="fenced"):
        _within("commit_transaction", fails, timeout_s=5)
    calls: list[int] = []
    _within("commit_transaction", lambda: calls.append(1), timeout_s=5)
    assert calls == [1]
