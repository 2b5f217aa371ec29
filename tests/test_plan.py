"""birdclef.common.plan: the config -> settings, tags and runs of every stage, without Snakemake.

The pinned tags below were computed by rules/common.smk before the plan moved
into birdclef.common.plan (the same tags for the same config: old artifacts are
found again); the default config's also match the folders `snakemake -n` plans.
"""

from __future__ import annotations

import ast
import copy
import subprocess
import sys

import pytest
import yaml
from conftest import REPO
from snakemake.utils import update_config, validate

from birdclef.common.plan import Plan, make_plan

# Stand-ins for the file system: the real-data configs name /data/... folders.
EVERYTHING_EXISTS = {"file_exists": lambda path: True, "dir_exists": lambda path: True}


def load_config(*overrides: str | dict) -> dict:
    """config.yaml with each override (a config file or a dict) merged as Snakemake
    merges --configfile, then validated (which fills the schema's defaults)."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for override in overrides:
        if isinstance(override, str):
            override = yaml.safe_load((REPO / override).read_text())
        update_config(config, copy.deepcopy(override))
    validate(config, str(REPO / "schemas/config.schema.yaml"))
    return config


def plan_of(*overrides: str | dict) -> Plan:
    return make_plan(load_config(*overrides), **EVERYTHING_EXISTS)


def tags(plan: Plan) -> dict:
    """Every stage's tag(s), in the shape of PINNED."""
    return {
        "xc_scrape": plan.xc_tag,
        "catalog": plan.catalog_tag,
        "vad": plan.vad_tag,
        "mels": plan.mels_tag,
        "mel_groups": plan.mel_groups,
        "soundscape_mels": plan.soundscape_mels_tag,
        "soundscape_labels": plan.soundscape_labels_tag,
        "folds": plan.folds_tag,
        "train": plan.round_train_tags,
        "pseudo": list(plan.pseudo_runs),
        "ensemble": plan.ensemble_tag,
        "export": plan.export_tag,
        "submission": plan.submission_tag,
    }


PINNED = {
    # config.yaml: the demo (resources/demo), one backbone, no pseudo round.
    (): {
        "xc_scrape": None,
        "catalog": "5de92b1949",
        "vad": "88657922d0",
        "mels": "4cbce84d81",
        "mel_groups": ["4cbce84d81"],
        "soundscape_mels": "2aaeee0ce3",
        "soundscape_labels": "8f7cb805ee",
        "folds": "86446123f3",
        "train": [["test_efficientnet-r0-bc0c2a01a3"]],
        "pseudo": [],
        "ensemble": "f7e569472d",
        "export": "2f17d1d23f",
        "submission": "9b392247ae",
    },
    # + config/birdclef2025.yaml (data.root /data/birdclef-2025): two backbones, two mel
    # configurations, an amphibian/insect specialist, no pseudo round, no labelled soundscapes.
    ('config/birdclef2025.yaml',): {
        "xc_scrape": None,
        "catalog": "9e20214454",
        "vad": "57632a1755",
        "mels": "1922572150",
        "mel_groups": ["1922572150", "0c8d0ecc2d"],
        "soundscape_mels": "81a38e18d9",
        "soundscape_labels": None,
        "folds": "65a8ec6523",
        "train": [["tf_efficientnet_b0-r0-48aa06f22c", "eca_nfnet_l0-r0-267b5556b5",
                   "tf_efficientnet_b0-r0-6ef1ed5b1b"]],
        "pseudo": [],
        "ensemble": "c70114c5f7",
        "export": "f71e4f2fb8",
        "submission": "46755cd6dc",
    },
    # + config/birdclef2026.yaml (data.root /data/birdclef-2026): two backbones, two mel
    # configurations, an amphibian/insect specialist, no pseudo round, labelled soundscapes.
    ('config/birdclef2026.yaml',): {
        "xc_scrape": None,
        "catalog": "8033873f76",
        "vad": "2d708ec5f4",
        "mels": "8a973dde60",
        "mel_groups": ["8a973dde60", "ef78b5a34b"],
        "soundscape_mels": "e65d3c00e5",
        "soundscape_labels": "8fe14c138e",
        "folds": "5bad4aa583",
        "train": [["tf_efficientnet_b0-r0-171947fd1c", "eca_nfnet_l0-r0-82eb3e8cca",
                   "tf_efficientnet_b0-r0-cdd0fecf80"]],
        "pseudo": [],
        "ensemble": "43a000fe09",
        "export": "5321b3acc7",
        "submission": "25d50576c7",
    },
}


@pytest.mark.parametrize("overrides", list(PINNED), ids=["default", "birdclef2025", "birdclef2026"])
def test_same_tags_for_the_same_config(overrides):
    assert tags(plan_of(*overrides)) == PINNED[overrides]


# One pseudo round on top of a config (the default config has none).
ONE_ROUND = {"pseudo": {"rounds": [{"method": "power", "power": 2.0}]}}


def test_runs_of_the_default_config_with_a_pseudo_round():
    plan = plan_of(ONE_ROUND)
    assert plan_of().round_train_tags == [plan.round_train_tags[0]]  # round 0 is the same
    assert plan.root == "resources/demo" and plan.demo
    assert plan.ground_truth == "resources/demo/test_ground_truth.csv"
    assert plan.folds == [0, 1]
    r0, r1 = (tags[0] for tags in plan.round_train_tags)
    assert plan.final_train_tags == [r1] and plan.ensemble_train_tags == [r1]
    assert plan.train_runs[r0]["pseudo_tag"] is None
    assert plan.train_runs[r1]["pseudo_tag"] == next(iter(plan.pseudo_runs))
    assert plan.train_runs[r1]["upstream"]["folds"] == plan.folds_tag
    assert plan.pseudo_runs[plan.train_runs[r1]["pseudo_tag"]]["train_tags"] == [r0]
    assert plan.soundscape_labels_path == f"results/soundscape_labels/{plan.soundscape_labels_tag}/labels.parquet"
    assert [m["name"] for m in plan.ensemble_members] == [f"{r1}/fold0", f"{r1}/fold1"]
    assert plan.ensemble_members[0]["ingredients"] == [f"results/train/{r1}/fold0/best.pt"]
    assert plan.mel_group_settings == [{"tag": plan.mels_tag, **plan.mel_runs[plan.mels_tag]}]
    assert "device" not in plan.train_common and "folds" not in plan.train_common


def test_a_training_setting_changes_only_training_and_downstream_tags():
    before, after = tags(plan_of(ONE_ROUND)), tags(plan_of(ONE_ROUND, {"train": {"lr": 0.02}}))
    for stage in ("xc_scrape", "catalog", "vad", "mels", "mel_groups", "soundscape_mels", "soundscape_labels", "folds"):
        assert after[stage] == before[stage], stage
    for stage in ("pseudo", "ensemble", "export", "submission"):
        assert after[stage] != before[stage], stage
    for old, new in zip(sum(before["train"], []), sum(after["train"], []), strict=True):
        assert old != new and old.rsplit("-", 1)[0] == new.rsplit("-", 1)[0]  # same readable prefix


def test_execution_only_settings_change_no_tag():
    before = tags(plan_of())
    assert tags(plan_of({"train": {"device": "cpu"}})) == before
    scraping = plan_of({"xeno_canto": {"enabled": True}})
    assert scraping.xc_tag is not None and scraping.catalog_tag != before["catalog"]
    faster = plan_of({"xeno_canto": {"enabled": True, "requests_per_second": 5.0, "max_retries": 9}})
    assert tags(faster) == tags(scraping)


def test_two_backbones_with_mels_overrides_give_two_mel_groups():
    plan = plan_of(
        {
            "train": {
                "backbones": [
                    {"name": "test_efficientnet"},
                    {"name": "test_efficientnet", "label": "b96", "mels": {"n_mels": 96}},
                ]
            }
        }
    )
    assert len(plan.mel_groups) == 2 and len(plan.soundscape_mel_groups) == 2
    assert plan.mel_groups[0] == plan.mels_tag  # the first backbone keeps the base cache
    assert plan.soundscape_mel_groups[0] == plan.soundscape_mels_tag
    assert set(plan.mel_runs) == set(plan.mel_groups)
    assert set(plan.soundscape_mel_runs) == set(plan.soundscape_mel_groups)
    assert [group["n_mels"] for group in plan.mel_group_settings] == [64, 96]
    assert [(m["backbone"], m["mel_group"]) for m in plan.ensemble_members] == [
        ("test_efficientnet", 0),
        ("test_efficientnet", 0),
        ("b96", 1),
        ("b96", 1),
    ]
    assert plan.train_runs[plan.final_train_tags[1]]["mel"]["n_mels"] == 96
    # Folds come from the base configuration's cache whatever the backbones use.
    assert plan.folds_tag == PINNED[()]["folds"]


def test_no_soundscape_labels_file_gives_no_labels_tag():
    plan = make_plan(
        load_config({"soundscape_labels": {"file": None}, "data": {"root": "/data/bc", "demo": {"enabled": False}}}),
        file_exists=lambda path: not path.endswith("train_soundscapes_labels.csv"),
        dir_exists=lambda path: True,
    )
    assert plan.labels_file is None
    assert plan.soundscape_labels_tag is None and plan.soundscape_labels_path is None
    for run in plan.train_runs.values():
        assert run["upstream"]["soundscape_labels"] is None
        assert run["settings"]["labelled_ratio"] == 0.0


def test_soup_members_list_every_rounds_ingredient():
    config = load_config({"ensemble": {"soup": True}, "pseudo": {"rounds": [{"method": "power"}] * 2}})
    plan = make_plan(config)
    assert len(plan.round_train_tags) == 3
    assert plan.ensemble_train_tags == [tags[0] for tags in plan.round_train_tags]
    for member in plan.ensemble_members:
        fold = member["fold"]
        assert member["round"] == 2
        assert member["ingredients"] == [f"results/train/{tags[0]}/fold{fold}/best.pt" for tags in plan.round_train_tags]
    assert plan.ensemble_tag != make_plan(load_config({"pseudo": {"rounds": [{"method": "power"}] * 2}})).ensemble_tag


def test_the_demo_plan_looks_at_no_file():
    def refuse(path):
        raise AssertionError(f"looked at {path}")

    assert tags(make_plan(load_config(), file_exists=refuse, dir_exists=refuse)) == PINNED[()]


REAL = {"data": {"root": "/data/bc", "demo": {"enabled": False}}}


@pytest.mark.parametrize(
    ("overrides", "missing", "message"),
    [
        (
            {"train": {"folds": [0, 2]}},
            None,
            "train.folds lists fold 2 but folds.n_folds is 2: expected folds between 0 and 1",
        ),
        (
            {"train": {"backbones": [{"name": "x"}, {"name": "x"}]}},
            None,
            "train.backbones has 2 entries named 'x': give each a distinct `label` (the ensemble's name "
            "for it and the key of ensemble.weights), e.g. label: x-96mels",
        ),
        (
            {"train": {"backbones": [{"name": "x"}, {"name": "x", "label": "b"}]}},
            None,
            "train.backbones lists 'x' twice with the same settings: expected entries to differ in more "
            "than their label (e.g. mels, drop_path_rate or checkpoint)",
        ),
        (
            {"data": {"root": "/data/bc"}},
            None,
            "data.root is '/data/bc' but data.demo.enabled is true: the demo generator writes into "
            "data.root, so point data.root under resources/ (e.g. resources/demo) or set "
            "data.demo.enabled: false to use a real BirdCLEF folder",
        ),
        (
            REAL,
            "/data/bc",
            "data.root '/data/bc' does not exist: expected a BirdCLEF (2025 or 2026) folder with train.csv, "
            "taxonomy.csv, sample_submission.csv, train_audio/, train_soundscapes/ and test_soundscapes/ "
            "(or set data.demo.enabled: true for the demo data)",
        ),
        (
            REAL,
            "/data/bc/taxonomy.csv",
            "data.root '/data/bc' has no taxonomy.csv: expected the BirdCLEF layout "
            "(train.csv, taxonomy.csv, sample_submission.csv, train_audio/, ...)",
        ),
        (
            REAL,
            "/data/bc/train_soundscapes_labels.csv",
            "soundscape_labels.file is 'train_soundscapes_labels.csv' but "
            "/data/bc/train_soundscapes_labels.csv does not exist: expected the BirdCLEF+ 2026 "
            "train_soundscapes_labels.csv; set soundscape_labels.file: null for data without "
            "labelled soundscapes (BirdCLEF 2025)",
        ),
    ],
    ids=["fold_out_of_range", "duplicate_label", "same_settings", "demo_outside_resources",
         "missing_root", "missing_taxonomy", "missing_labels_file"],
)
def test_a_config_that_cannot_run_names_the_setting(overrides, missing, message):
    config = load_config(overrides)

    def exists(path):
        return path != missing

    with pytest.raises(ValueError) as error:
        make_plan(config, file_exists=exists, dir_exists=exists)
    assert str(error.value) == message


def test_plan_imports_only_the_standard_library_and_its_own_modules():
    """It runs at Snakemake parse time: no numpy, pandas or torch is loaded with it."""
    code = (
        "import sys\n"
        "import birdclef.common.plan\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] not in sys.stdlib_module_names\n"
        "             and m not in ('__main__', '_distutils_hack')))  # the latter: setuptools' .pth\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ast.literal_eval(result.stdout) == [
        "birdclef",
        "birdclef.common",
        "birdclef.common.layout",
        "birdclef.common.plan",
        "birdclef.common.plan_rounds",
        "birdclef.common.versioning",
    ]


def test_the_teacher_changes_only_what_learns_from_it():
    base = plan_of()
    teacher = plan_of({"teacher": {"enabled": True}})
    assert base.teacher_tag is None and teacher.teacher_tag and teacher.teacher_shards == 4
    assert tags(teacher) == tags(base)  # a teacher nobody learns from retrains nothing
    assert plan_of({"teacher": {"enabled": True, "shards": 8, "batch_windows": 4}}).teacher_tag == teacher.teacher_tag
    assert plan_of({"teacher": {"enabled": True, "genus_fallback": True}}).teacher_tag != teacher.teacher_tag
    distilled = plan_of({"teacher": {"enabled": True}, "train": {"distill": {"embedding_weight": 1.0}}})
    run = distilled.train_runs[distilled.final_train_tags[0]]
    assert run["upstream"]["teacher"] == teacher.teacher_tag
    assert run["settings"]["distill_embedding_weight"] == 1.0 and run["settings"]["distill_temperature"] == 2.0
    assert distilled.final_train_tags != base.final_train_tags and distilled.folds_tag == base.folds_tag
    one_backbone = plan_of({"teacher": {"enabled": True}, "train": {"backbones": [
        {"name": "test_efficientnet", "distill": {"logit_weight": 0.5}}, {"name": "lcnet_050"}]}})
    runs = [one_backbone.train_runs[tag] for tag in one_backbone.final_train_tags]
    assert [r["settings"].get("distill_logit_weight") for r in runs] == [0.5, None]
    blend = plan_of({"teacher": {"enabled": True},
                     "pseudo": {"rounds": [{"source": "blend", "teacher_weight": 0.2}]}})
    (pseudo,) = blend.pseudo_runs.values()
    assert pseudo["teacher_tag"] == teacher.teacher_tag


def test_the_teacher_in_the_blend_changes_ensemble_export_and_submission_only():
    base = plan_of({"teacher": {"enabled": True}})
    assert plan_of({"teacher": {"enabled": True}, "ensemble": {"teacher_weight": 0.0}}) == base
    assert base.export_teacher is None and "teacher_weight" not in base.ensemble_settings
    blend = plan_of({"teacher": {"enabled": True}, "ensemble": {"teacher_weight": 0.3}})
    before, after = tags(base), tags(blend)
    changed = {key for key in before if before[key] != after[key]}
    assert changed == {"ensemble", "export", "submission"}
    assert blend.ensemble_settings["teacher_weight"] == 0.3
    assert blend.export_teacher == {**base.teacher_settings, "weight": 0.3}
    assert blend.export_teacher["model"] == "birdnet" and "batch_windows" not in blend.export_teacher
    other = plan_of({"teacher": {"enabled": True}, "ensemble": {"teacher_weight": 0.5}})
    assert other.ensemble_tag not in (blend.ensemble_tag, base.ensemble_tag)
    # another teacher (its own tag) is another blend
    perch = plan_of({"teacher": {"enabled": True, "genus_fallback": True}, "ensemble": {"teacher_weight": 0.3}})
    assert perch.ensemble_tag != blend.ensemble_tag and perch.export_teacher["genus_fallback"] is True
    with pytest.raises(Exception, match="0.95"):  # the schema: at most 0.95, the students always count
        load_config({"teacher": {"enabled": True}, "ensemble": {"teacher_weight": 1.0}})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ensemble": {"teacher_weight": 0.2}}, r"ensemble.teacher_weight is 0.2 but teacher.enabled is false"),
        ({"train": {"distill": {"embedding_weight": 1.0}}}, "distils from the teacher"),
        ({"pseudo": {"rounds": [{"source": "teacher"}]}}, r"pseudo.rounds\[0\].source is 'teacher'"),
    ],
)
def test_learning_from_a_disabled_teacher_names_the_setting(overrides, message):
    with pytest.raises(ValueError, match=message):
        plan_of(overrides)
