"""Soundscape inference (birdclef.inference), the submission file and the Kaggle bundle.

One tiny exported ensemble (test_efficientnet, 4 classes, 32 mels) serves every
test: robustness to short, long, stereo, resampled, silent, NaN, corrupt, empty
and missing files; batching and threading not changing the numbers; the
optional post-processing; sample_submission's columns and rows; the Kaggle
bundle's predict.py in a subprocess where torch cannot be imported.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import openvino as ov
import pandas as pd
import pytest
import soundfile as sf
import torch

import birdclef.inference
from birdclef.audio import BadAudioError, decode_audio, read_audio, write_ogg
from birdclef.export import export_ensemble, window_frames
from birdclef.features import log_mel, window_waves
from birdclef.inference import load_bundle, predict_soundscapes, soundscape_mels
from birdclef.kaggle import MODULES, current_bundle, pack_bundle
from birdclef.model import InferenceWrapper, build_model, load_model, save_checkpoint
from birdclef.postprocess import (
    POSTPROCESS_DEFAULTS,
    postprocess_settings,
    postprocess_soundscape,
    smooth_windows,
)
from birdclef.submission import align_to_sample, write_submission

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
BLOCKED = ("torch", "timm", "librosa", "sklearn", "snakemake", "nncf")


def calls(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """Noise with gated tones: something the windows differ on."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    wave = 0.05 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * (1500 + 500 * seed) * t)
    return (wave * (np.sin(2 * np.pi * 0.3 * t) > 0)).astype(np.float32)


def torch_probabilities(ensemble: dict, mels: np.ndarray) -> np.ndarray:
    """Weighted mean of the members' torch fp32 probabilities."""
    weights = np.array([m["weight"] for m in ensemble["members"]], dtype=np.float64)
    out = 0.0
    with torch.no_grad():
        for weight, member in zip(weights / weights.sum(), ensemble["members"], strict=True):
            model, _ = load_model(member["checkpoint"])
            out = out + weight * InferenceWrapper(model).eval()(torch.from_numpy(mels)).numpy()
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Two tiny members exported to f32 and int8 bundles (no gate: speed only)."""
    root = tmp_path_factory.mktemp("inference")
    frames = window_frames({"mel": MEL, "window_seconds": 5.0})
    rng = np.random.default_rng(0)
    calibration = rng.normal(-60.0, 8.0, size=(16, 1, MEL["n_mels"], frames)).astype(np.float32)
    calibration[:, :, 10:14, 100:200] += 30.0
    members = []
    for index, weight in enumerate((0.6, 0.4)):
        torch.manual_seed(index)
        spec = {"backbone": "test_efficientnet", "n_classes": len(CLASSES), "pretrained": False}
        model = build_model(spec)
        model.train()
        with torch.no_grad():  # BN statistics from data, so outputs vary with the input
            model(torch.from_numpy(calibration))
            model.head.cla.weight.mul_(20.0)
        model.eval()
        path = root / "train" / f"m{index}" / "best.pt"
        save_checkpoint(path, model, spec, classes=CLASSES)
        members.append({"name": f"m{index}", "checkpoint": str(path), "weight": weight})
    ensemble = {"classes": CLASSES, "window_seconds": 5.0, "mel": MEL, "members": members}
    export_ensemble(ensemble, root / "f32", calibration, precision="f32")
    export_ensemble(ensemble, root / "int8", calibration, precision="int8", calibration_size=16)
    return {"root": root, "ensemble": ensemble, "f32": root / "f32", "int8": root / "int8"}


@pytest.fixture(scope="module")
def soundscapes(tmp_path_factory) -> dict[str, Path]:
    """One file per robustness case, in the order predict_soundscapes gets them."""
    folder = tmp_path_factory.mktemp("soundscapes")
    paths = {
        name: folder / f"{name}.{suffix}"
        for name, suffix in [
            ("normal", "ogg"),
            ("short", "ogg"),
            ("long", "ogg"),
            ("stereo48k", "ogg"),
            ("silent", "wav"),
            ("nan", "wav"),
            ("corrupt", "ogg"),
            ("empty", "ogg"),
            ("missing", "ogg"),
        ]
    }
    write_ogg(paths["normal"], calls(60.0, 32000), 32000)
    write_ogg(paths["short"], calls(7.0, 32000, 1), 32000)
    write_ogg(paths["long"], calls(63.0, 32000, 2), 32000)
    write_ogg(paths["stereo48k"], np.stack([calls(60.0, 48000, 3), calls(60.0, 48000, 4)], 1), 48000)
    sf.write(paths["silent"], np.zeros(60 * 32000, np.float32), 32000, subtype="PCM_16")
    with_nan = calls(60.0, 32000, 5)
    with_nan[1000:2000] = np.nan
    sf.write(paths["nan"], with_nan, 32000, subtype="FLOAT")
    paths["corrupt"].write_bytes(b"OggS" + np.random.default_rng(1).bytes(5000))
    paths["empty"].write_bytes(b"")
    return paths


def expected_rows(name: str, windows: int = 12) -> list[str]:
    return [f"{name}_{5 * (k + 1)}" for k in range(windows)]


def test_every_case_gets_all_rows_with_a_warning(exported, soundscapes, caplog):
    bundle = load_bundle(exported["int8"], threads=2)
    assert bundle.precision == "int8" and bundle.precision_hint == "f32"
    with caplog.at_level(logging.WARNING, logger="birdclef.inference"):
        frame = predict_soundscapes(list(soundscapes.values()), bundle, progress=False)
    assert list(frame.columns) == ["row_id", *CLASSES]
    expected = []
    for name in soundscapes:
        expected += expected_rows(name, 13 if name == "long" else 12)
    assert frame["row_id"].tolist() == expected
    values = frame[CLASSES].to_numpy()
    assert values.dtype == np.float32
    assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()

    warnings = {
        name: " ".join(r.getMessage() for r in caplog.records if str(path) in r.getMessage())
        for name, path in soundscapes.items()
    }
    assert warnings["normal"] == ""
    assert "shorter than 60 s: padded with silence to 12 windows" in warnings["short"]
    assert "longer than 60 s: predicting all 13 windows" in warnings["long"]
    assert "2 channels mixed down to mono" in warnings["stereo48k"]
    assert "resampled from 48000 Hz to 32000 Hz" in warnings["stereo48k"]
    assert "silent" in warnings["silent"]
    assert "1000 NaN/infinite samples set to 0" in warnings["nan"]
    for name in ("corrupt", "empty", "missing"):
        assert "predicting 12 windows of silence" in warnings[name], warnings[name]
    assert "file not found" in warnings["missing"]

    by_name = {name: frame[frame["row_id"].str.startswith(f"{name}_")] for name in soundscapes}
    # unreadable files are zero-filled, like the padded end of the short file
    zero_filled = by_name["corrupt"][CLASSES].to_numpy()
    for name in ("empty", "missing"):
        np.testing.assert_allclose(by_name[name][CLASSES].to_numpy(), zero_filled, atol=1e-6)
    np.testing.assert_allclose(by_name["short"][CLASSES].to_numpy()[2:], zero_filled[2:], atol=1e-6)


def test_decode_fixes_stereo_rate_and_nan(soundscapes, monkeypatch):
    wave, notes = decode_audio(soundscapes["stereo48k"], 32000, repair=True)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.size - 60 * 32000) <= 1 and len(notes) == 2
    stereo, _ = sf.read(soundscapes["stereo48k"], dtype="float32")
    import soxr

    mono = soxr.resample(stereo.mean(axis=1), 48000, 32000, quality="HQ")
    np.testing.assert_allclose(wave, mono, atol=1e-5)
    np.testing.assert_array_equal(read_audio(soundscapes["stereo48k"], 32000), wave)
    wave, notes = decode_audio(soundscapes["nan"], 32000, repair=True)
    assert np.isfinite(wave).all() and (wave[1000:2000] == 0).all()
    assert notes == ["1000 NaN/infinite samples set to 0"]
    with pytest.raises(BadAudioError, match="NaN or infinite"):
        read_audio(soundscapes["nan"], 32000)  # training data: no repairs
    wave, notes = decode_audio(soundscapes["normal"], 32000, repair=True)
    assert notes == [] and wave.size == 60 * 32000
    for name, reason in [("missing", "file not found"), ("empty", "cannot decode audio")]:
        for decode in (lambda p: decode_audio(p, 32000, repair=True), lambda p: read_audio(p, 32000)):
            with pytest.raises(BadAudioError, match=reason):
                decode(soundscapes[name])

    # without soxr: linear interpolation for inference (a note), ImportError elsewhere
    monkeypatch.setitem(sys.modules, "soxr", None)
    wave, notes = decode_audio(soundscapes["stereo48k"], 32000, repair=True)
    assert notes[-1] == "soxr missing: linear interpolation"
    assert wave.dtype == np.float32 and wave.size == 60 * 32000
    linear = np.interp(np.arange(wave.size) / 32000, np.arange(len(stereo)) / 48000, stereo.mean(axis=1))
    np.testing.assert_allclose(wave, linear, atol=1e-6)
    assert np.corrcoef(wave, mono[: wave.size])[0, 1] > 0.99
    with pytest.raises(ImportError):
        read_audio(soundscapes["stereo48k"], 32000)


def test_end_to_end_matches_torch_and_features_log_mel(exported, soundscapes, tmp_path, monkeypatch):
    source = exported["f32"]
    moved = tmp_path / "kaggle" / "input" / "bundle"
    shutil.copytree(source, moved)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    bundle = load_bundle(os.path.relpath(moved, elsewhere), threads=2)
    assert bundle.precision == "f32" and bundle.frames == 313 and len(bundle.members) == 2
    assert bundle.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert bundle.compiled.get_property("INFERENCE_NUM_THREADS") == 2
    assert bundle.compiled.get_property("NUM_STREAMS") == 2
    assert bundle.combine == "mean"

    mels, row_ids = soundscape_mels(soundscapes["normal"], bundle)
    assert mels.shape == (12, 1, 32, 313) and mels.dtype == np.float32
    assert row_ids == expected_rows("normal")
    wave, _ = sf.read(soundscapes["normal"], dtype="float32")
    window = window_waves(wave, 32000, 5.0, 12)[3]
    np.testing.assert_array_equal(mels[3, 0], log_mel(window, bundle.filterbank, 1024, 512, 80))

    frame = predict_soundscapes([soundscapes["normal"]], bundle, progress=True)
    expected = torch_probabilities(exported["ensemble"], mels)
    np.testing.assert_allclose(frame[CLASSES].to_numpy(), expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(bundle.predict(mels), expected, atol=1e-4, rtol=0)
    members = bundle.predict_members(mels)
    assert members.shape == (2, 12, len(CLASSES))
    np.testing.assert_allclose(np.tensordot(bundle.weights, members, axes=1), expected, atol=1e-4)


def test_batching_streams_and_workers_do_not_change_the_numbers(exported, soundscapes):
    paths = [soundscapes[name] for name in ("normal", "short", "long", "stereo48k", "silent")]
    reference = predict_soundscapes(
        paths, load_bundle(exported["f32"], threads=1), progress=False, batch_windows=1, workers=1
    )
    for threads, streams, batch, workers, requests in [
        (2, 1, 48, 2, 2),
        (2, 2, 12, 3, 1),
        (3, None, 100, 1, 3),
    ]:
        bundle = load_bundle(
            exported["f32"], threads=threads, streams=streams, requests_per_stream=requests
        )
        assert bundle.streams == (threads if streams is None else streams)
        assert len(bundle.requests) == bundle.streams * requests
        frame = predict_soundscapes(
            paths, bundle, progress=False, batch_windows=batch, workers=workers
        )
        assert frame["row_id"].tolist() == reference["row_id"].tolist()
        np.testing.assert_allclose(
            frame[CLASSES].to_numpy(), reference[CLASSES].to_numpy(), atol=2e-5, rtol=0
        )
    empty = predict_soundscapes([], load_bundle(exported["f32"], threads=2), progress=False)
    assert list(empty.columns) == ["row_id", *CLASSES] and len(empty) == 0


def with_postprocess(source: Path, target: Path, postprocess: dict, combine: str | None = None) -> Path:
    shutil.copytree(source, target)
    definition = json.loads((target / "bundle.json").read_text())
    definition["postprocess"] = postprocess
    if combine is not None:
        definition["combine"] = combine
    (target / "bundle.json").write_text(json.dumps(definition))
    return target


def test_postprocess_smoothing_and_tta_shift(exported, soundscapes, tmp_path, monkeypatch):
    path = soundscapes["normal"]
    plain_bundle = load_bundle(exported["f32"], threads=2)
    assert plain_bundle.postprocess == POSTPROCESS_DEFAULTS
    postprocessed = []

    def counted_postprocess(probabilities, settings):
        postprocessed.append(len(probabilities))
        return postprocess_soundscape(probabilities, settings)

    monkeypatch.setattr(birdclef.inference, "postprocess_soundscape", counted_postprocess)
    plain = predict_soundscapes([path], plain_bundle, progress=False)[CLASSES].to_numpy()
    assert postprocessed == []  # no smoothing, no power adjustment: nothing to do per soundscape

    smoothed_dir = with_postprocess(exported["f32"], tmp_path / "smooth", {"smoothing": 0.25})
    smoothed = predict_soundscapes([path], load_bundle(smoothed_dir), progress=False)
    assert postprocessed == [12]
    manual = plain.copy()
    manual[1:-1] = 0.5 * plain[1:-1] + 0.25 * (plain[:-2] + plain[2:])
    manual[0] = 0.75 * plain[0] + 0.25 * plain[1]
    manual[-1] = 0.75 * plain[-1] + 0.25 * plain[-2]
    np.testing.assert_allclose(smoothed[CLASSES].to_numpy(), manual, atol=1e-6)
    np.testing.assert_allclose(smooth_windows(plain, 0.25), manual, atol=1e-6)

    tta_dir = with_postprocess(exported["f32"], tmp_path / "tta", {"tta_shift_seconds": 2.5})
    tta_bundle = load_bundle(tta_dir)
    mels, row_ids = soundscape_mels(path, tta_bundle)
    assert mels.shape[0] == 36 and len(row_ids) == 12
    wave, _ = sf.read(path, dtype="float32")
    shift = int(2.5 * 32000)
    later = window_waves(wave[shift:], 32000, 5.0, 12)
    earlier = window_waves(np.concatenate([np.zeros(shift, np.float32), wave]), 32000, 5.0, 12)
    np.testing.assert_array_equal(mels[12 + 4, 0], log_mel(earlier[4], tta_bundle.filterbank, 1024, 512, 80))
    np.testing.assert_array_equal(mels[24 + 4, 0], log_mel(later[4], tta_bundle.filterbank, 1024, 512, 80))
    tta = predict_soundscapes([path], tta_bundle, progress=False)
    views = plain_bundle.predict(mels).reshape(3, 12, -1).mean(axis=0)
    np.testing.assert_allclose(tta[CLASSES].to_numpy(), views, atol=1e-5)
    assert tta["row_id"].tolist() == expected_rows("normal")
    assert (tta_bundle.tta_shift_samples, tta_bundle.tta_views) == (shift, 3)

    # a shift under half a sample rounds to none: one view, like no TTA (it once crashed the reshape)
    tiny_bundle = load_bundle(with_postprocess(exported["f32"], tmp_path / "tiny", {"tta_shift_seconds": 1e-6}))
    assert tiny_bundle.postprocess["tta_shift_seconds"] == 1e-6
    assert (tiny_bundle.tta_shift_samples, tiny_bundle.tta_views) == (0, 1)
    assert soundscape_mels(path, tiny_bundle)[0].shape[0] == 12
    tiny = predict_soundscapes([path, soundscapes["short"]], tiny_bundle, progress=False)
    reference = predict_soundscapes([path, soundscapes["short"]], plain_bundle, progress=False)
    assert tiny["row_id"].tolist() == reference["row_id"].tolist()
    np.testing.assert_allclose(tiny[CLASSES].to_numpy(), reference[CLASSES].to_numpy(), atol=1e-6)

    for bad, key in [
        ({"smoothing": 0.5}, "smoothing"),
        ({"tta_shift_seconds": 5.0}, "tta_shift_seconds"),
        ({"power_adjust_top_k": -2}, "power_adjust_top_k"),
        ({"power_adjust_exponent": 0.5}, "power_adjust_exponent"),
        ({"median": 3}, "median"),
    ]:
        with pytest.raises(ValueError, match=f"postprocess.*{key}"):
            postprocess_settings({"window_seconds": 5.0, "postprocess": bad})
        with pytest.raises(ValueError, match=key):
            load_bundle(with_postprocess(exported["f32"], tmp_path / f"bad_{key}", bad))
    with pytest.raises(ValueError, match="combine"):
        load_bundle(with_postprocess(exported["f32"], tmp_path / "bad_combine", {}, combine="max"))


def separate_member_probabilities(bundle_dir: Path, mels: np.ndarray) -> list[np.ndarray]:
    """Each member's IR compiled on its own (same CPU settings as load_bundle), run on `mels`."""
    definition = json.loads((bundle_dir / "bundle.json").read_text())
    core = ov.Core()
    config = {
        "INFERENCE_NUM_THREADS": 2,
        "NUM_STREAMS": 2,
        "INFERENCE_PRECISION_HINT": ov.Type.f32,
        "PERFORMANCE_HINT": "THROUGHPUT",
    }
    outputs = []
    for member in definition["members"]:
        compiled = core.compile_model(bundle_dir / member["ir"], "CPU", config)
        outputs.append(compiled.create_infer_request().infer({0: mels})[0].copy())
    return outputs


def test_rank_combine_and_power_adjust_match_a_hand_computation(exported, soundscapes, tmp_path):
    postprocess = {
        "tta_shift_seconds": 1.0,
        "smoothing": 0.2,
        "power_adjust_top_k": 2,
        "power_adjust_exponent": 3.0,
    }
    source = with_postprocess(exported["int8"], tmp_path / "rank", postprocess, combine="rank")
    bundle = load_bundle(source, threads=2)
    assert bundle.combine == "rank" and bundle.postprocess == postprocess
    names = ["normal", "short", "stereo48k", "silent"]
    frame = predict_soundscapes([soundscapes[n] for n in names], bundle, progress=False)
    assert frame["row_id"].tolist() == [row for n in names for row in expected_rows(n)]

    # by hand: every member on its own, TTA views averaged per member
    per_member: list[list[np.ndarray]] = [[], []]
    for name in names:
        mels, _ = soundscape_mels(soundscapes[name], bundle)
        assert mels.shape[0] == 3 * 12
        for index, probs in enumerate(separate_member_probabilities(source, mels)):
            per_member[index].append(probs.reshape(3, 12, -1).mean(axis=0))
    stacked = [np.concatenate(blocks).astype(np.float64) for blocks in per_member]  # (48, 4) each
    rows = len(stacked[0])
    # per-class ranks over all 48 windows of the run, ties averaged, divided by the row count
    ranks = []
    for probs in stacked:
        rank = np.empty_like(probs)
        for c in range(probs.shape[1]):
            column = probs[:, c]
            rank[:, c] = [((column < v).sum() + ((column == v).sum() + 1) / 2) / rows for v in column]
        ranks.append(rank)
    combined = 0.6 * ranks[0] + 0.4 * ranks[1]
    expected, smoothed_only = [], []
    for k in range(len(names)):
        probs = combined[12 * k : 12 * (k + 1)]
        smoothed = 0.6 * probs + 0.2 * (np.r_[probs[:1], probs[:-1]] + np.r_[probs[1:], probs[-1:]])
        top = np.argsort(-smoothed.max(axis=0), kind="stable")[:2]
        adjusted = smoothed ** 3.0
        adjusted[:, top] = smoothed[:, top]
        expected.append(adjusted)
        smoothed_only.append(smoothed)
    expected, smoothed_only = np.concatenate(expected), np.concatenate(smoothed_only)
    values = frame[CLASSES].to_numpy()
    assert values.dtype == np.float32
    np.testing.assert_allclose(values, expected, atol=1e-6, rtol=0)
    # the power adjustment changed something beyond the smoothing: each soundscape's two
    # weakest classes were cubed
    assert not np.allclose(values, smoothed_only, atol=1e-3)

    # predict() combines by rank too, over the windows it is given
    mels, _ = soundscape_mels(soundscapes["normal"], bundle)
    members = separate_member_probabilities(source, mels)
    np.testing.assert_allclose(bundle.predict_members(mels), np.stack(members), atol=1e-6)
    by_hand = 0.6 * pd.DataFrame(members[0]).rank(pct=True).to_numpy()
    by_hand += 0.4 * pd.DataFrame(members[1]).rank(pct=True).to_numpy()
    np.testing.assert_allclose(bundle.predict(mels), by_hand, atol=1e-6)


def sample_submission(names: list[str]) -> pd.DataFrame:
    rows = [row for name in names for row in expected_rows(name)]
    frame = pd.DataFrame({"row_id": rows})
    for label in CLASSES:
        frame[label] = 1.0 / len(CLASSES)
    return frame


def test_submission_has_sample_columns_and_rows(exported, soundscapes, tmp_path):
    # sample order differs from file order; one soundscape of the sample has no audio file
    names = ["stereo48k", "normal", "gone", "short", "corrupt", "long"]
    sample = sample_submission(names)
    bundle = load_bundle(exported["int8"], threads=2)
    paths = [soundscapes[name] for name in ("normal", "short", "long", "stereo48k", "corrupt")]
    submission, filled = align_to_sample(predict_soundscapes(paths, bundle, progress=False), sample)
    write_submission(submission, tmp_path / "submission.csv")
    written = pd.read_csv(tmp_path / "submission.csv")
    assert list(written.columns) == list(sample.columns)
    assert written["row_id"].tolist() == sample["row_id"].tolist()
    assert filled == 12  # only "gone"; long_65 is dropped, short is padded
    assert not written.isna().any().any()


def blocked_python(code: str) -> str:
    """Python source that makes torch & co. unimportable, then runs `code`."""
    return f"import sys\nfor _n in {BLOCKED!r}:\n    sys.modules[_n] = None\n" + code


def test_kaggle_bundle_predicts_without_torch(exported, soundscapes, tmp_path):
    out = tmp_path / "kaggle_bundle"
    # rank combine and post-processing: the packed code must carry birdclef.postprocess
    postprocess = {"smoothing": 0.1, "power_adjust_top_k": 2, "power_adjust_exponent": 2.0}
    source = with_postprocess(exported["int8"], tmp_path / "ranked", postprocess, combine="rank")
    summary = pack_bundle(source, out)
    assert (out / "predict.py").exists() and (out / "README.md").exists()
    assert (out / "bundle.json").exists() and (out / "mel_filterbank.npy").exists()
    assert sorted(p.name for p in (out / "birdclef").iterdir() if p.suffix == ".py") == sorted(MODULES)
    irs = sorted(str(p.relative_to(out)) for p in out.glob("members/*/*"))
    assert irs == [f"members/{i}/model_int8.{s}" for i in (0, 1) for s in ("bin", "xml")]
    assert summary["bytes"] > 0 and not (out / "wheels").exists()

    data = tmp_path / "competition"
    (data / "test_soundscapes").mkdir(parents=True)
    names = ["normal", "short", "stereo48k", "corrupt"]
    for name in names:
        shutil.copy(soundscapes[name], data / "test_soundscapes")
    sample = sample_submission(names[::-1] + ["absent"])
    sample.to_csv(data / "sample_submission.csv", index=False)
    workdir = tmp_path / "working"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = blocked_python(
        "import runpy\n"
        f"sys.argv = ['predict.py', '--data', {str(data)!r}, '--threads', '2']\n"
        f"runpy.run_path({str(out / 'predict.py')!r}, run_name='__main__')\n"
        "assert not any(sys.modules.get(n) for n in "
        f"{BLOCKED!r}), 'a blocked module was imported'\n"
        "postprocess = sys.modules['birdclef.postprocess']\n"
        f"assert postprocess.__file__ == {str(out / 'birdclef' / 'postprocess.py')!r}, postprocess.__file__\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"inference code from {out / 'birdclef'}" in result.stderr
    assert "int8 IR, OpenVINO CPU INFERENCE_PRECISION_HINT=f32" in result.stderr
    assert "combine rank" in result.stderr and "'power_adjust_top_k': 2" in result.stderr
    written = pd.read_csv(workdir / "submission.csv")
    assert list(written.columns) == list(sample.columns)
    assert written["row_id"].tolist() == sample["row_id"].tolist()
    assert not written.isna().any().any()
    # the bundled code gives the pipeline's numbers
    bundle = load_bundle(source, threads=2)
    paths = [data / "test_soundscapes" / soundscapes[name].name for name in sorted(names)]
    expected, _ = align_to_sample(predict_soundscapes(paths, bundle, progress=False), sample)
    np.testing.assert_allclose(written[CLASSES].to_numpy(), expected[CLASSES].to_numpy(), atol=2e-6)


def test_current_bundle_follows_the_manifest_chain(tmp_path):
    results = tmp_path / "results"
    with pytest.raises(FileNotFoundError, match="make submission"):
        current_bundle(results)
    for tag, export_tag, content in [("aaa", "e1", "a,b\n1,2\n"), ("bbb", "e2", "a,b\n3,4\n")]:
        folder = results / "submission" / tag
        folder.mkdir(parents=True)
        (folder / "submission.csv").write_text(content)
        (folder / "manifest.json").write_text(json.dumps({"upstream": {"export": export_tag}}))
        (results / "export" / export_tag).mkdir(parents=True)
        (results / "export" / export_tag / "bundle.json").write_text("{}")
    (results / "submission.csv").write_text("a,b\n1,2\n")
    assert current_bundle(results) == results / "export" / "e1"
    (results / "submission.csv").write_text("a,b\n3,4\n")
    assert current_bundle(results) == results / "export" / "e2"
    (results / "submission.csv").write_text("a,b\n5,6\n")
    with pytest.raises(FileNotFoundError, match="matches"):
        current_bundle(results)
