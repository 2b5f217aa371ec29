"""Helpers shared by the benchmark scripts (run as `python bench/<script>.py`)."""

from __future__ import annotations

import math
import numbers
import os
import platform
import resource
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any


def machine(packages: Sequence[str] = (), load: bool = False) -> str:
    """A one-line description of this machine.

    Host, logical CPUs (and how many this process may use, where fewer), CPU
    model, memory and Python; then the installed version of each of
    `packages` (distribution names) and, with `load`, the load average now.
    """
    cpu, memory = "unknown CPU", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f", {int(line.split()[1]) / 2**20:.0f} GiB RAM"
                break
    except OSError:
        pass
    cores = f"{os.cpu_count()} cores"
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) != os.cpu_count():
        cores += f" ({len(os.sched_getaffinity(0))} usable)"
    text = f"{platform.node()}: {cores}, {cpu}{memory}, Python {platform.python_version()}"
    if packages:
        text += "; " + ", ".join(f"{name} {_version(name)}" for name in packages)
    if load and hasattr(os, "getloadavg"):
        text += "; load average {:.2f} {:.2f} {:.2f} at start".format(*os.getloadavg())
    return text


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def markdown(rows: Iterable[Mapping[str, Any]], floats: str | None = None) -> str:
    """A markdown table of `rows` (dicts with the same keys, e.g. `frame.to_dict("records")`).

    None prints as a dash. With `floats` (a format such as "{:.1f}"), float
    values are formatted with it and NaN prints as "n/a"; without, every value
    prints as `str(value)`.
    """
    rows = list(rows)
    columns = list(rows[0])
    lines = ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[c], floats) for c in columns) + " |")
    return "\n".join(lines)


def _cell(value: Any, floats: str | None) -> str:
    if value is None:
        return "-"
    is_float = isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)
    if floats is not None and is_float:
        return "n/a" if math.isnan(value) else floats.format(value)
    return str(value)


# --------------------------------------------------------------------------- timing


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its child processes that have ended."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, "n/a" where the system has none."""
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_cpu_seconds() -> float | None:
    """CPU seconds every process of the machine has used (busy time in /proc/stat), or None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    busy = sum(values[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


class Timer:
    """Seconds a `with` block took.

    `wall`: wall seconds; `cpu`: CPU seconds (user + system) of this process
    and of the worker processes that ended within the block (a process pool
    shut down inside it); `others`: CPU seconds the rest of the machine used
    meanwhile (None where /proc/stat is missing), to tell a loaded machine.
    """

    wall: float
    cpu: float
    others: float | None

    def __enter__(self) -> Timer:
        self._machine0 = machine_cpu_seconds()
        self._cpu0, self._wall0 = cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall0
        self.cpu = cpu_seconds() - self._cpu0
        used = machine_cpu_seconds()
        self.others = None
        if used is not None and self._machine0 is not None:
            self.others = max(0.0, used - self._machine0 - self.cpu)


def best_of(repeats: int, run: Callable[[], Any]) -> tuple[Timer, Any]:
    """The fastest (by wall time) of `repeats` calls of `run()`: its Timer, and the last result."""
    best, result = None, None
    for _ in range(max(1, int(repeats))):
        with Timer() as timer:
            result = run()
        if best is None or timer.wall < best.wall:
            best = timer
    return best, result
