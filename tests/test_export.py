"""Export to OpenVINO (f32 / fp16 / int8) behind the accuracy gate, and the gate's windows.

Most tests use a one-mel-group ensemble; the two-group tests export members
trained on different mel settings (32 mels, hop 512 at 32 kHz and 24 mels,
hop 320 at 16 kHz) and check the gate's time-aligned windows. Inference on
the exported bundle is tested in test_inference.py; here only that
`birdclef.runtime.inference` imports without torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import openvino as ov
import pandas as pd
import pytest
import soundfile as sf
import torch
from teacher_standin import build_perch_standin, standin_names, write_perch_labels

import birdclef.export.ensemble
import birdclef.export.member
import birdclef.export.teacher
from birdclef.common.metrics import macro_roc_auc
from birdclef.export import (
    MAX_EVAL_WINDOWS,
    ExportGateError,
    cache_windows,
    export_ensemble,
    export_stage,
    gate_targets,
    gate_windows,
    window_frames,
)
from birdclef.export.teacher_windows import audio_windows
from birdclef.runtime import features
from birdclef.runtime.features import mel_filterbank
from birdclef.train.model import InferenceWrapper, build_model, load_model, save_checkpoint

SRC = Path(__file__).resolve().parents[1] / "src"
CLASSES = ["sp01", "sp02", "sp03", "sp04"]
MEL = {
    "sample_rate": 32000,
    "n_fft": 1024,
    "hop_length": 512,
    "n_mels": 32,
    "fmin": 50,
    "fmax": 14000,
    "top_db": 80,
}
# A second mel configuration: another sample rate, n_fft, hop and band count.
MEL_B = {
    "sample_rate": 16000,
    "n_fft": 512,
    "hop_length": 320,
    "n_mels": 24,
    "fmin": 50,
    "fmax": 8000,
    "top_db": 80,
}
F32 = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2}


def synthetic_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, n_classes) binary labels; every class has positives and negatives."""
    labels = rng.random((n, len(CLASSES))) < 0.4
    labels[0], labels[1] = True, False
    return labels.astype(np.float32)


def group_mels(rng: np.random.Generator, labels: np.ndarray, mel: dict = MEL) -> np.ndarray:
    """Log-mel-like windows of mel settings `mel`: noise floor plus a band of energy per present class."""
    frames = features.window_frames(mel, 5.0)
    n_mels = mel["n_mels"]
    mels = rng.normal(-60.0, 6.0, size=(len(labels), 1, n_mels, frames)).astype(np.float32)
    for i, row in enumerate(labels):
        for k in np.flatnonzero(row):
            band, start = 4 + k * (n_mels - 8) // len(CLASSES), rng.integers(0, frames - 60)
            mels[i, 0, band : band + 4, start : start + 60] += 30.0
    return mels


def synthetic_mels(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` windows of `MEL` and their labels."""
    labels = synthetic_labels(rng, n)
    return group_mels(rng, labels), labels


def make_model(backbone: str, seed: int, mels: np.ndarray):
    """A tiny model whose outputs vary with the input (BN statistics set on data).

    test_efficientnet rather than lcnet_050: a randomly initialised lcnet_050
    has near-degenerate features that int8 cannot represent (a briefly trained
    one kept 0.898 of 0.902 AUC), which would make the int8-vs-f32 check meaningless.
    """
    torch.manual_seed(seed)
    spec = {"backbone": backbone, "n_classes": len(CLASSES), "pretrained": False}
    model = build_model(spec)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
            module.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(mels))
        model.head.cla.weight.mul_(20.0)
    model.eval()
    return model, spec


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two checkpoints, an ensemble definition, calibration and evaluation windows."""
    root = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    calibration, _ = synthetic_mels(rng, 24)
    eval_mels, eval_targets = synthetic_mels(rng, 48)
    members = []
    for index, (backbone, weight) in enumerate(
        [("test_efficientnet", 0.7), ("test_efficientnet", 0.3)]
    ):
        model, spec = make_model(backbone, index, calibration)
        path = root / "train" / f"m{index}" / "best.pt"
        save_checkpoint(path, model, spec, classes=CLASSES)
        members.append(
            {
                "name": f"{backbone}-r1/fold{index}",
                "checkpoint": str(path),
                "weight": weight,
                "mel_group": 0,
            }
        )
    ensemble = {
        "classes": CLASSES,
        "window_seconds": 5.0,
        "mel_groups": [{"tag": "mels-a", **MEL}],
        "members": members,
    }
    return {
        "root": root,
        "ensemble": ensemble,
        "calibration": calibration,
        "eval_mels": eval_mels,
        "eval_targets": eval_targets,
    }


def torch_ensemble(ensemble: dict, mels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Weighted mean of the members' torch fp32 probabilities, and each member's."""
    members = []
    with torch.no_grad():
        for member in ensemble["members"]:
            model, _ = load_model(member["checkpoint"])
            members.append(InferenceWrapper(model).eval()(torch.from_numpy(mels)).numpy())
    weights = np.array([m["weight"] for m in ensemble["members"]])
    mean = sum(w * p for w, p in zip(weights / weights.sum(), members, strict=True))
    return mean, members


@pytest.fixture(scope="module")
def f32_bundle(setup):
    """An f32 export with the accuracy gate data."""
    out = setup["root"] / "bundle_f32"
    report = export_ensemble(
        setup["ensemble"],
        out,
        setup["calibration"],
        precision="f32",
        eval_mels=setup["eval_mels"],
        eval_targets=setup["eval_targets"],
    )
    return out, report


@pytest.fixture(scope="module")
def int8_bundle(setup):
    """An int8 export with the accuracy gate data (a loose threshold: random models)."""
    out = setup["root"] / "bundle_int8"
    report = export_ensemble(
        setup["ensemble"],
        out,
        setup["calibration"],
        precision="int8",
        calibration_size=16,
        eval_mels=setup["eval_mels"],
        eval_targets=setup["eval_targets"],
        max_auc_drop=0.5,
    )
    return out, report


def test_f32_ir_matches_torch(setup, f32_bundle):
    out, report = f32_bundle
    mels = setup["eval_mels"]
    _, torch_members = torch_ensemble(setup["ensemble"], mels)
    core = ov.Core()
    for index, expected in enumerate(torch_members):
        xml = out / "members" / str(index) / "model_f32.xml"
        compiled = core.compile_model(xml, "CPU", F32)
        assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
        got = compiled(mels)[0]
        assert got.shape == (len(mels), len(CLASSES))
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
        # dynamic batch: a single window works too
        np.testing.assert_allclose(compiled(mels[:1])[0], expected[:1], atol=1e-4, rtol=0)
    assert report["precision"] == "f32"
    assert report["gate"]["status"] == "not applicable"
    assert set(report["auc"]) == {"torch_fp32", "openvino_f32"}
    assert report["auc"]["torch_fp32"] == pytest.approx(report["auc"]["openvino_f32"], abs=1e-3)
    assert report["ir_bytes_total"]["f32"] > 0
    assert not list(out.glob("members/*/model_int8.xml"))


def test_bundle_json_is_relative_and_complete(setup, int8_bundle):
    out, report = int8_bundle
    bundle = json.loads((out / "bundle.json").read_text())
    assert bundle["precision"] == "int8" == report["precision"]
    assert bundle["classes"] == CLASSES
    assert "mel" not in bundle and "mel_filterbank" not in bundle
    assert bundle["mel_groups"] == [
        {"tag": "mels-a", **MEL, "filterbank": "mel_filterbank_0.npy", "window_frames": 313}
    ]
    assert report["window_frames"] == [313] and report["calibration_windows"] == [16]
    assert bundle["window_seconds"] == 5.0
    assert bundle["inference_precision_hint"] == "f32"
    for index, member in enumerate(bundle["members"]):
        assert member["ir"] == f"members/{index}/model_int8.xml"
        assert not os.path.isabs(member["ir"])
        assert (out / member["ir"]).exists() and (out / member["ir"]).with_suffix(".bin").exists()
        assert member["weight"] == setup["ensemble"]["members"][index]["weight"]
        assert member["mel_group"] == 0 == report["members"][index]["mel_group"]
    filterbank = np.load(out / "mel_filterbank_0.npy")
    np.testing.assert_array_equal(filterbank, mel_filterbank(MEL))


def test_int8_close_to_f32_and_gate_reported(setup, int8_bundle):
    out, report = int8_bundle
    mels = setup["eval_mels"]
    core = ov.Core()
    for index in range(2):
        member_dir = out / "members" / str(index)
        f32 = core.compile_model(member_dir / "model_f32.xml", "CPU", F32)(mels)[0]
        int8 = core.compile_model(member_dir / "model_int8.xml", "CPU", F32)(mels)[0]
        assert np.all((int8 >= 0) & (int8 <= 1))
        # int8 kernels differ between CPUs (VNNI or AVX2 only): on an AVX2-only AMD EPYC these random-weight
        # members measured a mean gap of 0.0515 and a correlation of 0.93-0.96; the accuracy gate is tested below
        assert np.abs(int8 - f32).mean() < 0.08
        assert np.corrcoef(int8.ravel(), f32.ravel())[0, 1] > 0.9
        quantized = core.read_model(member_dir / "model_int8.xml")
        types = [op.get_type_name() for op in quantized.get_ops()]
        assert types.count("FakeQuantize") > 5
        # the per-example standardisation stays f32: no quantizer right on the input
        consumers = quantized.get_parameters()[0].output(0).get_target_inputs()
        assert "FakeQuantize" not in {c.get_node().get_type_name() for c in consumers}
        sizes = report["members"][index]["ir_bytes"]
        assert sizes["int8"] < sizes["f32"]
    auc = report["auc"]
    assert set(auc) == {"torch_fp32", "openvino_f32", "openvino_int8"}
    assert all(0.0 <= value <= 1.0 for value in auc.values())
    assert "f32" in report["auc_precision"]["openvino_int8"]
    gate = report["gate"]
    assert gate["status"] == "passed"
    assert gate["drop"] == pytest.approx(auc["openvino_f32"] - auc["openvino_int8"], abs=2e-6)
    assert set(gate["member_drops"]) == {m["name"] for m in setup["ensemble"]["members"]}
    for entry in report["members"]:
        assert set(entry["auc"]) == set(auc)
        assert entry["clips_per_second"]["openvino_int8"] > 0
    assert report["seconds"] > 0


def one_member(setup) -> dict:
    """The ensemble cut to its first member (faster exports for the gate-path tests)."""
    return {**setup["ensemble"], "members": setup["ensemble"]["members"][:1]}


def test_gate_failure_raises_and_writes_nothing(setup):
    out = setup["root"] / "bundle_fail"
    with pytest.raises(ExportGateError) as caught:
        export_ensemble(
            one_member(setup),
            out,
            setup["calibration"],
            precision="int8",
            calibration_size=8,
            eval_mels=setup["eval_mels"],
            eval_targets=setup["eval_targets"],
            max_auc_drop=-1.0,
        )
    assert "max_auc_drop=-1.0" in str(caught.value)
    assert caught.value.report["gate"]["status"] == "failed"
    assert "openvino_int8" in caught.value.report["auc"]
    assert not out.exists()


def test_gate_failure_fallbacks(setup):
    out = setup["root"] / "bundle_fallback"
    report = export_ensemble(
        one_member(setup),
        out,
        setup["calibration"],
        precision="int8",
        calibration_size=8,
        eval_mels=setup["eval_mels"],
        eval_targets=setup["eval_targets"],
        max_auc_drop=-1.0,
        on_gate_fail="fp16",
    )
    assert report["precision"] == "fp16" and report["requested_precision"] == "int8"
    assert report["gate"]["fallback"]["precision"] == "fp16"
    assert "openvino_fp16" in report["auc"] and report["warnings"]
    bundle = json.loads((out / "bundle.json").read_text())
    assert bundle["precision"] == "fp16"
    assert [m["ir"] for m in bundle["members"]] == ["members/0/model_fp16.xml"]
    assert all((out / m["ir"]).exists() for m in bundle["members"])
    assert not list(out.glob("members/*/model_int8.*"))  # the bundle ships what it loads

    out = setup["root"] / "bundle_warn"
    report = export_ensemble(
        one_member(setup),
        out,
        setup["calibration"],
        precision="int8",
        calibration_size=8,
        eval_mels=setup["eval_mels"],
        eval_targets=setup["eval_targets"],
        max_auc_drop=-1.0,
        on_gate_fail="warn",
    )
    assert report["precision"] == "int8" and report["gate"]["status"] == "failed"
    assert report["warnings"]
    assert json.loads((out / "bundle.json").read_text())["precision"] == "int8"


def test_export_rejects_bad_input(setup, tmp_path):
    with pytest.raises(ValueError, match=r"calibration_mels\[0\] must have shape"):
        export_ensemble(setup["ensemble"], tmp_path / "b", setup["calibration"][:, :, :16])
    with pytest.raises(ValueError, match="precision"):
        export_ensemble(setup["ensemble"], tmp_path / "b", setup["calibration"], precision="int4")
    wrong = {**setup["ensemble"], "classes": CLASSES[:3]}
    with pytest.raises(ValueError, match="outputs"):
        export_ensemble(wrong, tmp_path / "b", setup["calibration"], precision="f32")
    old_format = {k: v for k, v in setup["ensemble"].items() if k != "mel_groups"} | {"mel": MEL}
    with pytest.raises(ValueError, match="lacks 'mel_groups'.*rerun the ensemble stage"):
        export_ensemble(old_format, tmp_path / "b", setup["calibration"])
    member = setup["ensemble"]["members"][0]
    pair = {**setup["ensemble"], "mel_groups": [{"tag": "a", **MEL}, {"tag": "b", **MEL_B}]}
    with pytest.raises(ValueError, match=r"mel_groups \[1\] are used by no member"):
        export_ensemble(pair, tmp_path / "b", [setup["calibration"]] * 2)
    for bad in (2, None, "0"):
        broken = {**setup["ensemble"], "members": [{**member, "mel_group": bad}]}
        with pytest.raises(ValueError, match="mel_group"):
            export_ensemble(broken, tmp_path / "b", setup["calibration"])
    pair["members"] = [member, {**member, "mel_group": 1}]
    with pytest.raises(ValueError, match="calibration_mels must be a list of 2 arrays"):
        export_ensemble(pair, tmp_path / "b", setup["calibration"])
    with pytest.raises(ValueError, match="calibration_mels has 1 arrays, expected 2"):
        export_ensemble(pair, tmp_path / "b", [setup["calibration"]])
    with pytest.raises(ValueError, match=r"calibration_mels\[1\] must have shape \(N, 1, 24, 251\)"):
        export_ensemble(pair, tmp_path / "b", [setup["calibration"]] * 2)
    assert not (tmp_path / "b").exists()


def test_member_trained_on_another_mel_group_is_rejected(setup, tmp_path):
    """A checkpoint that records its training windows must match its mel group's."""
    model, payload = load_model(setup["ensemble"]["members"][0]["checkpoint"])
    path = tmp_path / "hop320.pt"
    save_checkpoint(path, model, payload["spec"], classes=CLASSES, window_frames=251,
                    frames_per_second=50.0)
    member = {"name": "b", "checkpoint": str(path), "weight": 1.0, "mel_group": 0}
    with pytest.raises(ValueError, match=r"'b' .*mel_group 0: trained on 251-frame windows.*313"):
        export_ensemble({**setup["ensemble"], "members": [member]}, tmp_path / "b",
                        setup["calibration"], precision="f32")
    save_checkpoint(path, model, payload["spec"], classes=CLASSES, window_frames=313,
                    frames_per_second=50.0)
    with pytest.raises(ValueError, match="trained at 50 frames per second.*62.5"):
        export_ensemble({**setup["ensemble"], "members": [member]}, tmp_path / "b",
                        setup["calibration"], precision="f32")
    assert not (tmp_path / "b").exists()


@pytest.fixture(scope="module")
def two_groups(setup):
    """An ensemble over two mel groups (MEL, MEL_B), members listed group 1 first, and its data.

    Window i of both groups' eval windows carries the same labels (one
    recording, one span of time), as `gate_windows` delivers them.
    """
    rng = np.random.default_rng(1)
    calibration_b = group_mels(rng, synthetic_labels(rng, 16), MEL_B)
    model, spec = make_model("test_efficientnet", 5, calibration_b)
    path = setup["root"] / "train" / "mel_b" / "best.pt"
    save_checkpoint(path, model, spec, classes=CLASSES, window_frames=251, frames_per_second=50.0)
    labels = synthetic_labels(rng, 40)
    first = setup["ensemble"]["members"][0]
    ensemble = {
        "classes": CLASSES,
        "window_seconds": 5.0,
        "mel_groups": [{"tag": "mels-a", **MEL}, {"tag": "mels-b", **MEL_B}],
        "members": [
            {"name": "b/fold0", "checkpoint": str(path), "weight": 0.4, "mel_group": 1},
            {**first, "weight": 0.6, "mel_group": 0},
        ],
    }
    out = setup["root"] / "bundle_two_groups"
    calibration = [setup["calibration"], calibration_b]
    eval_mels = [group_mels(rng, labels, MEL), group_mels(rng, labels, MEL_B)]
    report = export_ensemble(
        ensemble,
        out,
        calibration,
        precision="int8",
        calibration_size=8,
        eval_mels=eval_mels,
        eval_targets=labels,
        max_auc_drop=0.5,
    )
    return {"ensemble": ensemble, "out": out, "report": report, "labels": labels,
            "calibration": calibration, "eval_mels": eval_mels}


def test_two_mel_groups_export(two_groups):
    """One filterbank per group; each member converted, quantized and scored on its own group."""
    out, report = two_groups["out"], two_groups["report"]
    bundle = json.loads((out / "bundle.json").read_text())
    assert bundle["mel_groups"] == [
        {"tag": "mels-a", **MEL, "filterbank": "mel_filterbank_0.npy", "window_frames": 313},
        {"tag": "mels-b", **MEL_B, "filterbank": "mel_filterbank_1.npy", "window_frames": 251},
    ]
    assert sorted(p.name for p in out.glob("*.npy")) == ["mel_filterbank_0.npy", "mel_filterbank_1.npy"]
    for group, mel, shape in [(0, MEL, (32, 513)), (1, MEL_B, (24, 257))]:
        filterbank = np.load(out / f"mel_filterbank_{group}.npy")
        assert filterbank.shape == shape
        np.testing.assert_array_equal(filterbank, mel_filterbank(mel))
    assert [m["mel_group"] for m in bundle["members"]] == [1, 0]
    assert [m["mel_group"] for m in report["members"]] == [1, 0]
    assert report["window_frames"] == [313, 251] == window_frames(two_groups["ensemble"])
    assert report["calibration_windows"] == [8, 8]
    core = ov.Core()
    for member, shape in zip(bundle["members"], [(24, 251), (32, 313)], strict=True):
        for ir in (member["ir"], member["ir_f32"]):
            dims = core.read_model(out / ir).inputs[0].get_partial_shape()
            assert dims[1:].to_shape() == ov.Shape([1, *shape])
    assert report["gate"]["status"] == "passed" and report["eval_windows"] == 40

    # The ensemble AUC combines each member's probabilities on its own group's windows, window by window.
    labels = two_groups["labels"]
    eval_mels = two_groups["eval_mels"]
    probs = {}
    for run in ("f32", "int8"):
        probs[run] = [
            core.compile_model(out / f"members/{i}/model_{run}.xml", "CPU", F32)(eval_mels[g])[0]
            for i, g in enumerate([1, 0])
        ]
        expected = macro_roc_auc(labels, 0.4 * probs[run][0] + 0.6 * probs[run][1])
        assert report["auc"][f"openvino_{run}"] == pytest.approx(expected, abs=1e-5)
        for entry, member_probs in zip(report["members"], probs[run], strict=True):
            assert entry["auc"][f"openvino_{run}"] == pytest.approx(
                macro_roc_auc(labels, member_probs), abs=1e-5
            )
    # fed its group's windows, each int8 member stays close to its f32 IR
    for f32, int8 in zip(probs["f32"], probs["int8"], strict=True):  # 0.934 on an AVX2-only AMD EPYC
        assert np.corrcoef(int8.ravel(), f32.ravel())[0, 1] > 0.9
    with pytest.raises(ValueError, match="eval_mels have \\[40, 39\\] windows per mel group"):
        export_ensemble(two_groups["ensemble"], out.parent / "misaligned", two_groups["calibration"],
                        precision="f32", eval_mels=[eval_mels[0], eval_mels[1][:-1]],
                        eval_targets=labels)


def cache_frames(seconds: float, mel: dict) -> int:
    """Frames the mel cache holds for `seconds` of audio (centred frames)."""
    return 1 + int(round(seconds * mel["sample_rate"])) // mel["hop_length"]


def brute_force_count(frames: int, mel: dict) -> int:
    """Windows k whose start round(k * 5 s * rate / hop) leaves a whole window in `frames`."""
    step, size = 5.0 * mel["sample_rate"] / mel["hop_length"], features.window_frames(mel, 5.0)
    return sum(1 for k in range(1000) if int(k * step + 0.5) + size <= frames)


def test_gate_windows_are_aligned_across_mel_groups():
    """Window k starts at k * 5 s in every group; a recording gets the fewest whole windows of any group."""
    # Group A caches every recording whole; group B caches at most 15 s, lists rows in
    # another order, lacks e.ogg and has f.ogg that A lacks.
    seconds_a = {"a.ogg": 26.0, "b.ogg": 26.0, "c.ogg": 3.0, "d.ogg": 26.0, "e.ogg": 26.0,
                 "g.ogg": 19.5, "h.ogg": 14.7}
    seconds_b = {"h.ogg": 14.7, "g.ogg": 19.5, "f.ogg": 30.0, "d.ogg": 26.0, "c.ogg": 3.0,
                 "b.ogg": 15.0, "a.ogg": 26.0}

    def index_of(seconds: dict, mel: dict) -> pd.DataFrame:
        frames = np.array([cache_frames(s, mel) for s in seconds.values()])
        return pd.DataFrame({"filename": list(seconds), "primary_label": "sp01",
                             "secondary_labels": [[] for _ in seconds],
                             "offset": np.cumsum(frames) - frames, "frames": frames})

    index_a, index_b = index_of(seconds_a, MEL), index_of(seconds_b, MEL_B)
    folds = pd.DataFrame({"filename": ["a.ogg", "b.ogg", "c.ogg", "d.ogg", "e.ogg", "f.ogg",
                                       "g.ogg", "h.ogg"], "fold": [0, 1, 0, -1, 1, 0, 1, 0]})
    rows, starts = gate_windows([index_a, index_b], folds, [MEL, MEL_B], 5.0)
    assert all(r.dtype == np.int64 for r in rows) and all(s.dtype == np.int64 for s in starts)
    names_a = index_a["filename"].to_numpy()[rows[0]]
    np.testing.assert_array_equal(names_a, index_b["filename"].to_numpy()[rows[1]])
    # validated (not d), in both indexes (not e, f), in group A's order; the fewest windows of
    # either group: a 5 (26 s), b 3 (B holds 15 s), c 1 (shorter than a window), g 3, h 2
    expected = {"a.ogg": 5, "b.ogg": 3, "c.ogg": 1, "g.ogg": 3, "h.ogg": 2}
    assert names_a.tolist() == [name for name, n in expected.items() for _ in range(n)]
    for name, n in expected.items():
        counts = [brute_force_count(int(index.loc[index["filename"] == name, "frames"].iloc[0]), mel)
                  for index, mel in ((index_a, MEL), (index_b, MEL_B))]
        assert max(1, min(counts)) == n, name
    k = np.concatenate([np.arange(n) for n in expected.values()])
    np.testing.assert_array_equal(starts[0], np.floor(k * 312.5 + 0.5).astype(np.int64))
    np.testing.assert_array_equal(starts[1], k * 250)
    # the same time in both groups: frame centres at k * 5 s (A within half a frame)
    np.testing.assert_allclose(starts[0] * 512 / 32000, k * 5.0, atol=0.5 * 512 / 32000)
    np.testing.assert_array_equal(starts[1] * 320 / 16000, k * 5.0)
    # every window is whole in its group's cache, except c's (shorter than a window)
    for index, mel, r, s in ((index_a, MEL, rows[0], starts[0]), (index_b, MEL_B, rows[1], starts[1])):
        whole = s + features.window_frames(mel, 5.0) <= index["frames"].to_numpy()[r]
        assert whole[names_a != "c.ogg"].all() and not whole[names_a == "c.ogg"].any()

    # the cap picks the same windows in every group
    capped_rows, capped_starts = gate_windows([index_a, index_b], folds, [MEL, MEL_B], 5.0, max_windows=4)
    pick = np.linspace(0, len(k) - 1, 4).round().astype(np.int64)
    for g in (0, 1):
        np.testing.assert_array_equal(capped_rows[g], rows[g][pick])
        np.testing.assert_array_equal(capped_starts[g], starts[g][pick])
    # one group: the same time-based starts
    one_rows, one_starts = gate_windows([index_a], folds, [MEL], 5.0)
    assert index_a["filename"].to_numpy()[one_rows[0]].tolist().count("e.ogg") == 5
    assert one_starts[0][:5].tolist() == [0, 313, 625, 938, 1250]
    with pytest.raises(ValueError, match="one index per mel group"):
        gate_windows([index_a], folds, [MEL, MEL_B], 5.0)
    duplicated = pd.concat([index_b, index_b.iloc[:1]], ignore_index=True)
    with pytest.raises(ValueError, match="mel group 1 lists 'h.ogg' more than once"):
        gate_windows([index_a, duplicated], folds, [MEL, MEL_B], 5.0)


def test_gate_targets_and_cache_windows():
    """Each gate window gets its recording's labels; windows past a recording's end are padded."""
    index = pd.DataFrame(
        {
            "filename": ["a.ogg", "b.ogg", "c.ogg", "d.ogg", "e.ogg"],
            "primary_label": ["sp01", "sp02", "sp03", "sp01", "sp04"],
            "secondary_labels": [[], ["sp03", "not_a_class"], [], ["sp02"], ["sp01"]],
            "offset": [0, 250, 349, 389, 519],
            "frames": [250, 99, 40, 130, 100],
        }
    )
    rows = np.array([0, 0, 0, 0, 0, 1, 2])
    starts = np.array([0, 50, 100, 150, 200, 0, 0])
    targets = gate_targets(index, rows, CLASSES)
    expected = {0: [1, 0, 0, 0], 1: [0, 1, 1, 0], 2: [0, 0, 1, 0]}
    np.testing.assert_array_equal(targets, np.array([expected[r] for r in rows], np.float32))
    assert targets.dtype == np.float32
    # The windows cut from the cache: c's is zero-padded with its minimum.
    mels = np.arange(519 * 2, dtype=np.float32).reshape(519, 2)
    windows = cache_windows(mels, index, starts, rows, 50)
    assert windows.shape == (7, 1, 2, 50)
    np.testing.assert_array_equal(windows[1, 0], mels[50:100].T)
    np.testing.assert_array_equal(windows[5, 0], mels[250:300].T)
    np.testing.assert_array_equal(windows[6, 0, :, :40], mels[349:389].T)
    assert (windows[6, 0, :, 40:] == mels[349:389].min()).all()
    assert MAX_EVAL_WINDOWS == 4096
    # Nothing validated: no windows, no targets.
    folds = pd.DataFrame({"filename": index["filename"], "fold": -1})
    none_rows, none_starts = gate_windows([index], folds, [MEL], 5.0)
    assert none_rows[0].size == none_starts[0].size == 0
    assert gate_targets(index, none_rows[0], CLASSES).shape == (0, len(CLASSES))


STAGE_SECONDS = {"r0.ogg": 12.0, "r1.ogg": 7.0, "r2.ogg": 3.0, "r3.ogg": 16.0, "r4.ogg": 11.0}
STAGE_LABELS = ["sp01", "sp02", "sp03", "sp04", "sp01"]


def stage_inputs(two_groups: dict, tmp_path: Path) -> tuple[dict[str, list[str]], dict]:
    """The export stage's inputs for `two_groups`: per group a mel cache and index of five recordings
    (`STAGE_SECONDS`, r4 not validated), folds, the ensemble definition; (cache paths, stage kwargs)."""
    rng = np.random.default_rng(3)
    seconds, labels = STAGE_SECONDS, STAGE_LABELS
    paths: dict[str, list[str]] = {"mels": [], "index": []}
    for g, mel in enumerate((MEL, MEL_B)):
        order = list(seconds) if g == 0 else list(seconds)[::-1]
        frames = np.array([cache_frames(seconds[name], mel) for name in order])
        cache = rng.normal(-50, 10, size=(int(frames.sum()), mel["n_mels"])).astype(np.float16)
        np.save(tmp_path / f"mels{g}.npy", cache)
        pd.DataFrame({
            "filename": order,
            "primary_label": [labels[list(seconds).index(name)] for name in order],
            "secondary_labels": [[] for _ in order],
            "offset": np.cumsum(frames) - frames,
            "frames": frames,
        }).to_parquet(tmp_path / f"index{g}.parquet")
        paths["mels"].append(str(tmp_path / f"mels{g}.npy"))
        paths["index"].append(str(tmp_path / f"index{g}.parquet"))
    pd.DataFrame({"filename": list(seconds), "fold": [0, 1, 0, 1, -1]}).to_parquet(tmp_path / "folds.parquet")
    (tmp_path / "ensemble.json").write_text(json.dumps(two_groups["ensemble"]))
    settings = {"precision": "f32", "calibration_size": 6, "preset": "performance",
                "max_auc_drop": 0.01, "on_gate_fail": "fail"}
    kwargs = dict(ensemble_path=str(tmp_path / "ensemble.json"), folds_path=str(tmp_path / "folds.parquet"),
                  out_bundle=str(tmp_path / "export/bundle.json"),
                  out_manifest=str(tmp_path / "export/manifest.json"), settings=settings, tag="t",
                  upstream={"ensemble": "e"})
    return paths, kwargs


def test_export_stage_two_mel_groups(two_groups, tmp_path):
    """The stage reads one mel cache and index per group and gates on aligned windows."""
    paths, kwargs = stage_inputs(two_groups, tmp_path)
    report = export_stage(mels_paths=paths["mels"], index_paths=paths["index"], **kwargs)
    # r0 2 windows, r1 1, r2 1 (short), r3 3; r4 is not validated
    assert report["eval_windows"] == 7 and report["window_frames"] == [313, 251]
    assert report["calibration_windows"] == [0, 0]  # f32: no calibration
    manifest = json.loads((tmp_path / "export/manifest.json").read_text())
    assert manifest["headline"]["window_frames"] == [313, 251]
    assert {Path(i["path"]).name for i in manifest["inputs"]} >= {"index0.parquet", "index1.parquet"}
    bundle = json.loads((tmp_path / "export/bundle.json").read_text())
    assert [g["filterbank"] for g in bundle["mel_groups"]] == ["mel_filterbank_0.npy", "mel_filterbank_1.npy"]
    assert all((tmp_path / "export" / g["filterbank"]).exists() for g in bundle["mel_groups"])

    # the teacher in the blend: its entry is added after the students' export and gate
    taxonomy = tmp_path / "taxonomy.csv"
    pd.DataFrame({"primary_label": CLASSES, "scientific_name": [
        "Turdus merula", "Parus major", "Insecta sp.", "Erithacus rubecula"]}).to_csv(taxonomy, index=False)
    teacher = {"model": "birdnet", "model_path": None, "labels_path": None, "runtime": "auto",
               "precision_hint": "f32", "genus_fallback": False, "weight": 0.25}
    blend = {**kwargs, "out_bundle": str(tmp_path / "blend/bundle.json"),
             "out_manifest": str(tmp_path / "blend/manifest.json")}
    report = export_stage(mels_paths=paths["mels"], index_paths=paths["index"], teacher=teacher,
                          taxonomy_csv=str(taxonomy), **blend)
    assert report["teacher"] == {"kind": "birdnet", "runtime": "openvino", "precision": "f32", "weight": 0.25,
                                 "classes_mapped": 3, "compiled": True}
    entry = json.loads((tmp_path / "blend/bundle.json").read_text())["teacher"]
    # BirdNET: never copied; compiled into the ensemble model, built from the wheel's file as the bundle loads
    assert (entry["ir"], entry["labels"], entry["weight"], entry["precision"]) == (None, None, 0.25, "f32")
    assert entry["gate_status"].startswith("not applicable: BirdNET is built at f32")
    assert len(entry["mapping"]) == 4 and entry["mapping"][2] == [] and not (tmp_path / "blend/teacher").exists()
    manifest = json.loads((tmp_path / "blend/manifest.json").read_text())
    assert manifest["headline"]["teacher"] == report["teacher"] and manifest["settings"]["teacher"] == teacher
    assert report["gate"] == json.loads((tmp_path / "export/manifest.json").read_text())["headline"]["gate"]
    with pytest.raises(ValueError, match="needs taxonomy_csv"):
        export_stage(mels_paths=paths["mels"], index_paths=paths["index"], teacher=teacher, **blend)

    with pytest.raises(ValueError, match=r"ensemble.json has 2 mel groups \(\['mels-a', 'mels-b'\]\).*1 mel caches"):
        export_stage(mels_paths=paths["mels"][:1], index_paths=paths["index"][:1], **kwargs)
    with pytest.raises(ValueError, match=r"mels1.npy: mel cache of shape .*mel_groups\[0\]"):
        export_stage(mels_paths=paths["mels"][::-1], index_paths=paths["index"], **kwargs)
    with pytest.raises(TypeError, match="lists of paths"):
        export_stage(mels_paths=paths["mels"][0], index_paths=paths["index"], **kwargs)


def test_export_stage_compiles_an_onnx_perch_gated_on_the_recordings_audio(two_groups, tmp_path, monkeypatch):
    """An ONNX Perch in the blend: the stage decodes the cached recordings' audio (the VAD catalog) for the
    teacher's int8 calibration and its gate on the students' gate windows, and ships its IR."""
    paths, kwargs = stage_inputs(two_groups, tmp_path)
    audio = tmp_path / "clean"
    audio.mkdir()
    for name, seconds in STAGE_SECONDS.items():  # each second's samples hold the second's number / 100
        wave = (np.floor(np.arange(int(seconds * 32000)) / 32000) / 100).astype(np.float32)
        sf.write(audio / f"{name}.flac", wave, 32000, subtype="PCM_16")
    catalog = tmp_path / "catalog.parquet"
    pd.DataFrame({"filename": list(STAGE_SECONDS), "audio_path": [str(audio / f"{n}.flac") for n in STAGE_SECONDS],
                  "primary_label": STAGE_LABELS}).to_parquet(catalog)
    build_perch_standin(tmp_path / "perch.onnx", seed=3)
    names = standin_names()
    names[0], names[9], names[15] = "Turdus merula", "Parus major", "Erithacus rubecula"
    write_perch_labels(tmp_path / "labels.csv", names)
    taxonomy = tmp_path / "taxonomy.csv"
    pd.DataFrame({"primary_label": CLASSES, "scientific_name": [
        "Turdus merula", "Parus major", "Insecta sp.", "Erithacus rubecula"]}).to_csv(taxonomy, index=False)
    teacher = {"model": "perch", "model_path": str(tmp_path / "perch.onnx"), "labels_path": str(tmp_path / "labels.csv"),
               "runtime": "auto", "precision_hint": "f32", "genus_fallback": False, "weight": 0.25}
    seen = []
    real = birdclef.export.teacher.write_teacher
    monkeypatch.setattr(birdclef.export.ensemble, "write_teacher",
                        lambda *args, **kw: (seen.append(kw["audio"]), real(*args, **kw))[1])
    monkeypatch.setattr(birdclef.export.member, "_quantize", lambda model, *args: model)  # students: fast
    settings = {**kwargs["settings"], "precision": "int8", "max_auc_drop": 1.0}
    report = export_stage(mels_paths=paths["mels"], index_paths=paths["index"], teacher=teacher,
                          taxonomy_csv=str(taxonomy), catalog_path=str(catalog), **{**kwargs, "settings": settings})
    (used,) = seen
    # calibration: min(calibration_size 6, 4 x 5 recordings) random 5 s windows inside the cached seconds
    assert used.calibration.shape == (6, 160000)
    firsts = np.round(used.calibration[:, 0] * 100)  # the second each window starts in
    assert all(0 <= f <= 11 for f in firsts)
    # the gate: the students' 7 gate windows (r0 2, r1 1, r2 1, r3 3) from k x 5 s, with their targets
    assert used.eval_windows.shape == (7, 160000)
    np.testing.assert_allclose(used.eval_windows[:, 0] * 100, [0, 5, 0, 0, 0, 5, 10], atol=0.01)
    assert not used.eval_windows[3, 3 * 32000 + 10:].any()  # r2 is 3 s: zero-padded
    assert used.eval_targets.argmax(1).tolist() == [0, 0, 1, 2, 3, 3, 3]
    gate = report["teacher"]["gate"]
    assert gate["status"] == "passed" and gate["eval_windows"] == 7 and gate["calibration_windows"] == 6
    assert gate["classes_scored"] == 3 and report["teacher"]["precision"] == "int8"
    entry = json.loads((tmp_path / "export/bundle.json").read_text())["teacher"]
    assert entry["ir"] == "teacher/model_int8.xml" and not list((tmp_path / "export/teacher").glob("*.onnx"))
    manifest = json.loads((tmp_path / "export/manifest.json").read_text())
    assert manifest["headline"]["teacher"]["gate"]["status"] == "passed"
    assert str(catalog) in {i["path"] for i in manifest["inputs"]}
    # without the catalog an int8 export ships the teacher at f32
    report = export_stage(mels_paths=paths["mels"], index_paths=paths["index"], teacher=teacher,
                          taxonomy_csv=str(taxonomy), **{**kwargs, "settings": settings,
                                                         "out_bundle": str(tmp_path / "nocat/bundle.json"),
                                                         "out_manifest": str(tmp_path / "nocat/manifest.json")})
    assert seen[-1] is None and report["teacher"]["gate"]["status"] == "not run"


def test_teacher_audio_windows(tmp_path):
    """`audio_windows` decodes each file once, zero-pads past its end and leaves out undecodable files."""
    path = tmp_path / "a.flac"
    sf.write(path, (np.arange(7 * 8000) / (7 * 8000) / 2).astype(np.float32), 8000, subtype="PCM_16")
    windows, kept = audio_windows([str(path), str(tmp_path / "missing.flac"), str(path)], [0.0, 0.0, 4.0], 8000,
                                  5.0)
    assert kept.tolist() == [True, False, True] and windows.shape == (2, 40000)
    np.testing.assert_allclose(windows[1, :3 * 8000], np.arange(4 * 8000, 7 * 8000) / (7 * 8000) / 2, atol=1e-4)
    assert not windows[1, 3 * 8000:].any()


def test_inference_imports_without_torch():
    code = (
        "import sys\n"
        "for name in ('torch', 'timm', 'librosa', 'sklearn', 'snakemake'):\n"
        "    sys.modules[name] = None\n"
        "import birdclef.runtime.inference\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
