"""Tests for birdclef.common.progress: a tqdm bar on a terminal, a few log lines in a log file."""

from __future__ import annotations

import io
import logging
import sys

import pytest
from tqdm import tqdm

from birdclef.common import progress as progress_module
from birdclef.common.progress import LogProgress, is_terminal, progress_bar


class _Stream(io.StringIO):
    """A text stream that says whether it is a terminal."""

    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class _Clock:
    """A fake monotonic clock advanced by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logged(monkeypatch):
    """stderr replaced by a non-terminal stream; this module's log lines (and stderr) as text."""
    stderr = _Stream(tty=False)
    monkeypatch.setattr(sys, "stderr", stderr)
    handler_stream = io.StringIO()
    handler = logging.StreamHandler(handler_stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    handler.addFilter(lambda record: record.name == __name__)
    logger = logging.getLogger(__name__)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lambda: (handler_stream.getvalue(), stderr.getvalue())
    logger.removeHandler(handler)
    logger.setLevel(old_level)


class _Collect(logging.Handler):
    """Keeps the messages of the records it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _collecting_logger(name: str) -> tuple[logging.Logger, list[str]]:
    """A logger of its own (not propagating) and the list its messages land in."""
    collect = _Collect()
    logger = logging.getLogger(f"birdclef.test_progress.{name}")
    logger.handlers[:] = [collect]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, collect.lines


def _timed(items: int, seconds_per_item: float, **kwargs) -> tuple[LogProgress, list[str]]:
    """A LogProgress over `items` on a fake clock; returns it and its log lines."""
    clock = _Clock()
    logger, lines = _collecting_logger("timed")
    bar = LogProgress(range(items), desc="work", logger=logger, clock=clock, **kwargs)
    for _ in bar:
        clock.now += seconds_per_item
    return bar, lines


def test_not_a_terminal_logs_a_few_lines_with_postfix_and_no_carriage_return(logged):
    """1,000 items, not a TTY: a LogProgress writing <= 12 lines, the last one 1000/1000."""
    bar = progress_bar(range(1000), desc="mels", unit="file")
    assert isinstance(bar, LogProgress) and not isinstance(bar, tqdm)
    for i in bar:
        bar.set_postfix(loss=f"{1.0 / (i + 1):.4f}", step=i)
    text, stderr = logged()
    lines = text.splitlines()
    assert 1 <= len(lines) <= 12
    assert all(line.startswith(f"{__name__} INFO mels: ") for line in lines)
    assert "1000/1000 file (100%)" in lines[-1] and lines[-1].endswith(
        "done, loss=0.0010, step=999"
    )
    assert "\r" not in text and stderr == ""  # nothing drawn on the stream itself


def test_lines_follow_ten_percent_steps_with_rate_and_eta():
    """A 60 s loop on a fake clock: one line per 10 % step, then the final line; rate and ETA."""
    bar, lines = _timed(1000, 0.06)
    assert bar.n == 1000 and len(lines) == 10
    assert lines[0] == "work: 100/1000 it (10%) in 0:00:06, 16.7 it/s, ETA 0:00:54"
    assert [line.split(" it (")[0] for line in lines] == [
        f"work: {100 * k}/1000" for k in range(1, 11)
    ]
    assert lines[-1] == "work: 1000/1000 it (100%) in 0:01:00, 16.7 it/s, done"


def test_fast_loops_write_only_their_final_line_and_slow_ones_stay_alive():
    """Under min_interval nothing but the end; a slow loop logs every max_interval."""
    _, fast = _timed(1000, 0.001)
    assert len(fast) == 1 and "1000/1000" in fast[0]
    _, slow = _timed(10, 25.0)  # 10 % steps every 25 s, lines at least 5 s apart
    assert len(slow) == 10
    # unknown length: a line every 60 s and the final one, without percentage or ETA
    clock = _Clock()
    logger, lines = _collecting_logger("slow")
    with LogProgress(desc="xc", unit="sp", logger=logger, clock=clock) as bar:
        for _ in range(20):
            clock.now += 10.0
            bar.update(1)
    assert len(lines) == 3 + 1
    assert lines[0] == "xc: 6 sp in 0:01:00, 10 s/sp"
    assert lines[-1] == "xc: 20 sp in 0:03:20, 10 s/sp, done"


def test_leave_false_is_silent_unless_the_loop_was_long():
    """leave=False (inner loops): no final line for a short loop; a long one still ends its log."""
    _, short = _timed(100, 0.001, leave=False)
    assert short == []
    _, long = _timed(100, 1.0, leave=False)
    assert len(long) == 10 and long[-1].endswith("done")


def test_disabled_logs_nothing_and_counts(logged):
    """disable=True: no line, no bar; update/set_postfix/close still work."""
    with progress_bar(total=3, desc="vad", disable=True) as bar:
        bar.update(2)
        bar.set_postfix(mb="1.0", refresh=False)
    assert bar.n == 2
    assert logged() == ("", "")


def test_a_loop_stopped_early_says_so(logged):
    """A loop left by `break` logs its final line as stopped, with the count reached."""
    for i in progress_bar(range(50), desc="predict"):
        if i == 9:
            break
    text, _ = logged()
    assert "predict: 9/50 it (18%)" in text and "stopped" in text


def test_terminal_gets_tqdm(monkeypatch):
    """stderr a TTY: a real tqdm bar, with the tqdm keyword arguments passed through."""
    stream = _Stream(tty=True)
    monkeypatch.setattr(sys, "stderr", stream)
    bar = progress_bar(range(5), desc="train", leave=False, mininterval=1.0, dynamic_ncols=True)
    assert isinstance(bar, tqdm)
    assert list(bar) == list(range(5))
    bar.close()
    assert "train" in stream.getvalue()
    # an explicit file decides, not stderr
    assert isinstance(progress_bar(total=2, file=_Stream(tty=False)), LogProgress)
    assert is_terminal(stream) and not is_terminal(_Stream(tty=False))
    closed = io.StringIO()
    closed.close()  # isatty() raises on a closed stream
    assert not is_terminal(closed)


def test_logger_is_the_callers_module_logger(logged):
    """Without a logger the lines go through the calling module's logger."""
    bar = progress_bar(range(3), desc="x")
    assert bar.logger.name == __name__
    named = logging.getLogger("birdclef.custom")
    assert progress_bar(range(3), logger=named).logger is named
    with pytest.raises(ValueError, match="fraction"):
        progress_bar(range(3), fraction=0)
    assert progress_module.FRACTION == 0.1
