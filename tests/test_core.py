"""Tags, manifests, atomic writes, features and the metric."""

from __future__ import annotations

import json

import numpy as np
import pytest

from birdclef.common import io, metrics, versioning
from birdclef.common.manifest import StageManifest
from birdclef.runtime import features


def test_tag_is_stable_and_sensitive():
    a = versioning.stage_tag("train", {"lr": 0.001, "epochs": 3}, {"mels": "abc"})
    assert a == versioning.stage_tag("train", {"epochs": 3, "lr": 0.001}, {"mels": "abc"})
    assert a != versioning.stage_tag("train", {"lr": 0.002, "epochs": 3}, {"mels": "abc"})
    assert a != versioning.stage_tag("train", {"lr": 0.001, "epochs": 3}, {"mels": "abd"})
    assert len(a) == versioning.TAG_LENGTH
    prefixed = versioning.stage_tag("train", {}, prefix="tf_efficientnet_b0/r1")
    assert prefixed.startswith("tf_efficientnet_b0_r1-")
    with pytest.raises(KeyError, match="unknown stage"):
        versioning.stage_tag("nope", {})


def test_tag_changes_with_format_version(monkeypatch):
    before = versioning.stage_tag("mels", {"n_mels": 64})
    monkeypatch.setitem(versioning.FORMAT_VERSIONS, "mels", versioning.FORMAT_VERSIONS["mels"] + 1)
    assert versioning.stage_tag("mels", {"n_mels": 64}) != before


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), io.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    io.write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_dir_replaces_only_when_complete(tmp_path):
    target = tmp_path / "d"
    with io.atomic_dir(target) as tmp:
        (tmp / "x").write_text("1")
    with pytest.raises(ValueError), io.atomic_dir(target) as tmp:
        (tmp / "x").write_text("2")
        raise ValueError
    assert (target / "x").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_manifest_records_provenance(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("hello")
    manifest = StageManifest("mels", "abc", {"n_mels": 64}, {"vad": "x"}, [source])
    manifest.headline["rows"] = 3
    data = manifest.write(tmp_path / "manifest.json")
    saved = json.loads((tmp_path / "manifest.json").read_text())
    assert saved == json.loads(json.dumps(data, default=str))
    assert saved["inputs"][0]["bytes"] == 5 and len(saved["inputs"][0]["sha256"]) == 64
    assert saved["packages"]["numpy"] == np.__version__
    assert saved["headline"] == {"rows": 3}
    assert saved["started"] <= saved["finished"]


def test_log_mel_matches_librosa():
    import librosa

    settings = {"sample_rate": 32000, "n_fft": 1024, "hop_length": 512, "n_mels": 64, "fmin": 50, "fmax": 14000}
    rng = np.random.default_rng(0)
    wave = rng.standard_normal(32000 * 2).astype(np.float32) * 0.1
    fb = features.mel_filterbank(settings)
    ours = features.log_mel(wave, fb, 1024, 512, top_db=None)
    reference = librosa.power_to_db(
        librosa.feature.melspectrogram(
            y=wave, sr=32000, n_fft=1024, hop_length=512, n_mels=64, fmin=50, fmax=14000, pad_mode="constant"
        ),
        ref=1.0,
        amin=1e-10,
        top_db=None,
    )
    assert ours.shape == reference.shape == (64, features.frames_for(wave.size, 512))
    assert np.abs(ours - reference).max() < 1e-2


def test_window_waves_pads_and_cuts():
    wave = np.ones(32000 * 7, dtype=np.float32)
    windows = features.window_waves(wave, 32000, 5.0, 2)
    assert windows.shape == (2, 160000)
    assert windows[1, 32000 * 2 - 1] == 1.0 and windows[1, 32000 * 2] == 0.0


def test_macro_roc_auc_skips_classes_without_positives():
    y_true = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]])
    perfect = np.array([[0.9, 0.1, 0.5], [0.1, 0.9, 0.2], [0.8, 0.2, 0.9], [0.2, 0.7, 0.1]])
    assert metrics.macro_roc_auc(y_true, perfect) == 1.0
    inverted = 1.0 - perfect
    assert metrics.macro_roc_auc(y_true, inverted) == 0.0
    per_class = metrics.per_class_roc_auc(y_true, perfect)
    assert np.isnan(per_class[2])
    with pytest.raises(ValueError, match="must be equal"):
        metrics.macro_roc_auc(y_true, perfect[:, :2])


@pytest.mark.parametrize("name", ["config.yaml", "config/birdclef2025.yaml"])
def test_shipped_configs_are_valid(name):
    import yaml
    from conftest import REPO
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / name).read_text())
    validate(config, str(REPO / "schemas/config.schema.yaml"))
    assert config["train"]["backbones"][0]["pretrained"] is False  # filled in from the schema default
    for backbone in config["train"]["backbones"]:
        # A backbone's mels override only what it names: no schema defaults may fill it.
        assert set(backbone.get("mels", {})) <= {"n_fft", "hop_length", "n_mels"}, backbone


def test_write_ogg_long_recording(tmp_path):
    import soundfile as sf

    from birdclef.runtime.audio import write_ogg

    wave = (np.random.default_rng(0).standard_normal(32000 * 70) * 0.1).astype(np.float32)
    write_ogg(tmp_path / "long.ogg", wave, 32000)  # > 2**21 frames in one call used to crash libsndfile
    assert sf.info(str(tmp_path / "long.ogg")).frames == wave.size
