"""Shared figure helpers of the report: Agg figures, atomic PNGs, class names, class-grid pages,
log-mel spectrogram axes.

Class names read "Common name (code)" from taxonomy.csv wherever a class is
shown.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from birdclef.catalog import read_taxonomy
from birdclef.common.io import atomic_dir, atomic_path
from birdclef.runtime.features import hz_to_slaney_mel, slaney_mel_to_hz

log = logging.getLogger(__name__)

DPI = 100
CLASSES_PER_PAGE = 24
GRID_COLUMNS = 4
# Colours for categorical series (collections, folds, rounds): matplotlib's tab10.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)


def new_figure(width: float, height: float):
    """A matplotlib Figure with an Agg canvas and constrained layout (no pyplot)."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Write `figure` to `path` as a PNG, atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, format="png")
    log.info("wrote %s", path)
    return path


def class_names(taxonomy: pd.DataFrame) -> dict[str, str]:
    """primary_label -> "Common name (code)" (the code alone when there is no common name)."""
    names = {}
    common = taxonomy["common_name"] if "common_name" in taxonomy else pd.Series([None] * len(taxonomy))
    for label, name in zip(taxonomy["primary_label"].astype(str), common, strict=True):
        if isinstance(name, str) and name.strip() and name.strip() != label:
            names[label] = f"{name.strip()} ({label})"
        else:
            names[label] = label
    return names


def read_class_names(taxonomy_csv: str | os.PathLike) -> tuple[list[str], dict[str, str]]:
    """The class list (`catalog.read_taxonomy`, checked) and the display name of each class."""
    classes = read_taxonomy(taxonomy_csv)
    return classes, class_names(pd.read_csv(taxonomy_csv, dtype={"primary_label": str}))


def _class_chart_height(n_classes: int, per_class: float = 0.3, extra: float = 1.6) -> float:
    """Inches for a chart with one row per class; rows tighten a little past 40 classes."""
    if n_classes > 40:
        per_class *= 0.7
    return max(3.6, per_class * n_classes + extra)


def _message_figure(path: str | os.PathLike, title: str, message: str):
    """A figure that says, in words, why there is nothing to plot."""
    figure = new_figure(8, 3)
    axis = figure.add_subplot()
    axis.set_axis_off()
    axis.set_title(title)
    axis.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=11,
              transform=axis.transAxes)
    save_png(figure, path)
    return figure


def _collection_colours(collections: Sequence[str]) -> dict[str, str]:
    return {name: PALETTE[k % len(PALETTE)] for k, name in enumerate(collections)}


def _pages(items: Sequence[Any], per_page: int) -> list[list[Any]]:
    return [list(items[k : k + per_page]) for k in range(0, len(items), per_page)] or [[]]


def _page_name(prefix: str, page: int, per_page: int, total: int) -> str:
    first = page * per_page + 1
    last = min(total, first + per_page - 1)
    width = len(str(total))
    return f"{prefix}_{first:0{width}d}-{last:0{width}d}.png"


def _class_pages(classes: Sequence[str], out_dir: str | os.PathLike, per_page: int,
                 panel_size: tuple[float, float], margins: tuple[float, float]):
    """Grid pages of one panel per class (`GRID_COLUMNS` wide), written into `out_dir` atomically.

    Yields, per page, (figure, [(class, axis), ...], "classes a-b of n"); unused
    axes are switched off. The caller draws on the page, and the page is saved
    as ``classes_<a>-<b>.png`` when the caller moves on to the next; `out_dir`
    appears once the last page is saved.
    """
    with atomic_dir(out_dir) as tmp:
        for page, page_classes in enumerate(_pages(classes, per_page)):
            columns = min(GRID_COLUMNS, max(1, len(page_classes)))
            rows = max(1, math.ceil(len(page_classes) / columns))
            figure = new_figure(panel_size[0] * columns + margins[0], panel_size[1] * rows + margins[1])
            axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
            for axis in axes[len(page_classes):]:
                axis.set_axis_off()
            first = page * per_page + 1
            span = f"classes {first}-{first + len(page_classes) - 1} of {len(classes)}"
            yield figure, list(zip(page_classes, axes, strict=False)), span
            save_png(figure, Path(tmp) / _page_name("classes", page, per_page, len(classes)))


def _mel_axis(mel_settings: Mapping[str, Any]):
    """(band centre frequencies in Hz, tick band positions, tick labels) of a mel spectrogram."""
    n_mels = int(mel_settings["n_mels"])
    fmin = float(mel_settings.get("fmin", 0.0))
    fmax = float(mel_settings.get("fmax") or mel_settings["sample_rate"] / 2)
    points = np.linspace(hz_to_slaney_mel(fmin), hz_to_slaney_mel(fmax), n_mels + 2)
    centres = slaney_mel_to_hz(points)[1:-1]
    ticks, labels = [], []
    for hz in (16000, 8000, 4000, 2000, 1000, 500, 250):
        if centres[0] <= hz <= centres[-1]:
            band = float(np.interp(hz, centres, np.arange(n_mels)))
            # Top down, skip a tick that would crowd the one above it.
            if ticks and ticks[-1] - band < 0.1 * n_mels:
                continue
            ticks.append(band)
            labels.append(f"{hz / 1000:g}")
    return centres, ticks[::-1], labels[::-1]


def _show_mel(axis, mel_db: np.ndarray, seconds_per_frame: float, mel_settings, vmin=None,
              vmax=None, t0: float = 0.0):
    """Draw a (n_mels, frames) dB array with time in seconds and frequency in kHz."""
    _, ticks, labels = _mel_axis(mel_settings)
    n_mels, frames = mel_db.shape
    image = axis.imshow(
        mel_db, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
        extent=(t0, t0 + frames * seconds_per_frame, -0.5, n_mels - 0.5), vmin=vmin, vmax=vmax,
    )
    axis.set_yticks(ticks, labels)
    return image
