"""The stream job's status line reads the job's REST metrics: which metric ids count as its
inputs, outputs and lag (ids as a local MiniCluster of this job answers them)."""

from __future__ import annotations

import logging

import pytest

from jobs.status import JobCounts, StatusLine, job_counts, job_timeline

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


# the fields of a job detail answer (GET /jobs/<jid>) a local MiniCluster gave during a demo,
# with the subtasks' RUNNING times the poll adds (GET .../vertices/<vid>/subtasktimes)
DETAIL = {
    "state": "RUNNING",
    "timestamps": {
        "INITIALIZING": 1796088761080,
        "CREATED": 1796088762567,
        "RUNNING": 1796088762973,
        "FINISHED": 0,
        "FAILED": 0,
    },
    "vertices": [{"status": "RUNNING", "start-time": 1796088763562, "end-time": -1}],
    "subtask_running": [1796088768120],
}


def test_the_job_timeline_is_the_jobmanagers_own_times() -> None:
    """The demo's ``phases_s`` come from these: when the job was created, scheduled, when its
    task ran (operators opened), when it finished; a time not reached is absent (FINISHED 0)."""
    assert job_timeline(DETAIL) == {
        "submitted": 1796088762.567,
        "running": 1796088762.973,
        "tasks_running": 1796088768.12,
    }
    done = {**DETAIL, "timestamps": {**DETAIL["timestamps"], "FINISHED": 1796088790001}}
    assert job_timeline(done)["finished"] == 1796088790.001
    # a task still deploying (RUNNING time -1): not running yet
    assert "tasks_running" not in job_timeline({**DETAIL, "subtask_running": [-1]})
    assert job_timeline({}) == {}


def test_inputs_outputs_and_lag_are_the_source_and_sink_operators_own() -> None:
    assert job_counts("RUNNING", ANSWER) == JobCounts("RUNNING", 1040, 2206, 40)
    assert job_counts("INITIALIZING", []) == JobCounts("INITIALIZING", 0, 0, 0)


def test_status_line_names_its_stage_and_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bookstream.status")
    line = StatusLine("stream-job", every_s=3600)
    assert not line.due()
    line.emit(state="RUNNING", inputs=1040, outputs=2206, lag=40)
    assert caplog.messages == ["[stream-job] state=RUNNING inputs=1040 outputs=2206 lag=40"]
