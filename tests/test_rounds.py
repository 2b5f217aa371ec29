"""Pseudo-label rounds (out of fold by soundscape, provenance), mixup sources,
ensemble combination and weight fitting, and the greedy model soup."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_train import CLASSES, FPS, WINDOW, make_cache, run

from birdclef import ensemble, pseudo
from birdclef.common.labels import targets_of
from birdclef.ensemble.soup import average_state_dicts, fold_validation, greedy_soup
from birdclef.train import TrainSettings, mixup_permutation
from birdclef.train.model import load_model


def test_soundscape_folds_are_deterministic_and_balanced():
    names = [f"S{k:02d}" for k in range(11)] * 3  # repeated names count once
    first = pseudo.soundscape_folds(names, [0, 1, 2], seed=7)
    assert first == pseudo.soundscape_folds(list(reversed(names)), [0, 1, 2], seed=7)
    assert sorted(first) == sorted(set(names))
    sizes = np.bincount(list(first.values()))
    assert sizes.max() - sizes.min() <= 1 and len(sizes) == 3
    assert first != pseudo.soundscape_folds(names, [0, 1, 2], seed=8)
    assert set(pseudo.soundscape_folds(names, [1, 3], seed=0).values()) == {1, 3}
    with pytest.raises(ValueError, match="at least one fold"):
        pseudo.soundscape_folds(names, [], seed=0)


def _predictions():
    base = pd.DataFrame({"row_id": ["a_5", "a_10", "b_5"], "soundscape": ["a", "a", "b"],
                         "end_s": [5, 10, 5]})
    m0 = base.assign(x=[0.9, 0.8, 0.1], y=[0.1, 0.2, 0.9], seen_in_training=[False, False, True])
    m1 = base.assign(x=[0.1, 0.2, 0.7], y=[0.9, 0.8, 0.3], seen_in_training=[True, True, False])
    return m0, m1


def test_out_of_fold_pseudo_labels_use_only_models_that_never_saw_the_window():
    m0, m1 = _predictions()
    settings = {"method": "power", "power": 1.0, "round": 2, "oof_by_soundscape": True}
    labels, stats = pseudo.make_pseudo_labels([m0, m1], ["x", "y"], settings)
    np.testing.assert_allclose(labels[["x", "y"]].to_numpy(),
                               [[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]], rtol=1e-6)
    assert labels["n_models"].tolist() == [1, 1, 1] and labels["round"].tolist() == [2, 2, 2]
    assert stats["oof_by_soundscape"] and stats["models_per_window_max"] == 1
    # Without the option every model votes.
    both, _ = pseudo.make_pseudo_labels([m0, m1], ["x", "y"], {**settings, "oof_by_soundscape": False})
    np.testing.assert_allclose(both[["x", "y"]].to_numpy(), [[0.5, 0.5], [0.5, 0.5], [0.4, 0.6]])
    assert both["n_models"].tolist() == [2, 2, 2]
    # Another mel configuration's cache may list the same windows in another order.
    shuffled = m1.iloc[[2, 0, 1]].reset_index(drop=True)
    again, _ = pseudo.make_pseudo_labels([m0, shuffled], ["x", "y"], {**settings, "oof_by_soundscape": False})
    assert again["row_id"].tolist() == ["a_5", "a_10", "b_5"]
    np.testing.assert_allclose(again[["x", "y"]].to_numpy(), both[["x", "y"]].to_numpy())
    with pytest.raises(ValueError, match="model 1 cover different windows"):
        pseudo.make_pseudo_labels([m0, m1.iloc[:2]], ["x", "y"], settings)
    # A window every model saw has no out-of-fold label.
    with pytest.raises(ValueError, match="b_5.*oof_by_soundscape"):
        pseudo.make_pseudo_labels([m0, m1.assign(seen_in_training=True)], ["x", "y"], settings)


def test_labelled_windows_are_never_pseudo_labelled_and_score_the_round():
    m0, m1 = _predictions()
    labelled = pd.DataFrame({"row_id": ["a_5", "a_10"], "soundscape": ["a", "a"], "end_s": [5, 10],
                             "split": ["validation", "validation"], "x": [1.0, 0.0], "y": [0.0, 1.0]})
    settings = {"method": "power", "power": 1.0, "round": 1}
    labels, stats = pseudo.make_pseudo_labels([m0, m1], ["x", "y"], settings, labelled)
    assert labels["row_id"].tolist() == ["b_5"]  # the labelled windows are left out
    assert stats["labelled_windows_left_out"] == 2 and stats["windows_kept"] == 1
    # m0 and m1 disagree exactly: their mean ties a_5 and a_10 (0.5 each), AUC 0.5 on 2 windows.
    assert stats["soundscape_windows_scored"] == 2 and stats["soundscape_auc"] == pytest.approx(0.5)
    unlabelled, none = pseudo.make_pseudo_labels([m0, m1], ["x", "y"], settings)
    assert len(unlabelled) == 3 and none["soundscape_auc"] is None


def test_ensemble_scores_the_labelled_soundscapes_as_the_submission_would():
    m0, m1 = _predictions()
    combined = ensemble.soundscape_predictions([m0, m1], [3.0, 1.0], "mean", ["x", "y"])
    assert combined["x"].tolist() == pytest.approx([0.7, 0.65, 0.25])
    ranked = ensemble.soundscape_predictions([m0, m1], [1.0, 1.0], "rank", ["x", "y"],
                                             {"smoothing": 0.5})
    assert list(ranked.columns[:3]) == ["row_id", "soundscape", "end_s"] and len(ranked) == 3


def test_pseudo_stage_writes_labels_with_provenance(tmp_path):
    m0, m1 = _predictions()
    paths = []
    for k, frame in enumerate((m0, m1)):
        paths.append(str(tmp_path / f"m{k}.parquet"))
        frame.to_parquet(paths[-1], index=False)
    (tmp_path / "taxonomy.csv").write_text("primary_label,common_name\nx,X bird\ny,Y bird\n")
    settings = {"method": "both", "power": 2.0, "keep_threshold": 0.55, "zero_threshold": 0.25,
                "round": 1, "oof_by_soundscape": False}
    stats = pseudo.pseudo_stage(paths, str(tmp_path / "taxonomy.csv"), str(tmp_path / "labels.parquet"),
                                str(tmp_path / "manifest.json"), settings, "tag1", {"train": ["t0"]})
    labels = pd.read_parquet(tmp_path / "labels.parquet")
    # Window means: a_5 (0.5, 0.5) and a_10 (0.5, 0.5) are dropped (top <= 0.55); b_5 (0.4, 0.6) is kept,
    # nothing is below 0.25, then squared and renormalised.
    assert labels["row_id"].tolist() == ["b_5"] and stats["windows_kept"] == 1
    np.testing.assert_allclose(labels[["x", "y"]].to_numpy()[0], [0.16 / 0.52, 0.36 / 0.52], rtol=1e-5)
    provenance = pseudo.read_provenance(str(tmp_path / "labels.parquet"))
    assert provenance["round"] == 1 and provenance["models"] == paths
    assert provenance["settings"]["method"] == "both"
    with pytest.raises(ValueError, match="no birdclef_provenance"):
        pseudo.read_provenance(paths[0])


def test_mixup_permutation_keeps_sources_apart_when_asked():
    rng = np.random.default_rng(0)
    perm = mixup_permutation(rng, 10, 6, mix_pseudo=False)
    assert sorted(perm[:6]) == list(range(6)) and sorted(perm[6:]) == list(range(6, 10))
    mixed = mixup_permutation(np.random.default_rng(0), 10, 6, mix_pseudo=True)
    assert sorted(mixed) == list(range(10))
    # Same draw as before the option existed: the default path is a plain permutation.
    np.testing.assert_array_equal(mixed, np.random.default_rng(0).permutation(10))


def _oof_setup():
    files = [f"r{k}" for k in range(8)]
    labels = ["x", "y"] * 4
    index = pd.DataFrame({"filename": files, "primary_label": labels, "secondary_labels": [[]] * 8})
    truth = np.array([[1.0, 0.0] if lab == "x" else [0.0, 1.0] for lab in labels])
    rng = np.random.default_rng(0)
    good = truth * 0.6 + rng.uniform(0, 0.4, truth.shape)
    bad = rng.uniform(0, 1, truth.shape)
    members, tables = [], {}
    for name, values in (("good", good), ("bad", bad)):
        for fold in (0, 1):
            rows = (np.arange(8) // 2) % 2 == fold
            table = pd.DataFrame({"filename": np.array(files)[rows], "fold": fold})
            table[["x", "y"]] = values[rows]
            member = {"name": f"{name}/fold{fold}", "backbone": name, "fold": fold, "checkpoint": "c.pt"}
            members.append(member)
            tables[member["name"]] = table
    return members, tables, index


def test_ensemble_rank_combination_and_fitted_weights():
    members, tables, index = _oof_setup()
    mean = ensemble.build_ensemble(members, tables, index, ["x", "y"], {"method": "mean"})
    assert mean["combine"] == "mean" and len(mean["members"]) == 4
    assert sum(m["weight"] for m in mean["members"]) == pytest.approx(1.0)
    assert [m["oof_auc"] for m in mean["members"]][:2] == [1.0, 1.0]
    rank = ensemble.build_ensemble(members, tables, index, ["x", "y"], {"method": "rank"})
    # Rank averaging over the 8 OOF recordings, by hand.
    per_backbone = ensemble.backbone_oof(members, tables, ["x", "y"])
    good = per_backbone["good"][["x", "y"]].rank(pct=True).to_numpy()
    bad = per_backbone["bad"][["x", "y"]].rank(pct=True).to_numpy()
    from birdclef.common.metrics import macro_roc_auc

    targets = targets_of(index, per_backbone["good"].index, ["x", "y"])
    assert rank["oof_auc"] == pytest.approx(macro_roc_auc(targets, (good + bad) / 2))
    fitted = ensemble.build_ensemble(members, tables, index, ["x", "y"], {"method": "mean", "fit_weights": True})
    assert fitted["oof_auc"] == 1.0 and fitted["oof_auc"] >= mean["oof_auc"]
    assert fitted["backbone_weights"]["bad"] < fitted["backbone_weights"]["good"]
    with pytest.raises(ValueError, match="ensemble.weights names backbones"):
        ensemble.build_ensemble(members, tables, index, ["x", "y"], {"weights": {"nope": 1.0}})


def test_average_state_dicts():
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(9)}
    out = average_state_dicts([a, b])
    assert out["w"].tolist() == [2.0, 4.0] and int(out["n"]) == 5
    with pytest.raises(ValueError, match="one architecture"):
        average_state_dicts([a, {"v": torch.tensor(1.0)}])


def test_greedy_soup_never_scores_below_its_best_ingredient(tmp_path):
    cache = make_cache()
    # Two runs of fold 0 from the same initial weights (seed + fold), trained differently.
    run(tmp_path / "r0", cache, fold=0, epochs=2, samples_per_epoch=96)
    run(tmp_path / "r1", cache, fold=0, epochs=3, samples_per_epoch=96, lr=2e-3)
    ingredients = [str(tmp_path / "r0" / "best.pt"), str(tmp_path / "r1" / "best.pt")]
    mels, index, folds = cache
    settings = TrainSettings(crop_seconds_max=2.0, batch_size=16)
    validation = fold_validation(mels, index, folds, 0, CLASSES, settings, WINDOW, FPS)
    result = greedy_soup(ingredients, validation, settings, str(tmp_path / "soup.pt"))
    assert set(result["scores"]) == set(ingredients)
    assert result["oof_auc"] >= max(result["scores"].values()) - 1e-12
    assert result["oof"].shape == (len(validation.table), len(CLASSES))
    assert result["ingredients"][0] == max(result["scores"], key=result["scores"].get)
    (trial,) = result["tried"]  # two ingredients: one candidate soup
    assert trial["added"] != result["ingredients"][0]
    assert trial["kept"] == (len(result["ingredients"]) == 2) == (trial["oof_auc"] >= result["scores"][result["ingredients"][0]])
    if len(result["ingredients"]) > 1:
        model, payload = load_model(result["checkpoint"])
        assert payload["soup"] == result["ingredients"]
    else:
        assert result["checkpoint"] == result["ingredients"][0]
    # One ingredient: the soup is that checkpoint.
    single = greedy_soup(ingredients[:1], validation, settings, str(tmp_path / "one.pt"))
    assert single["checkpoint"] == ingredients[0] and not (tmp_path / "one.pt").exists()


def test_power_scaling_normalisations():
    probs = np.array([[0.8, 0.4, 0.1], [0.05, 0.04, 0.01], [0.0, 0.0, 0.0]])
    total = pseudo.power_scale(probs, 2.0, "sum")
    np.testing.assert_allclose(total[:2].sum(axis=1), 1.0, rtol=1e-6)
    # "max": the top probability stays, the others shrink by (p / max) ** (e - 1); quiet windows stay quiet.
    peak = pseudo.power_scale(probs, 2.0, "max")
    np.testing.assert_allclose(peak[0], [0.8, 0.4 * 0.5, 0.1 * 0.125], rtol=1e-6)
    np.testing.assert_allclose(peak[1].max(), 0.05, rtol=1e-6)
    assert total[1].max() > 0.5  # while "sum" inflates a quiet window into a confident label
    np.testing.assert_allclose(pseudo.power_scale(probs, 2.0, "none"), probs**2, rtol=1e-6)
    np.testing.assert_allclose(pseudo.power_scale(probs, 1.0, "max"), probs, rtol=1e-6)
    assert not pseudo.power_scale(probs, 3.0, "max")[2].any()
    with pytest.raises(ValueError, match="normalize"):
        pseudo.power_scale(probs, 2.0, "softmax")
    labels, _ = pseudo.make_pseudo_labels(
        [pd.DataFrame({"row_id": ["s_5"], "soundscape": ["s"], "end_s": [5], "x": [0.8], "y": [0.4]})],
        ["x", "y"], {"method": "power", "power": 2.0, "normalize": "max"})
    np.testing.assert_allclose(labels[["x", "y"]].to_numpy()[0], [0.8, 0.2], rtol=1e-6)


def test_mel_groups_are_checked():
    mel = {"sample_rate": 32000, "n_fft": 1024, "hop_length": 512, "n_mels": 64, "fmin": 50,
           "fmax": 14000, "top_db": 80, "window_seconds": 5}
    other = {**mel, "tag": "m2", "n_mels": 48, "hop_length": 400}
    members = [{"name": "a", "mel_group": 0}, {"name": "b", "mel_group": 1}]
    ensemble.check_mel_groups([mel, other], members)
    with pytest.raises(ValueError, match=r"mel_groups \[1\] are used by no member"):
        ensemble.check_mel_groups([mel, other], members[:1])
    with pytest.raises(ValueError, match="member 'b' has mel_group 1.*1 mel groups"):
        ensemble.check_mel_groups([mel], members)
    with pytest.raises(ValueError, match="window_seconds"):
        ensemble.check_mel_groups([mel, {**other, "window_seconds": 4}], members)
    with pytest.raises(ValueError, match="mel_groups\\[1\\] \\(tag 'm2'\\) lacks \\['n_fft'\\]"):
        ensemble.check_mel_groups([mel, {k: v for k, v in other.items() if k != "n_fft"}], members)
