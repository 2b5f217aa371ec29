"""Ensemble and export figures: each member's OOF score and weight (the ensemble's score as a
line), and the ensemble's ROC-AUC, speed and model size per exported precision."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from birdclef.common.io import read_json
from birdclef.report.figures import new_figure, save_png


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
    speed = _ensemble_speed(headline)
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
    _draw_export_auc(auc_axis, x, names, variants, colours, auc, headline)
    verdict = _gate_verdict(headline)

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


def _ensemble_speed(headline: Mapping[str, Any]) -> dict[str, float]:
    """Clips per second of the whole ensemble per variant, from each member's clips per second."""
    speed: dict[str, float] = {}
    for member in headline.get("members") or []:
        for key, value in (member.get("clips_per_second") or {}).items():
            if value:
                # The ensemble runs every member on each clip: the per-member times add up.
                speed[key] = speed.get(key, 0.0) + 1.0 / float(value)
    return {k: 1.0 / v for k, v in speed.items() if v > 0}


def _draw_export_auc(auc_axis, x, names, variants, colours, auc: Mapping[str, float],
                     headline: Mapping[str, Any]) -> None:
    """The ensemble ROC-AUC bars per variant (axis zoomed), held-out soundscape scores as diamonds."""
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
    auc_axis.set_title("Score per precision", fontsize=10)
    auc_axis.grid(axis="y", alpha=0.3)


def _gate_verdict(headline: Mapping[str, Any]) -> str:
    """The export gate's verdict in words: status, the candidate's drop vs OpenVINO f32, the limit."""
    gate = headline.get("gate") or {}
    drop = gate.get("drop")
    limit = gate.get("max_auc_drop", headline.get("max_auc_drop"))
    verdict = f"gate {gate.get('status', 'not run')}"
    if drop is not None:
        candidate = EXPORT_VARIANT_NAMES.get(str(gate.get("candidate")), "shipped")
        verdict += f": {candidate} {-float(drop):+.4f} vs OpenVINO f32"
        if limit is not None:
            verdict += f" (may lose {float(limit):.4f})"
    return verdict


def export_report(manifest_path: str, out_png: str) -> None:
    """The export figure from the export manifest's headline."""
    plot_export(read_json(manifest_path).get("headline") or {}, out_png)
