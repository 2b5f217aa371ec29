"""Figures for `snakemake --report`: what each stage did to the data and to the score.

Every `plot_*` function takes data (DataFrames, dicts, arrays), draws one
matplotlib figure on an Agg canvas (no pyplot state, no display), writes it as
a PNG atomically and returns the Figure, so tests can read its titles and axis
labels. The `*_report` functions read a stage's artifacts (parquet, JSON,
audio, the mel cache) and call the plotters; `workflow_scripts/report_*.py`
call those. Report figures never feed another stage.

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
from matplotlib.patches import Patch

from birdclef.common.io import atomic_dir, atomic_path, read_json

log = logging.getLogger(__name__)

DPI = 100
CLASSES_PER_PAGE = 24
GRID_COLUMNS = 4
# Colours for categorical series (collections, folds, rounds): matplotlib's tab10.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)
VAD_STATUS_COLOURS = {
    "clean": "#2ca02c",
    "cleaned": "#1f77b4",
    "dropped": "#d62728",
    "not_scanned": "#7f7f7f",
    "bad_audio": "#000000",
}
VAD_STATUS_NAMES = {
    "clean": "clean (no speech)",
    "cleaned": "speech cut out",
    "dropped": "dropped (mostly speech)",
    "not_scanned": "not scanned",
    "bad_audio": "unreadable audio",
}
ABSENT_COLOUR, PRESENT_COLOUR = "#7f7f7f", "#d62728"
# Per-class ROC-AUC bars are coloured by band.
AUC_COLOURS = {"ROC-AUC < 0.7": "#d62728", "0.7 - 0.85": "#ff7f0e", ">= 0.85": "#2ca02c"}


# --------------------------------------------------------------------------- helpers


def new_figure(width: float, height: float):
    """A matplotlib Figure with an Agg canvas and constrained layout (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
    from birdclef.catalog import read_taxonomy

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


def _auc_band(value: float) -> str:
    return "ROC-AUC < 0.7" if value < 0.7 else "0.7 - 0.85" if value < 0.85 else ">= 0.85"


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
    from birdclef.runtime.features import _hz_to_slaney_mel, _slaney_mel_to_hz

    n_mels = int(mel_settings["n_mels"])
    fmin = float(mel_settings.get("fmin", 0.0))
    fmax = float(mel_settings.get("fmax") or mel_settings["sample_rate"] / 2)
    points = np.linspace(_hz_to_slaney_mel(fmin), _hz_to_slaney_mel(fmax), n_mels + 2)
    centres = _slaney_mel_to_hz(points)[1:-1]
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


# --------------------------------------------------------------------------- data summary


def plot_recordings_per_class(catalog: pd.DataFrame, classes: Sequence[str],
                              names: Mapping[str, str], out_png: str | os.PathLike):
    """Recordings and audio minutes per class, stacked by collection; every taxonomy class shown."""
    catalog = catalog.assign(primary_label=catalog["primary_label"].astype(str),
                             collection=catalog["collection"].fillna("unknown").astype(str))
    collections = sorted(catalog["collection"].unique())
    colours = _collection_colours(collections)
    counts = catalog.pivot_table(index="primary_label", columns="collection", values="filename",
                                 aggfunc="count", fill_value=0)
    minutes = catalog.pivot_table(index="primary_label", columns="collection", values="duration_s",
                                  aggfunc="sum", fill_value=0.0) / 60.0
    all_classes = list(dict.fromkeys([*classes, *counts.index]))
    counts = counts.reindex(index=all_classes, columns=collections, fill_value=0)
    minutes = minutes.reindex(index=all_classes, columns=collections, fill_value=0.0)
    # Most recorded on top (ties in taxonomy order); barh draws bottom-up.
    order = counts.sum(axis=1).sort_values(ascending=False, kind="stable").index[::-1]
    counts, minutes = counts.loc[order], minutes.loc[order]
    labels = [names.get(c, c) for c in order]

    figure = new_figure(11, _class_chart_height(len(order)))
    count_axis, minute_axis = figure.subplots(1, 2, sharey=True)
    y = np.arange(len(order))
    for axis, table in ((count_axis, counts), (minute_axis, minutes)):
        left = np.zeros(len(order))
        for collection in collections:
            values = table[collection].to_numpy(dtype=float)
            axis.barh(y, values, left=left, color=colours[collection], label=collection, height=0.75)
            left += values
        for k, total in enumerate(left):
            axis.text(total, k, f" {total:.0f}" if table is counts else f" {total:.1f}",
                      va="center", fontsize=8)
        axis.set_xlim(0, max(1.0, left.max()) * 1.15)
        axis.grid(axis="x", alpha=0.3)
    count_axis.set_yticks(y, labels)
    count_axis.set_ylim(-0.6, len(order) - 0.4)
    count_axis.set_xlabel("recordings")
    count_axis.set_title("Recordings per class")
    minute_axis.set_xlabel("audio (minutes)")
    minute_axis.set_title("Audio per class")
    handles, legend_labels = count_axis.get_legend_handles_labels()
    figure.legend(handles, legend_labels, title="collection", loc="outside lower center",
                  ncols=min(6, len(collections)))
    missing = int((counts.sum(axis=1) == 0).sum())
    figure.suptitle(
        f"Training data: {len(catalog)} recordings, {len(order) - missing} of {len(order)} classes "
        f"with recordings, {catalog['duration_s'].sum() / 3600:.2f} h of audio"
    )
    save_png(figure, out_png)
    return figure


def plot_durations(catalog: pd.DataFrame, out_png: str | os.PathLike):
    """Histogram of recording durations (seconds), stacked by collection."""
    catalog = catalog.assign(collection=catalog["collection"].fillna("unknown").astype(str))
    durations = catalog["duration_s"].astype(float)
    durations = durations[np.isfinite(durations) & (durations > 0)]
    collections = sorted(catalog["collection"].unique())
    colours = _collection_colours(collections)
    figure = new_figure(9, 4.5)
    axis = figure.add_subplot()
    if durations.empty:
        axis.text(0.5, 0.5, "no recording durations", ha="center", transform=axis.transAxes)
    else:
        low, high = float(durations.min()), float(durations.max())
        log_scale = high / low > 50
        bins = (np.geomspace(low, high * 1.0001, 40) if log_scale
                else np.linspace(0, high * 1.02, 40))
        stacks = [catalog.loc[catalog["collection"] == c, "duration_s"].astype(float).dropna()
                  for c in collections]
        axis.hist(stacks, bins=bins, stacked=True, color=[colours[c] for c in collections],
                  label=collections)
        if log_scale:
            from matplotlib.ticker import FuncFormatter

            axis.set_xscale("log")
            axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        median = float(durations.median())
        axis.axvline(median, color="black", linestyle="--", linewidth=1)
        axis.text(median, axis.get_ylim()[1] * 0.95, f" median {median:.1f} s", va="top")
        axis.legend(title="collection")
    axis.set_xlabel("recording duration (s)" + (", log scale" if not durations.empty and log_scale else ""))
    axis.set_ylabel("recordings")
    axis.grid(alpha=0.3)
    axis.set_title(f"Recording durations ({len(durations)} recordings, "
                   f"{durations.sum() / 3600:.2f} h in total)")
    save_png(figure, out_png)
    return figure


def plot_collections(catalog: pd.DataFrame, out_png: str | os.PathLike):
    """Recordings, audio hours and classes per collection (XC, iNat, CSA, scraped ...)."""
    catalog = catalog.assign(collection=catalog["collection"].fillna("unknown").astype(str))
    grouped = catalog.groupby("collection", sort=True)
    table = pd.DataFrame({
        "recordings": grouped["filename"].count(),
        "hours": grouped["duration_s"].sum() / 3600.0,
        "classes": grouped["primary_label"].nunique(),
    })
    colours = _collection_colours(list(table.index))
    use_minutes = table["hours"].sum() < 5
    audio = table["hours"] * (60.0 if use_minutes else 1.0)
    figure = new_figure(11, 4)
    axes = figure.subplots(1, 3)
    panels = (
        (table["recordings"], "recordings", "Recordings", "{:.0f}"),
        (audio, "audio (minutes)" if use_minutes else "audio (hours)", "Audio", "{:.1f}"),
        (table["classes"], "classes with recordings", "Classes", "{:.0f}"),
    )
    for axis, (values, label, title, fmt) in zip(axes, panels, strict=True):
        bars = axis.bar(table.index, values.to_numpy(dtype=float),
                        color=[colours[c] for c in table.index])
        axis.bar_label(bars, labels=[fmt.format(v) for v in values], padding=2)
        axis.set_ylabel(label)
        axis.set_xlabel("collection")
        axis.set_title(title)
        axis.set_ylim(0, max(1.0, float(values.max())) * 1.18)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle("Training data per collection")
    save_png(figure, out_png)
    return figure


def data_report(catalog_path: str, taxonomy_csv: str, out_classes: str, out_durations: str,
                out_collections: str) -> None:
    """The data-summary figures of one catalog."""
    catalog = pd.read_parquet(catalog_path)
    classes, names = read_class_names(taxonomy_csv)
    plot_recordings_per_class(catalog, classes, names, out_classes)
    plot_durations(catalog, out_durations)
    plot_collections(catalog, out_collections)


# --------------------------------------------------------------------------- VAD


def plot_vad_removed(vad_catalog: pd.DataFrame, headline: Mapping[str, Any],
                     out_png: str | os.PathLike):
    """Speech seconds cut out per collection, and recordings per VAD outcome per collection.

    Seconds come from the VAD manifest's headline (`speech_seconds_removed_by_collection`,
    `dropped_audio_seconds_by_collection`, `audio_seconds_scanned_by_collection`, which
    `birdclef.vad` always writes). When it scanned no file (`files_scanned` 0: VAD
    disabled, or no collection selected) the figure says so instead.
    """
    if int(headline["files_scanned"]) == 0:
        return _message_figure(out_png, "Voice activity detection: speech removed",
                               "VAD disabled (or no collection selected): no recording was scanned,\n"
                               "so no speech was removed.")
    catalog = vad_catalog.assign(collection=vad_catalog["collection"].fillna("unknown").astype(str))
    collections = sorted(catalog["collection"].unique())
    removed = headline["speech_seconds_removed_by_collection"]
    dropped = headline["dropped_audio_seconds_by_collection"]
    scanned = headline["audio_seconds_scanned_by_collection"]
    removed_s = np.array([float(removed.get(c, 0.0)) for c in collections])
    dropped_s = np.array([float(dropped.get(c, 0.0)) for c in collections])
    scanned_s = np.array([float(scanned.get(c, 0.0)) for c in collections])

    figure = new_figure(12, max(3.8, 0.5 * len(collections) + 2.4))
    seconds_axis, status_axis = figure.subplots(1, 2)
    y = np.arange(len(collections))[::-1]
    seconds_axis.barh(y, removed_s, height=0.6, color="#1f77b4",
                      label="speech cut out of kept recordings (incl. padding)")
    if dropped_s.any():
        seconds_axis.barh(y, dropped_s, left=removed_s, height=0.6, color="#d62728",
                          label="recordings dropped as mostly speech")
    total_s = removed_s + dropped_s
    for k in range(len(collections)):
        share = (f" = {100 * total_s[k] / scanned_s[k]:.1f}% of {scanned_s[k] / 60:.1f} min scanned"
                 if scanned_s[k] else "")
        seconds_axis.text(total_s[k], y[k], f" {total_s[k]:.1f} s{share}", va="center", fontsize=9)
    seconds_axis.set_xlim(0, max(1.0, float(total_s.max(initial=0))) * 1.9)
    seconds_axis.set_yticks(y, collections)
    seconds_axis.set_ylabel("collection")
    seconds_axis.set_xlabel("audio removed (s)")
    seconds_axis.set_title("Speech removed per collection")
    seconds_axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, ncols=1,
                        frameon=False)
    seconds_axis.grid(axis="x", alpha=0.3)

    status = catalog.get("vad_status", pd.Series(["not_scanned"] * len(catalog), index=catalog.index))
    counts = pd.crosstab(catalog["collection"], status.astype(str)).reindex(collections, fill_value=0)
    left = np.zeros(len(collections))
    for name in [s for s in VAD_STATUS_COLOURS if s in counts.columns] + [
            s for s in counts.columns if s not in VAD_STATUS_COLOURS]:
        values = counts[name].to_numpy(dtype=float)
        status_axis.barh(y, values, left=left, color=VAD_STATUS_COLOURS.get(name, "#bcbd22"),
                         label=VAD_STATUS_NAMES.get(name, name), height=0.6)
        left += values
    status_axis.set_yticks(y, collections)
    status_axis.set_xlabel("recordings")
    status_axis.set_title("VAD outcome per recording")
    for k in range(len(collections)):
        status_axis.text(left[k], y[k], f" {left[k]:.0f}", va="center", fontsize=9)
    status_axis.set_xlim(0, max(1.0, left.max()) * 1.1)
    status_axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8,
                       ncols=3, frameon=False)
    status_axis.grid(axis="x", alpha=0.3)
    total_removed = removed_s.sum() + dropped_s.sum()
    figure.suptitle(f"Voice activity detection: {total_removed:.1f} s of "
                    f"{scanned_s.sum() / 60:.1f} min scanned removed")
    save_png(figure, out_png)
    return figure


def plot_vad_example(original: np.ndarray, cleaned: np.ndarray | None,
                     spans: Sequence[tuple[float, float]], mel_settings: Mapping[str, Any],
                     title: str, out_png: str | os.PathLike, pad_seconds: float = 0.0):
    """Log-mel spectrogram of one recording with its speech spans marked, and the cleaned result."""
    from birdclef.runtime.features import log_mel, mel_filterbank

    sample_rate = int(mel_settings["sample_rate"])
    hop = int(mel_settings["hop_length"])
    filterbank = mel_filterbank(mel_settings)
    rows = 2 if cleaned is not None else 1
    figure = new_figure(12, 3.2 * rows + 0.6)
    axes = np.atleast_1d(figure.subplots(rows, 1, sharex=True))
    seconds_per_frame = hop / sample_rate
    waves = [("original recording", original), ("cleaned recording (speech cut out)", cleaned)]
    image = None
    for axis, (label, wave) in zip(axes, waves, strict=False):
        mel = log_mel(wave, filterbank, int(mel_settings["n_fft"]), hop,
                      mel_settings.get("top_db", 80.0))
        mel = mel - mel.max()
        image = _show_mel(axis, mel, seconds_per_frame, mel_settings, vmin=-80, vmax=0)
        axis.set_ylabel("frequency (kHz)")
        axis.set_title(f"{label}: {wave.size / sample_rate:.1f} s")
    first = axes[0]
    for start, end in spans:
        first.axvspan(start, end, facecolor="#00e5ff", alpha=0.2, edgecolor="#00e5ff", linewidth=1.5)
        if pad_seconds:
            first.axvspan(max(0.0, start - pad_seconds), end + pad_seconds, fill=False,
                          edgecolor="#00e5ff", linestyle=":", linewidth=1)
    handles = [Patch(facecolor="#00e5ff", alpha=0.4, edgecolor="#00e5ff", label="speech found by VAD")]
    if pad_seconds:
        handles.append(Patch(fill=False, edgecolor="#00e5ff", linestyle=":",
                             label=f"cut (speech ± {pad_seconds:g} s padding)"))
    first.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.9)
    axes[-1].set_xlabel("time (s)")
    figure.colorbar(image, ax=list(axes), label="power (dB below the recording's peak)", shrink=0.9)
    figure.suptitle(title)
    save_png(figure, out_png)
    return figure


def pick_vad_example(vad_catalog: pd.DataFrame, spans: pd.DataFrame,
                     max_seconds: float = 60.0) -> pd.Series | None:
    """The recording to show: a cleaned one, preferring those that fit in `max_seconds`,
    then the most speech; None when no speech was cut anywhere."""
    if "vad_status" not in vad_catalog or spans.empty:
        return None
    cleaned = vad_catalog[(vad_catalog["vad_status"] == "cleaned")
                          & vad_catalog["filename"].isin(set(spans["filename"]))]
    if cleaned.empty:
        return None
    ranked = cleaned.assign(
        fits=cleaned["duration_s"].astype(float) <= max_seconds,
        speech=cleaned["speech_seconds"].astype(float).fillna(0.0),
    ).sort_values(["fits", "speech", "filename"], ascending=[False, False, True], kind="stable")
    return ranked.iloc[0]


def vad_report(catalog_path: str, spans_path: str, manifest_path: str, taxonomy_csv: str,
               mel_settings: Mapping[str, Any], out_removed: str, out_example: str,
               max_seconds: float = 60.0) -> None:
    """The VAD figures: seconds removed per collection and one example spectrogram."""
    from birdclef.runtime.audio import read_audio

    catalog = pd.read_parquet(catalog_path)
    spans = pd.read_parquet(spans_path)
    manifest = read_json(manifest_path)
    headline = manifest.get("headline") or {}
    plot_vad_removed(catalog, headline, out_removed)
    example = pick_vad_example(catalog, spans, max_seconds)
    if example is None:
        _message_figure(out_example, "Voice activity detection: example",
                        "No recording had speech cut out (VAD found no speech, or is disabled),\n"
                        "so there is no example to show.")
        return
    _, names = read_class_names(taxonomy_csv)
    rate = int(mel_settings["sample_rate"])
    original = read_audio(example["path"], rate, max_seconds=max_seconds)
    cleaned = read_audio(example["audio_path"], rate, max_seconds=max_seconds)
    own = spans[spans["filename"] == example["filename"]].sort_values("start_s")
    pad = float((manifest.get("settings") or {}).get("pad_seconds") or 0.0)
    label = str(example["primary_label"])
    title = (f"{example['filename']} — {names.get(label, label)}: "
             f"{float(example['speech_seconds']):.1f} s of speech in {len(own)} spans"
             + (f" (first {max_seconds:.0f} s shown)" if float(example["duration_s"]) > max_seconds else ""))
    plot_vad_example(original, cleaned, list(zip(own["start_s"], own["end_s"], strict=True)),
                     mel_settings, title, out_example, pad_seconds=pad)


# --------------------------------------------------------------------------- mel examples


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
    from birdclef.runtime.features import window_frames

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


# --------------------------------------------------------------------------- training


def plot_training_curves(histories: Mapping[int, Sequence[Mapping[str, Any]]], title: str,
                         out_png: str | os.PathLike, loss_name: str = "loss",
                         best_epochs: Mapping[int, int] | None = None):
    """Train and validation loss and OOF macro ROC-AUC per epoch, one colour per fold."""
    figure = new_figure(12, 4.6)
    loss_axis, auc_axis = figure.subplots(1, 2)
    best_epochs = best_epochs or {}
    any_auc = False
    for k, (fold, history) in enumerate(sorted(histories.items())):
        colour = PALETTE[k % len(PALETTE)]
        epochs = [h["epoch"] for h in history]
        loss_axis.plot(epochs, [h.get("train_loss", np.nan) for h in history], color=colour,
                       marker="o", markersize=3, label=f"fold {fold} train")
        val = [np.nan if h.get("val_loss") is None else h["val_loss"] for h in history]
        if np.isfinite(val).any():
            loss_axis.plot(epochs, val, color=colour, linestyle="--", marker="s", markersize=3,
                           label=f"fold {fold} validation")
        auc = [np.nan if h.get("oof_auc") is None else h["oof_auc"] for h in history]
        if np.isfinite(auc).any():
            any_auc = True
            best = best_epochs.get(fold)
            label = f"fold {fold}"
            if best is not None and best in epochs and np.isfinite(auc[epochs.index(best)]):
                value = auc[epochs.index(best)]
                label += f" (kept: {value:.3f} at epoch {best})"
                auc_axis.plot([best], [value], marker="*", markersize=14, color=colour,
                              markeredgecolor="black", linestyle="none")
            auc_axis.plot(epochs, auc, color=colour, marker="o", markersize=3, label=label)
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel(f"{loss_name} (mean per sample)")
    loss_axis.set_title("Loss")
    loss_axis.grid(alpha=0.3)
    loss_axis.legend(fontsize=8)
    auc_axis.set_xlabel("epoch")
    auc_axis.set_ylabel("OOF macro ROC-AUC (validation fold)")
    auc_axis.set_title("Out-of-fold score (★ = checkpoint kept)")
    auc_axis.grid(alpha=0.3)
    if any_auc:
        auc_axis.legend(fontsize=8, loc="lower right")
    else:
        auc_axis.text(0.5, 0.5, "no validation fold", ha="center", va="center",
                      transform=auc_axis.transAxes)
    for axis in (loss_axis, auc_axis):
        axis.xaxis.get_major_locator().set_params(integer=True)
    figure.suptitle(title)
    save_png(figure, out_png)
    return figure


def training_report(metrics_paths: Sequence[str], title: str, out_png: str) -> None:
    """The training curves of every fold of one (backbone, round)."""
    histories, best, loss = {}, {}, "loss"
    n_pseudo = 0
    for path in metrics_paths:
        metrics = read_json(path)
        fold = int(metrics["fold"])
        histories[fold] = metrics.get("epochs") or []
        if metrics.get("best_epoch") is not None:
            best[fold] = int(metrics["best_epoch"])
        loss = str((metrics.get("settings") or {}).get("loss") or loss)
        n_pseudo = max(n_pseudo, int(metrics.get("n_pseudo") or 0))
    if n_pseudo:
        title = f"{title} ({n_pseudo} pseudo-labelled windows)"
    plot_training_curves(histories, title, out_png, loss_name=f"{loss} loss" if loss != "loss" else loss,
                         best_epochs=best)


# --------------------------------------------------------------------------- per-class ROC-AUC


def plot_per_class_auc(auc: Mapping[str, float], positives: Mapping[str, int],
                       names: Mapping[str, str], title: str, xlabel: str,
                       out_png: str | os.PathLike, positive_unit: str = "recordings"):
    """Horizontal bars of ROC-AUC per class (worst on top), the macro mean as a dashed line."""
    scored = {c: float(v) for c, v in auc.items() if v is not None and np.isfinite(v)}
    unscored = [c for c in auc if c not in scored]
    # barh draws bottom-up: unscored classes at the bottom, then best to worst, worst on top.
    order = sorted(unscored) + sorted(scored, key=lambda c: (-scored[c], c))
    figure = new_figure(11, _class_chart_height(len(order), extra=2.2))
    axis = figure.add_subplot()
    y = np.arange(len(order))
    values = np.array([scored.get(c, 0.0) for c in order])
    colours = [AUC_COLOURS[_auc_band(v)] for v in values]
    axis.barh(y, values, color=colours, height=0.75)
    macro = float(np.mean(list(scored.values()))) if scored else float("nan")
    if scored:
        axis.axvline(macro, color="black", linestyle="--", linewidth=1.2,
                     label=f"macro mean {macro:.3f}")
    axis.axvline(0.5, color="grey", linestyle=":", linewidth=1, label="chance (0.5)")
    axis.set_yticks(y, [names.get(c, c) for c in order])
    axis.set_ylim(-0.6, len(order) - 0.4)
    axis.set_xlim(0, 1)
    axis.set_xlabel(xlabel)
    axis.grid(axis="x", alpha=0.3)
    # The numbers as a column on the right (tick labels of a twin axis), clear of the bars.
    right = axis.twinx()
    right.set_ylim(axis.get_ylim())
    right.set_yticks(y, [
        f"{scored[c]:.3f}  ({int(positives.get(c, 0))} positive {positive_unit})" if c in scored
        else f"not scored ({int(positives.get(c, 0))} positive {positive_unit})"
        for c in order
    ], fontsize=8)
    right.tick_params(axis="y", length=0)
    handles, labels = axis.get_legend_handles_labels()
    handles += [Patch(color=colour, label=band) for band, colour in AUC_COLOURS.items()]
    figure.legend(handles=handles, loc="outside lower center", ncols=5, fontsize=8)
    axis.set_title(f"{title}\nmacro ROC-AUC {macro:.3f} over {len(scored)} scored classes")
    save_png(figure, out_png)
    return figure


def oof_per_class(oof_paths: Sequence[str], index: pd.DataFrame,
                  classes: Sequence[str]) -> tuple[dict[str, float], dict[str, int]]:
    """Per-class ROC-AUC of the pooled out-of-fold predictions, and positives per class.

    The folds are pooled as the ensemble pools them (`ensemble.backbone_oof`): a
    recording out of fold in two of them is an error.
    """
    from birdclef.common.labels import targets_of
    from birdclef.common.metrics import per_class_roc_auc
    from birdclef.ensemble import backbone_oof

    members = [{"name": str(path), "backbone": "run"} for path in oof_paths]
    pooled = backbone_oof(members, {m["name"]: pd.read_parquet(m["name"]) for m in members}, classes)
    if not pooled:
        return dict.fromkeys(classes, float("nan")), dict.fromkeys(classes, 0)
    oof = pooled["run"]
    targets = targets_of(index, oof.index.tolist(), classes)
    scores = per_class_roc_auc(targets, oof[list(classes)].to_numpy())
    positives = targets.sum(axis=0).astype(int)
    return ({c: float(s) for c, s in zip(classes, scores, strict=True)},
            {c: int(p) for c, p in zip(classes, positives, strict=True)})


def oof_report(oof_paths: Sequence[str], index_path: str, taxonomy_csv: str, title: str,
               out_png: str) -> None:
    """Per-class OOF ROC-AUC of one (backbone, round), folds pooled."""
    index = pd.read_parquet(index_path)
    classes, names = read_class_names(taxonomy_csv)
    auc, positives = oof_per_class(oof_paths, index, classes)
    plot_per_class_auc(auc, positives, names, title,
                       "ROC-AUC on out-of-fold recordings (folds pooled)", out_png)


# --------------------------------------------------------------------------- pseudo-label rounds


def plot_round_scores(scores: pd.DataFrame, out_png: str | os.PathLike):
    """OOF macro ROC-AUC per training round: one point per fold, the mean per backbone joined.

    With a ``soundscape_auc`` column (held-out labelled soundscape windows), its
    mean over folds per backbone is drawn beside it as a dashed line.
    """
    figure = new_figure(9, 4.8)
    axis = figure.add_subplot()
    rounds = sorted(scores["round"].unique()) if len(scores) else [0]
    for k, (backbone, part) in enumerate(scores.groupby("backbone", sort=True)):
        colour = PALETTE[k % len(PALETTE)]
        jitter = (k - 0.5 * (scores["backbone"].nunique() - 1)) * 0.06
        valid = part.dropna(subset=["oof_auc"])
        axis.scatter(valid["round"] + jitter, valid["oof_auc"], color=colour, alpha=0.5, s=25,
                     label=f"{backbone}: one fold")
        means = valid.groupby("round")["oof_auc"].mean()
        axis.plot(means.index + jitter, means.to_numpy(), color=colour, marker="D", markersize=8,
                  linewidth=2, label=f"{backbone}: mean over folds")
        for r, value in means.items():
            axis.annotate(f"{value:.3f}", (r + jitter, value), textcoords="offset points",
                          xytext=(10, 0), va="center", fontsize=9, color=colour)
        if "soundscape_auc" in part.columns and part["soundscape_auc"].notna().any():
            scape = part.dropna(subset=["soundscape_auc"]).groupby("round")["soundscape_auc"].mean()
            axis.plot(scape.index + jitter, scape.to_numpy(), color=colour, marker="o",
                      markerfacecolor="white", linestyle="--", linewidth=1.5,
                      label=f"{backbone}: labelled soundscapes (held-out sites)")
            for r, value in scape.items():
                axis.annotate(f"{value:.3f}", (r + jitter, value), textcoords="offset points",
                              xytext=(10, 0), va="center", fontsize=9, color=colour, style="italic")
    axis.set_xticks(rounds, [f"{r}\n(labelled only)" if r == 0 else f"{r}\n(+ pseudo-labels)"
                             for r in rounds])
    axis.set_xlim(min(rounds) - 0.5, max(rounds) + 0.5)
    axis.set_xlabel("training round")
    axis.set_ylabel("macro ROC-AUC (OOF folds; dashed: held-out soundscapes)")
    axis.margins(y=0.15)
    axis.grid(alpha=0.3)
    figure.legend(fontsize=8, loc="outside lower center", ncols=2)
    axis.set_title("Score per pseudo-label round")
    save_png(figure, out_png)
    return figure


def label_distribution(frame: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """Each class's share of the label mass of a soft-label table (sums to 1; all zero when empty)."""
    present = [c for c in classes if c in frame.columns]
    mass = np.zeros(len(classes))
    if present and len(frame):
        sums = frame[present].to_numpy(dtype=np.float64).sum(axis=0)
        for c, value in zip(present, sums, strict=True):
            mass[list(classes).index(c)] = value
    total = mass.sum()
    return mass / total if total > 0 else mass


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Total-variation distance between two distributions (0 = equal, 1 = disjoint)."""
    return float(0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum())


def plot_label_shift(distributions: Mapping[str, np.ndarray], classes: Sequence[str],
                     names: Mapping[str, str], out_png: str | os.PathLike):
    """Class shares of the labelled training set and of each round's pseudo-labels, side by side.

    The legend gives each distribution's total-variation distance from the one before it.
    """
    sources = list(distributions)
    figure = new_figure(11, _class_chart_height(len(classes), per_class=0.16 * max(2, len(sources)) + 0.12,
                                                extra=2.0))
    axis = figure.add_subplot()
    y = np.arange(len(classes))[::-1]
    height = 0.8 / max(1, len(sources))
    previous = None
    for k, source in enumerate(sources):
        shares = np.asarray(distributions[source]) * 100
        label = source
        if previous is not None:
            label += f"  (TV distance from previous {total_variation(previous, shares / 100):.3f})"
        axis.barh(y + (len(sources) / 2 - k - 0.5) * height, shares, height=height,
                  color=PALETTE[k % len(PALETTE)], label=label)
        previous = shares / 100
    axis.set_yticks(y, [names.get(c, c) for c in classes])
    axis.set_xlabel("share of the label mass (%)")
    axis.set_ylim(-0.6, len(classes) - 0.4)
    axis.grid(axis="x", alpha=0.3)
    figure.legend(loc="outside lower center", fontsize=8, ncols=1)
    axis.set_title("Label distribution per round: labelled data vs pseudo-labels")
    save_png(figure, out_png)
    return figure


def pseudo_report(fold_metrics: Mapping[int, Sequence[str]], pseudo_manifests: Mapping[int, str],
                  index_path: str, taxonomy_csv: str, out_scores: str, out_shift: str,
                  backbone_labels: Mapping[str, str] | None = None) -> None:
    """Score per round (training OOF AUC) and the label-distribution shift between rounds.

    `fold_metrics`: round -> every fold metrics.json of that round's train tags
    (their `backbone` and `oof_auc`; `backbone_labels` maps a metrics.json path
    to the name to show instead, e.g. the entry's label when one timm backbone
    is trained on two mel configurations); `pseudo_manifests`: round (>= 1) -> that
    round's pseudo manifest.json, whose `label_distribution.after` (mean soft
    label per class over the kept windows) and headline `windows_kept` are shown.
    """
    rows = []
    for round_, paths in sorted(fold_metrics.items()):
        for path in paths:
            metrics = read_json(path)
            backbone = (backbone_labels or {}).get(path, metrics["backbone"])
            rows.append({"round": int(round_), "backbone": str(backbone),
                         "oof_auc": metrics["oof_auc"],
                         "soundscape_auc": metrics.get("soundscape_auc")})
    scores = pd.DataFrame(rows, columns=["round", "backbone", "oof_auc", "soundscape_auc"])
    for column in ("oof_auc", "soundscape_auc"):
        scores[column] = pd.to_numeric(scores[column], errors="coerce")
    plot_round_scores(scores, out_scores)

    classes, names = read_class_names(taxonomy_csv)
    index = pd.read_parquet(index_path)
    labelled = pd.get_dummies(index["primary_label"].astype(str)).astype(float)
    distributions = {"labelled training recordings (primary labels)": label_distribution(labelled, classes)}
    for round_, path in sorted(pseudo_manifests.items()):
        manifest = read_json(path)
        # Shares of the mean soft label per class = shares of the summed soft labels.
        means = pd.DataFrame([manifest["label_distribution"]["after"]])
        kept = int(manifest["headline"]["windows_kept"])
        distributions[f"round {round_} pseudo-labels ({kept} windows)"] = label_distribution(means, classes)
    plot_label_shift(distributions, classes, names, out_shift)


# --------------------------------------------------------------------------- ensemble


def member_label(member: Mapping[str, Any], checkpoint_rounds: Mapping[str, int]) -> str:
    """An ensemble.json member's label: "<backbone>, round <r>, fold <f>".

    A soup member (key `soup`: its ingredient checkpoints) reads "<backbone>, soup r0+r1,
    fold <f>", the rounds of its ingredients looked up in `checkpoint_rounds`
    (checkpoint path -> training round).
    """
    if member.get("soup"):
        rounds = sorted({int(checkpoint_rounds[str(path)]) for path in member["soup"]})
        model = "soup " + "+".join(f"r{r}" for r in rounds)
    else:
        model = f"round {member['round']}"
    return f"{member['backbone']}, {model}, fold {member['fold']}"


def plot_ensemble_members(ensemble: Mapping[str, Any], out_png: str | os.PathLike,
                          checkpoint_rounds: Mapping[str, int] | None = None):
    """OOF macro ROC-AUC and weight of each ensemble member, the ensemble's OOF score as a line.

    `checkpoint_rounds` (checkpoint path -> training round) names the rounds of soup members.
    """
    members = list(ensemble["members"])
    figure = new_figure(10, max(3.2, 0.45 * len(members) + 2.0))
    axis = figure.add_subplot()
    labels = [member_label(member, checkpoint_rounds or {}) for member in members]
    values = [np.nan if member.get("oof_auc") is None else float(member["oof_auc"]) for member in members]
    y = np.arange(len(members))[::-1]
    axis.barh(y, np.nan_to_num(values), color="#1f77b4", height=0.6)
    overall = ensemble.get("oof_auc")
    if overall is not None:
        axis.axvline(float(overall), color="black", linestyle="--",
                     label=f"ensemble OOF {float(overall):.3f} (recordings every backbone predicted out of fold)")
    soundscape = ensemble.get("soundscape_auc")
    if soundscape is not None:
        axis.axvline(float(soundscape), color="#d62728", linestyle="-.",
                     label=f"ensemble on held-out labelled soundscapes {float(soundscape):.3f}")
    axis.axvline(0.5, color="grey", linestyle=":", label="chance (0.5)")
    axis.set_yticks(y, labels)
    axis.set_ylim(-0.6, len(members) - 0.4)
    axis.set_xlim(0, 1)
    axis.set_xlabel("OOF macro ROC-AUC (each member on its own validation fold)")
    axis.grid(axis="x", alpha=0.3)
    right = axis.twinx()
    right.set_ylim(axis.get_ylim())
    right_labels = []
    for k, member in enumerate(members):
        text = f"{values[k]:.3f}" if np.isfinite(values[k]) else "no OOF rows"
        if member.get("weight") is not None:
            text += f"  (weight {float(member['weight']):.2f})"
        right_labels.append(text)
    right.set_yticks(y, right_labels, fontsize=9)
    right.tick_params(axis="y", length=0)
    figure.legend(loc="outside lower center", ncols=2, fontsize=8)
    axis.set_title(f"Ensemble members ({ensemble['combine']} of {len(members)} models)")
    save_png(figure, out_png)
    return figure


def ensemble_report(ensemble_path: str, out_png: str, checkpoint_rounds: Mapping[str, int] | None = None) -> None:
    """The ensemble-member figure (`checkpoint_rounds`: checkpoint path -> round, for soup members)."""
    plot_ensemble_members(read_json(ensemble_path), out_png, checkpoint_rounds)


# --------------------------------------------------------------------------- export


EXPORT_VARIANT_NAMES = {
    "torch_fp32": "PyTorch f32",
    "openvino_f32": "OpenVINO f32",
    "openvino_fp16": "OpenVINO fp16",
    "openvino_int8": "OpenVINO int8",
}


def _value_bars(axis, x, names, values, colours, fmt: str, missing: str, ylabel: str, title: str) -> None:
    """Bars labelled with their values (`fmt`; `missing` where a value is NaN), headroom above the tallest."""
    values = np.array(values, dtype=float)
    bars = axis.bar(x, np.nan_to_num(values), color=colours)
    axis.bar_label(bars, labels=[missing if not np.isfinite(v) else fmt.format(v) for v in values], padding=2)
    axis.set_xticks(x, names)
    top = np.nanmax(values) if np.isfinite(values).any() else 1.0
    axis.set_ylim(0, top * 1.18)
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=10)
    axis.grid(axis="y", alpha=0.3)


def plot_export(headline: Mapping[str, Any], out_png: str | os.PathLike):
    """Ensemble ROC-AUC and throughput (clips per second) per precision, with the gate verdict."""
    auc = {k: v for k, v in (headline.get("auc") or {}).items() if v is not None}
    speed: dict[str, float] = {}
    for member in headline.get("members") or []:
        for key, value in (member.get("clips_per_second") or {}).items():
            if value:
                # The ensemble runs every member on each clip: the per-member times add up.
                speed[key] = speed.get(key, 0.0) + 1.0 / float(value)
    speed = {k: 1.0 / v for k, v in speed.items() if v > 0}
    variants = [k for k in EXPORT_VARIANT_NAMES if k in auc or k in speed]
    variants += [k for k in [*auc, *speed] if k not in variants]
    variants = list(dict.fromkeys(variants))
    used = f"openvino_{headline.get('precision')}"
    colours = ["#2ca02c" if v == used else "#7f7f7f" if v.startswith("torch") else "#1f77b4"
               for v in variants]
    names = [EXPORT_VARIANT_NAMES.get(v, v) for v in variants]

    # IR sizes are keyed by precision (f32, fp16, int8); torch has no IR.
    sizes = {f"openvino_{k}": float(v) / 1e6 for k, v in (headline.get("ir_bytes_total") or {}).items() if v}

    figure = new_figure(15, 4.8)
    auc_axis, speed_axis, size_axis = figure.subplots(1, 3)
    x = np.arange(len(variants))
    auc_values = np.array([auc.get(v, np.nan) for v in variants], dtype=float)
    bars = auc_axis.bar(x, np.nan_to_num(auc_values), color=colours)
    auc_axis.bar_label(bars, labels=["n/a" if not np.isfinite(v) else f"{v:.4f}" for v in auc_values],
                       padding=2)
    finite = auc_values[np.isfinite(auc_values)]
    if finite.size:
        spread = max(0.01, float(finite.max() - finite.min()))
        auc_axis.set_ylim(max(0.0, finite.min() - 3 * spread), min(1.0, finite.max() + 2 * spread))
    scape = headline.get("soundscape_auc") or {}
    if scape:
        scape_values = [scape.get(v, np.nan) for v in variants]
        auc_axis.scatter(x, scape_values, marker="D", color="#d62728", zorder=3,
                         label=f"held-out labelled soundscapes ({headline.get('soundscape_windows_scored')} windows)")
        auc_axis.legend(fontsize=8, loc="lower right")
        finite = np.concatenate([finite, np.array([v for v in scape_values if v is not None and np.isfinite(v)])])
        if finite.size:
            spread = max(0.01, float(finite.max() - finite.min()))
            auc_axis.set_ylim(max(0.0, finite.min() - 3 * spread), min(1.0, finite.max() + 2 * spread))
    auc_axis.set_xticks(x, names)
    auc_axis.set_ylabel("ensemble macro ROC-AUC (axis zoomed)")
    gate = headline.get("gate") or {}
    drop = gate.get("drop")
    limit = gate.get("max_auc_drop", headline.get("max_auc_drop"))
    verdict = f"gate {gate.get('status', 'not run')}"
    if drop is not None:
        candidate = EXPORT_VARIANT_NAMES.get(str(gate.get("candidate")), "shipped")
        verdict += f": {candidate} {-float(drop):+.4f} vs OpenVINO f32"
        if limit is not None:
            verdict += f" (may lose {float(limit):.4f})"
    auc_axis.set_title("Score per precision", fontsize=10)
    auc_axis.grid(axis="y", alpha=0.3)

    threads = headline.get("threads", "?")
    _value_bars(speed_axis, x, names, [speed.get(v, np.nan) for v in variants], colours, "{:,.0f}", "n/a",
                f"5 s clips per second, whole ensemble ({threads} threads)", "Speed per precision (CPU)")
    _value_bars(size_axis, x, names, [sizes.get(v, np.nan) for v in variants], colours, "{:.2f}", "no IR",
                "model files, all members (MB)", "Size per precision (OpenVINO IR)")
    windows = headline.get("eval_windows")
    figure.suptitle(
        f"Export: {len(headline.get('members') or [])} members, shipped precision "
        f"{headline.get('precision')} (requested {headline.get('requested_precision')}; green = shipped)\n"
        f"Accuracy {verdict}"
        + (f", scored on {windows} validation windows" if windows else ""))
    save_png(figure, out_png)
    return figure


def export_report(manifest_path: str, out_png: str) -> None:
    """The export figure from the export manifest's headline."""
    plot_export(read_json(manifest_path).get("headline") or {}, out_png)


# --------------------------------------------------------------------------- submission


def submission_per_class(submission: pd.DataFrame, truth: pd.DataFrame,
                         classes: Sequence[str]) -> tuple[dict[str, float], dict[str, int]]:
    """Per-class ROC-AUC of a submission against ground truth, and positive windows per class.

    The truth is aligned as `birdclef.common.metrics.score_submission` aligns it (it must cover every row)."""
    from birdclef.common.metrics import aligned_truth, per_class_roc_auc

    present = [c for c in classes if c in submission.columns]
    y_true = aligned_truth(submission, truth, present).to_numpy(dtype=float)
    scores = per_class_roc_auc(y_true, submission[present].to_numpy(dtype=float))
    positives = (y_true > 0.5).sum(axis=0)
    return ({c: float(s) for c, s in zip(present, scores, strict=True)},
            {c: int(p) for c, p in zip(present, positives, strict=True)})


def plot_prediction_histograms(submission: pd.DataFrame, truth: pd.DataFrame | None,
                               classes: Sequence[str], names: Mapping[str, str],
                               out_dir: str | os.PathLike, per_page: int = CLASSES_PER_PAGE) -> list:
    """Per class, the histogram of predicted probabilities over the submission's windows
    (split into windows with and without the species when ground truth is known; the truth
    is aligned as `birdclef.common.metrics.score_submission` aligns it, so it must cover every row)."""
    from birdclef.common.metrics import aligned_truth

    classes = [c for c in classes if c in submission.columns]
    aligned = None if truth is None else aligned_truth(submission, truth, classes)
    bins = np.linspace(0, 1, 21)
    figures = []
    for figure, panels, span in _class_pages(classes, out_dir, per_page, (3.3, 2.7), (0.0, 1.2)):
        for label, axis in panels:
            values = submission[label].to_numpy(dtype=float)
            title = names.get(label, label)
            if aligned is not None:
                present = aligned[label].to_numpy(dtype=float) > 0.5
                axis.hist(values[~present], bins=bins, color=ABSENT_COLOUR, alpha=0.75)
                axis.hist(values[present], bins=bins, color=PRESENT_COLOUR, alpha=0.75)
                title += f"\npresent in {int(present.sum())} of {len(values)} windows"
            else:
                axis.hist(values, bins=bins, color="#1f77b4")
            axis.set_yscale("log")
            axis.set_xlim(0, 1)
            axis.set_title(title, fontsize=9)
            axis.set_xlabel("predicted probability", fontsize=8)
            axis.set_ylabel("5 s windows (log)", fontsize=8)
            axis.tick_params(labelsize=8)
            axis.grid(alpha=0.3)
        if aligned is not None:
            figure.legend(handles=[
                Patch(color=ABSENT_COLOUR, alpha=0.75, label="windows without the species"),
                Patch(color=PRESENT_COLOUR, alpha=0.75, label="windows with the species (ground truth)"),
            ], loc="outside lower center", ncols=2, fontsize=9)
        figure.suptitle(f"Submission: predicted probabilities per class over {len(submission)} windows "
                        f"({span})" + ("" if aligned is not None else "; no ground truth"))
        figures.append(figure)
    return figures


def _read_submission_tables(submission_csv: str, ground_truth_csv: str | None):
    submission = pd.read_csv(submission_csv)
    truth = pd.read_csv(ground_truth_csv) if ground_truth_csv else None
    return submission, truth


def submission_report(submission_csv: str, taxonomy_csv: str, out_histograms: str,
                      ground_truth_csv: str | None = None) -> None:
    """Per-class prediction histograms of a submission (split by ground truth when known)."""
    submission, truth = _read_submission_tables(submission_csv, ground_truth_csv)
    classes, names = read_class_names(taxonomy_csv)
    plot_prediction_histograms(submission, truth, classes, names, out_histograms)


def submission_score_report(submission_csv: str, ground_truth_csv: str, taxonomy_csv: str,
                            out_png: str) -> None:
    """Per-class ROC-AUC of a submission against the test ground truth."""
    submission, truth = _read_submission_tables(submission_csv, ground_truth_csv)
    classes, names = read_class_names(taxonomy_csv)
    auc, positives = submission_per_class(submission, truth, classes)
    plot_per_class_auc(auc, positives, names,
                       f"Submission on the test soundscapes ({len(submission)} windows)",
                       "ROC-AUC on the test soundscape windows (ground truth known)", out_png,
                       positive_unit="windows")
