"""A status line every few seconds from a long-running stage (inputs, outputs, lag), on
stderr through logging, so a supervised live run (``bookstream live``) shows each process
moving without a terminal's progress bar. The Flink job's (:class:`JobStatus`) comes from the
job's own REST metrics, polled by a thread of the process that runs it."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("bookstream.status")

STATUS_EVERY_S = 5.0


class StatusLine:
    def __init__(self, stage: str, every_s: float = STATUS_EVERY_S) -> None:
        self.stage = stage
        self.every_s = every_s
        self._next = time.monotonic() + every_s

    def due(self) -> bool:
        """Time for the next line (cheap: call it on every poll)."""
        return time.monotonic() >= self._next

    def emit(self, **fields: object) -> None:
        self._next = time.monotonic() + self.every_s
        logger.info("[%s] %s", self.stage, " ".join(f"{k}={v}" for k, v in fields.items()))


@dataclass(frozen=True)
class JobCounts:
    """What a running Flink job has done, from its REST metrics: events read by its source,
    records its Kafka sink sent, events still in the source's topic (its lag)."""

    state: str
    inputs: int
    outputs: int
    lag: int


SOURCE_READ = ".Source__events.numRecordsOut"
SINK_SENT = "__Writer.numRecordsSend"
SOURCE_LAG = ".Source__events.pendingRecords"
"""Suffixes of the REST metric ids (``<subtask>.<operator>.<metric>``) summed into
:class:`JobCounts`: the source operator is named ``events``, the sink's writer
``kafka-sink:<topics>: Writer`` (jobs/stream_job.py)."""


def job_counts(state: str, metric_values: Iterable[dict]) -> JobCounts:
    """:class:`JobCounts` from a vertex metrics answer (``[{"id", "value"}]``) of every
    vertex, summed over subtasks."""
    sums = {SOURCE_READ: 0, SINK_SENT: 0, SOURCE_LAG: 0}
    for metric in metric_values:
        for suffix in sums:
            if metric["id"].endswith(suffix):
                with contextlib.suppress(ValueError):  # a gauge not reported yet, or NaN
                    sums[suffix] += max(int(float(metric["value"])), 0)
    return JobCounts(state, sums[SOURCE_READ], sums[SINK_SENT], sums[SOURCE_LAG])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def poll_job_counts(rest_url: str, details: list[dict] | None = None) -> JobCounts | None:
    """The newest job of the (local) cluster at ``rest_url``; None when it has none yet.
    ``details``: where to append the job's detail answer (its state timestamps and each
    vertex's start and end, exact times from the JobManager: :func:`job_timeline`)."""
    jobs = _get(f"{rest_url}/jobs/overview")["jobs"]
    if not jobs:
        return None
    job = max(jobs, key=lambda j: j["start-time"])
    detail = _get(f"{rest_url}/jobs/{job['jid']}")
    if details is not None:
        vertices = detail.get("vertices", [])
        if vertices and all(v.get("status") in ("RUNNING", "FINISHED") for v in vertices):
            # when each task switched to RUNNING: its operators opened (Python included)
            detail["subtask_running"] = [
                st.get("timestamps", {}).get("RUNNING", -1)
                for v in vertices
                for st in _get(f"{rest_url}/jobs/{job['jid']}/vertices/{v['id']}/subtasktimes")[
                    "subtasks"
                ]
            ]
        details.append(detail)
    values: list[dict] = []
    for vertex in detail["vertices"]:
        base = f"{rest_url}/jobs/{job['jid']}/vertices/{vertex['id']}/metrics"
        ids = [
            m["id"] for m in _get(base) if m["id"].endswith((SOURCE_READ, SINK_SENT, SOURCE_LAG))
        ]
        if ids:
            values += _get(f"{base}?get={','.join(ids)}")
    return job_counts(job["state"], values)


def job_timeline(detail: dict) -> dict[str, float]:
    """Wall-clock times (epoch s) of a job from its REST detail: ``submitted`` (created),
    ``running`` (scheduled), ``tasks_running`` (the last task switched to RUNNING: every
    operator opened, Python included; reading starts), ``finished`` (when the detail was taken
    after the job's end). A time not reached yet is absent."""
    stamps = detail.get("timestamps", {})
    out: dict[str, float] = {}
    for name, state in (("submitted", "CREATED"), ("running", "RUNNING"), ("finished", "FINISHED")):
        if stamps.get(state, 0) > 0:
            out[name] = stamps[state] / 1000
    running = detail.get("subtask_running", [])
    if running and min(running) > 0:
        out["tasks_running"] = max(running) / 1000
    return out


def owns(rest_url: str, marker: tuple[str, str]) -> bool:
    """The cluster at ``rest_url`` has the configuration entry ``marker`` (key, value)."""
    key, value = marker
    return any(
        e["key"] == key and e["value"] == value for e in _get(f"{rest_url}/jobmanager/config")
    )


class JobStatus:
    """A status line every few seconds for a Flink job this process runs (a local
    MiniCluster: ``env.execute`` blocks, so a thread polls its REST API), and optionally a
    callback with each poll's counts (the demo's progress bar). Cheap: three or four small
    HTTP requests per line. A poll that fails (the job not up yet, or ending) is skipped.
    ``rest_urls``: where the cluster's REST API may be; the one whose configuration holds
    ``marker`` is this process's."""

    def __init__(
        self,
        rest_urls: list[str],
        marker: tuple[str, str],
        stage: str = "stream-job",
        every_s: float = STATUS_EVERY_S,
        on_counts: Callable[[JobCounts], None] | None = None,
        *,
        lines: bool = True,
    ) -> None:
        self.rest_urls = rest_urls
        self.marker = marker
        self.rest_url: str | None = None
        self.lines = lines
        self.line = StatusLine(stage, every_s)
        self.on_counts = on_counts
        self.every_s = every_s
        self.details: list[dict] = []
        """the job's REST detail answers so far (:func:`job_timeline`), the newest last"""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"status-{stage}", daemon=True)

    def _find(self) -> str | None:
        for url in self.rest_urls:
            with contextlib.suppress(OSError, ValueError, KeyError):
                if owns(url, self.marker):
                    return url
        return None

    def __enter__(self) -> JobStatus:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(min(self.every_s, 1.0) if self.on_counts else self.every_s):
            try:
                if self.rest_url is None:
                    self.rest_url = self._find()
                    if self.rest_url is None:
                        continue
                counts = poll_job_counts(self.rest_url, self.details)
                del self.details[:-1]  # the newest is enough
            except (OSError, ValueError, KeyError):
                continue  # not up yet, or going away
            if counts is None:
                continue
            if self.on_counts is not None:
                self.on_counts(counts)
            if self.lines and self.line.due():
                self.line.emit(
                    state=counts.state,
                    inputs=counts.inputs,
                    outputs=counts.outputs,
                    lag=counts.lag,
                )
