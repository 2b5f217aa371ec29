"""Data-summary figures of one catalog: recordings and audio per class, durations, collections."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from birdclef.report.figures import (
    _class_chart_height,
    _collection_colours,
    new_figure,
    read_class_names,
    save_png,
)


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
