"""Progress of long loops: a tqdm bar on a terminal, a few log lines everywhere else.

A tqdm bar redraws itself with carriage returns many times a second; written to
a log file (a Snakemake `log:`, a Slurm job's stderr) every redraw stays, and
the log becomes mostly bar. `progress_bar` therefore returns a real tqdm only
when its stream (stderr by default) is a terminal. Otherwise it returns a
`LogProgress`, which writes ordinary log lines (INFO, through the caller's
module logger unless one is passed):

* one at each 10 % step of the total (`fraction`), but never within
  `min_interval` (5 s) of the previous line: a loop of a few seconds writes
  only its final line;
* one whenever `max_interval` (60 s) passed since the previous line, so a slow
  loop, or one of unknown length, shows it is alive;
* a final line when the loop ends (the iterable is exhausted, or `close()` /
  the `with` block ends); with `leave=False` only if an earlier line was
  written, so short inner loops (validation, prediction) stay silent.

A line reads ``<desc>: 300/1000 file (30%) in 0:00:12, 25.0 file/s, ETA 0:00:28,
loss=0.1234``: count, percentage, elapsed time, rate, ETA (no percentage and no
ETA when the total is unknown) and the latest `set_postfix` values. No line
holds a carriage return.

Standard library plus tqdm only.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from tqdm import tqdm

log = logging.getLogger(__name__)

FRACTION = 0.1
MIN_INTERVAL = 5.0
MAX_INTERVAL = 60.0


def is_terminal(stream: IO | None = None) -> bool:
    """Whether `stream` (default: `sys.stderr`) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def progress_bar(
    iterable: Iterable | None = None,
    total: float | None = None,
    desc: str = "",
    *,
    unit: str = "it",
    disable: bool = False,
    leave: bool = True,
    logger: logging.Logger | None = None,
    file: IO | None = None,
    fraction: float = FRACTION,
    min_interval: float = MIN_INTERVAL,
    max_interval: float = MAX_INTERVAL,
    **tqdm_kwargs: Any,
):
    """Progress over `iterable` (or driven by `.update(n)`): a tqdm bar on a terminal, else log lines.

    On a terminal (`file`, default `sys.stderr`, is a TTY) this returns
    `tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable,
    leave=leave, file=file, **tqdm_kwargs)`. Otherwise a `LogProgress` with the
    same use (iterate it, or `.update(n)`; `.set_postfix(**values)`;
    `.close()` or a `with` block) that logs through `logger` (default: the
    calling module's logger) as the module docstring describes; the tqdm-only
    keyword arguments (`mininterval`, `dynamic_ncols`, ...) are then ignored.
    `total` defaults to `len(iterable)` where it has one. `disable=True` shows
    and logs nothing.
    """
    if not disable and is_terminal(file):
        return tqdm(
            iterable,
            total=total,
            desc=desc,
            unit=unit,
            leave=leave,
            file=file,
            **tqdm_kwargs,
        )
    if logger is None:
        caller = sys._getframe(1).f_globals.get("__name__", __name__)
        logger = logging.getLogger(caller)
    return LogProgress(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=disable,
        leave=leave,
        logger=logger,
        fraction=fraction,
        min_interval=min_interval,
        max_interval=max_interval,
    )


class LogProgress:
    """The log-line stand-in for a tqdm bar (see the module docstring for when it writes).

    Supports what this package's loops use of tqdm: iteration, `update(n)`,
    `set_postfix(**values)` (shown in the next line written), `close()`, the
    context manager protocol, and the `n`/`total` attributes.
    """

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: float | None = None,
        desc: str = "",
        *,
        unit: str = "it",
        disable: bool = False,
        leave: bool = True,
        logger: logging.Logger | None = None,
        fraction: float = FRACTION,
        min_interval: float = MIN_INTERVAL,
        max_interval: float = MAX_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < fraction <= 1:
            raise ValueError(f"progress fraction must be in (0, 1], got {fraction}")
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except (TypeError, AttributeError):
                total = None
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.unit = unit
        self.disable = disable
        self.leave = leave
        self.logger = logger or log
        self.fraction = float(fraction)
        self.min_interval = float(min_interval)
        self.max_interval = float(max_interval)
        self.n = 0
        self.postfix: dict[str, str] = {}
        self.lines = 0
        self._clock = clock
        self._start = clock()
        self._last_line = self._start
        self._next_step = 1
        self._closed = False

    # -- the tqdm surface
    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError(f"progress {self.desc!r} has no iterable; use update(n)")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        """Count `n` more items done; logs a line when one is due."""
        if self.disable or self._closed:
            self.n += n
            return
        self.n += n
        if self.total and self.n >= self.total:
            return  # the final line (close) reports the end
        now = self._clock()
        since = now - self._last_line
        due = since >= self.max_interval
        if self.total and since >= self.min_interval:
            step = math.floor(self.n / self.total / self.fraction + 1e-9)
            due = due or step >= self._next_step
        if due:
            self._write(now, final=False)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **values: Any):
        """Values shown after the counts in the next line (tqdm's signature; `refresh` is ignored)."""
        merged = {**(ordered_dict or {}), **values}
        self.postfix = {str(k): _format_value(v) for k, v in merged.items()}

    def close(self) -> None:
        """Write the final line (once; see `leave`) and stop counting."""
        if self._closed:
            return
        self._closed = True
        if self.disable or (not self.leave and self.lines == 0):
            return
        self._write(self._clock(), final=True)

    # -- lines
    def _write(self, now: float, final: bool) -> None:
        elapsed = max(0.0, now - self._start)
        rate = self.n / elapsed if elapsed > 0 else 0.0
        count = f"{_format_count(self.n)}"
        if self.total is not None:
            count += f"/{_format_count(self.total)}"
        count += f" {self.unit}"
        if self.total:
            count += f" ({100.0 * self.n / self.total:.0f}%)"
        parts = [f"{count} in {_hms(elapsed)}", _format_rate(rate, self.unit)]
        if final:
            parts.append("done" if self.total is None or self.n >= self.total else "stopped")
        elif self.total and rate > 0:
            parts.append(f"ETA {_hms(max(0.0, self.total - self.n) / rate)}")
        parts.extend(f"{k}={v}" for k, v in self.postfix.items())
        prefix = f"{self.desc}: " if self.desc else ""
        self.logger.info("%s%s", prefix, ", ".join(parts).replace("\r", " "))
        self.lines += 1
        self._last_line = now
        if self.total:
            self._next_step = math.floor(self.n / self.total / self.fraction + 1e-9) + 1


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _format_count(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def _format_rate(rate: float, unit: str) -> str:
    if 0 < rate < 1:
        return f"{1 / rate:.3g} s/{unit}"
    return f"{rate:.3g} {unit}/s"


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


__all__ = ["LogProgress", "is_terminal", "progress_bar"]
