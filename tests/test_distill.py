"""Distillation from the teacher: target lookup, the two loss terms, and train_fold with a teacher."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_train import CLASSES, FPS, WINDOW, make_cache, make_soundscapes, run

from birdclef.train.distill import (
    TeacherCache,
    TeacherTargets,
    embedding_loss,
    logit_loss,
    mix_teacher,
)
from birdclef.train.model import load_model

DIM = 12


def teacher_cache(index: pd.DataFrame, scape_index: pd.DataFrame | None = None, known=(0, 1, 3),
                  skip: str | None = None) -> TeacherCache:
    """A teacher artifact for a mel cache: per recording one 5 s window per 5 s of frames, the class's
    logit high and its embedding a class direction; classes outside `known` unmapped (NaN)."""
    rows, embeddings, logits = [], [], []
    for _, row in index.iterrows():
        if row["filename"] == skip:
            continue
        k = CLASSES.index(row["primary_label"])
        for w in range(max(1, int(np.ceil(row["frames"] / FPS / 5.0)))):
            rows.append(("recording", row["filename"], f"{row['filename']}_{5 * (w + 1)}", w, 5.0 * w,
                         5.0 * (w + 1)))
            embeddings.append(np.eye(DIM)[k] + 0.01 * w)
            logits.append(np.where(np.arange(4) == k, 4.0, -4.0))
    for _, row in (scape_index if scape_index is not None else pd.DataFrame()).iterrows():
        rows.append(("soundscape", f"{row['soundscape']}.ogg", row["row_id"], row["end_s"] // 5 - 1,
                     row["end_s"] - 5.0, float(row["end_s"])))
        embeddings.append(np.eye(DIM)[5])
        logits.append(np.full(4, -2.0))
    logits = np.asarray(logits, np.float32)
    logits[:, [c for c in range(4) if c not in known]] = np.nan
    frame = pd.DataFrame(rows, columns=["source", "filename", "row_id", "window", "start_s", "end_s"])
    return TeacherCache(np.asarray(embeddings, np.float16), logits, frame)


def test_each_example_takes_the_teacher_window_at_its_centre():
    _, index, _ = make_cache()
    scape_mels, scape_index = make_soundscapes()
    cache = teacher_cache(index, scape_index, skip=index["filename"].iloc[1])
    long = pd.DataFrame({"filename": ["a.ogg"], "frames": [int(12 * FPS)], "primary_label": ["amecro"]})
    long_cache = teacher_cache(long)
    targets = long_cache.targets(["a.ogg"], [], [], FPS)
    window = int(5 * FPS)
    assert targets.row(0, 0, crop_start=0, crop_frames=64) == 0
    assert targets.row(0, 0, crop_start=window - 10, crop_frames=64) == 1  # centre past 5 s
    assert targets.row(0, 0, crop_start=int(11 * FPS), crop_frames=64) == 2  # clipped to the last window
    names = index["filename"].tolist()
    targets = cache.targets(names, scape_index["row_id"].tolist()[::-1], ["S1_10", "missing_5"], FPS)
    assert targets.row(0, 1) == -1  # the teacher could not read this recording
    embedding, logits, has = targets.get(targets.row(0, 1))
    assert has == 0.0 and not embedding.any() and not logits.any()
    assert targets.row(1, 0) == len(cache.index) - 1  # pseudo windows by row_id
    assert targets.row(2, 0) == len(cache.index) - 3 and targets.row(2, 1) == -1
    assert targets.class_mask.tolist() == [True, True, False, True]
    assert targets.coverage["labelled"] == 0.5 and targets.coverage["classes"] == 0.75
    embedding, logits, has = targets.get(targets.row(0, 0))
    assert has == 1.0 and embedding.argmax() == 0 and logits[2] == 0.0  # NaN class -> 0, masked later


def test_loss_terms_and_their_mixup():
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    same = embedding_loss(torch.tensor([[2.0, 0.0], [0.0, -1.0]]), teacher, torch.tensor([1.0, 1.0]))
    assert same.tolist() == pytest.approx([0.0, 2.0])
    assert embedding_loss(teacher, -teacher, torch.tensor([0.0, 1.0])).tolist() == pytest.approx([0.0, 2.0])
    mask = torch.tensor([True, False])
    student = torch.tensor([[3.0, -50.0], [3.0, 50.0]])
    t_logits = torch.tensor([[3.0, 9.0], [-3.0, 9.0]])
    loss = logit_loss(student, t_logits, mask, torch.ones(2), temperature=1.0)
    # the unmapped class (logit 50 vs 9) adds nothing; matching logits give the entropy floor
    assert loss[0] < loss[1]
    assert torch.allclose(loss, logit_loss(student, t_logits + torch.tensor([0.0, 100.0]), mask, torch.ones(2), 1.0))
    assert not logit_loss(student, t_logits, torch.tensor([False, False]), torch.ones(2), 2.0).any()
    emb, logits, has = mix_teacher(teacher, t_logits, torch.tensor([1.0, 0.0]), 0.25, torch.tensor([1, 0]))
    assert emb[0].tolist() == pytest.approx([0.25, 0.75]) and logits[0].tolist() == [3.0, 9.0]
    assert has.tolist() == [0.0, 0.0]


@pytest.fixture(scope="module")
def data():
    mels, index, folds = make_cache()
    return (mels, index, folds), teacher_cache(index)


def test_distillation_trains_and_the_projection_stays_out_of_the_model(tmp_path, data):
    cache, teacher = data
    plain = run(tmp_path / "plain", cache, epochs=2)
    distilled = run(tmp_path / "distilled", cache, epochs=2, teacher=teacher, distill_embedding_weight=1.0,
                    distill_logit_weight=0.5, distill_temperature=2.0)
    assert plain["teacher_coverage"] is None
    assert distilled["teacher_coverage"] == {"recordings": 1.0, "pseudo": 1.0, "labelled": 1.0, "classes": 0.75}
    # the distillation terms are part of the training loss
    assert distilled["epochs"][0]["train_loss"] > plain["epochs"][0]["train_loss"]
    model, payload = load_model(tmp_path / "distilled" / "best.pt")
    plain_model, _ = load_model(tmp_path / "plain" / "best.pt")
    assert list(model.state_dict()) == list(plain_model.state_dict())  # no projection in best.pt
    assert "projection" not in payload
    last = torch.load(tmp_path / "distilled" / "last.pt", map_location="cpu", weights_only=False)
    assert last["projection"]["linear.weight"].shape == (DIM, model.num_features)
    x = torch.zeros(2, 1, 32, WINDOW)
    assert not torch.equal(model(x)[0], plain_model(x)[0])
    resumed = run(tmp_path / "distilled", cache, epochs=3, teacher=teacher, distill_embedding_weight=1.0,
                  distill_logit_weight=0.5, distill_temperature=2.0)
    assert resumed["resumed_from_epoch"] == 2


def test_only_logit_distillation_and_missing_teacher(tmp_path, data):
    cache, teacher = data
    metrics = run(tmp_path / "logits", cache, epochs=1, teacher=teacher, distill_logit_weight=1.0,
                  mixup_alpha=0.4, mixup_prob=1.0)
    assert metrics["teacher_coverage"]["recordings"] == 1.0
    last = torch.load(tmp_path / "logits" / "last.pt", map_location="cpu", weights_only=False)
    assert "projection" not in last  # no embedding weight: no projection
    with pytest.raises(ValueError, match="no teacher artifact was given"):
        run(tmp_path / "none", cache, epochs=1, distill_embedding_weight=1.0)


def test_teacher_cache_reads_the_stage_files_and_checks_them(tmp_path, data):
    _, teacher = data
    np.save(tmp_path / "e.npy", teacher.embeddings)
    np.save(tmp_path / "l.npy", teacher.logits[:-1])
    teacher.index.to_parquet(tmp_path / "i.parquet")
    paths = {"teacher_embeddings": tmp_path / "e.npy", "teacher_logits": tmp_path / "l.npy",
             "teacher_index": tmp_path / "i.parquet"}
    with pytest.raises(ValueError, match="expected one of each per window"):
        TeacherCache.load(paths)
    np.save(tmp_path / "l.npy", teacher.logits)
    loaded = TeacherCache.load(paths)
    assert loaded.window_seconds == 5.0 and isinstance(loaded.embeddings, np.memmap)
    assert isinstance(TeacherTargets(loaded.embeddings, loaded.logits, loaded.index, ["x"]).row(0, 0), int)
