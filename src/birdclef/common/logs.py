"""Logging set-up shared by every workflow script."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(log_path: str | os.PathLike | None, level: int = logging.INFO) -> logging.Logger:
    """Send the package's log records to `log_path` (and stderr) and return its logger.

    Python warnings are captured into the same log so that nothing a stage says
    is lost in a cluster job's stderr; so is an exception that ends the script
    (its message names the file, row or setting at fault), with its traceback.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    return logging.getLogger("birdclef")


def _log_uncaught(kind, value, traceback) -> None:
    """Write an exception that ends the script to the log (and stderr, through its handler)."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)
        return
    logging.getLogger("birdclef").error("stage failed: %s", value, exc_info=(kind, value, traceback))
