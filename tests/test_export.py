"""Export to OpenVINO (f32 / fp16 / int8) behind the accuracy gate, and the gate's windows.

Inference on the exported bundle is tested in test_inference.py; here only that
`birdclef.inference` imports without torch.
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
import torch

from birdclef.export import (
    MAX_EVAL_WINDOWS,
    ExportGateError,
    cache_windows,
    export_ensemble,
    gate_targets,
    gate_windows,
    window_frames,
)
from birdclef.features import mel_filterbank
from birdclef.model import InferenceWrapper, build_model, load_model, save_checkpoint

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
F32 = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2}


def synthetic_mels(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Log-mel-like windows: noise floor plus a band of energy per present class."""
    frames = window_frames({"mel": MEL, "window_seconds": 5.0})
    mels = rng.normal(-60.0, 6.0, size=(n, 1, MEL["n_mels"], frames)).astype(np.float32)
    labels = rng.random((n, len(CLASSES))) < 0.4
    labels[0], labels[1] = True, False  # every class has positives and negatives
    for i in range(n):
        for k in range(len(CLASSES)):
            if labels[i, k]:
                band, start = 4 + 7 * k, rng.integers(0, frames - 60)
                mels[i, 0, band : band + 4, start : start + 60] += 30.0
    return mels, labels.astype(np.float32)


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
            {"name": f"{backbone}-r1/fold{index}", "checkpoint": str(path), "weight": weight}
        )
    ensemble = {"classes": CLASSES, "window_seconds": 5.0, "mel": MEL, "members": members}
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
    assert bundle["mel"] == MEL
    assert bundle["window_seconds"] == 5.0
    assert bundle["inference_precision_hint"] == "f32"
    for index, member in enumerate(bundle["members"]):
        assert member["ir"] == f"members/{index}/model_int8.xml"
        assert not os.path.isabs(member["ir"])
        assert (out / member["ir"]).exists() and (out / member["ir"]).with_suffix(".bin").exists()
        assert member["weight"] == setup["ensemble"]["members"][index]["weight"]
    filterbank = np.load(out / "mel_filterbank.npy")
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
        assert np.abs(int8 - f32).mean() < 0.05
        assert np.corrcoef(int8.ravel(), f32.ravel())[0, 1] > 0.95
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
    with pytest.raises(ValueError, match="calibration_mels must have shape"):
        export_ensemble(setup["ensemble"], tmp_path / "b", setup["calibration"][:, :, :16])
    with pytest.raises(ValueError, match="precision"):
        export_ensemble(setup["ensemble"], tmp_path / "b", setup["calibration"], precision="int4")
    wrong = {**setup["ensemble"], "classes": CLASSES[:3]}
    with pytest.raises(ValueError, match="outputs"):
        export_ensemble(wrong, tmp_path / "b", setup["calibration"], precision="f32")
    assert not (tmp_path / "b").exists()


def test_gate_windows_and_targets():
    """Whole windows of validated recordings only, each with its recording's labels."""
    index = pd.DataFrame(
        {
            "filename": ["a.ogg", "b.ogg", "c.ogg", "d.ogg", "e.ogg"],
            "primary_label": ["sp01", "sp02", "sp03", "sp01", "sp04"],
            "secondary_labels": [[], ["sp03", "not_a_class"], [], ["sp02"], ["sp01"]],
            "offset": [0, 250, 349, 389, 519],
            "frames": [250, 99, 40, 130, 100],
        }
    )
    # Fold table in another order; d is never validated (fold -1), e has no fold row.
    folds = pd.DataFrame({"filename": ["d.ogg", "c.ogg", "b.ogg", "a.ogg"], "fold": [-1, 0, 1, 0]})
    rows, starts = gate_windows(index, folds, 50)
    assert rows.dtype == np.int64 and starts.dtype == np.int64
    # a: 5 whole windows; b: 99 frames, 1 whole window; c: shorter than a window, one from 0.
    assert rows.tolist() == [0, 0, 0, 0, 0, 1, 2]
    assert starts.tolist() == [0, 50, 100, 150, 200, 0, 0]
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

    # Capped: spread evenly over the list, first and last kept.
    rows3, starts3 = gate_windows(index, folds, 50, max_windows=3)
    assert rows3.tolist() == [0, 0, 2] and starts3.tolist() == [0, 150, 0]
    assert MAX_EVAL_WINDOWS == 4096
    # Nothing validated: no windows, no targets.
    none_rows, none_starts = gate_windows(index, folds.assign(fold=-1), 50)
    assert none_rows.size == none_starts.size == 0
    assert gate_targets(index, none_rows, CLASSES).shape == (0, len(CLASSES))


def test_inference_imports_without_torch():
    code = (
        "import sys\n"
        "for name in ('torch', 'timm', 'librosa', 'sklearn', 'snakemake'):\n"
        "    sys.modules[name] = None\n"
        "import birdclef.inference\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
