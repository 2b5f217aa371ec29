"""Training figures: loss and OOF score per epoch per fold, per-class OOF ROC-AUC, and the
pseudo-label rounds (score per round, label distribution per round)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from birdclef.common.io import read_json
from birdclef.common.labels import targets_of
from birdclef.common.metrics import per_class_roc_auc
from birdclef.ensemble import backbone_oof
from birdclef.report.figures import (
    PALETTE,
    _class_chart_height,
    new_figure,
    read_class_names,
    save_png,
)
from birdclef.report.per_class import plot_per_class_auc


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


def oof_per_class(oof_paths: Sequence[str], index: pd.DataFrame,
                  classes: Sequence[str]) -> tuple[dict[str, float], dict[str, int]]:
    """Per-class ROC-AUC of the pooled out-of-fold predictions, and positives per class.

    The folds are pooled as the ensemble pools them (`ensemble.backbone_oof`): a
    recording out of fold in two of them is an error.
    """
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
