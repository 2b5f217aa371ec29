"""Self-distillation on the training recordings (pseudo.rounds[].recordings): the soft labels
of the previous round's OOF predictions, their combination with the true labels and the mass
cap, the data path through training, and the plan's tags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_plan import plan_of, tags
from test_train import BACKBONE, CLASSES, FPS, N_MELS, SPEC, WINDOW, make_cache, make_soundscapes

from birdclef import pseudo
from birdclef.train import TrainSettings, train_fold
from birdclef.train.fold_data import recording_targets


def run(out_dir, cache, **kwargs):
    """train_fold of fold 0 for one tiny epoch."""
    settings = TrainSettings(epochs=1, batch_size=8, samples_per_epoch=16, crop_seconds_max=2.0)
    return train_fold(*cache, 0, CLASSES, SPEC, settings, WINDOW, FPS, out_dir, threads=2, device="cpu",
                      progress=False, **kwargs)


def test_recording_soft_labels_average_the_backbones_then_power_scale():
    one = pd.DataFrame({"filename": ["a.ogg", "b.ogg"], "fold": [0, 1], "x": [0.6, 0.2], "y": [0.2, 0.2]})
    other = pd.DataFrame({"filename": ["a.ogg"], "fold": [0], "x": [0.2], "y": [0.2]})
    labels = pseudo.recording_soft_labels([one, other], ["x", "y"], 2.0, "sum")
    assert labels["filename"].tolist() == ["a.ogg", "b.ogg"]
    assert labels["n_models"].tolist() == [2, 1]
    # a: mean (0.4, 0.2) -> (0.16, 0.04) / 0.2 = (0.8, 0.2); b: (0.2, 0.2) -> (0.5, 0.5)
    np.testing.assert_allclose(labels[["x", "y"]].to_numpy(), [[0.8, 0.2], [0.5, 0.5]], rtol=1e-6)
    none = pseudo.recording_soft_labels([one], ["x", "y"], 2.0, "none")
    np.testing.assert_allclose(none[["x", "y"]].to_numpy(), [[0.36, 0.04], [0.04, 0.04]], rtol=1e-6)
    with pytest.raises(ValueError, match=r"oof_k.parquet: out-of-fold predictions lack columns \['y'\]"):
        pseudo.recording_soft_labels([one.drop(columns="y")], ["x", "y"], 2.0, names=["oof_k.parquet"])
    with pytest.raises(ValueError, match="'a.ogg' is scored twice"):
        pseudo.recording_soft_labels([pd.concat([one, other])], ["x", "y"], 2.0)


def test_targets_keep_the_true_labels_and_add_what_the_soft_labels_exceed():
    true = np.array([[1.0, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    scaled = np.array([[0.7, 0.2, 0.3, 0.1], [0.5, 0.9, 0.8, 0.7], [np.nan] * 4])
    targets, stats = pseudo.self_distill_targets(true, scaled, mass_cap=False)
    np.testing.assert_allclose(targets, [[1.0, 0.5, 0.3, 0.1], [1.0, 0.9, 0.8, 0.7], [0.0, 1.0, 0.0, 0.0]],
                               rtol=1e-6)
    assert stats == {"recordings": 3, "recordings_with_oof": 2, "pseudo_mass_mean": pytest.approx(1.4),
                     "true_mass_mean": pytest.approx(1.25), "recordings_capped": 0}
    # The cap: row 1's pseudo mass 2.4 exceeds its true mass 1, so it is scaled by 1 / 2.4;
    # row 0's 0.4 <= 1.5 is left alone; the row without OOF keeps its labels.
    capped, stats = pseudo.self_distill_targets(true, scaled, mass_cap=True)
    np.testing.assert_allclose(capped, [[1.0, 0.5, 0.3, 0.1], [1.0, 0.375, 0.8 / 2.4, 0.7 / 2.4],
                                        [0.0, 1.0, 0.0, 0.0]], rtol=1e-6)
    assert stats["recordings_capped"] == 1 and stats["pseudo_mass_mean"] == pytest.approx(0.7)


def test_the_cap_holds_for_any_rows():
    rng = np.random.default_rng(0)
    true = (rng.random((200, 12)) < 0.1) * rng.choice([0.5, 1.0], size=(200, 12))
    scaled = rng.random((200, 12))
    uncapped, _ = pseudo.self_distill_targets(true, scaled, False)
    np.testing.assert_allclose(uncapped, np.maximum(true, scaled), rtol=1e-6)
    targets, _ = pseudo.self_distill_targets(true, scaled, True)
    assert (targets >= true - 1e-7).all() and (targets <= uncapped + 1e-7).all()  # true labels never lowered
    extra = targets - true
    assert (extra.sum(axis=1) <= true.sum(axis=1) + 1e-5).all()
    assert not extra[true.sum(axis=1) == 0].any()  # no true mass, no pseudo mass
    with pytest.raises(ValueError, match="differ in shape"):
        pseudo.self_distill_targets(true, scaled[:, :3], True)


def test_training_targets_are_matched_by_filename():
    table = pd.DataFrame({"filename": ["b.ogg", "a.ogg", "c.ogg"]})
    true = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    soft = pd.DataFrame({"filename": ["a.ogg", "b.ogg"], "x": [0.4, 0.9], "y": [0.6, 0.1], "n_models": [1, 1]})
    targets, stats = recording_targets(table, true, soft, ["x", "y"], mass_cap=False)
    np.testing.assert_allclose(targets, [[1.0, 0.1], [0.4, 1.0], [1.0, 0.0]], rtol=1e-6)
    assert stats["recordings_with_oof"] == 2 and stats["label_mass_cap"] is False
    with pytest.raises(ValueError, match=r"lack classes \['y'\]"):
        recording_targets(table, true, soft.drop(columns="y"), ["x", "y"], mass_cap=False)


def test_train_fold_trains_on_the_self_distillation_targets(tmp_path):
    cache = make_cache(per_class=4)
    index = cache[1]
    soft = pd.DataFrame({"filename": index["filename"].astype(str)})
    soft[CLASSES] = 0.25  # uniform soft labels: pseudo mass 0.75 or 0.25 per recording
    metrics = run(tmp_path / "capped", cache, recording_pseudo=soft, label_mass_cap=True)
    stats = metrics["self_distill"]
    n_train = metrics["n_train"]
    assert stats["recordings"] == n_train == stats["recordings_with_oof"]
    assert stats["label_mass_cap"] is True and stats["recordings_capped"] == 0
    # primary only: 3 x 0.25 added; primary + a secondary at 0.5: 2 x 0.25 - ... = 0.25 + 0.25
    assert 0.5 < stats["pseudo_mass_mean"] <= 0.75
    assert run(tmp_path / "plain", cache)["self_distill"] is None


def test_train_stage_reads_the_previous_rounds_oof(tmp_path):
    from birdclef.train import train_stage

    mels, index, folds = make_cache(per_class=4)
    np.save(tmp_path / "mels.npy", mels)
    index.assign(secondary_labels=[list(x) for x in index["secondary_labels"]]).to_parquet(
        tmp_path / "index.parquet", index=False)
    folds.to_parquet(tmp_path / "folds.parquet", index=False)
    scape_mels, scape_index = make_soundscapes(4)
    np.save(tmp_path / "scape.npy", scape_mels)
    scape_index.to_parquet(tmp_path / "scape.parquet", index=False)
    pd.DataFrame({"primary_label": CLASSES}).to_csv(tmp_path / "taxonomy.csv", index=False)
    oof_paths = []
    for fold in (0, 1, 2, 3):  # the previous round's OOF: each fold's recordings
        held_out = folds.loc[folds["fold"] == fold, ["filename", "fold"]].reset_index(drop=True)
        held_out[CLASSES] = 0.9
        oof_paths.append(str(tmp_path / f"oof{fold}.parquet"))
        held_out.to_parquet(oof_paths[-1], index=False)
    out = tmp_path / "train" / "fold1"
    outputs = {name: str(out / file) for name, file in (
        ("checkpoint", "best.pt"), ("oof", "oof.parquet"), ("soundscape_preds", "soundscape_preds.parquet"),
        ("metrics", "metrics.json"), ("manifest", "manifest.json"))}
    inputs = {"mels": tmp_path / "mels.npy", "index": tmp_path / "index.parquet",
              "folds": tmp_path / "folds.parquet", "soundscape_mels": tmp_path / "scape.npy",
              "soundscape_index": tmp_path / "scape.parquet", "taxonomy": tmp_path / "taxonomy.csv"}
    inputs = {k: str(v) for k, v in inputs.items()}
    mel = {"sample_rate": 32000, "hop_length": 512, "n_mels": N_MELS, "window_seconds": 1.01}
    settings = {"epochs": 1, "batch_size": 8, "samples_per_epoch": 16, "crop_seconds_max": 2.0, "round": 1,
                "self_distill_power": 2.0, "self_distill_normalize": "none", "self_distill_mass_cap": True}
    common = {"fold": 1, "tag": "test_efficientnet-r1-abc", "backbone": {"name": BACKBONE},
              "upstream": {"mels": "m"}, "mel": mel, "device": "cpu", "threads": 2, "progress": False}
    with pytest.raises(ValueError, match="no previous-round oof.parquet was given"):
        train_stage(inputs, outputs, settings=settings, **common)
    metrics = train_stage({**inputs, "recording_oof": oof_paths}, outputs, settings=settings, **common)
    stats = metrics["self_distill"]
    # 0.9 ** 2 = 0.81 on every class: pseudo mass 3 x 0.81 (primary only) or 2 x 0.81 + 0.31 (a
    # secondary at 0.5) exceeds the true mass, so every row is capped to it; recordings of
    # fold -1 (never held out) keep their labels
    never_held_out = int(((folds["fold"] == -1)).sum())
    assert stats["recordings"] == metrics["n_train"]
    assert stats["recordings_with_oof"] == metrics["n_train"] - never_held_out
    assert stats["recordings_capped"] == stats["recordings_with_oof"]
    assert stats["pseudo_mass_mean"] == pytest.approx(stats["true_mass_mean"])
    manifest = json.loads(Path(outputs["manifest"]).read_text())
    assert manifest["headline"]["self_distill"] == stats
    assert {entry["path"] for entry in manifest["inputs"]} >= set(oof_paths)


ROUND = {"method": "power", "power": 2.0}


def test_the_option_off_changes_no_tag_and_on_changes_only_the_students():
    plain = plan_of({"pseudo": {"rounds": [ROUND]}})
    explicit_off = plan_of({"pseudo": {"rounds": [{**ROUND, "recordings": False, "label_mass_cap": True,
                                                   "recordings_power": 3.0}]}})
    assert tags(explicit_off) == tags(plain)
    on = plan_of({"pseudo": {"rounds": [{**ROUND, "recordings": True}]}})
    capped = plan_of({"pseudo": {"rounds": [{**ROUND, "recordings": True, "label_mass_cap": True}]}})
    before, after = tags(plain), tags(on)
    assert after["pseudo"] == before["pseudo"]  # the soundscape labels do not change
    assert after["train"][0] == before["train"][0] and after["train"][1] != before["train"][1]
    assert tags(capped)["train"][1] != after["train"][1]
    r0, r1 = on.round_train_tags[0][0], on.round_train_tags[1][0]
    run = on.train_runs[r1]
    assert run["upstream"]["recording_oof"] == [r0]
    assert {k: v for k, v in run["settings"].items() if k.startswith("self_distill")} == {
        "self_distill_power": 2.0, "self_distill_normalize": "sum", "self_distill_mass_cap": False}
    assert "recording_oof" not in plain.train_runs[plain.round_train_tags[1][0]]["upstream"]
    assert pseudo_keys(on) == [] and pseudo_keys(capped) == []


def pseudo_keys(plan) -> list[str]:
    """The recordings keys that reached a pseudo run's settings (none should)."""
    return [key for run in plan.pseudo_runs.values() for key in run["settings"]
            if key in ("recordings", "recordings_power", "label_mass_cap")]
