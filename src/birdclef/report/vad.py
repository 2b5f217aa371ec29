"""Voice-activity-detection figures: speech removed per collection, and one example recording."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from birdclef.common.io import read_json
from birdclef.report.figures import (
    _message_figure,
    _show_mel,
    new_figure,
    read_class_names,
    save_png,
)
from birdclef.runtime.audio import read_audio
from birdclef.runtime.features import log_mel, mel_filterbank

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
    _draw_speech_removed(seconds_axis, y, collections, removed_s, dropped_s, scanned_s)
    _draw_vad_outcomes(status_axis, y, catalog, collections)
    total_removed = removed_s.sum() + dropped_s.sum()
    figure.suptitle(f"Voice activity detection: {total_removed:.1f} s of "
                    f"{scanned_s.sum() / 60:.1f} min scanned removed")
    save_png(figure, out_png)
    return figure


def _draw_speech_removed(seconds_axis, y: np.ndarray, collections: Sequence[str],
                         removed_s: np.ndarray, dropped_s: np.ndarray, scanned_s: np.ndarray) -> None:
    """Seconds cut out (and dropped) per collection, with their share of the audio scanned."""
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


def _draw_vad_outcomes(status_axis, y: np.ndarray, catalog: pd.DataFrame,
                       collections: Sequence[str]) -> None:
    """Recordings per VAD outcome (`vad_status`) per collection, stacked."""
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


def plot_vad_example(original: np.ndarray, cleaned: np.ndarray | None,
                     spans: Sequence[tuple[float, float]], mel_settings: Mapping[str, Any],
                     title: str, out_png: str | os.PathLike, pad_seconds: float = 0.0):
    """Log-mel spectrogram of one recording with its speech spans marked, and the cleaned result."""
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
