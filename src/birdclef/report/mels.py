"""Mel-cache figures: one log-mel window per class (the best-rated recording's loudest), in pages."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from birdclef.report.figures import CLASSES_PER_PAGE, _class_pages, _show_mel, read_class_names
from birdclef.runtime.features import window_frames


def loudest_window(mel: np.ndarray, frames: int, step: int) -> int:
    """First frame of the `frames`-long window of a (frames, n_mels) array with the most energy."""
    if len(mel) <= frames:
        return 0
    energy = np.asarray(mel, dtype=np.float32).mean(axis=1)
    csum = np.concatenate([[0.0], np.cumsum(energy)])
    starts = np.arange(0, len(mel) - frames + 1, max(1, step))
    return int(starts[np.argmax(csum[starts + frames] - csum[starts])])


def plot_mel_examples(mels: np.ndarray, index: pd.DataFrame, classes: Sequence[str],
                      names: Mapping[str, str], mel_settings: Mapping[str, Any],
                      out_dir: str | os.PathLike, per_page: int = CLASSES_PER_PAGE) -> list:
    """One log-mel window per class (the best-rated recording, its loudest window), in pages
    of `per_page` classes, written into `out_dir`; returns the figures."""
    sample_rate = int(mel_settings["sample_rate"])
    hop = int(mel_settings["hop_length"])
    window_seconds = float(mel_settings["window_seconds"])
    frames = window_frames(mel_settings)
    index = index.assign(primary_label=index["primary_label"].astype(str))
    rating = pd.to_numeric(index.get("rating"), errors="coerce") if "rating" in index else 0.0
    ranked = index.assign(_rating=rating).sort_values(
        ["primary_label", "_rating", "frames", "filename"], ascending=[True, False, False, True],
        kind="stable")
    best = ranked.drop_duplicates("primary_label").set_index("primary_label")
    figures = []
    for figure, panels, span in _class_pages(list(classes), out_dir, per_page, (3.4, 2.7), (1.0, 0.8)):
        image = None
        for label, axis in panels:
            axis.set_title(names.get(label, label), fontsize=9)
            if label not in best.index:
                axis.text(0.5, 0.5, "no recording\nin the cache", ha="center", va="center",
                          transform=axis.transAxes)
                axis.set_xticks([])
                axis.set_yticks([])
                continue
            record = best.loc[label]
            offset, length = int(record["offset"]), int(record["frames"])
            recording = np.asarray(mels[offset : offset + length], dtype=np.float32)
            start = loudest_window(recording, frames, max(1, frames // 5))
            window = recording[start : start + frames].T
            window = window - window.max()
            image = _show_mel(axis, window, hop / sample_rate, mel_settings, vmin=-80, vmax=0,
                              t0=start * hop / sample_rate)
            axis.set_xlabel("time in the recording (s)", fontsize=8)
            axis.set_ylabel("frequency (kHz)", fontsize=8)
            axis.tick_params(labelsize=8)
            axis.text(0.01, 0.98, str(record["filename"]).rsplit("/", 1)[-1], color="white",
                      fontsize=7, ha="left", va="top", transform=axis.transAxes)
        if image is not None:
            figure.colorbar(image, ax=list(figure.axes), label="power (dB below the window's peak)",
                            shrink=0.6)
        figure.suptitle(f"Log-mel examples, one {window_seconds:g} s window per class "
                        f"({span}; {mel_settings['n_mels']} mel bands)")
        figures.append(figure)
    return figures


def mels_report(mels_path: str, index_path: str, taxonomy_csv: str, mel_settings: Mapping[str, Any],
                out_dir: str) -> None:
    """The mel-example pages of one mel cache."""
    mels = np.load(mels_path, mmap_mode="r")
    index = pd.read_parquet(index_path)
    classes, names = read_class_names(taxonomy_csv)
    plot_mel_examples(mels, index, classes, names, mel_settings, out_dir)
