"""The standalone Flink session cluster (``make cluster-up``, infra/flink/) and the thin wrappers
``bookstream submit|jobs|savepoint|stop`` over Flink's own CLI and REST API.

The cluster is started by the PyPI wheel's own scripts (``pyflink/bin/jobmanager.sh``,
``taskmanager.sh``) with ``FLINK_CONF_DIR`` = ``<state>/flink-cluster/conf``, written here from
the project's configuration (:func:`write_cluster_conf`): every endpoint on 127.0.0.1, the REST
API on ``flink.cluster_rest_port``, the Python workers in this venv, checkpoints and savepoints
at the configured URIs, the restart strategy and the memory: the deployment keys a job submitted
to it does not set itself (``jobs.stream_job.job_environment``).

A job is submitted the way a Flink user does it (:func:`flink_run_command`)::

    FLINK_CONF_DIR=.state/flink-cluster/conf $FLINK_HOME/bin/flink run -d -p 2 \\
        -C file:///.../flink-sql-connector-kafka-5.0.0-2.2.jar \\
        -C file:///.../bookstream-flink-glue.jar \\
        -py jobs/stream_job.py -pyfs .state/flink-cluster/bookstream-python.zip --group-id G
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import site
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from udfs.config import PROJECT_ROOT, Config

__all__ = [
    "ClusterError",
    "cluster_conf",
    "cluster_env",
    "flink_home",
    "flink_run_command",
    "list_jobs",
    "overview",
    "savepoint",
    "stop_job",
    "submit",
    "wait_job",
    "write_cluster_conf",
]

JOB_SCRIPT = "jobs/stream_job.py"
"""The stream job's entry point, relative to the project root (``flink run -py``)."""
PY_PACKAGES = ("udfs", "jobs")
"""The job's Python packages, shipped with it to the TaskManagers (``flink run -pyfs``) in one
zip: Flink puts a *directory* given to ``-pyfs`` itself on the workers' ``PYTHONPATH`` (its
modules become top-level ones), a zip's root, so packages go in a zip."""
TERMINAL_STATES = frozenset({"FINISHED", "FAILED", "CANCELED"})


class ClusterError(RuntimeError):
    """The session cluster is not reachable, or refused or failed a request; the message says
    which and what to do."""


def flink_home() -> Path:
    """The PyPI wheel's Flink distribution (``bin/``, ``lib/``, ``opt/``, ``conf/``)."""
    spec = importlib.util.find_spec("pyflink")
    if spec is None or not spec.submodule_search_locations:
        raise ClusterError("pyflink is not installed in this environment: run `make install`")
    return Path(next(iter(spec.submodule_search_locations)))


def _python_path() -> str:
    """site-packages of this venv: thread mode runs Python inside the TaskManager through PEMJA,
    whose interpreter does not see a venv on its own (same reason as the local job's)."""
    return os.pathsep.join(site.getsitepackages())


def cluster_conf(cfg: Config) -> dict[str, str]:
    """Flink options of the session cluster (flattened keys of its ``config.yaml``)."""
    fl = cfg.flink
    cluster = cfg.flink_cluster_dir
    return {
        # every endpoint on loopback, like Kafka and PostgreSQL
        "jobmanager.rpc.address": "127.0.0.1",
        "jobmanager.bind-host": "127.0.0.1",
        "jobmanager.rpc.port": str(fl.cluster_rpc_port),
        "taskmanager.host": "127.0.0.1",
        "taskmanager.bind-host": "127.0.0.1",
        "rest.address": "127.0.0.1",
        "rest.bind-address": "127.0.0.1",
        "rest.port": str(fl.cluster_rest_port),
        # one slot per TaskManager: one Python interpreter per slot (thread mode)
        "taskmanager.numberOfTaskSlots": "1",
        "parallelism.default": "1",
        "jobmanager.memory.process.size": "1024m",
        "taskmanager.memory.process.size": fl.cluster_taskmanager_memory,
        "taskmanager.memory.managed.size": "256m",
        "jobmanager.execution.failover-strategy": "region",
        # a dead TaskManager is noticed after two failed heartbeat RPCs: 4 s, not Flink's 20 s
        # (10 s interval); loopback, so a missed beat is a dead process, not a slow network
        "heartbeat.interval": "2 s",
        # the Python of the job's workers and of `flink run -py`'s driver: this venv's
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
        # checkpoints of every job of the cluster (Flink adds <job-id>/chk-N), savepoints
        "execution.checkpointing.dir": f"{cfg.checkpoint_uri}/cluster",
        "execution.checkpointing.savepoint-dir": cfg.savepoint_uri,
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "3",
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": str(fl.restart_attempts),
        "restart-strategy.fixed-delay.delay": "2 s",
        # PEMJA (libpython in the TaskManager) from the cluster's class path: write_cluster_lib
        "classloader.parent-first-patterns.additional": "pemja.",
        "env.log.dir": str(cfg.flink_cluster_logs_dir),
        "env.pid.dir": str(cluster / "run"),
    }


def write_cluster_conf(cfg: Config) -> Path:
    """``<state>/flink-cluster/conf``: the wheel's ``config.yaml`` (its JVM options) with
    :func:`cluster_conf` on top, and its log4j files. Rewritten at every cluster start."""
    import yaml  # type: ignore[import-untyped]  # PyYAML (apache-beam needs it) has no stubs

    home = flink_home()
    conf_dir = cfg.flink_cluster_dir / "conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    (cfg.flink_cluster_dir / "run").mkdir(parents=True, exist_ok=True)
    cfg.flink_cluster_logs_dir.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load((home / "conf" / "config.yaml").read_text()) or {}
    flat: dict[str, Any] = {}

    def flatten(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                flatten(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = node

    flatten("", base)
    # the wheel's defaults name hosts and memory this project sets itself
    flat = {k: v for k, v in flat.items() if k.startswith("env.java.")}
    flat.update(cluster_conf(cfg))
    text = (
        "# written by infra/flink/start.sh (jobs/cluster.py) at every start: edit udfs/config.py\n"
    )
    text += yaml.safe_dump({k: str(v) for k, v in flat.items()}, default_flow_style=False)
    (conf_dir / "config.yaml").write_text(text)
    for name in ("log4j.properties", "log4j-cli.properties", "log4j-console.properties"):
        (conf_dir / name).write_bytes((home / "conf" / name).read_bytes())
    write_cluster_lib(cfg)
    return conf_dir


def write_cluster_lib(cfg: Config) -> Path:
    """``<state>/flink-cluster/lib`` (``FLINK_LIB_DIR``): links to the wheel's ``lib/*.jar`` and
    its ``opt/flink-python*.jar``. PEMJA, which loads libpython into the TaskManager, must be
    loaded once per JVM: from a job's own class loader (the wheel ships flink-python in
    ``opt/``, so ``flink run`` adds it to each job) a second Python job on the same TaskManager
    fails (``NoSuchFieldException: loadedLibraryNames``). On the cluster's class path, and
    parent-first (:func:`cluster_conf`), every job shares it."""
    home = flink_home()
    lib = cfg.flink_cluster_dir / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    for old in lib.glob("*.jar"):
        old.unlink()
    for jar in [
        *sorted((home / "lib").glob("*.jar")),
        *sorted((home / "opt").glob("flink-python*.jar")),
    ]:
        (lib / jar.name).symlink_to(jar)
    return lib


def cluster_env(cfg: Config) -> dict[str, str]:
    """The environment of the wheel's scripts and of ``flink``: the generated configuration,
    logs and pids under ``<state>/flink-cluster``."""
    cluster = cfg.flink_cluster_dir
    return {
        "FLINK_CONF_DIR": str(cluster / "conf"),
        "FLINK_LIB_DIR": str(cluster / "lib"),
        "FLINK_LOG_DIR": str(cfg.flink_cluster_logs_dir),
        "FLINK_PID_DIR": str(cluster / "run"),
        "FLINK_IDENT_STRING": "bookstream",
        "PYTHONPATH": _python_path(),
        # the driver imports udfs from the shipped zip: where the checkout is
        "BOOKSTREAM_PROJECT_ROOT": str(PROJECT_ROOT),
    }


# -- REST ----------------------------------------------------------------------------------


def _rest(cfg: Config, method: str, path: str, body: dict | None = None) -> Any:
    url = f"{cfg.flink_cluster_rest_url}{path}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:2000]
        raise ClusterError(f"Flink REST {method} {url}: HTTP {exc.code}: {detail}") from exc
    except OSError as exc:
        raise ClusterError(
            f"no Flink session cluster answers at {cfg.flink_cluster_rest_url} ({exc}): "
            "start it with `make cluster-up`"
        ) from exc
    return json.loads(raw) if raw else {}


def overview(cfg: Config) -> dict[str, Any]:
    """``GET /overview``: TaskManagers, slots, jobs by state, Flink version."""
    return dict(_rest(cfg, "GET", "/overview"))


def list_jobs(cfg: Config) -> list[dict[str, Any]]:
    """Every job the cluster knows: id, name, state, start time, parallelism-relevant counts."""
    jobs = _rest(cfg, "GET", "/jobs/overview").get("jobs", [])
    return [
        {
            "job_id": j["jid"],
            "name": j.get("name"),
            "state": j.get("state"),
            "start_time": j.get("start-time"),
            "duration_ms": j.get("duration"),
            "tasks": j.get("tasks", {}).get("total"),
        }
        for j in sorted(jobs, key=lambda j: j.get("start-time", 0))
    ]


def job_state(cfg: Config, job_id: str) -> str:
    return str(_rest(cfg, "GET", f"/jobs/{job_id}").get("state"))


def job_detail(cfg: Config, job_id: str) -> dict[str, Any]:
    return dict(_rest(cfg, "GET", f"/jobs/{job_id}"))


def wait_job(cfg: Config, job_id: str, states: frozenset[str], timeout_s: float) -> str:
    """Poll until the job is in one of ``states`` (or a terminal one); its state."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = job_state(cfg, job_id)
        if state in states or state in TERMINAL_STATES:
            return state
        if time.monotonic() > deadline:
            raise ClusterError(f"job {job_id} still {state} after {timeout_s:.0f} s")
        time.sleep(0.5)


def checkpoint_stats(cfg: Config, job_id: str) -> dict[str, Any]:
    """``GET /jobs/<id>/checkpoints``, reduced: checkpoints completed and failed, the latest
    completed one (id, trigger time in ms) and the one the job last restored (id or None)."""
    stats = _rest(cfg, "GET", f"/jobs/{job_id}/checkpoints")
    latest = stats.get("latest") or {}
    completed = latest.get("completed") or {}
    restored = latest.get("restored") or {}
    counts = stats.get("counts") or {}
    return {
        "completed": int(counts.get("completed", 0)),
        "failed": int(counts.get("failed", 0)),
        "restored_count": int(counts.get("restored", 0)),
        "latest_id": completed.get("id"),
        "latest_trigger_ms": completed.get("trigger_timestamp"),
        "restored_id": restored.get("id"),
    }


NOT_ALL_RUNNING = "Not all required tasks are currently running"
"""Flink refuses a savepoint while a task is still being deployed or initialised (a Python
operator opens its interpreter first): the request is repeated once all run."""


def wait_all_running(cfg: Config, job_id: str, timeout_s: float) -> bool:
    """Poll until every task of the job runs (True), or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        vertices = job_detail(cfg, job_id).get("vertices", [])
        if vertices and all(v.get("status") == "RUNNING" for v in vertices):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def _savepoint_request(
    cfg: Config, job_id: str, path: str, body: dict[str, Any], timeout_s: float
) -> str:
    """POST a savepoint (or stop-with-savepoint) request and wait for its location; repeated
    while Flink answers that not all tasks run yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        wait_all_running(cfg, job_id, max(deadline - time.monotonic(), 0))
        request = _rest(cfg, "POST", path, body)
        try:
            return _wait_savepoint(cfg, job_id, request["request-id"], timeout_s)
        except ClusterError as exc:
            if NOT_ALL_RUNNING not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(1)


def _wait_savepoint(cfg: Config, job_id: str, request_id: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        res = _rest(cfg, "GET", f"/jobs/{job_id}/savepoints/{request_id}")
        if res.get("status", {}).get("id") == "COMPLETED":
            op = res.get("operation", {})
            if "failure-cause" in op:
                cause = op["failure-cause"].get("stack-trace", "")
                raise ClusterError(f"savepoint of job {job_id} failed: {cause[:3000]}")
            return str(op["location"])
        if time.monotonic() > deadline:
            raise ClusterError(f"savepoint of job {job_id} not done after {timeout_s:.0f} s")
        time.sleep(0.5)


def savepoint(
    cfg: Config, job_id: str, target: str | None = None, timeout_s: float = 300
) -> dict[str, Any]:
    """Trigger a savepoint of a running job (it keeps running); its location when complete."""
    body = {"target-directory": target or cfg.savepoint_uri, "cancel-job": False}
    location = _savepoint_request(cfg, job_id, f"/jobs/{job_id}/savepoints", body, timeout_s)
    return {"job_id": job_id, "savepoint": location}


def stop_job(
    cfg: Config,
    job_id: str,
    *,
    with_savepoint: bool,
    target: str | None = None,
    timeout_s: float = 300,
) -> dict[str, Any]:
    """``with_savepoint``: stop with a savepoint (no drain: no end-of-input watermark, so the
    job can continue from it exactly where it stopped); otherwise cancel."""
    if with_savepoint:
        body = {"targetDirectory": target or cfg.savepoint_uri, "drain": False}
        location = _savepoint_request(cfg, job_id, f"/jobs/{job_id}/stop", body, timeout_s)
        state = wait_job(cfg, job_id, TERMINAL_STATES, timeout_s)
        return {"job_id": job_id, "state": state, "savepoint": location}
    _rest(cfg, "PATCH", f"/jobs/{job_id}?mode=cancel")
    state = wait_job(cfg, job_id, TERMINAL_STATES, timeout_s)
    return {"job_id": job_id, "state": state, "savepoint": None}


# -- flink run ------------------------------------------------------------------------------


def python_files_zip(cfg: Config) -> Path:
    """``<state>/flink-cluster/bookstream-python.zip``: the ``.py`` files of
    :data:`PY_PACKAGES` as of now (rewritten at every submit), for ``flink run -pyfs``."""
    import zipfile

    target = cfg.flink_cluster_dir / "bookstream-python.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".zip.{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for package in PY_PACKAGES:
            for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
                zf.write(path, path.relative_to(PROJECT_ROOT).as_posix())
    tmp.replace(target)
    return target


def flink_run_command(
    cfg: Config,
    job_args: list[str],
    *,
    parallelism: int | None = None,
    from_savepoint: str | None = None,
    detached: bool = True,
) -> list[str]:
    """``flink run`` of the stream job on the session cluster (run in the project root with
    :func:`cluster_env`). The connector and glue jars go in with ``-C`` (``-j`` takes one jar
    only; ``-Dpipeline.jars`` reaches the cluster but not the client's class loader, where the
    Python driver builds the Kafka source); parallelism and the savepoint to restore are
    Flink's own options."""
    cmd = [str(flink_home() / "bin" / "flink"), "run"]
    if detached:
        cmd.append("-d")
    if parallelism is not None:
        cmd += ["-p", str(parallelism)]
    if from_savepoint:
        cmd += ["-s", from_savepoint]
    for jar in (cfg.kafka_connector_jar, cfg.glue_jar):
        cmd += ["-C", jar.as_uri()]
    cmd += ["-py", JOB_SCRIPT, "-pyfs", str(python_files_zip(cfg)), *job_args]
    return cmd


JOB_ID = re.compile(r"JobID ([0-9a-f]{32})")


@dataclass(frozen=True)
class Submitted:
    job_id: str
    command: list[str]
    output: str


def submit(
    cfg: Config,
    job_args: list[str],
    *,
    parallelism: int | None = None,
    from_savepoint: str | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 300,
) -> Submitted:
    """Submit the stream job to the session cluster with ``flink run -d``; its job id."""
    for jar in (cfg.kafka_connector_jar, cfg.glue_jar):
        if not jar.is_file():
            raise FileNotFoundError(f"{jar} is missing: run `make install`")
    overview(cfg)  # a clear error when the cluster is down, before a JVM starts
    cmd = flink_run_command(cfg, job_args, parallelism=parallelism, from_savepoint=from_savepoint)
    proc = subprocess.run(
        cmd,
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {}), **cluster_env(cfg)},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    output = proc.stdout + proc.stderr
    found = JOB_ID.search(output)
    if proc.returncode != 0 or found is None:
        raise ClusterError(
            f"flink run exited {proc.returncode} without a job id "
            f"(log: {cfg.flink_cluster_dir / 'log'}):\n{output[-4000:]}"
        )
    return Submitted(job_id=found.group(1), command=cmd, output=output)


def main(argv: list[str]) -> int:
    """infra/flink/: ``conf`` writes the cluster's configuration (prints its directory);
    ``check N`` exits 0 when the cluster answers with at least N TaskManagers (prints why not)."""
    from udfs.config import load_config

    cfg = load_config()
    if argv == ["conf"]:
        print(write_cluster_conf(cfg))
        return 0
    if len(argv) == 2 and argv[0] == "check":
        try:
            ov = overview(cfg)
        except ClusterError as exc:
            print(f"flink: {exc}")
            return 1
        tms = int(ov.get("taskmanagers", 0))
        where = cfg.flink_cluster_rest_url
        if tms < int(argv[1]):
            print(f"flink: {where} answers, {tms} of {argv[1]} TaskManager(s) registered")
            return 1
        print(
            f"flink: ok, Flink {ov.get('flink-version')}, {where}, {tms} TaskManager(s), "
            f"{ov.get('slots-available')}/{ov.get('slots-total')} slot(s) free, "
            f"{ov.get('jobs-running')} job(s) running"
        )
        return 0
    print("usage: python -m jobs.cluster conf | check N_TASKMANAGERS", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
