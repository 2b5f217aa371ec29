"""The pure post-processing functions (birdclef.runtime.postprocess): combining members, smoothing, power adjustment."""

from __future__ import annotations

import numpy as np
import pytest

from birdclef.runtime.postprocess import (
    POSTPROCESS_DEFAULTS,
    combine_members,
    combine_method,
    pool_sonotypes,
    postprocess_settings,
    postprocess_soundscape,
    power_adjust,
    rank_normalize,
    smooth_windows,
    sonotype_groups,
)


def test_rank_normalize_is_the_per_class_rank_over_rows():
    probs = np.array([[0.9, 0.1], [0.2, 0.1], [0.5, 0.7], [0.2, 0.3]], dtype=np.float32)
    # class 0: 0.2 and 0.2 share ranks 1 and 2 (1.5 each), 0.5 is 3, 0.9 is 4; divided by 4 rows
    # class 1: 0.1 and 0.1 share 1.5, 0.3 is 3, 0.7 is 4
    expected = np.array([[4, 1.5], [1.5, 1.5], [3, 4], [1.5, 3]], dtype=np.float32) / 4
    ranks = rank_normalize(probs)
    assert ranks.dtype == np.float32
    np.testing.assert_array_equal(ranks, expected)
    assert rank_normalize(np.zeros((0, 3))).shape == (0, 3)


def test_rank_combine_equals_a_hand_computation():
    a = np.array([[0.9, 0.2], [0.1, 0.3], [0.5, 0.4]], dtype=np.float32)
    b = np.array([[0.3, 0.8], [0.2, 0.9], [0.1, 0.7]], dtype=np.float32)
    # ranks / 3: a -> [[3, 1], [1, 2], [2, 3]] / 3; b -> [[3, 2], [2, 3], [1, 1]] / 3
    rank_a = np.array([[3, 1], [1, 2], [2, 3]]) / 3
    rank_b = np.array([[3, 2], [2, 3], [1, 1]]) / 3
    combined = combine_members([a, b], [3.0, 1.0], method="rank")
    assert combined.dtype == np.float32
    np.testing.assert_allclose(combined, 0.75 * rank_a + 0.25 * rank_b, atol=1e-7)
    mean = combine_members([a, b], [3.0, 1.0])
    np.testing.assert_allclose(mean, 0.75 * a + 0.25 * b, atol=1e-7)
    # rank combine only sees the order: a monotone change of one member changes nothing
    np.testing.assert_allclose(combine_members([a**3, b], [3.0, 1.0], method="rank"), combined)


def test_combine_rejects_bad_input():
    a = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="combine method"):
        combine_members([a], [1.0], method="median")
    with pytest.raises(ValueError, match="one weight per member"):
        combine_members([a, a], [1.0])
    with pytest.raises(ValueError, match="weights"):
        combine_members([a, a], [0.0, 0.0])
    with pytest.raises(ValueError, match="shape"):
        combine_members([a, np.zeros((4, 2))], [1.0, 1.0])
    assert combine_method({}) == "mean" and combine_method({"combine": "rank"}) == "rank"
    with pytest.raises(ValueError, match="combine"):
        combine_method({"combine": "max"})


def test_power_adjust_keeps_the_top_k_and_raises_the_rest():
    probs = np.array(
        [[0.9, 0.2, 0.5, 0.05], [0.1, 0.6, 0.4, 0.3], [0.2, 0.1, 0.45, 0.0]], dtype=np.float32
    )
    # peaks: 0.9, 0.6, 0.5, 0.3 -> top 2 are classes 0 and 1
    adjusted = power_adjust(probs, top_k=2, exponent=2.0)
    np.testing.assert_array_equal(adjusted[:, :2], probs[:, :2])
    np.testing.assert_allclose(adjusted[:, 2:], probs[:, 2:] ** 2, rtol=1e-6)
    assert (adjusted[:, 2:] <= probs[:, 2:]).all()
    before = probs.copy()
    power_adjust(probs, top_k=1, exponent=3.0)
    np.testing.assert_array_equal(probs, before)  # input untouched
    # off: k = 0, exponent 1, or k covering every class
    for top_k, exponent in [(0, 3.0), (2, 1.0), (4, 3.0)]:
        np.testing.assert_array_equal(power_adjust(probs, top_k, exponent), probs)


def test_smoothing_as_before():
    probs = np.random.default_rng(0).random((6, 3)).astype(np.float32)
    manual = probs.copy()
    manual[1:-1] = 0.6 * probs[1:-1] + 0.2 * (probs[:-2] + probs[2:])
    manual[0] = 0.8 * probs[0] + 0.2 * probs[1]
    manual[-1] = 0.8 * probs[-1] + 0.2 * probs[-2]
    np.testing.assert_allclose(smooth_windows(probs, 0.2), manual, atol=1e-6)
    assert smooth_windows(probs, 0.0) is probs
    assert smooth_windows(probs[:1], 0.2) is not None and len(smooth_windows(probs[:1], 0.2)) == 1


def test_postprocess_soundscape_smooths_then_adjusts():
    probs = np.random.default_rng(1).random((12, 5)).astype(np.float32)
    settings = postprocess_settings(
        {"postprocess": {"smoothing": 0.25, "power_adjust_top_k": 2, "power_adjust_exponent": 3.0}}
    )
    expected = power_adjust(smooth_windows(probs, 0.25), 2, 3.0)
    np.testing.assert_allclose(postprocess_soundscape(probs, settings), expected, atol=1e-7)


def test_postprocess_settings_defaults_and_bad_keys():
    assert postprocess_settings({}) == POSTPROCESS_DEFAULTS
    assert postprocess_settings({"postprocess": None}) == POSTPROCESS_DEFAULTS
    good = postprocess_settings(
        {"window_seconds": 5.0, "postprocess": {"tta_shift_seconds": 2.5, "power_adjust_top_k": 3}}
    )
    assert good["tta_shift_seconds"] == 2.5 and good["power_adjust_top_k"] == 3
    bad_values = {
        "tta_shift_seconds": [5.0, -1.0, "x"],
        "smoothing": [0.5, -0.1, float("nan"), "a lot"],
        "power_adjust_top_k": [-1, 2.5, True, "3"],
        "power_adjust_exponent": [0.5, float("inf"), "two"],
    }
    for key, values in bad_values.items():
        for value in values:
            with pytest.raises(ValueError, match=f"postprocess.{key}"):
                postprocess_settings({"window_seconds": 5.0, "postprocess": {key: value}})
    with pytest.raises(ValueError, match="unknown keys.*'median'"):
        postprocess_settings({"postprocess": {"median": 3, "smoothing": 0.1}})


SONOTYPE_CLASSES = ["47158son01", "1139490", "47158son02", "grekis", "47158son03", "9999son01", "son01",
                    "47158son", "x47158son04", "12son01"]


def test_sonotype_groups_only_stems_shared_by_two_or_more():
    # 9999son01 and 12son01 are alone in their stems; "son01", "47158son", "x47158son04" are no sonotypes
    assert sonotype_groups(SONOTYPE_CLASSES) == [[0, 2, 4]]
    assert sonotype_groups(["1son01", "2son01", "1son02", "2son7"]) == [[0, 2], [1, 3]]
    assert sonotype_groups(["amecro", "47158son01"]) == []


def test_pool_sonotypes_sets_each_member_to_its_groups_max_per_window():
    probs = np.array([
        [0.1, 0.9, 0.5, 0.2, 0.3, 0.7, 0.1, 0.2, 0.8, 0.4],
        [0.6, 0.0, 0.2, 0.3, 0.4, 0.1, 0.9, 0.3, 0.1, 0.5],
    ], dtype=np.float32)
    settings = postprocess_settings({"postprocess": {"sonotype_max_pool": True}})
    assert settings["sonotype_max_pool"] is True
    pooled = pool_sonotypes(probs, SONOTYPE_CLASSES, settings)
    expected = probs.copy()
    expected[0, [0, 2, 4]] = 0.5
    expected[1, [0, 2, 4]] = 0.6
    np.testing.assert_array_equal(pooled, expected)
    np.testing.assert_array_equal(probs[0, :3], np.float32([0.1, 0.9, 0.5]))  # the input is not changed
    assert pool_sonotypes(probs, SONOTYPE_CLASSES, POSTPROCESS_DEFAULTS) is probs  # off
    one = probs[:, 1:4]  # a stem with one sonotype in the class list: nothing to pool
    assert pool_sonotypes(one, ["1139490", "47158son02", "grekis"], settings) is one
    with pytest.raises(ValueError, match="one column per class"):
        pool_sonotypes(probs[:, :5], SONOTYPE_CLASSES, settings)
    for bad in (1, "yes", 0.0):
        with pytest.raises(ValueError, match="postprocess.sonotype_max_pool must be true or false"):
            postprocess_settings({"postprocess": {"sonotype_max_pool": bad}})


def test_the_ensemble_pools_sonotypes_and_keeps_its_tag_when_off():
    import pandas as pd
    from test_plan import plan_of, tags

    from birdclef.ensemble.definition import soundscape_predictions

    classes = ["47158son01", "1139490", "47158son02"]
    table = pd.DataFrame({"row_id": ["s_5", "s_10"], "soundscape": ["s", "s"], "end_s": [5, 10],
                          "47158son01": [0.2, 0.7], "1139490": [0.5, 0.1], "47158son02": [0.6, 0.3]})
    pooled = soundscape_predictions([table], [1.0], "mean", classes,
                                    postprocess_settings({"postprocess": {"sonotype_max_pool": True}}))
    np.testing.assert_allclose(pooled[classes].to_numpy(), [[0.6, 0.5, 0.6], [0.7, 0.1, 0.7]], rtol=1e-6)
    plain = soundscape_predictions([table], [1.0], "mean", classes, POSTPROCESS_DEFAULTS)
    np.testing.assert_allclose(plain[classes].to_numpy(), table[classes].to_numpy(), rtol=1e-6)
    before = tags(plan_of())
    assert tags(plan_of({"ensemble": {"postprocess": {"sonotype_max_pool": False}}})) == before
    on = plan_of({"ensemble": {"postprocess": {"sonotype_max_pool": True}}})
    assert on.ensemble_settings["postprocess"]["sonotype_max_pool"] is True
    assert tags(on)["ensemble"] != before["ensemble"] and tags(on)["train"] == before["train"]
