"""More than one data root (data.extra_roots) and the pretrain stage (train.pretrain)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import tone
from test_plan import plan_of, tags

from birdclef import catalog, folds
from birdclef.common.labels import PRETRAIN_ONLY_FOLD
from birdclef.data_roots import label_mapping
from birdclef.train.data import split_fold
from birdclef.train.loop import build_optimization
from birdclef.train.model import build_model, init_backbone_from, save_checkpoint
from birdclef.train.pretrain import pretrain_classes
from birdclef.train.settings import TrainSettings

# An earlier year's taxonomy: another label for "A a", the same label for "B b",
# a species outside the main taxonomy ("D d"), and one whose name differs only in
# case and spacing from the main taxonomy's "C c".
EXTRA_TAXONOMY = [
    ("x2aaa", "A a"),
    ("bbb1", "B b"),
    ("ddd1", "D d"),
    ("cc-old", "  c   C "),
]
EXTRA_ROWS = [
    # filename, primary_label, secondary_labels
    ("x2aaa/XC900.ogg", "x2aaa", "['ddd1']"),
    ("bbb1/XC901.ogg", "bbb1", "['x2aaa', 'bbb1']"),
    ("ddd1/XC902.ogg", "ddd1", "['x2aaa', 'zzz0']"),
    ("cc-old/XC903.ogg", "cc-old", "[]"),
    ("x2aaa/XC00.ogg", "x2aaa", "[]"),  # the main root's aaa1/XC00.ogg again: kept once
]


def make_root(root, taxonomy=EXTRA_TAXONOMY, rows=EXTRA_ROWS):
    """A BirdCLEF-layout folder with `taxonomy` (label, scientific name) and `rows`."""
    root.mkdir(parents=True)
    pd.DataFrame(
        {"primary_label": [t[0] for t in taxonomy], "scientific_name": [t[1] for t in taxonomy]}
    ).to_csv(root / "taxonomy.csv", index=False)
    for k, (name, _, _) in enumerate(rows):
        path = root / "train_audio" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone(1.5, 700 + 100 * k, seed=k), 32000, format="OGG", subtype="VORBIS")
    pd.DataFrame(
        {
            "primary_label": [r[1] for r in rows],
            "secondary_labels": [r[2] for r in rows],
            "filename": [r[0] for r in rows],
        }
    ).to_csv(root / "train.csv", index=False)
    return root


def build(main, extra_roots, **kwargs):
    return catalog.build_catalog(
        main / "train.csv", main / "taxonomy.csv", main / "train_audio", extra_roots=extra_roots, **kwargs
    )


def test_extra_root_labels_map_onto_the_taxonomy_by_scientific_name(mini_dataset, tmp_path):
    extra = make_root(tmp_path / "bc2024")
    table, stats = build(mini_dataset, [{"root": str(extra), "use": "train"}], keep_pretrain_only=True)
    main = table[table["source"] == "train"]
    assert len(main) == 12 and not main["pretrain_only"].any()
    assert (main["source_label"] == main["primary_label"]).all()
    rows = table[table["source"] == "extra0:bc2024"]
    got = [
        (r.filename, r.primary_label, r.source_label, list(r.secondary_labels), bool(r.pretrain_only))
        for r in rows.itertuples()
    ]
    assert got == [
        ("x2aaa/XC900.ogg", "aaa1", "x2aaa", ["ddd1"], False),
        ("bbb1/XC901.ogg", "bbb1", "bbb1", ["aaa1"], False),
        ("ddd1/XC902.ogg", "ddd1", "ddd1", ["aaa1"], True),
        ("cc-old/XC903.ogg", "ccc1", "cc-old", [], False),
    ]
    assert rows["path"].tolist() == [str(extra / "train_audio" / name) for name in rows["filename"]]
    (root_stats,) = stats["extra_roots"]
    assert root_stats == {
        "root": str(extra), "use": "train", "rows": 5, "duplicates_skipped": 1, "kept": 4,
        "mapped_to_taxonomy": 3, "relabelled": 2, "outside_taxonomy": 1,
        "unknown_secondary_labels": 2,  # zzz0, and bbb1 naming itself (counted as in train.csv)
    }
    assert stats["pretrain_classes"] == [
        {"primary_label": "ddd1", "scientific_name": "d d", "taxonomy": str(extra / "taxonomy.csv")}
    ]
    assert stats["pretrain_only_rows"] == 1 and stats["recordings"] == 16


def test_pretrain_only_rows_are_dropped_without_pretraining(mini_dataset, tmp_path):
    extra = make_root(tmp_path / "bc2024")
    table, stats = build(mini_dataset, [{"root": str(extra)}])
    assert "ddd1/XC902.ogg" not in set(table["filename"]) and not table["pretrain_only"].any()
    assert stats["pretrain_only_dropped"] == 1 and len(table) == 15


def test_a_pretrain_root_is_pretrain_only_throughout(mini_dataset, tmp_path):
    extra = make_root(tmp_path / "bc2024")
    table, _ = build(mini_dataset, [{"root": str(extra), "use": "pretrain"}], keep_pretrain_only=True)
    rows = table[table["source"] == "extra0:bc2024"]
    assert len(rows) == 4 and rows["pretrain_only"].all()
    assert rows["primary_label"].tolist() == ["aaa1", "bbb1", "ddd1", "ccc1"]


def test_a_label_with_two_scientific_names_names_both_files_and_the_label(mini_dataset, tmp_path):
    extra = make_root(tmp_path / "bc2024", taxonomy=[("x2aaa", "A a"), ("bbb1", "Z z"), ("ddd1", "D d"),
                                                     ("cc-old", "C c")])
    with pytest.raises(catalog.DataError) as error:
        build(mini_dataset, [{"root": str(extra)}])
    message = str(error.value)
    assert "'bbb1'" in message and str(mini_dataset / "taxonomy.csv") in message
    assert str(extra / "taxonomy.csv") in message and "'b b'" in message and "'z z'" in message


def test_two_extra_roots_that_disagree_on_a_label_stop(mini_dataset, tmp_path):
    first = make_root(tmp_path / "bc2023")
    second = make_root(tmp_path / "bc2024", taxonomy=[("x2aaa", "A a"), ("bbb1", "B b"), ("ddd1", "E e"),
                                                      ("cc-old", "C c")])
    with pytest.raises(catalog.DataError, match=r"'ddd1'.*bc2023/taxonomy.csv.*bc2024/taxonomy.csv"):
        label_mapping(mini_dataset / "taxonomy.csv", [first / "taxonomy.csv", second / "taxonomy.csv"])


def test_one_species_under_two_main_labels_cannot_be_mapped(mini_dataset, tmp_path):
    taxonomy = pd.read_csv(mini_dataset / "taxonomy.csv")
    taxonomy.loc[2, "scientific_name"] = "A a"  # ccc1 and aaa1: one species, two classes
    taxonomy.to_csv(mini_dataset / "taxonomy.csv", index=False)
    extra = make_root(tmp_path / "bc2024", taxonomy=[("x2aaa", "A a")], rows=[("x2aaa/XC9.ogg", "x2aaa", "[]")])
    with pytest.raises(catalog.DataError, match=r"'x2aaa'.*\['aaa1', 'ccc1'\]"):
        build(mini_dataset, [{"root": str(extra)}])


def test_later_roots_reuse_the_first_label_of_a_new_species(mini_dataset, tmp_path):
    first = make_root(tmp_path / "bc2023")
    second = make_root(tmp_path / "bc2024", taxonomy=[("dee-new", "D d")], rows=[("dee-new/XC77.ogg", "dee-new", "[]")])
    mapping = label_mapping(mini_dataset / "taxonomy.csv", [first / "taxonomy.csv", second / "taxonomy.csv"])
    assert mapping.maps[2] == {"dee-new": "ddd1"}
    assert [c["primary_label"] for c in mapping.extra_classes] == ["ddd1"]


def test_pretrain_only_recordings_get_no_fold_and_train_no_fold():
    index = pd.DataFrame({
        "filename": [f"r{i}" for i in range(12)],
        "primary_label": ["a"] * 5 + ["b"] * 5 + ["x", "a"],
        "pretrain_only": [False] * 10 + [True, True],
    })
    table = folds.make_folds(index, n_folds=2, seed=0)
    assert table["fold"].tolist()[10:] == [PRETRAIN_ONLY_FOLD, PRETRAIN_ONLY_FOLD]
    assert set(table["fold"].tolist()[:10]) == {0, 1}
    mel_index = index.assign(frames=10)
    for fold in (0, 1, -1):
        train, val = split_fold(mel_index, table, fold)
        assert not ({"r10", "r11"} & (set(train["filename"]) | set(val["filename"])))
    assert pretrain_classes(index.assign(secondary_labels=[[]] * 11 + [["y"]]), ["b", "a"]) == ["b", "a", "x", "y"]


def test_plan_extra_roots_change_the_catalog_tag_only_when_set():
    before = tags(plan_of())
    extra = plan_of({"data": {"extra_roots": [{"root": "/data/bc2024"}]}})
    assert extra.extra_roots == [{"root": "/data/bc2024", "use": "train"}]
    assert extra.catalog_tag != before["catalog"] and extra.pretrain_runs == {}
    assert plan_of({"data": {"extra_roots": []}}).catalog_tag == before["catalog"]
    with pytest.raises(ValueError, match=r"data.extra_roots\[0\].use is 'pretrain' but train.pretrain.enabled"):
        plan_of({"data": {"extra_roots": [{"root": "/data/bc2024", "use": "pretrain"}]}})


def test_plan_pretrain_names_its_tag_in_every_round_only_when_enabled():
    one_round = {"pseudo": {"rounds": [{"method": "power"}]}}
    before = plan_of(one_round)
    assert before.pretrain_runs == {}
    assert all("pretrain" not in run["upstream"] for run in before.train_runs.values())
    assert tags(plan_of(one_round, {"train": {"pretrain": {"enabled": False, "epochs": 3}}})) == tags(before)
    plan = plan_of(one_round, {"train": {"pretrain": {"enabled": True, "epochs": 3}}})
    (pretrain_tag,) = plan.pretrain_runs
    run = plan.pretrain_runs[pretrain_tag]
    assert pretrain_tag.startswith("test_efficientnet-pt-") and run["settings"]["epochs"] == 3
    assert run["settings"]["labelled_ratio"] == 0.0 and run["upstream"] == {"mels": plan.mels_tag}
    assert all(plan.train_runs[tag]["upstream"]["pretrain"] == pretrain_tag for tag in sum(plan.round_train_tags, []))
    assert plan.catalog_tag == before.catalog_tag and plan.folds_tag == before.folds_tag
    assert plan.round_train_tags[0] != before.round_train_tags[0]


SPEC = {"backbone": "test_efficientnet", "n_classes": 5, "drop_rate": 0.0}


def test_the_pretrain_checkpoint_starts_the_backbone_and_the_head_starts_fresh(tmp_path):
    torch.manual_seed(1)
    pretrained = build_model(SPEC)
    with torch.no_grad():
        for parameter in pretrained.parameters():
            parameter.add_(0.5)  # unlike any fresh initialisation
    save_checkpoint(tmp_path / "best.pt", pretrained, SPEC)
    spec = {**SPEC, "n_classes": 3}
    settings = TrainSettings(epochs=1)
    torch.manual_seed(7)
    fresh = build_optimization(spec, settings, torch.device("cpu"), None, 4).model
    torch.manual_seed(7)
    started = build_optimization(spec, settings, torch.device("cpu"), None, 4, init_from=str(tmp_path / "best.pt")).model
    for name, value in started.backbone.state_dict().items():
        assert torch.equal(value, pretrained.backbone.state_dict()[name]), name
    for name, value in started.head.state_dict().items():
        assert torch.equal(value, fresh.head.state_dict()[name]), name
    assert started.head.cla.weight.shape[0] == 3
    assert not torch.equal(started.head.fc.weight, pretrained.head.fc.weight)
    x = torch.randn(2, 1, 32, 64)
    assert not torch.allclose(started.eval()(x)[0], fresh.eval()(x)[0])


def test_a_pretrain_checkpoint_of_another_backbone_is_refused(tmp_path):
    save_checkpoint(tmp_path / "best.pt", build_model({**SPEC, "in_chans": 3}), {**SPEC, "in_chans": 3})
    with pytest.raises(ValueError, match=r"best.pt holds backbone .*in_chans': 3"):
        init_backbone_from(build_model(SPEC), tmp_path / "best.pt")


def test_catalog_stage_records_extra_roots_in_the_manifest(mini_dataset, tmp_path):
    extra = make_root(tmp_path / "bc2024")
    out = tmp_path / "out"
    stats = catalog.catalog_stage(
        str(mini_dataset / "train.csv"), str(mini_dataset / "taxonomy.csv"), str(mini_dataset / "train_audio"),
        str(out / "catalog.parquet"), str(out / "manifest.json"),
        {"on_bad_audio": "skip", "extra_roots": [{"root": str(extra), "use": "train"}], "keep_pretrain_only": True},
        "tag", {},
    )
    table = pd.read_parquet(out / "catalog.parquet")
    assert stats["pretrain_only_rows"] == 1 and int(table["pretrain_only"].sum()) == 1
    assert np.isclose(table.loc[table["filename"] == "ddd1/XC902.ogg", "duration_s"].iloc[0], 1.5, atol=0.01)


def test_scraped_species_outside_the_taxonomy_are_pretrain_only_and_take_a_roots_label(mini_dataset, tmp_path):
    """xeno-canto query mode with pretraining: a row labelled by scientific name is pretrain-only,
    and takes an extra root's label for that species when one has it."""
    scraped = tmp_path / "xc"
    rows = [("aaa1/XC500.ogg", "aaa1", "[]"), ("D d/XC501.ogg", "D d", "['aaa1']"), ("E e/XC502.ogg", "E e", "[]")]
    for k, (name, _, _) in enumerate(rows):
        path = scraped / "audio" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone(1.2, 900 + 50 * k), 32000, format="OGG", subtype="VORBIS")
    pd.DataFrame({"primary_label": [r[1] for r in rows], "secondary_labels": [r[2] for r in rows],
                  "filename": [r[0] for r in rows]}).to_csv(scraped / "train_xc.csv", index=False)
    kwargs = {"extra_csv": scraped / "train_xc.csv", "extra_audio_dir": scraped / "audio"}
    with pytest.raises(catalog.DataError, match=r"primary_label 'D d' is not in taxonomy.csv"):
        build(mini_dataset, [], **kwargs)  # species mode: every scraped label is a class
    table, stats = build(mini_dataset, [], keep_pretrain_only=True, extra_outside_taxonomy=True, **kwargs)
    xc = table[table["source"] == "xeno_canto"].set_index("filename")
    assert xc["pretrain_only"].to_dict() == {"aaa1/XC500.ogg": False, "D d/XC501.ogg": True, "E e/XC502.ogg": True}
    assert stats["pretrain_only_xeno_canto_rows"] == 2
    extra = make_root(tmp_path / "bc2024")
    table, _ = build(mini_dataset, [{"root": str(extra)}], keep_pretrain_only=True, extra_outside_taxonomy=True,
                     **kwargs)
    xc = table[table["source"] == "xeno_canto"].set_index("filename")
    assert xc["primary_label"].to_dict() == {"aaa1/XC500.ogg": "aaa1", "D d/XC501.ogg": "ddd1", "E e/XC502.ogg": "E e"}
    dropped, _ = build(mini_dataset, [], extra_outside_taxonomy=True, **kwargs)
    assert set(dropped.loc[dropped["source"] == "xeno_canto", "filename"]) == {"aaa1/XC500.ogg"}


def test_plan_query_mode_keeps_outside_species_only_when_pretraining():
    species_mode = plan_of({"xeno_canto": {"enabled": True}})
    assert "query" not in species_mode.xc_settings and "extra_roots" not in species_mode.catalog_settings
    query = {"xeno_canto": {"enabled": True, "query": {"country": "Brazil", "group": "birds"}}}
    plain = plan_of(query)
    assert plain.xc_settings["keep_outside_taxonomy"] is False and plain.xc_tag != species_mode.xc_tag
    assert "xc_outside_taxonomy" not in plain.catalog_settings
    pretraining = plan_of(query, {"train": {"pretrain": {"enabled": True}}})
    assert pretraining.xc_settings["keep_outside_taxonomy"] is True and pretraining.xc_tag != plain.xc_tag
    assert pretraining.catalog_settings["xc_outside_taxonomy"] is True
