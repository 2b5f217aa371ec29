"""The winners' recipe options: soft-AUC and ASL losses, FilterAugment, and their tags."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_plan import ONE_ROUND, plan_of, tags
from test_train import CLASSES, N_MELS, WINDOW, make_cache, run

from birdclef.train import TrainSettings, TrainWindows, example_loss, settings_from_config
from birdclef.train.data import filter_augment
from birdclef.train.loss import asymmetric_loss, example_loss_in_batches, soft_auc_loss


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_soft_auc_orders_positives_above_negatives():
    targets = torch.tensor([[1.0], [0.0]])
    right = soft_auc_loss(torch.tensor([[10.0], [-10.0]]), targets)
    wrong = soft_auc_loss(torch.tensor([[-10.0], [10.0]]), targets)
    tie = soft_auc_loss(torch.tensor([[0.0], [0.0]]), targets)
    assert float(right.mean()) == pytest.approx(softplus(-20.0)) and float(right.mean()) < 1e-8
    assert float(wrong.mean()) == pytest.approx(softplus(20.0))  # ~20
    # The one pair is split between its two examples; the values average to the batch loss.
    torch.testing.assert_close(tie, torch.full((2,), math.log(2.0)))


def test_soft_auc_weights_pairs_by_soft_labels_and_skips_classes_without_pairs():
    # Class 0: targets 1, 0.5, 0 -> pairs (0,1) 0.5, (0,2) 1, (1,2) 0.5; class 1 has no positive.
    logits = torch.tensor([[2.0, 0.3], [0.0, -1.0], [-2.0, 4.0]])
    targets = torch.tensor([[1.0, 0.0], [0.5, 0.0], [0.0, 0.0]])
    loss = soft_auc_loss(logits, targets)
    expected = (0.5 * softplus(-2.0) + 1.0 * softplus(-4.0) + 0.5 * softplus(-2.0)) / 2.0
    assert float(loss.mean()) == pytest.approx(expected, rel=1e-6)
    # Example 0 holds half of pairs (0,1) and (0,2); times B = 3.
    assert float(loss[0]) == pytest.approx(3 * 0.5 * (0.5 * softplus(-2) + softplus(-4)) / 2.0, rel=1e-6)
    nothing = soft_auc_loss(logits, torch.zeros_like(targets))
    assert torch.equal(nothing, torch.zeros(3))
    logits.requires_grad_(True)
    soft_auc_loss(logits, targets).mean().backward()
    assert logits.grad[0, 0] < 0 < logits.grad[2, 0] and logits.grad[:, 1].abs().sum() == 0


def test_asymmetric_loss_values_and_bce_limit():
    logits = torch.tensor([[2.0, -1.0, 0.0], [0.5, 3.0, -0.2]])
    targets = torch.tensor([[1.0, 0.0, 0.3], [0.0, 1.0, 1.0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    torch.testing.assert_close(asymmetric_loss(logits, targets, 0.0, 0.0, 0.0), bce)
    zero = torch.tensor([[0.0]])
    # A positive at p = 0.5 with gamma_pos 0: -log 0.5.
    assert float(asymmetric_loss(zero, torch.ones(1, 1))) == pytest.approx(math.log(2.0))
    # A negative at p = 0.5, clip 0.05, gamma_neg 4: p_m = 0.45, -0.45^4 log(0.55).
    assert float(asymmetric_loss(zero, torch.zeros(1, 1))) == pytest.approx(-(0.45**4) * math.log(0.55))
    # A negative below the clip costs nothing.
    assert float(asymmetric_loss(torch.tensor([[-5.0]]), torch.zeros(1, 1))) == 0.0


def test_example_loss_blends_and_validation_batches():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0], [-1.0, 0.0], [0.2, -0.3]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.5], [1.0, 0.0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1)
    auc = soft_auc_loss(logits, targets)
    blend = example_loss(logits, targets, TrainSettings(loss="bce+soft_auc", soft_auc_weight=0.25))
    torch.testing.assert_close(blend, 0.75 * bce + 0.25 * auc)
    torch.testing.assert_close(example_loss(logits, targets, TrainSettings(loss="soft_auc")), auc)
    asl = TrainSettings(loss="asl", asl_gamma_neg=0.0, asl_clip=0.0)
    torch.testing.assert_close(example_loss(logits, targets, asl), bce)
    # Validation: batches of every n-th example (here rows 0, 2 and 1, 3).
    batched = example_loss_in_batches(logits, targets, TrainSettings(loss="soft_auc"), 2)
    torch.testing.assert_close(batched[[0, 2]], soft_auc_loss(logits[[0, 2]], targets[[0, 2]]))
    torch.testing.assert_close(batched[[1, 3]], soft_auc_loss(logits[[1, 3]], targets[[1, 3]]))
    plain = example_loss_in_batches(logits, targets, TrainSettings(), 2)
    torch.testing.assert_close(plain, bce)


def test_filter_augment_is_deterministic_per_seed_and_keeps_shape():
    mel = np.random.default_rng(0).normal(-50, 5, size=(N_MELS, WINDOW)).astype(np.float32)
    one = filter_augment(mel, np.random.default_rng(7), 6.0, (3, 6))
    again = filter_augment(mel, np.random.default_rng(7), 6.0, (3, 6))
    other = filter_augment(mel, np.random.default_rng(8), 6.0, (3, 6))
    assert one.shape == mel.shape and one.dtype == mel.dtype
    np.testing.assert_array_equal(one, again)
    assert not np.array_equal(one, other)
    gain = one - mel  # the same gain in every frame, within +-6 dB
    np.testing.assert_allclose(gain, np.repeat(gain[:, :1], WINDOW, axis=1), atol=1e-4)
    assert np.abs(gain).max() <= 6.0 + 1e-4 and np.abs(gain).max() > 0


def test_train_windows_apply_filter_augment_by_seed():
    mels, index, _ = make_cache()
    targets = np.eye(len(CLASSES), dtype=np.float32)[index["primary_label"].map(CLASSES.index)]

    def windows(**values):
        settings = TrainSettings(spec_augment=True, **values)
        return TrainWindows(mels, index["offset"], index["frames"], targets, WINDOW, 128, settings)

    plain, augmented = windows(), windows(filter_augment=1.0)
    key = (0, 3, 12345)
    a, b = augmented[key][0], augmented[key][0]
    assert a.shape == (1, N_MELS, WINDOW) and torch.equal(a, b)  # a resumed run draws the same
    assert not torch.equal(a, plain[key][0])
    assert torch.equal(windows(filter_augment=0.0)[key][0], plain[key][0])  # off: today's windows


@pytest.fixture(scope="module")
def cache():
    return make_cache()


@pytest.mark.parametrize(
    "values",
    [{"loss": "soft_auc"}, {"loss": "bce+soft_auc"}, {"loss": "asl"}, {"filter_augment": 1.0}],
)
def test_recipe_options_train(tmp_path, cache, values):
    metrics = run(tmp_path, cache, epochs=1, mixup_prob=1.0, **values)
    assert all(np.isfinite(h["train_loss"]) for h in metrics["epochs"])
    assert metrics["epochs"][0]["val_loss"] is not None and np.isfinite(metrics["epochs"][0]["val_loss"])
    assert (tmp_path / "best.pt").exists()
    for key, value in values.items():
        assert metrics["settings"][key] == value


def test_recipe_keys_change_tags_only_when_used():
    before = tags(plan_of(ONE_ROUND))
    # Unused keys (another loss's, FilterAugment's while it is off) change no tag.
    unused = {"soft_auc_weight": 0.5, "asl_clip": 0.1, "filter_augment_db": 3.0}
    assert tags(plan_of(ONE_ROUND, {"train": unused})) == before
    after = tags(plan_of(ONE_ROUND, {"train": {"loss": "bce+soft_auc"}}))
    for stage in ("xc_scrape", "catalog", "vad", "mels", "mel_groups", "soundscape_mels", "soundscape_labels", "folds"):
        assert after[stage] == before[stage], stage
    for stage in ("pseudo", "ensemble", "export", "submission"):
        assert after[stage] != before[stage], stage
    for old, new in zip(sum(before["train"], []), sum(after["train"], []), strict=True):
        assert old != new and old.rsplit("-", 1)[0] == new.rsplit("-", 1)[0]
    weighted = plan_of(ONE_ROUND, {"train": {"loss": "bce+soft_auc", "soft_auc_weight": 0.5}})
    assert tags(weighted)["train"] != after["train"]
    filtered = plan_of({"train": {"filter_augment": 0.5}})
    settings = filtered.train_runs[filtered.final_train_tags[0]]["settings"]
    assert settings["filter_augment_bands"] == [3, 6] and "asl_clip" not in settings
    built = settings_from_config(settings)  # TrainSettings fills what the plan leaves out
    assert built.asl_clip == 0.05 and built.filter_augment == 0.5
    assert built.unused_keys() == ["soft_auc_weight", "asl_gamma_neg", "asl_gamma_pos", "asl_clip",
                                   "distill_embedding_weight", "distill_logit_weight", "distill_temperature",
                                   "wave_augment"]
    assert tags(filtered)["train"] != tags(plan_of())["train"]
