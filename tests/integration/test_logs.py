"""Every service and job logs under ``<state>/logs/``: Flink's own log (the MiniCluster of a
job) too, not PyFlink's ``site-packages/pyflink/log``; ``bookstream doctor`` says where each
log is."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pyflink
from it_helpers import BOOKSTREAM, PROJECT_ROOT, run_cli


def test_a_jobs_flink_log_is_under_state_logs(kafka_topics) -> None:
    cfg, env = kafka_topics("logs")
    pyflink_log_dir = Path(pyflink.__file__).parent / "log"
    before = {p: p.stat().st_mtime for p in pyflink_log_dir.glob("*.log")}
    # the job chooses its own log file: nothing of an in-process job run earlier by this
    # pytest process (which exports FLINK_LOG_DIR / FLINK_IDENT_STRING for its gateway) leaks in
    clean = {
        k: v for k, v in os.environ.items() if k not in ("FLINK_LOG_DIR", "FLINK_IDENT_STRING")
    }
    proc = subprocess.Popen(
        [str(BOOKSTREAM), "stream-job", "--bounded", "--group-id", f"it-{cfg.topics.events}"],
        cwd=PROJECT_ROOT,
        env={**clean, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    logs = list(cfg.flink_logs_dir.glob(f"flink-bookstream-{proc.pid}-python-*.log"))
    assert len(logs) == 1, sorted(p.name for p in cfg.flink_logs_dir.glob("*"))
    text = logs[0].read_text(errors="replace")
    assert "MiniCluster" in text or "TaskExecutor" in text, text[:2000]
    after = {p: p.stat().st_mtime for p in pyflink_log_dir.glob("*.log")}
    assert after == before, "the job wrote into site-packages/pyflink/log"

    report, _proc, _elapsed = run_cli(["doctor", "--offline"], env)
    assert set(report["logs"]) == {
        "kafka",
        "postgres",
        "redis",
        "prometheus",
        "alertmanager",
        "flink",
        "flink-cluster",
    }
    for path in report["logs"].values():
        assert path.startswith(str(cfg.logs_dir)), report["logs"]
