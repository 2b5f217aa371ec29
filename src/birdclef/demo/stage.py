"""Workflow stage `demo_data`: the demo folder from the config's `data.demo` settings."""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any

from birdclef.demo.generate import generate_demo

log = logging.getLogger(__name__)


def demo_stage(out_root: str | os.PathLike, settings: dict[str, Any]) -> dict:
    """Workflow stage `demo_data`: generate the demo folder at `out_root` from config settings.

    `settings` is the config's `data.demo` section without `enabled`; its keys
    are `generate_demo` keyword arguments (seed, n_species, ...). Unknown keys
    raise a `ValueError` naming them. Returns the summary of `generate_demo`.
    """
    known = set(inspect.signature(generate_demo).parameters) - {"out_root"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown demo settings {unknown}: expected some of {sorted(known)}")
    kwargs = dict(settings)
    for key in ("recording_seconds", "soundscape_snr_db"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    log.info("generating demo data in %s with %s", out_root, kwargs)
    summary = generate_demo(out_root, **kwargs)
    log.info("demo data: %s", summary)
    return summary
