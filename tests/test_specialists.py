"""Taxon specialists: a backbone entry trained on a subset of classes that replaces those columns."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from test_plan import EVERYTHING_EXISTS, load_config
from test_train import CLASSES, make_cache, run

from birdclef.catalog import specialist_classes
from birdclef.common.errors import DataError
from birdclef.common.labels import build_targets
from birdclef.common.metrics import macro_roc_auc
from birdclef.common.plan import make_plan
from birdclef.ensemble.definition import build_ensemble, soundscape_predictions
from birdclef.runtime.postprocess import combine_members, member_class_weights
from birdclef.train.fold import distilled_classes, specialist_columns

TAXONOMY = pd.DataFrame({
    "primary_label": ["a", "b", "c", "d"],
    "inat_taxon_id": [1, 2, 3, 4],
    "scientific_name": ["A a", "B b", "C c", "D d"],
    "common_name": ["A", "B", "C", "D"],
    "class_name": ["Aves", "Amphibia", "Insecta", "Aves"],
})


@pytest.fixture
def taxonomy_csv(tmp_path):
    path = tmp_path / "taxonomy.csv"
    TAXONOMY.to_csv(path, index=False)
    return path


def test_member_class_weights_let_specialists_replace_their_columns():
    matrix = member_class_weights([1.0, 3.0, 2.0], [None, None, ["b", "c"]], ["a", "b", "c", "d"])
    np.testing.assert_allclose(matrix, [[0.25, 0, 0, 0.25], [0.75, 0, 0, 0.75], [0, 1, 1, 0]])
    # Two specialists on one class share it by weight; a zero-weight specialist claims nothing.
    matrix = member_class_weights([1.0, 1.0, 3.0, 0.0], [None, ["b"], ["b", "c"], ["a"]], ["a", "b", "c"])
    np.testing.assert_allclose(matrix[:, 1], [0, 0.25, 0.75, 0])
    np.testing.assert_allclose(matrix[:, 0], [1, 0, 0, 0])
    np.testing.assert_allclose(matrix[:, 2], [0, 0, 1, 0])
    # Generalists only: every column is the normalised weight vector.
    np.testing.assert_allclose(member_class_weights([1.0, 1.0], [None, None], ["a", "b"]), 0.5)


def test_member_class_weights_errors():
    with pytest.raises(ValueError, match=r"classes \['x'\] that are not among"):
        member_class_weights([1.0, 1.0], [None, ["x"]], ["a", "b"])
    with pytest.raises(ValueError, match=r"classes \['b'\] are predicted by no member"):
        member_class_weights([1.0], [["a"]], ["a", "b"])
    with pytest.raises(ValueError, match="one weight per member"):
        member_class_weights([1.0], [None, None], ["a"])


def test_combine_members_with_per_class_weights():
    generalist = np.array([[0.1, 0.9], [0.4, 0.2], [0.8, 0.5]])
    specialist = np.array([[0.7, 0.3], [0.2, 0.6], [0.6, 0.1]])
    matrix = member_class_weights([1.0, 1.0], [None, ["b"]], ["a", "b"])
    mean = combine_members([generalist, specialist], matrix, "mean")
    np.testing.assert_allclose(mean, np.column_stack([generalist[:, 0], specialist[:, 1]]), atol=1e-7)
    rank = combine_members([generalist, specialist], matrix, "rank")
    np.testing.assert_allclose(rank[:, 1], [2 / 3, 1.0, 1 / 3], atol=1e-6)  # the specialist's ranks
    with pytest.raises(ValueError, match="per-class weights for 3 classes"):
        combine_members([generalist, specialist], np.ones((2, 3)), "mean")


def test_specialist_classes_from_the_taxonomy(taxonomy_csv):
    where = "train.backbones 'x' specialist"
    assert specialist_classes(taxonomy_csv, None, where) is None
    assert specialist_classes(taxonomy_csv, {"classes": {"class_name": ["Amphibia", "Insecta"]}}, where) == ["b", "c"]
    both = {"classes": {"class_name": ["Aves"], "primary_label": ["d", "c"]}}
    assert specialist_classes(taxonomy_csv, both, where) == ["d"]
    with pytest.raises(DataError, match=r"train.backbones 'x' specialist.classes .* matches no class of"):
        specialist_classes(taxonomy_csv, {"classes": {"class_name": ["Mammalia"]}}, where)
    with pytest.raises(DataError, match="filters on column 'order'"):
        specialist_classes(taxonomy_csv, {"classes": {"order": ["Anura"]}}, where)


def test_specialist_columns_and_distilled_classes():
    assert specialist_columns(None, 4) == (None, 1.0)
    columns, upsample = specialist_columns(([2, 1, 2], 4.0), 4)
    assert columns.tolist() == [1, 2] and upsample == 4.0
    with pytest.raises(ValueError, match="non-empty subset"):
        specialist_columns(([4], 2.0), 4)
    with pytest.raises(ValueError, match="upsample 0.5 must be >= 1"):
        specialist_columns(([1], 0.5), 4)
    known = np.array([True, True, False, True])
    assert distilled_classes(known, None) is known
    assert distilled_classes(known, np.array([1, 2])).tolist() == [False, True, False, False]


def test_a_specialist_learns_and_is_scored_on_its_classes_only(tmp_path):
    cache = make_cache()
    columns = [1, 2]
    metrics = run(tmp_path, cache, epochs=2, samples_per_epoch=96, specialist=(columns, 4.0))
    oof = pd.read_parquet(tmp_path / "oof.parquet")
    assert list(oof.columns[2:]) == CLASSES  # the model keeps one output per class
    mels, index, folds = cache
    held = index.merge(folds, on="filename")
    held = held[held["fold"] == 0].set_index("filename").loc[oof["filename"]]
    _, truth = build_targets(held.reset_index(), CLASSES, 0.5)  # primary and secondary labels
    subset = [CLASSES[c] for c in columns]
    expected = macro_roc_auc(truth[:, columns], oof[subset].to_numpy())
    assert metrics["oof_auc"] == pytest.approx(expected, abs=1e-6)
    # Without the specialist the same run scores every class, so the numbers differ.
    generalist = run(tmp_path / "g", cache, epochs=2, samples_per_epoch=96)
    assert generalist["oof_auc"] != pytest.approx(metrics["oof_auc"], abs=1e-9)


def _plan(config):
    return make_plan(config, **EVERYTHING_EXISTS)


def _config(**backbone):
    """config.yaml (schema defaults filled) with a generalist and a second entry labelled frogs."""
    config = load_config({"train": {"backbones": [
        {"name": "test_efficientnet"}, {"name": "test_efficientnet", "label": "frogs", **backbone}]}})
    return copy.deepcopy(config)


def test_the_plan_tags_specialists_and_leaves_them_out_of_pseudo_rounds():
    filter_ = {"classes": {"class_name": ["Amphibia"]}, "upsample": 4.0}
    plan = _plan(_config(specialist=filter_))
    members = {m["backbone"]: m for m in plan.ensemble_members}
    assert members["frogs"]["specialist"] == filter_ and "specialist" not in members["test_efficientnet"]
    plain = _plan(_config(drop_rate=0.3))
    assert set(plain.round_train_tags[0]) != set(plan.round_train_tags[0])
    assert plan.round_train_tags[0][0] == plain.round_train_tags[0][0]  # the generalist keeps its tag

    config = _config(specialist=filter_)
    config["pseudo"]["rounds"] = [{"method": "power", "power": 2.0}]
    plan = _plan(config)
    (pseudo,) = plan.pseudo_runs.values()
    assert pseudo["train_tags"] == [plan.round_train_tags[0][0]]
    config["train"]["backbones"] = config["train"]["backbones"][1:]
    with pytest.raises(ValueError, match="every entry of train.backbones is a taxon specialist"):
        _plan(config)


def test_the_ensemble_takes_a_specialists_columns_from_it():
    classes = ["a", "b"]
    index = pd.DataFrame({"filename": ["r1", "r2", "r3", "r4"], "primary_label": ["a", "b", "a", "b"],
                          "secondary_labels": [[], [], [], []]})
    generalist = pd.DataFrame({"filename": index["filename"], "fold": 0, "a": [0.9, 0.1, 0.8, 0.3],
                               "b": [0.6, 0.2, 0.7, 0.1]})  # ranks b badly
    specialist = generalist.assign(a=[0.5, 0.5, 0.5, 0.5], b=[0.1, 0.9, 0.2, 0.8])  # ranks b well
    members = [{"name": "g", "backbone": "g", "fold": 0},
               {"name": "s", "backbone": "s", "fold": 0, "specialist_classes": ["b"]}]
    definition = build_ensemble(members, {"g": generalist, "s": specialist}, index, classes, {"method": "mean"})
    assert definition["oof_auc"] == pytest.approx(1.0)  # a from g, b from s
    assert definition["members"][1]["oof_auc"] == pytest.approx(1.0)  # scored on b only
    tables = [t.drop(columns="fold").rename(columns={"filename": "row_id"}).assign(
        soundscape="S", end_s=[5, 10, 15, 20]) for t in (generalist, specialist)]
    predictions = soundscape_predictions(tables, [0.5, 0.5], "mean", classes,
                                         member_classes=[None, ["b"]])
    np.testing.assert_allclose(predictions["a"], generalist["a"])
    np.testing.assert_allclose(predictions["b"], specialist["b"])


def test_fit_weights_never_leaves_a_class_to_no_member_and_raises_other_errors():
    """The weight search skips a weighting that leaves a class without a generalist or specialist
    (zeroing the generalist here), and an error of another kind is raised, not scored away."""
    from birdclef.ensemble.definition import fit_weights

    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    files = [f"r{k}" for k in range(40)]
    truth = pd.DataFrame(rng.random((40, 3)) < 0.3, index=files, columns=classes).astype(float)
    generalist = (truth * 0.6 + rng.random((40, 3)) * 0.4).rename_axis("filename")
    specialist = (truth * 0.9 + rng.random((40, 3)) * 0.1).rename_axis("filename")  # better on c
    tables = {"gen": generalist, "spec": specialist}

    def targets_of(names):
        return truth.loc[names, classes].to_numpy()

    weights = fit_weights(tables, targets_of, "mean", classes, {"gen": 1.0, "spec": 1.0},
                          specialists={"gen": None, "spec": ["c"]})
    assert weights["gen"] > 0 and weights["spec"] > 0, weights  # zeroing either is worse or uncovered
    # a specialist class outside the classes is a ValueError that the search used to score as -1
    with pytest.raises(ValueError, match="not among"):
        fit_weights(tables, targets_of, "mean", classes, {"gen": 1.0, "spec": 1.0},
                    specialists={"gen": None, "spec": ["zzz"]})
