"""CPU seconds of a run's processes, read from Linux's /proc, and its RAPL energy counter.

Groups: ``bookstream`` (this process and its Python descendants), ``flink`` (its JVM
descendants: PyFlink's gateway running the MiniCluster with the job's Python in thread mode),
and each service the project started (``<state>/run/<service>.pid``: kafka, postgres, redis)
with its descendants (PostgreSQL forks one backend per connection). A process's CPU time
includes its reaped children's, so work of short-lived children is not lost.

With ``cluster`` (``bookstream demo --cluster``), the Flink session cluster of this checkout
too (infra/flink: pids under ``<state>/flink-cluster/run``): ``flink-jobmanager``,
``flink-taskmanager`` (its JVMs) and ``flink-python`` (the TaskManagers' Python workers, when
alive; a worker that ended counts with the TaskManager that reaped it). The cluster is shared:
any other job running on it during the run is charged to the run too.
"""

from __future__ import annotations

import os
from pathlib import Path

from udfs.config import Config
from udfs.energy import EnergyUse, energy_of

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
SERVICES = ("kafka", "postgres", "redis")
CLUSTER_PID_FILES = {
    "flink-jobmanager": "flink-bookstream-standalonesession.pid",
    "flink-taskmanager": "flink-bookstream-taskexecutor.pid",
}
"""group -> pid file the wheel's scripts write under ``<state>/flink-cluster/run``
(``FLINK_IDENT_STRING=bookstream``: infra/flink/common.sh)."""


def _stat(pid: int | str) -> tuple[str, list[str]]:
    """(command name, the fields after it) of /proc/<pid>/stat: the name may hold spaces and
    parentheses, so the fields start after its last ")"."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()


def proc_cpu_s(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU seconds of a process so far (utime + stime; with
    ``reaped_children``, its waited-for children's too: cutime + cstime)."""
    fields = _stat(pid)[1]
    return sum(int(f) for f in fields[11 : 15 if reaped_children else 13]) * _TICK_S


def proc_start_and_cpu_s(pid: int) -> tuple[int, float]:
    """(start time in clock ticks since boot: with the pid, the process's identity, as pids are
    reused; its own CPU seconds so far)."""
    fields = _stat(pid)[1]
    return int(fields[19]), sum(int(f) for f in fields[11:13]) * _TICK_S


def process_table(*, reaped_children: bool = True) -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command name, CPU seconds) of every process (with
    ``reaped_children``: its waited-for children's included)."""
    found: dict[int, tuple[int, str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm, fields = _stat(entry.name)
        except (OSError, ValueError):  # exited while we looked
            continue
        ticks = sum(int(f) for f in fields[11 : 15 if reaped_children else 13])
        found[int(entry.name)] = (int(fields[1]), comm, ticks * _TICK_S)
    return found


def tree_pids(root: int, procs: dict[int, tuple[int, str, float]]) -> set[int]:
    """``root`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _comm, _cpu) in procs.items():
        children.setdefault(ppid, []).append(pid)
    seen, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in procs and pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, []))
    return seen


def tree_cpu_s(root: int, procs: dict[int, tuple[int, str, float]]) -> dict[str, float]:
    """CPU seconds of ``root``'s tree: ``{"python": ..., "flink": ...}`` (JVMs apart)."""
    groups = {"python": 0.0, "flink": 0.0}
    for pid in tree_pids(root, procs):
        _ppid, comm, cpu = procs[pid]
        groups["flink" if comm == "java" else "python"] += cpu
    return groups


def descendant_pids(root: int) -> list[int]:
    """Every live process below ``root`` (the PyFlink gateway JVM may sit under a launcher)."""
    return sorted(tree_pids(root, process_table()) - {root})


def service_cpu_seconds(
    cfg: Config, procs: dict[int, tuple[int, str, float]] | None = None
) -> dict[str, float]:
    """CPU seconds so far of each service the project started (its pid file), children in."""
    procs = process_table() if procs is None else procs
    return {
        service: sum(procs[p][2] for p in tree_pids(root, procs))
        for service, root in service_roots(cfg).items()
    }


def service_roots(cfg: Config) -> dict[str, int]:
    """service -> pid of each service the project started (its pid file)."""
    roots: dict[str, int] = {}
    for service in SERVICES:
        try:
            roots[service] = int((cfg.state_dir / "run" / f"{service}.pid").read_text().strip())
        except (OSError, ValueError):
            continue
    return roots


def cluster_cpu_seconds(
    cfg: Config, procs: dict[int, tuple[int, str, float]] | None = None
) -> dict[str, float]:
    """CPU seconds so far of the session cluster's processes (see the module's docstring);
    empty when it is not running. A pid counts only while it runs Flink with this checkout's
    configuration (a reused pid is not ours), as infra/flink/common.sh checks."""
    procs = process_table() if procs is None else procs
    conf_dir = str(cfg.flink_cluster_dir / "conf")
    groups: dict[str, float] = {}
    for group, name in CLUSTER_PID_FILES.items():
        try:
            lines = (cfg.flink_cluster_dir / "run" / name).read_text().split()
        except OSError:
            continue
        for root in {int(x) for x in lines if x.isdigit()}:
            try:
                cmdline = Path(f"/proc/{root}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if root not in procs or conf_dir not in cmdline:
                continue
            for pid in tree_pids(root, procs):
                _ppid, comm, cpu = procs[pid]
                key = group if pid == root or comm == "java" else "flink-python"
                groups[key] = groups.get(key, 0.0) + cpu
    return groups


def cpu_seconds(cfg: Config, *, cluster: bool = False) -> dict[str, float]:
    """CPU seconds so far of each group (see the module's docstring)."""
    procs = process_table()
    own = tree_cpu_s(os.getpid(), procs)
    groups = {"bookstream": own["python"], "flink": own["flink"]}
    groups.update(service_cpu_seconds(cfg, procs))
    if cluster:
        groups.update(cluster_cpu_seconds(cfg, procs))
    return groups


def rapl_joules(cfg: Config) -> float | None:
    """The package energy counter (J), or None where the machine does not expose it."""
    try:
        return int(Path(cfg.energy.rapl_path).read_text()) / 1e6
    except (OSError, ValueError):
        return None


class EnergyMeter:
    """CPU time and energy between its creation and :meth:`stop` (``cluster``: the Flink
    session cluster's processes too)."""

    def __init__(self, cfg: Config, *, cluster: bool = False) -> None:
        self._cfg = cfg
        self._cluster = cluster
        self.start_cpu_s = cpu_seconds(cfg, cluster=cluster)
        self._rapl0 = rapl_joules(cfg)

    def stop(self, used_cpu_s: dict[str, float] | None = None) -> EnergyUse:
        """The energy since the start; ``used_cpu_s``: CPU seconds per group the caller
        measured itself (the live session's per-process breakdown) instead of the groups'
        difference."""
        if used_cpu_s is None:
            cpu1 = cpu_seconds(self._cfg, cluster=self._cluster)
            used = {k: max(0.0, v - self.start_cpu_s.get(k, 0.0)) for k, v in cpu1.items()}
        else:
            used = dict(used_cpu_s)
        rapl1 = rapl_joules(self._cfg)
        joules = None
        if self._rapl0 is not None and rapl1 is not None:
            joules = rapl1 - self._rapl0
            if joules < 0:  # the counter wrapped once: add its range
                limit = Path(self._cfg.energy.rapl_path).with_name("max_energy_range_uj")
                joules += int(limit.read_text()) / 1e6
        return energy_of(used, self._cfg.energy, rapl_joules=joules)
