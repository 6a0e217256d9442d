"""CPU seconds of a run's processes, read from Linux's /proc, and its RAPL energy counter.

Groups: ``bookstream`` (this process and its Python descendants), ``flink`` (its JVM
descendants: PyFlink's gateway running the MiniCluster with the job's Python in thread mode),
and each service the project started (``<state>/run/<service>.pid``: kafka, postgres, redis)
with its descendants (PostgreSQL forks one backend per connection). A process's CPU time
includes its reaped children's, so work of short-lived children is not lost.
"""

from __future__ import annotations

import os
from pathlib import Path

from udfs.config import Config
from udfs.energy import EnergyUse, energy_of

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
SERVICES = ("kafka", "postgres", "redis")


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


def _processes() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command name, CPU seconds incl. reaped children) of every process."""
    found: dict[int, tuple[int, str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm, fields = _stat(entry.name)
        except (OSError, ValueError):  # exited while we looked
            continue
        ticks = sum(int(f) for f in fields[11:15])
        found[int(entry.name)] = (int(fields[1]), comm, ticks * _TICK_S)
    return found


def _tree(root: int, procs: dict[int, tuple[int, str, float]]) -> set[int]:
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


def descendant_pids(root: int) -> list[int]:
    """Every live process below ``root`` (the PyFlink gateway JVM may sit under a launcher)."""
    return sorted(_tree(root, _processes()) - {root})


def cpu_seconds(cfg: Config) -> dict[str, float]:
    """CPU seconds so far of each group (see the module's docstring)."""
    procs = _processes()
    groups: dict[str, float] = {"bookstream": 0.0, "flink": 0.0}
    for pid in _tree(os.getpid(), procs):
        _ppid, comm, cpu = procs[pid]
        groups["flink" if comm == "java" else "bookstream"] += cpu
    for service in SERVICES:
        try:
            root = int((cfg.state_dir / "run" / f"{service}.pid").read_text().strip())
        except (OSError, ValueError):
            continue
        groups[service] = sum(procs[p][2] for p in _tree(root, procs))
    return groups


def rapl_joules(cfg: Config) -> float | None:
    """The package energy counter (J), or None where the machine does not expose it."""
    try:
        return int(Path(cfg.energy.rapl_path).read_text()) / 1e6
    except (OSError, ValueError):
        return None


class EnergyMeter:
    """CPU time and energy between its creation and :meth:`stop`."""

    def __init__(self, cfg: Config) -> None:
        self._cfg = cfg
        self._cpu0 = cpu_seconds(cfg)
        self._rapl0 = rapl_joules(cfg)

    def stop(self) -> EnergyUse:
        cpu1 = cpu_seconds(self._cfg)
        used = {k: max(0.0, v - self._cpu0.get(k, 0.0)) for k, v in cpu1.items()}
        rapl1 = rapl_joules(self._cfg)
        joules = None
        if self._rapl0 is not None and rapl1 is not None:
            joules = rapl1 - self._rapl0
            if joules < 0:  # the counter wrapped once: add its range
                limit = Path(self._cfg.energy.rapl_path).with_name("max_energy_range_uj")
                joules += int(limit.read_text()) / 1e6
        return energy_of(used, self._cfg.energy, rapl_joules=joules)
