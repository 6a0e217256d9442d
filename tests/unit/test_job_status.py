"""The stream job's status line reads the job's REST metrics: which metric ids count as its
inputs, outputs and lag (ids as a local MiniCluster of this job answers them)."""

from __future__ import annotations

import logging

import pytest

from jobs.status import JobCounts, StatusLine, job_counts

SINK = "kafka-sink_it_features_it_dead_letter_it_stats_it_qualit__Writer"
ANSWER = [
    {"id": "0.Source__events.pendingRecords", "value": "40"},
    {"id": "0.Source__events.numRecordsOut", "value": "1033"},
    {"id": "0.micro-batcher.numRecordsIn", "value": "1033"},
    {"id": f"0.{SINK}.numRecordsSend", "value": "2206"},
    {"id": f"0.{SINK}.numRecordsIn", "value": "2206"},
    {"id": "0.numRecordsOut", "value": "2206"},
    # a second subtask (parallelism 2): summed
    {"id": "1.Source__events.numRecordsOut", "value": "7"},
    {"id": "1.Source__events.pendingRecords", "value": "NaN"},
]


def test_inputs_outputs_and_lag_are_the_source_and_sink_operators_own() -> None:
    assert job_counts("RUNNING", ANSWER) == JobCounts("RUNNING", 1040, 2206, 40)
    assert job_counts("INITIALIZING", []) == JobCounts("INITIALIZING", 0, 0, 0)


def test_status_line_names_its_stage_and_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bookstream.status")
    line = StatusLine("stream-job", every_s=3600)
    assert not line.due()
    line.emit(state="RUNNING", inputs=1040, outputs=2206, lag=40)
    assert caplog.messages == ["[stream-job] state=RUNNING inputs=1040 outputs=2206 lag=40"]
