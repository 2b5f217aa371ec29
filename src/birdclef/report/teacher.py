"""Teacher figure: how the competition's classes map onto the teacher's, per taxonomy class group.

Per ``class_name`` of taxonomy.csv (Aves, Amphibia, Insecta, ...; one group
"all classes" when the column is missing) a horizontal stacked bar of the
classes matched by scientific name, matched by genus (``genus_fallback``) and
unmatched (`birdclef.runtime.teacher.mapping`), with the teacher's model,
runtime, mapped share and windows in the title.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from birdclef.common.io import read_json
from birdclef.report.figures import new_figure, save_png
from birdclef.runtime.teacher.mapping import STATUSES

log = logging.getLogger(__name__)

ALL_CLASSES = "all classes"
STATUS_NAMES = {"matched": "matched", "genus": "by genus", "unmatched": "unmatched"}
STATUS_COLOURS = {"matched": "#2ca02c", "genus": "#ff7f0e", "unmatched": "#7f7f7f"}


def mapping_counts_by_group(mapping: pd.DataFrame, taxonomy: pd.DataFrame) -> pd.DataFrame:
    """Classes per (taxonomy class group, mapping status): one row per group, columns `STATUSES`.

    The group is taxonomy.csv's ``class_name`` (missing -> "unknown"), or
    "all classes" for every class when the column is absent. Groups are ordered by
    their number of classes, largest first (ties by name).
    """
    labels = mapping["primary_label"].astype(str)
    if "class_name" in taxonomy.columns:
        groups = dict(zip(taxonomy["primary_label"].astype(str),
                          taxonomy["class_name"].fillna("unknown").astype(str), strict=True))
        group = labels.map(groups).fillna("unknown")
    else:
        group = pd.Series(ALL_CLASSES, index=mapping.index)
    frame = pd.DataFrame({"group": group.to_numpy(), "status": mapping["status"].astype(str).to_numpy()})
    unknown = sorted(set(frame["status"]) - set(STATUSES))
    if unknown:
        raise ValueError(f"teacher mapping: unexpected status values {unknown}: expected {list(STATUSES)}")
    counts = pd.crosstab(frame["group"], frame["status"]).reindex(columns=list(STATUSES), fill_value=0)
    counts = counts.astype(int)
    counts.columns.name = None
    counts.index.name = "class_name"
    totals = counts.sum(axis=1)
    order = sorted(counts.index, key=lambda name: (-int(totals[name]), str(name)))
    return counts.loc[order]


def _title(headline: Mapping[str, Any], counts: pd.DataFrame) -> str:
    """The figure's title: model, runtime, mapped share of the classes, windows and speed."""
    total = int(counts.to_numpy().sum())
    mapped = int(counts["matched"].sum() + counts["genus"].sum())
    share = mapped / total if total else 0.0
    windows = headline.get("windows")
    speed = headline.get("audio_seconds_per_core_second")
    line = (f"Teacher {headline.get('model', '?')} on {headline.get('runtime', '?')}: "
            f"{mapped} of {total} classes mapped ({share:.0%})")
    details = []
    if windows is not None:
        details.append(f"{int(windows):,} windows")
    if speed is not None:
        details.append(f"{float(speed):,.0f} s of audio per core-second")
    return line + ("\n" + ", ".join(details) if details else "")


def plot_teacher_mapping(counts: pd.DataFrame, headline: Mapping[str, Any], out_png: str | os.PathLike):
    """Horizontal stacked bars of matched / by genus / unmatched classes per taxonomy class group."""
    groups = list(counts.index)
    figure = new_figure(10, max(3.2, 0.55 * len(groups) + 2.2))
    axis = figure.add_subplot()
    y = np.arange(len(groups))[::-1]  # largest group on top
    left = np.zeros(len(groups))
    for status in STATUSES:
        values = counts[status].to_numpy(dtype=float)
        bars = axis.barh(y, values, left=left, height=0.6, color=STATUS_COLOURS[status],
                         label=STATUS_NAMES[status])
        axis.bar_label(bars, labels=[f"{int(v)}" if v else "" for v in values], label_type="center",
                       fontsize=9, color="white")
        left += values
    axis.set_yticks(y, [f"{group} ({int(total)})" for group, total in zip(groups, left, strict=True)])
    axis.set_ylim(-0.6, len(groups) - 0.4)
    axis.set_xlim(0, max(1.0, float(left.max()) if len(left) else 1.0) * 1.05)
    axis.set_xlabel("taxonomy classes")
    axis.grid(axis="x", alpha=0.3)
    axis.set_title(_title(headline, counts))
    figure.legend(loc="outside lower center", ncols=len(STATUSES), fontsize=9)
    save_png(figure, out_png)
    return figure


def teacher_report(mapping_path: str, manifest_path: str, taxonomy_csv: str, out_mapping_png: str) -> pd.DataFrame:
    """The teacher's class-mapping figure; returns the counts per class group (`mapping_counts_by_group`)."""
    mapping = pd.read_parquet(mapping_path)
    taxonomy = pd.read_csv(taxonomy_csv, dtype={"primary_label": str})
    headline = read_json(manifest_path).get("headline") or {}
    counts = mapping_counts_by_group(mapping, taxonomy)
    log.info("teacher class mapping per class group:\n%s", counts.to_string())
    plot_teacher_mapping(counts, headline, out_mapping_png)
    return counts
