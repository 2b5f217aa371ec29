"""Tests of birdclef.train on a tiny synthetic mel cache (CPU, tiny timm backbone)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from birdclef.common.labels import build_targets
from birdclef.train import (
    EpochBatchSampler,
    TrainSettings,
    TrainWindows,
    focal_loss,
    lr_factor,
    train_fold,
)
from birdclef.train.model import InferenceWrapper, load_model

CLASSES = ["amecro", "barswa", "comrav", "eurgol"]
N_MELS = 32
WINDOW = 64
FPS = 32000 / 512
BACKBONE = "test_efficientnet"


def make_cache(seed: int = 0, per_class: int = 8):
    """4 classes, each a band of energy in its own quarter of the mel bins, plus noise."""
    rng = np.random.default_rng(seed)
    chunks, rows, offset = [], [], 0
    for k, label in enumerate(CLASSES):
        for i in range(per_class):
            frames = int(rng.integers(40, 200))  # some recordings are shorter than a window
            mel = rng.normal(-60.0, 4.0, size=(frames, N_MELS))
            band = slice(k * N_MELS // 4, (k + 1) * N_MELS // 4)
            mel[:, band] += 25.0
            secondary = [CLASSES[(k + 1) % 4]] if i == 0 else []
            if secondary:  # a fainter band of the secondary class
                j = (k + 1) % 4
                mel[:, j * N_MELS // 4 : (j + 1) * N_MELS // 4] += 12.0
            chunks.append(mel.astype(np.float16))
            rows.append(
                {
                    "filename": f"{label}/XC{k}{i:03d}.ogg",
                    "primary_label": label,
                    "secondary_labels": np.array(secondary, dtype=object),
                    "offset": offset,
                    "frames": frames,
                    "fold": i % 4 if i < 7 else -1,  # one recording per class always trains
                }
            )
            offset += frames
    index = pd.DataFrame(rows)
    folds = index[["filename", "fold"]].copy()
    return np.concatenate(chunks), index.drop(columns="fold"), folds


def make_soundscapes(n: int = 6, seed: int = 1):
    """Soundscape windows (n, n_mels, window) with a band of a random class each."""
    rng = np.random.default_rng(seed)
    mels = rng.normal(-60.0, 4.0, size=(n, N_MELS, WINDOW))
    for j in range(n):
        k = j % 4
        mels[j, k * N_MELS // 4 : (k + 1) * N_MELS // 4, :] += 25.0
    index = pd.DataFrame(
        {
            "row_id": [f"S{j // 2}_{5 * (j % 2 + 1)}" for j in range(n)],
            "soundscape": [f"S{j // 2}" for j in range(n)],
            "end_s": [5 * (j % 2 + 1) for j in range(n)],
        }
    )
    return mels.astype(np.float16), index


SPEC = {"backbone": BACKBONE, "n_classes": len(CLASSES), "pretrained": False, "drop_rate": 0.1}


def run(out_dir, cache, fold=0, **overrides):
    """train_fold with small, fast defaults."""
    mels, index, folds = cache
    kwargs = {k: overrides.pop(k) for k in list(overrides) if k in (
        "soundscape_mels", "soundscape_index", "pseudo_mels", "pseudo_labels", "epoch_callback",
        "labelled_windows", "teacher", "specialist", "inputs_fingerprint")}
    values = {"epochs": 2, "batch_size": 16, "lr": 1e-3, "warmup_epochs": 0.5,
              "samples_per_epoch": 48, "crop_seconds_max": 2.0, **overrides}
    return train_fold(mels, index, folds, fold, CLASSES, SPEC, TrainSettings(**values), WINDOW,
                      FPS, out_dir, threads=2, device="cpu", progress=False, **kwargs)


@pytest.fixture(scope="module")
def cache():
    return make_cache()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache):
    """One full run (fold 0) with soundscape predictions, shared by the output tests."""
    out = tmp_path_factory.mktemp("fold0")
    scape_mels, scape_index = make_soundscapes()
    metrics = run(out, cache, epochs=3, samples_per_epoch=256, soundscape_mels=scape_mels,
                  soundscape_index=scape_index)
    return out, metrics


def test_training_lowers_loss_and_beats_chance(trained):
    _, metrics = trained
    history = metrics["epochs"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert metrics["oof_auc"] > 0.8
    assert metrics["best_epoch"] in {1, 2, 3}
    best = history[metrics["best_epoch"] - 1]
    assert best["oof_auc"] == max(h["oof_auc"] for h in history)
    assert metrics["oof_auc"] == pytest.approx(best["oof_auc"], abs=1e-6)
    assert metrics["device"] == "cpu" and metrics["amp"] is None
    assert all(h["samples_per_s"] > 0 and h["lr"] > 0 for h in history)


def test_outputs_have_the_right_columns(trained, cache):
    out, metrics = trained
    _, index, folds = cache
    oof = pd.read_parquet(out / "oof.parquet")
    assert list(oof.columns) == ["filename", "fold", *CLASSES]
    expected = set(folds.loc[folds["fold"] == 0, "filename"])
    assert set(oof["filename"]) == expected and len(oof) == len(expected)
    assert (oof["fold"] == 0).all()
    probs = oof[CLASSES].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all()
    # Recordings are recognised: the primary class gets the highest probability.
    primary = index.set_index("filename").loc[oof["filename"], "primary_label"].to_numpy()
    assert (np.array(CLASSES)[probs.argmax(axis=1)] == primary).mean() >= 0.75

    preds = pd.read_parquet(out / "soundscape_preds.parquet")
    assert list(preds.columns) == ["row_id", "soundscape", "end_s", *CLASSES, "seen_in_training"]
    assert len(preds) == 6 and preds["row_id"].iloc[0] == "S0_5"
    assert not preds["seen_in_training"].any()  # no pseudo-labels in this run

    saved = json.loads((out / "metrics.json").read_text())
    assert saved["best_epoch"] == metrics["best_epoch"]
    assert len(saved["epochs"]) == 3
    for key in ("train_loss", "val_loss", "oof_auc", "lr", "seconds", "samples_per_s"):
        assert key in saved["epochs"][0]
    assert not (out / "training_curve.png").exists()  # figures are the report rules' job
    assert not list(out.glob(".*tmp*")), "temporary files left behind"

    model, payload = load_model(out / "best.pt")
    assert payload["epoch"] == metrics["best_epoch"]
    assert payload["spec"]["backbone"] == BACKBONE
    with torch.no_grad():
        out_probs = InferenceWrapper(model)(torch.full((2, 1, N_MELS, WINDOW), -60.0))
    assert out_probs.shape == (2, len(CLASSES))


def test_resume_continues_after_the_last_epoch(tmp_path, cache):
    first = run(tmp_path, cache, epochs=2, samples_per_epoch=32)
    assert len(first["epochs"]) == 2 and first["resumed_from_epoch"] == 0
    second = run(tmp_path, cache, epochs=4, samples_per_epoch=32)
    assert second["resumed_from_epoch"] == 2
    assert [h["epoch"] for h in second["epochs"]] == [1, 2, 3, 4]
    assert second["epochs"][:2] == first["epochs"]
    last = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 4 and len(last["history"]) == 4
    # Nothing left to do: a third call only rewrites the outputs.
    third = run(tmp_path, cache, epochs=4, samples_per_epoch=32)
    assert third["resumed_from_epoch"] == 4 and third["epochs"] == second["epochs"]


def test_killed_job_resumes_to_the_same_result(tmp_path, cache):
    """A run killed after epoch 2 and rerun equals an uninterrupted run."""
    settings = {"epochs": 3, "samples_per_epoch": 32, "mixup_alpha": 0.4, "mixup_prob": 0.5}
    straight = run(tmp_path / "straight", cache, **settings)

    def kill_after_two(entry):
        if entry["epoch"] == 2:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", cache, epoch_callback=kill_after_two, **settings)
    assert not (tmp_path / "killed" / "metrics.json").exists()
    resumed = run(tmp_path / "killed", cache, **settings)
    assert resumed["resumed_from_epoch"] == 2
    for a, b in zip(straight["epochs"], resumed["epochs"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["oof_auc"] == pytest.approx(b["oof_auc"], abs=1e-6)


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture
def first_epoch_best(monkeypatch):
    """Epoch 1 scores best whatever the losses (so the best epoch is not the last one)."""
    monkeypatch.setattr("birdclef.train.fold.epoch_score", lambda entry, has_val, train_loss: [-entry["epoch"]])


def test_a_rerun_without_best_pt_keeps_the_best_epoch(tmp_path, cache, first_epoch_best):
    """Snakemake deletes best.pt before it reruns a job: the resumed run rewrites it from the best
    weights kept in last.pt (epoch 1 here), not from the epochs after the resume (the last one)."""
    straight = run(tmp_path / "straight", cache, epochs=3, samples_per_epoch=32)
    assert straight["best_epoch"] == 1
    original = _weights(tmp_path / "straight" / "best.pt")
    assert original["epoch"] == 1

    # a finished job rerun (its outputs deleted): nothing to train, the same best.pt
    (tmp_path / "straight" / "best.pt").unlink()
    again = run(tmp_path / "straight", cache, epochs=3, samples_per_epoch=32)
    assert again["resumed_from_epoch"] == 3 and again["best_epoch"] == 1
    rewritten = _weights(tmp_path / "straight" / "best.pt")
    assert rewritten["epoch"] == 1 and rewritten["history"] == original["history"]
    for name, value in original["state_dict"].items():
        assert torch.equal(rewritten["state_dict"][name], value), name

    # a job killed after epoch 2, best.pt deleted as Snakemake does: the same best model as straight
    def kill_after_two(entry):
        if entry["epoch"] == 2:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", cache, epochs=3, samples_per_epoch=32, epoch_callback=kill_after_two)
    (tmp_path / "killed" / "best.pt").unlink()
    resumed = run(tmp_path / "killed", cache, epochs=3, samples_per_epoch=32)
    assert resumed["resumed_from_epoch"] == 2 and resumed["best_epoch"] == 1
    killed = _weights(tmp_path / "killed" / "best.pt")
    for name, value in original["state_dict"].items():
        assert torch.allclose(killed["state_dict"][name].float(), value.float(), atol=1e-6), name


def test_a_rerun_on_other_inputs_trains_from_scratch(tmp_path, cache):
    """last.pt continues only on the inputs it was trained on (the stage's manifest description
    of its files): an input rewritten with other content restarts the run."""
    before = [{"path": "results/mels/abc/mels.npy", "bytes": 10, "sha256": "0" * 64}]
    run(tmp_path, cache, epochs=2, samples_per_epoch=16, inputs_fingerprint=before)
    same = run(tmp_path, cache, epochs=2, samples_per_epoch=16, inputs_fingerprint=before)
    assert same["resumed_from_epoch"] == 2
    after = [{**before[0], "sha256": "1" * 64}]
    rewritten = run(tmp_path, cache, epochs=2, samples_per_epoch=16, inputs_fingerprint=after)
    assert rewritten["resumed_from_epoch"] == 0 and len(rewritten["epochs"]) == 2


def test_changed_settings_restart_from_scratch(tmp_path, cache):
    run(tmp_path, cache, epochs=1, samples_per_epoch=16)
    again = run(tmp_path, cache, epochs=2, samples_per_epoch=16, lr=2e-3)
    assert again["resumed_from_epoch"] == 0 and len(again["epochs"]) == 2


@pytest.mark.parametrize(
    ("loss", "optimizer"), [("focal", "adamw"), ("bce+focal", "radam")]
)
def test_focal_losses_and_mixup_run(tmp_path, cache, loss, optimizer):
    metrics = run(tmp_path, cache, epochs=1, loss=loss, optimizer=optimizer, mixup_alpha=0.4,
                  mixup_prob=1.0, label_smoothing=0.05, spec_augment=True)
    assert all(np.isfinite(h["train_loss"]) and h["train_loss"] > 0 for h in metrics["epochs"])
    assert metrics["settings"]["loss"] == loss
    assert (tmp_path / "oof.parquet").exists()


def test_pseudo_windows_fill_their_share_of_each_batch(cache):
    mels, index, _ = cache
    soft, _ = build_targets(index, CLASSES, 0.5)
    pseudo = np.zeros((5, N_MELS, WINDOW), dtype=np.float16)
    labels = np.eye(len(CLASSES), dtype=np.float32)[[0, 1, 2, 3, 0]]
    settings = TrainSettings(pseudo_ratio=0.25, pseudo_weight=0.3, spec_augment=False)
    sampler = EpochBatchSampler(np.ones(len(index)), len(pseudo), 16, 64, 0.25, seed=0)
    dataset = TrainWindows(mels, index["offset"], index["frames"], soft, WINDOW, 128, settings,
                           pseudo, labels)
    batches = list(sampler)
    assert len(batches) == 4
    for keys in batches:
        assert sum(source == 1 for source, _, _ in keys) == 4
        assert len(keys) == 16
    mel, target, weight = dataset[next(k for k in batches[0] if k[0] == 1)]
    assert mel.shape == (1, N_MELS, WINDOW) and weight == pytest.approx(0.3)
    assert float(target.sum()) == pytest.approx(1.0)
    mel, target, weight = dataset[batches[0][0]]
    assert mel.shape == (1, N_MELS, WINDOW) and weight == 1.0
    # The same epoch draws the same batches; another epoch draws others.
    assert list(sampler) == batches
    sampler.set_epoch(2)
    assert list(sampler) != batches


def test_training_with_pseudo_windows(tmp_path, cache):
    scape_mels, scape_index = make_soundscapes(8)
    labels = np.eye(len(CLASSES), dtype=np.float32)[np.arange(8) % 4]
    metrics = run(tmp_path / "mixed", cache, fold=-1, epochs=1, pseudo_mels=scape_mels,
                  pseudo_labels=labels, pseudo_ratio=0.5, pseudo_weight=0.5)
    assert metrics["n_pseudo"] == 8 and metrics["n_val"] == 0 and metrics["oof_auc"] is None
    assert metrics["epochs"][0]["val_loss"] is None
    oof = pd.read_parquet(tmp_path / "mixed" / "oof.parquet")
    assert list(oof.columns) == ["filename", "fold", *CLASSES] and len(oof) == 0

    # Pseudo windows only (no labelled recordings) still trains.
    mels, index, folds = cache
    empty = (mels, index.iloc[0:0], folds)
    only = run(tmp_path / "only", empty, fold=-1, epochs=1, pseudo_mels=scape_mels,
               pseudo_labels=labels, samples_per_epoch=None)
    assert only["n_train"] == 0 and np.isfinite(only["epochs"][0]["train_loss"])
    assert (tmp_path / "only" / "best.pt").exists()


def test_labelled_soundscape_windows_train_and_score(tmp_path, cache):
    """Train-split labelled windows fill their share of each batch; validation ones are scored."""
    mels, index, _ = cache
    sampler = EpochBatchSampler(np.ones(len(index)), 5, 16, 64, 0.25, seed=0, n_labelled=3,
                                labelled_ratio=0.25)
    for keys in sampler:
        sources = [source for source, _, _ in keys]
        assert sources == [0] * 8 + [1] * 4 + [2] * 4  # recordings, pseudo, labelled
    only = EpochBatchSampler(np.ones(0), 0, 16, 64, 0.3, seed=0, n_labelled=3, labelled_ratio=0.25)
    assert only.labelled_per_batch == 16  # nothing else to draw: labelled windows fill the batch
    with pytest.raises(ValueError, match="exceed 1"):
        TrainSettings(pseudo_ratio=0.8, labelled_ratio=0.3)

    scape_mels, scape_index = make_soundscapes(8)
    table = scape_index[["row_id", "soundscape", "end_s"]].copy()
    table["split"] = np.where(table["soundscape"].isin(["S0", "S1"]), "train", "validation")
    targets = np.eye(len(CLASSES), dtype=np.float32)[np.arange(8) % 4]
    table[CLASSES] = targets
    metrics = run(tmp_path / "labelled", cache, fold=0, epochs=2, soundscape_mels=scape_mels,
                  soundscape_index=scape_index, labelled_windows=table, labelled_ratio=0.25,
                  labelled_weight=2.0)
    assert metrics["n_labelled"] == 4 and metrics["soundscape_windows_scored"] == 4
    assert metrics["soundscape_auc"] is not None and 0.0 <= metrics["soundscape_auc"] <= 1.0
    preds = pd.read_parquet(tmp_path / "labelled" / "soundscape_preds.parquet")
    assert preds.loc[preds["soundscape"].isin(["S0", "S1"]), "seen_in_training"].all()
    assert not preds.loc[preds["soundscape"].isin(["S2", "S3"]), "seen_in_training"].any()
    # With train_ratio 0 the labelled windows only score.
    scored = run(tmp_path / "scored", cache, fold=0, epochs=1, soundscape_mels=scape_mels,
                 soundscape_index=scape_index, labelled_windows=table, labelled_ratio=0.0)
    assert scored["n_labelled"] == 0 and scored["soundscape_windows_scored"] == 4


# TrainSettings field -> where its default lives in the config schema.
SCHEMA_PATHS = {
    "pseudo_weight": ("pseudo", "rounds", "pseudo_weight"),
    "pseudo_ratio": ("pseudo", "rounds", "pseudo_ratio"),
    "mix_pseudo": ("pseudo", "rounds", "mix_pseudo"),
    "labelled_ratio": ("soundscape_labels", "train_ratio"),
    "labelled_weight": ("soundscape_labels", "train_weight"),
    "distill_embedding_weight": ("train", "distill", "embedding_weight"),
    "distill_logit_weight": ("train", "distill", "logit_weight"),
    "distill_temperature": ("train", "distill", "temperature"),
}


def test_train_settings_defaults_are_the_schemas():
    """Every default lives once: the dataclass's agree with schemas/config.schema.yaml."""
    import dataclasses
    from pathlib import Path

    import yaml

    schema = yaml.safe_load((Path(__file__).resolve().parents[1] / "schemas/config.schema.yaml").read_text())

    def schema_default(path):
        node = schema["properties"][path[0]]
        for key in path[1:]:
            node = node["properties"] if "properties" in node else node["items"]["properties"]
            node = node[key]
        return node.get("default", node.get("items", {}).get("default"))

    for field in dataclasses.fields(TrainSettings):
        if field.name == "wave_augment":  # a block: tests/test_defaults.py checks its keys
            continue
        expected = schema_default(SCHEMA_PATHS.get(field.name, ("train", field.name)))
        default = field.default_factory() if field.default is dataclasses.MISSING else field.default
        assert default == expected, (field.name, default, expected)


def test_targets_schedule_and_focal_loss():
    index = pd.DataFrame(
        {
            "primary_label": ["amecro", "barswa"],
            "secondary_labels": [np.array(["comrav", "unknown"]), "['amecro']"],
        }
    )
    soft, binary = build_targets(index, CLASSES, 0.5)
    np.testing.assert_allclose(soft, [[1, 0, 0.5, 0], [0.5, 1, 0, 0]])
    np.testing.assert_array_equal(binary, [[1, 0, 1, 0], [1, 1, 0, 0]])

    factors = [lr_factor(step, 10, 100) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:], strict=False))
    assert factors[-1] < 0.01

    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    torch.testing.assert_close(focal_loss(logits, targets, gamma=0.0), bce)
    assert (focal_loss(logits, targets, gamma=2.0) < bce).all()


def test_train_stage_reads_the_caches_from_disk(tmp_path, cache):
    from birdclef.train import train_stage

    mels, index, folds = cache
    np.save(tmp_path / "mels.npy", mels)
    index.assign(secondary_labels=[list(x) for x in index["secondary_labels"]]).to_parquet(
        tmp_path / "index.parquet", index=False
    )
    folds.to_parquet(tmp_path / "folds.parquet", index=False)
    scape_mels, scape_index = make_soundscapes(6)
    np.save(tmp_path / "scape.npy", scape_mels)
    scape_index.to_parquet(tmp_path / "scape.parquet", index=False)
    pd.DataFrame({"primary_label": CLASSES}).to_csv(tmp_path / "taxonomy.csv", index=False)
    pseudo = scape_index.iloc[[4, 1]].reset_index(drop=True)
    pseudo[CLASSES] = np.eye(len(CLASSES), dtype=np.float32)[[0, 1]]
    pseudo.to_parquet(tmp_path / "pseudo.parquet", index=False)

    out = tmp_path / "train" / "fold1"
    outputs = {
        "checkpoint": out / "best.pt",
        "oof": out / "oof.parquet",
        "soundscape_preds": out / "soundscape_preds.parquet",
        "metrics": out / "metrics.json",
        "manifest": out / "manifest.json",
    }
    inputs = {
        "mels": tmp_path / "mels.npy",
        "index": tmp_path / "index.parquet",
        "folds": tmp_path / "folds.parquet",
        "soundscape_mels": tmp_path / "scape.npy",
        "soundscape_index": tmp_path / "scape.parquet",
        "taxonomy": tmp_path / "taxonomy.csv",
        "pseudo_labels": tmp_path / "pseudo.parquet",
    }
    mel = {"sample_rate": 32000, "hop_length": 512, "n_mels": N_MELS, "window_seconds": 1.01}
    settings = {"epochs": 1, "batch_size": 8, "samples_per_epoch": 16, "crop_seconds_max": 2.0,
                "round": 1, "pseudo_weight": 0.5, "pseudo_ratio": 0.25, "mixup_alpha": 0.0}
    metrics = train_stage(
        {k: str(v) for k, v in inputs.items()}, {k: str(v) for k, v in outputs.items()},
        fold=1, tag="test_efficientnet-r1-abc", settings=settings,
        backbone={"name": BACKBONE, "drop_rate": 0.1}, upstream={"mels": "m"}, mel=mel,
        device="cpu", threads=2, progress=False,
    )
    assert metrics["n_pseudo"] == 2 and metrics["settings"]["pseudo_weight"] == 0.5
    for path in outputs.values():
        assert path.exists(), path
    manifest = json.loads(outputs["manifest"].read_text())
    assert manifest["stage"] == "train" and manifest["headline"]["n_pseudo"] == 2
    assert (out / "last.pt").exists()
    oof = pd.read_parquet(outputs["oof"])
    assert set(oof["fold"]) == {1}
