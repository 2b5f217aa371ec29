"""Soundscape inference (birdclef.runtime.inference), the submission file and the Kaggle bundle.

One tiny exported ensemble (test_efficientnet, 4 classes, 32 mels, one mel
group) serves most tests: robustness to short, long, stereo, resampled, silent,
NaN, corrupt, empty and missing files (each file its own row count; undecodable
files written as 0); batching and threading not changing the numbers; the
optional post-processing. (The submission's rows and columns:
test_submission_rows.py.)
A second one has members on two mel groups (32 mels, hop 512 at 32 kHz; 24
mels, hop 320 at 16 kHz): it must give what each member gives on its own
group's log-mels, and it is the one the Kaggle bundle's predict.py runs in a
subprocess where torch cannot be imported.
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
from test_export import CLASSES, MEL, MEL_B

import birdclef.runtime.inference.soundscapes
import birdclef.runtime.inference.windows
from birdclef.export import export_ensemble
from birdclef.export.kaggle import current_bundle, pack_bundle
from birdclef.runtime import audio, features
from birdclef.runtime.audio import BadAudioError, decode_audio, read_audio, write_ogg
from birdclef.runtime.features import log_mel, mel_filterbank, window_waves
from birdclef.runtime.inference import load_bundle, predict_soundscapes, soundscape_windows
from birdclef.runtime.postprocess import (
    POSTPROCESS_DEFAULTS,
    postprocess_settings,
    postprocess_soundscape,
    smooth_windows,
)
from birdclef.runtime.submission import predict_submission
from birdclef.train.model import InferenceWrapper, build_model, load_model, save_checkpoint


def soundscape_mels(path, bundle):
    """(one log-mel array per mel group, row ids) of a decodable soundscape."""
    item = soundscape_windows(path, bundle)
    assert item.error is None, item.error
    return item.mels, item.row_ids


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


def calibration_windows(mel: dict, seed: int = 0) -> np.ndarray:
    """16 log-mel-like windows of mel settings `mel`: noise plus a loud band."""
    frames = features.window_frames(mel, 5.0)
    rng = np.random.default_rng(seed)
    calibration = rng.normal(-60.0, 8.0, size=(16, 1, mel["n_mels"], frames)).astype(np.float32)
    calibration[:, :, 10:14, 100:200] += 30.0
    return calibration


def tiny_member(path: Path, seed: int, calibration: np.ndarray) -> None:
    """A test_efficientnet checkpoint whose BN statistics come from `calibration`."""
    torch.manual_seed(seed)
    spec = {"backbone": "test_efficientnet", "n_classes": len(CLASSES), "pretrained": False}
    model = build_model(spec)
    model.train()
    with torch.no_grad():  # BN statistics from data, so outputs vary with the input
        model(torch.from_numpy(calibration))
        model.head.cla.weight.mul_(20.0)
    model.eval()
    save_checkpoint(path, model, spec, classes=CLASSES)


def tiny_ensemble(root: Path, weights, calibration: np.ndarray, first_seed: int = 0) -> dict:
    """An ensemble definition of tiny members (one per weight, seeds from `first_seed`) in one mel group."""
    members = []
    for index, weight in enumerate(weights):
        path = root / "train" / f"m{index}" / "best.pt"
        tiny_member(path, first_seed + index, calibration)
        members.append({"name": f"m{index}", "checkpoint": str(path), "weight": weight, "mel_group": 0})
    return {"classes": CLASSES, "window_seconds": 5.0, "mel_groups": [{"tag": "mels-a", **MEL}],
            "members": members}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Two tiny members exported to f32 and int8 bundles (no gate: speed only)."""
    root = tmp_path_factory.mktemp("inference")
    calibration = calibration_windows(MEL)
    ensemble = tiny_ensemble(root, (0.6, 0.4), calibration)
    export_ensemble(ensemble, root / "f32", calibration, precision="f32")
    export_ensemble(ensemble, root / "int8", calibration, precision="int8", calibration_size=16)
    return {"root": root, "ensemble": ensemble, "f32": root / "f32", "int8": root / "int8"}


@pytest.fixture(scope="module")
def two_groups(tmp_path_factory):
    """Three members on two mel groups (MEL, MEL_B), listed b0 (group 1), a0 (group 0), b1 (group 1); int8."""
    root = tmp_path_factory.mktemp("two_groups")
    calibration = [calibration_windows(MEL, 1), calibration_windows(MEL_B, 2)]
    members = []
    for index, (name, group, weight) in enumerate([("b0", 1, 0.5), ("a0", 0, 0.3), ("b1", 1, 0.2)]):
        path = root / "train" / name / "best.pt"
        tiny_member(path, 10 + index, calibration[group])
        members.append({"name": name, "checkpoint": str(path), "weight": weight, "mel_group": group})
    ensemble = {
        "classes": CLASSES,
        "window_seconds": 5.0,
        "mel_groups": [{"tag": "mels-a", **MEL}, {"tag": "mels-b", **MEL_B}],
        "members": members,
    }
    export_ensemble(ensemble, root / "int8", calibration, precision="int8", calibration_size=8)
    return root / "int8"


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


# Rows per file: ceil(seconds / 5); an undecodable file without a readable header gets 12.
WINDOWS = {"short": 2, "long": 13}


def expected_rows(name: str, windows: int | None = None) -> list[str]:
    windows = WINDOWS.get(name, 12) if windows is None else windows
    return [f"{name}_{5 * (k + 1)}" for k in range(windows)]


def test_every_case_gets_all_rows_with_a_warning(exported, soundscapes, caplog):
    bundle = load_bundle(exported["int8"], threads=2)
    assert bundle.precision == "int8" and bundle.precision_hint == "f32"
    with caplog.at_level(logging.WARNING, logger="birdclef.runtime.inference"):
        frame = predict_soundscapes(list(soundscapes.values()), bundle, progress=False)
    assert list(frame.columns) == ["row_id", *CLASSES]
    expected = []
    for name in soundscapes:
        expected += expected_rows(name)
    assert frame["row_id"].tolist() == expected
    assert frame.attrs["undecodable"] == ["corrupt.ogg", "empty.ogg", "missing.ogg"]
    values = frame[CLASSES].to_numpy()
    assert values.dtype == np.float32
    assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()

    warnings = {
        name: " ".join(r.getMessage() for r in caplog.records if str(path) in r.getMessage())
        for name, path in soundscapes.items()
    }
    assert warnings["normal"] == ""
    assert "7.00 s long, not 60 s: 2 windows (last one padded with silence)" in warnings["short"]
    assert "63.00 s long, not 60 s: 13 windows (last one padded with silence)" in warnings["long"]
    assert "2 channels mixed down to mono" in warnings["stereo48k"]
    assert "resampled from 48000 Hz to 32000 Hz" in warnings["stereo48k"]
    assert "silent" in warnings["silent"]
    assert "1000 NaN/infinite samples set to 0" in warnings["nan"]
    for name in ("corrupt", "empty", "missing"):
        assert "undecodable: no readable header: 12 windows, written as 0" in warnings[name], warnings[name]
    assert "file not found" in warnings["missing"]

    by_name = {name: frame[frame["row_id"].str.startswith(f"{name}_")] for name in soundscapes}
    # undecodable files: every probability exactly 0; every decoded file: something above 0
    for name in soundscapes:
        values = by_name[name][CLASSES].to_numpy()
        if name in ("corrupt", "empty", "missing"):
            assert (values == 0).all(), name
        else:
            assert (values > 0).any(), name
    # the short file is not padded: its 2 windows are what soundscape_windows gives
    short = soundscape_windows(soundscapes["short"], bundle)
    assert short.mels[0].shape[0] == 2 and short.row_ids == ["short_5", "short_10"]
    np.testing.assert_allclose(by_name["short"][CLASSES].to_numpy(), bundle.predict(short.mels[0]), atol=2e-5)
    # an undecodable file has its row ids, no windows, and the reason
    corrupt = soundscape_windows(soundscapes["corrupt"], bundle)
    assert corrupt.mels[0].shape[0] == 0 and corrupt.row_ids == expected_rows("corrupt") and corrupt.error


def test_undecodable_file_rows_from_its_header(exported, soundscapes, tmp_path, monkeypatch, caplog):
    """A file whose header reads but whose audio does not decode: rows from the header's duration."""
    folder = tmp_path / "header"
    folder.mkdir()
    for name, seconds in [("twenty", 20.0), ("minute", 60.0)]:
        write_ogg(folder / f"{name}.ogg", calls(seconds, 32000, 7), 32000)
    real_decode = birdclef.runtime.inference.windows.decode_audio

    def broken_decode(path, rate, repair=False):
        if Path(path).name == "twenty.ogg":
            raise BadAudioError(path, "cannot decode audio (truncated stream)")
        return real_decode(path, rate, repair=repair)

    monkeypatch.setattr(birdclef.runtime.inference.windows, "decode_audio", broken_decode)
    bundle = load_bundle(exported["f32"], threads=2)
    with caplog.at_level(logging.WARNING, logger="birdclef.runtime.inference"):
        frame = predict_soundscapes([folder / "twenty.ogg", folder / "minute.ogg"], bundle, progress=False)
    assert frame["row_id"].tolist() == expected_rows("twenty", 4) + expected_rows("minute", 12)
    assert frame.attrs["undecodable"] == ["twenty.ogg"]
    assert (frame[CLASSES].to_numpy()[:4] == 0).all() and (frame[CLASSES].to_numpy()[4:] > 0).any()
    assert "its header says 20.00 s: 4 windows" in caplog.text


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
    monkeypatch.setattr(audio, "soxr", None)  # looked up in birdclef.runtime.audio at call time
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
    assert len(bundle.mel_groups) == 1 and bundle.mel_groups[0].frames == 313
    assert bundle.precision == "f32" and len(bundle.members) == 2
    assert bundle.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert bundle.compiled.get_property("INFERENCE_NUM_THREADS") == 2
    assert bundle.compiled.get_property("NUM_STREAMS") == 2
    assert bundle.combine == "mean"

    (mels,), row_ids = soundscape_mels(soundscapes["normal"], bundle)
    assert mels.shape == (12, 1, 32, 313) and mels.dtype == np.float32
    assert row_ids == expected_rows("normal")
    wave, _ = sf.read(soundscapes["normal"], dtype="float32")
    window = window_waves(wave, 32000, 5.0, 12)[3]
    np.testing.assert_array_equal(mels[3, 0], log_mel(window, mel_filterbank(MEL), 1024, 512, 80))

    frame = predict_soundscapes([soundscapes["normal"]], bundle, progress=True)
    expected = torch_probabilities(exported["ensemble"], mels)
    np.testing.assert_allclose(frame[CLASSES].to_numpy(), expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(bundle.predict(mels), expected, atol=1e-4, rtol=0)
    members = bundle.predict_members(mels)
    assert members.shape == (2, 12, len(CLASSES))
    np.testing.assert_allclose(np.einsum("mc,mnc->nc", bundle.weights, members), expected, atol=1e-4)


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

    monkeypatch.setattr(
        birdclef.runtime.inference.soundscapes, "postprocess_soundscape", counted_postprocess
    )
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
    (mels,), row_ids = soundscape_mels(path, tta_bundle)
    assert mels.shape[0] == 36 and len(row_ids) == 12
    wave, _ = sf.read(path, dtype="float32")
    shift = int(2.5 * 32000)
    later = window_waves(wave[shift:], 32000, 5.0, 12)
    earlier = window_waves(np.concatenate([np.zeros(shift, np.float32), wave]), 32000, 5.0, 12)
    filterbank = tta_bundle.mel_groups[0].filterbank
    np.testing.assert_array_equal(mels[12 + 4, 0], log_mel(earlier[4], filterbank, 1024, 512, 80))
    np.testing.assert_array_equal(mels[24 + 4, 0], log_mel(later[4], filterbank, 1024, 512, 80))
    tta = predict_soundscapes([path], tta_bundle, progress=False)
    views = plain_bundle.predict(mels).reshape(3, 12, -1).mean(axis=0)
    np.testing.assert_allclose(tta[CLASSES].to_numpy(), views, atol=1e-5)
    assert tta["row_id"].tolist() == expected_rows("normal")
    assert (tta_bundle.tta_shift_samples, tta_bundle.tta_views) == ([shift], 3)

    # a shift under half a sample rounds to none: one view, like no TTA (it once crashed the reshape)
    tiny_bundle = load_bundle(with_postprocess(exported["f32"], tmp_path / "tiny", {"tta_shift_seconds": 1e-6}))
    assert tiny_bundle.postprocess["tta_shift_seconds"] == 1e-6
    assert (tiny_bundle.tta_shift_samples, tiny_bundle.tta_views) == ([0], 1)
    assert soundscape_mels(path, tiny_bundle)[0][0].shape[0] == 12
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


def separate_member_probabilities(bundle_dir: Path, mels: list[np.ndarray]) -> list[np.ndarray]:
    """Each member's IR compiled on its own (same CPU settings as load_bundle), run on its group's `mels`.

    `mels` holds one array per mel group of the bundle (bundle.json order).
    """
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
        group_mels = mels[member["mel_group"]]
        outputs.append(compiled.create_infer_request().infer({0: group_mels})[0].copy())
    return outputs


def test_a_specialist_member_replaces_its_classes(exported, soundscapes, tmp_path):
    source = with_postprocess(exported["f32"], tmp_path / "specialist", {})
    definition = json.loads((source / "bundle.json").read_text())
    definition["members"][1]["specialist_classes"] = CLASSES[:2]
    (source / "bundle.json").write_text(json.dumps(definition))
    bundle = load_bundle(source, threads=2)
    assert bundle.members[1].specialist_classes == CLASSES[:2]
    (mels,), _ = soundscape_mels(soundscapes["normal"], bundle)
    members = bundle.predict_members(mels)
    expected = np.concatenate([members[1][:, :2], members[0][:, 2:]], axis=1)  # weights 0.5 each
    frame = predict_soundscapes([soundscapes["normal"]], bundle, progress=False)
    np.testing.assert_allclose(frame[CLASSES].to_numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(bundle.predict(mels), expected, atol=1e-6)

    definition["members"][1]["specialist_classes"] = ["not-a-class"]
    (source / "bundle.json").write_text(json.dumps(definition))
    with pytest.raises(ValueError, match=r"bundle.json member .*specialist_classes \['not-a-class'\]"):
        load_bundle(source, threads=2)


def test_rank_combine_and_power_adjust_match_a_hand_computation(exported, soundscapes, tmp_path):
    postprocess = {
        "tta_shift_seconds": 1.0,
        "smoothing": 0.2,
        "power_adjust_top_k": 2,
        "power_adjust_exponent": 3.0,
    }
    source = with_postprocess(exported["int8"], tmp_path / "rank", postprocess, combine="rank")
    bundle = load_bundle(source, threads=2)
    assert bundle.combine == "rank" and bundle.postprocess == {**postprocess, "sonotype_max_pool": False}
    # the corrupt file's rows are 0 and take no part in the ranks
    names = ["normal", "short", "corrupt", "stereo48k", "silent"]
    frame = predict_soundscapes([soundscapes[n] for n in names], bundle, progress=False)
    assert frame["row_id"].tolist() == [row for n in names for row in expected_rows(n)]
    corrupt = frame["row_id"].str.startswith("corrupt_").to_numpy()
    assert corrupt.sum() == 12 and (frame[CLASSES].to_numpy()[corrupt] == 0).all()
    frame = frame[~corrupt]
    names.remove("corrupt")

    # by hand: every member on its own, TTA views averaged per member
    per_member: list[list[np.ndarray]] = [[], []]
    for name in names:
        mels, _ = soundscape_mels(soundscapes[name], bundle)
        n = len(expected_rows(name))
        assert mels[0].shape[0] == 3 * n
        for index, probs in enumerate(separate_member_probabilities(source, mels)):
            per_member[index].append(probs.reshape(3, n, -1).mean(axis=0))
    stacked = [np.concatenate(blocks).astype(np.float64) for blocks in per_member]  # (38, 4) each
    rows = len(stacked[0])
    # per-class ranks over all 38 decoded windows of the run, ties averaged, divided by the row count
    ranks = []
    for probs in stacked:
        rank = np.empty_like(probs)
        for c in range(probs.shape[1]):
            column = probs[:, c]
            rank[:, c] = [((column < v).sum() + ((column == v).sum() + 1) / 2) / rows for v in column]
        ranks.append(rank)
    combined = 0.6 * ranks[0] + 0.4 * ranks[1]
    expected, smoothed_only = [], []
    first = 0
    for name in names:
        probs = combined[first : first + len(expected_rows(name))]
        first += len(probs)
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


def reference_mels(path: Path, shift_seconds: float = 0.0) -> list[np.ndarray]:
    """Each mel group's log-mel windows of `path`, built by hand from `features` (views: 0, -s, +s).

    The window count is ceil(seconds / 5) of the first group's (32 kHz) decode.
    """
    out = []
    n_windows = int(np.ceil(decode_audio(path, MEL["sample_rate"], repair=True)[0].size / 32000 / 5.0 - 1e-6))
    for mel in (MEL, MEL_B):
        rate = mel["sample_rate"]
        wave, _ = decode_audio(path, rate, repair=True)
        shift = int(round(shift_seconds * rate))
        waves = [wave] + ([np.concatenate([np.zeros(shift, np.float32), wave]), wave[shift:]] if shift else [])
        filterbank = mel_filterbank(mel)
        out.append(np.stack([
            log_mel(window, filterbank, mel["n_fft"], mel["hop_length"], mel["top_db"])[None]
            for view in waves
            for window in window_waves(view, rate, 5.0, n_windows)
        ]))
    return out


def test_two_mel_groups_match_each_member_on_its_own_log_mels(two_groups, soundscapes, tmp_path):
    """Every member runs on its own group's log-mels; the bundle combines them with the weights."""
    bundle = load_bundle(two_groups, threads=2)
    assert [(g.n_mels, g.frames, g.sample_rate) for g in bundle.mel_groups] == [(32, 313, 32000), (24, 251, 16000)]
    assert [(m.name, m.mel_group) for m in bundle.members] == [("b0", 1), ("a0", 0), ("b1", 1)]
    for group, mel in zip(bundle.mel_groups, (MEL, MEL_B), strict=True):
        np.testing.assert_array_equal(group.filterbank, mel_filterbank(mel))
    weights = np.array([0.5, 0.3, 0.2])
    names = ["normal", "stereo48k", "short"]  # 32 kHz, 48 kHz stereo (resampled to both rates), short
    paths = [soundscapes[name] for name in names]
    expected, expected_members = [], []
    for name, path in zip(names, paths, strict=True):
        mels, row_ids = soundscape_mels(path, bundle)
        reference = reference_mels(path)
        n = len(expected_rows(name))
        assert [m.shape for m in mels] == [(n, 1, 32, 313), (n, 1, 24, 251)] and row_ids == expected_rows(name)
        for got, want in zip(mels, reference, strict=True):
            np.testing.assert_array_equal(got, want)
        members = np.stack(separate_member_probabilities(two_groups, reference))
        np.testing.assert_allclose(bundle.predict_members(mels), members, atol=1e-6)
        np.testing.assert_allclose(bundle.predict(mels), np.tensordot(weights, members, axes=1), atol=1e-6)
        expected.append(np.tensordot(weights, members, axes=1))
        expected_members.append(members)
    frame = predict_soundscapes(paths, bundle, progress=False)
    assert frame["row_id"].tolist() == [row for name in names for row in expected_rows(name)]
    np.testing.assert_allclose(frame[CLASSES].to_numpy(), np.concatenate(expected), atol=1e-6)
    with pytest.raises(ValueError, match="list of 2 arrays, one per mel group"):
        bundle.predict(mels[0])
    with pytest.raises(ValueError, match=r"mels\[1\] must have shape \(N, 1, 24, 251\)"):
        bundle.predict([mels[0], mels[0]])
    mels, _ = soundscape_mels(paths[0], bundle)
    with pytest.raises(ValueError, match=r"\[12, 11\] windows per mel group"):
        bundle.predict([mels[0], mels[1][:-1]])

    # TTA: each group shifts by the same 1 s in its own samples; views averaged per member
    tta_dir = with_postprocess(two_groups, tmp_path / "tta", {"tta_shift_seconds": 1.0})
    tta_bundle = load_bundle(tta_dir, threads=2)
    assert (tta_bundle.tta_shift_samples, tta_bundle.tta_views) == ([32000, 16000], 3)
    expected = []
    for name, path in zip(names, paths, strict=True):
        mels, _ = soundscape_mels(path, tta_bundle)
        reference = reference_mels(path, shift_seconds=1.0)
        for got, want in zip(mels, reference, strict=True):
            np.testing.assert_array_equal(got, want)
        n = len(expected_rows(name))
        members = [probs.reshape(3, n, -1).mean(axis=0) for probs in separate_member_probabilities(two_groups, reference)]
        expected.append(np.tensordot(weights, np.stack(members), axes=1))
    frame = predict_soundscapes(paths, tta_bundle, progress=False)
    np.testing.assert_allclose(frame[CLASSES].to_numpy(), np.concatenate(expected), atol=1e-6)

    # Members of group 1 at weight 0: group 1 is neither decoded nor computed
    definition = json.loads((two_groups / "bundle.json").read_text())
    for member in definition["members"]:
        member["weight"] = 1.0 if member["mel_group"] == 0 else 0.0
    only_a = tmp_path / "only_a"
    shutil.copytree(two_groups, only_a)
    (only_a / "bundle.json").write_text(json.dumps(definition))
    bundle_a = load_bundle(only_a, threads=2)
    assert [g.n_mels for g in bundle_a.mel_groups] == [32]
    assert [(m.name, m.mel_group) for m in bundle_a.members] == [("a0", 0)]
    mels, _ = soundscape_mels(paths[0], bundle_a)
    assert len(mels) == 1
    frame = predict_soundscapes(paths, bundle_a, progress=False)
    np.testing.assert_allclose(frame[CLASSES].to_numpy(), np.concatenate([m[1] for m in expected_members]), atol=1e-6)


def test_load_bundle_checks_mel_groups(two_groups, tmp_path):
    def broken(name: str, change) -> Path:
        target = tmp_path / name
        shutil.copytree(two_groups, target)
        definition = json.loads((target / "bundle.json").read_text())
        change(definition, target)
        (target / "bundle.json").write_text(json.dumps(definition))
        return target

    def old_format(definition, _):
        definition["mel"] = definition.pop("mel_groups")[0]

    def wrong_filterbank(_, target):
        np.save(target / "mel_filterbank_1.npy", mel_filterbank({**MEL_B, "n_mels": 20}))

    def wrong_group(definition, _):
        definition["members"][0]["mel_group"] = 0

    def missing_group(definition, _):
        definition["members"][1]["mel_group"] = 2

    def wrong_frames(definition, _):
        definition["mel_groups"][1]["window_frames"] = 250

    for change, message in [
        (old_format, "no mel_groups list.*re-export"),
        (wrong_filterbank, r"mel_filterbank_1.npy has shape \(20, 257\), expected \(24, 257\)"),
        (wrong_group, r"member 'b0' takes input .*mel_groups\[0\]\) gives \(batch, 1, 32, 313\)"),
        (missing_group, "member 'a0' in .*bundle.json has mel_group 2; expected an index into the 2 mel groups"),
        (wrong_frames, r"mel_groups\[1\] says window_frames 250, but .* give 251"),
    ]:
        with pytest.raises(ValueError, match=message):
            load_bundle(broken(change.__name__, change), threads=1)


def blocked_python(code: str) -> str:
    """Python source that makes torch & co. unimportable, then runs `code`."""
    return f"import sys\nfor _n in {BLOCKED!r}:\n    sys.modules[_n] = None\n" + code


def run_packed_predict(out: Path, workdir: Path, module: str, module_file: Path) -> subprocess.CompletedProcess:
    """Run the bundle's predict.py in `workdir` as a Kaggle notebook would, torch & co. unimportable;
    checks that it exits 0, imported none of `BLOCKED` and took `module` from the bundle's copy
    (`module_file`). Returns the finished process (its stderr is the log)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = blocked_python(
        "import runpy\n"
        "sys.argv = ['predict.py', '--threads', '2']\n"
        "try:\n"
        f"    runpy.run_path({str(out / 'predict.py')!r}, run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        f"assert not any(sys.modules.get(n) for n in {BLOCKED!r}), 'a blocked module was imported'\n"
        f"assert sys.modules[{module!r}].__file__ == {str(module_file)!r}, sys.modules[{module!r}].__file__\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_kaggle_bundle_predicts_without_torch(two_groups, soundscapes, tmp_path):
    out = tmp_path / "kaggle_bundle"
    data = tmp_path / "competition"
    # two mel groups, rank combine and post-processing: the packed code must carry
    # birdclef.runtime.postprocess and both filterbanks
    postprocess = {"smoothing": 0.1, "power_adjust_top_k": 2, "power_adjust_exponent": 2.0}
    source = with_postprocess(two_groups, tmp_path / "ranked", postprocess, combine="rank")
    summary = pack_bundle(source, out, data_dir=str(data))
    assert (out / "predict.py").exists() and (out / "README.md").exists()
    assert (out / "bundle.json").exists()
    assert sorted(p.name for p in out.glob("*.npy")) == ["mel_filterbank_0.npy", "mel_filterbank_1.npy"]
    for group in (0, 1):
        np.testing.assert_array_equal(
            np.load(out / f"mel_filterbank_{group}.npy"), np.load(source / f"mel_filterbank_{group}.npy")
        )
    readme = (out / "README.md").read_text()
    assert "24 mels, n_fft 512, hop 320, 16000 Hz" in readme and f"`{data}`" in readme
    # the common and runtime layers, copied whole (no module list to keep)
    package = Path(birdclef.__file__).parent
    shipped = sorted(p.relative_to(out / "birdclef") for p in (out / "birdclef").rglob("*.py"))
    expected = [Path("__init__.py")] + sorted(
        p.relative_to(package) for layer in ("common", "runtime") for p in (package / layer).rglob("*.py")
    )
    assert shipped == sorted(expected) and Path("runtime/predict.py") in shipped
    irs = sorted(str(p.relative_to(out)) for p in out.glob("members/*/*"))
    assert irs == [f"members/{i}/model_int8.{s}" for i in (0, 1, 2) for s in ("bin", "xml")]
    assert summary["bytes"] > 0 and not (out / "wheels").exists()
    # predict.py is birdclef/predict.py with the packed data folder as its --data default
    packed = (out / "predict.py").read_text().splitlines()
    original = (Path(birdclef.__file__).parent / "runtime" / "predict.py").read_text().splitlines()
    changed = [(a, b) for a, b in zip(original, packed, strict=True) if a != b]
    assert changed == [('DATA_DIR = "/kaggle/input/competitions/birdclef-2026"', f"DATA_DIR = {str(data)!r}")]

    (data / "test_soundscapes").mkdir(parents=True)
    names = ["normal", "short", "stereo48k", "corrupt"]
    for name in names:
        shutil.copy(soundscapes[name], data / "test_soundscapes")
    # Kaggle's sample lists a few rows of a hidden soundscape; the rows come from the audio
    sample = pd.DataFrame({"row_id": ["hidden_5", "hidden_10", "hidden_15"]})
    for label in CLASSES:
        sample[label] = 1.0 / len(CLASSES)
    sample.to_csv(data / "sample_submission.csv", index=False)
    workdir = tmp_path / "working"
    workdir.mkdir()
    result = run_packed_predict(out, workdir, "birdclef.runtime.postprocess",
                                out / "birdclef" / "runtime" / "postprocess.py")
    assert f"inference code from {out / 'birdclef'}" in result.stderr
    assert "int8 IR, OpenVINO CPU INFERENCE_PRECISION_HINT=f32" in result.stderr
    assert "combine rank" in result.stderr and "'power_adjust_top_k': 2" in result.stderr
    assert "1 undecodable, written as 0: ['corrupt.ogg']" in result.stderr
    written = pd.read_csv(workdir / "submission.csv")
    assert list(written.columns) == list(sample.columns)
    assert written["row_id"].tolist() == [row for name in sorted(names) for row in expected_rows(name)]
    assert not written.isna().any().any()
    assert (written[written["row_id"].str.startswith("corrupt_")][CLASSES] == 0).all().all()
    # the bundled code gives the pipeline's numbers
    bundle = load_bundle(source, threads=2)
    expected, stats = predict_submission(data / "test_soundscapes", data / "sample_submission.csv", bundle)
    assert stats["undecodable"] == ["corrupt.ogg"] and stats["rows_from_sample"] == 0
    assert written["row_id"].tolist() == expected["row_id"].tolist()
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


def test_sonotype_max_pool_is_carried_by_the_bundle_and_applied(soundscapes, tmp_path):
    calibration = calibration_windows(MEL)
    ensemble = {**tiny_ensemble(tmp_path, (1.0,), calibration), "postprocess": {"sonotype_max_pool": True}}
    export_ensemble(ensemble, tmp_path / "pooled", calibration, precision="f32")
    definition = json.loads((tmp_path / "pooled" / "bundle.json").read_text())
    assert definition["postprocess"] == {"sonotype_max_pool": True}
    # the tiny member's four outputs named as 2026 labels: one sonotype group (columns 0 and 2)
    classes = ["47158son01", "1139490", "47158son02", "9999son01"]
    (tmp_path / "pooled" / "bundle.json").write_text(json.dumps({**definition, "classes": classes}))
    plain_dir = with_postprocess(tmp_path / "pooled", tmp_path / "plain", {})
    data = tmp_path / "competition"
    (data / "test_soundscapes").mkdir(parents=True)
    shutil.copy(soundscapes["normal"], data / "test_soundscapes")
    pd.DataFrame(columns=["row_id", *classes]).to_csv(data / "sample_submission.csv", index=False)
    runs = {}
    for name, folder in (("pooled", tmp_path / "pooled"), ("plain", plain_dir)):
        bundle = load_bundle(folder, threads=2)
        assert bundle.postprocess["sonotype_max_pool"] is (name == "pooled")
        runs[name], _ = predict_submission(data / "test_soundscapes", data / "sample_submission.csv", bundle)
    plain, pooled = runs["plain"][classes].to_numpy(), runs["pooled"][classes].to_numpy()
    expected = plain.copy()
    expected[:, [0, 2]] = plain[:, [0, 2]].max(axis=1, keepdims=True)
    assert not np.allclose(plain[:, 0], plain[:, 2])  # the pooling has something to do
    np.testing.assert_allclose(pooled, expected, atol=1e-6)
