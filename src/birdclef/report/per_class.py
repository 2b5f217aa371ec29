"""Per-class ROC-AUC bars (worst on top), shared by the OOF and the submission-score figures."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
from matplotlib.patches import Patch

from birdclef.report.figures import _class_chart_height, new_figure, save_png

# Per-class ROC-AUC bars are coloured by band.
AUC_COLOURS = {"ROC-AUC < 0.7": "#d62728", "0.7 - 0.85": "#ff7f0e", ">= 0.85": "#2ca02c"}


def _auc_band(value: float) -> str:
    return "ROC-AUC < 0.7" if value < 0.7 else "0.7 - 0.85" if value < 0.85 else ">= 0.85"


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
