"""The fast log-mel, the mel filterbank port, the streamed caches, rare classes, normalisation."""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import REAL_AUDIO, tone

from birdclef import mels
from birdclef.runtime import features

MEL = {
    "sample_rate": 32000,
    "n_fft": 1024,
    "hop_length": 512,
    "n_mels": 32,
    "fmin": 50,
    "fmax": 14000,
    "top_db": 80,
    "window_seconds": 1.0,
    "max_seconds": 2.0,
}


def librosa_log_mel(wave, settings, top_db):
    import librosa

    power = librosa.feature.melspectrogram(
        y=wave, sr=settings["sample_rate"], n_fft=settings["n_fft"], hop_length=settings["hop_length"],
        n_mels=settings["n_mels"], fmin=settings["fmin"], fmax=settings["fmax"], pad_mode="constant",
    )
    return librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=top_db)


@pytest.mark.parametrize(
    ("sample_rate", "n_fft", "n_mels", "fmin", "fmax"),
    [(32000, 2048, 128, 20, 16000), (32000, 1024, 64, 50, 14000), (32000, 2048, 128, 0, None),
     (22050, 512, 40, 1500, 8000), (16000, 400, 80, 0, 8000)],
)
def test_filterbank_is_librosas_value_for_value(sample_rate, n_fft, n_mels, fmin, fmax):
    import librosa

    settings = {"sample_rate": sample_rate, "n_fft": n_fft, "n_mels": n_mels, "fmin": fmin, "fmax": fmax}
    ours = features.mel_filterbank(settings)
    reference = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, reference.astype(np.float32))


def test_filterbank_warns_about_empty_bands():
    with pytest.warns(UserWarning, match="empty mel filters"):
        features.mel_filterbank({"sample_rate": 32000, "n_fft": 256, "n_mels": 128, "fmin": 0, "fmax": 16000})


@pytest.mark.parametrize("seconds", [0.01, 0.3, 4.1])  # shorter than n_fft; one block; several blocks
@pytest.mark.parametrize("n_fft", [1024, 2048])
def test_log_mel_matches_librosa_on_real_audio(seconds, n_fft):
    settings = {**MEL, "n_fft": n_fft, "n_mels": 128, "fmin": 20, "fmax": 16000}
    wave, rate = sf.read(REAL_AUDIO / "spinetail.flac", dtype="float32")
    assert rate == 32000
    wave = wave[32000 * 3 : 32000 * 3 + int(seconds * 32000)]
    ours = features.log_mel(wave, features.mel_filterbank(settings), n_fft, 512, 80)
    with pytest.warns(UserWarning) if wave.size < n_fft // 2 else contextlib.nullcontext():
        reference = librosa_log_mel(wave, settings, 80)
    assert ours.dtype == np.float32 and ours.flags.c_contiguous
    assert ours.shape == reference.shape == (128, features.frames_for(wave.size, 512))
    assert np.abs(ours - reference).max() < 2e-3  # dB; float16 caching rounds to ~0.03


def test_log_mel_accepts_any_filterbank_object_and_checks_its_shape():
    wave = tone(1.0, 2000)
    fb = features.mel_filterbank(MEL)
    first = features.log_mel(wave, fb, 1024, 512, 80)
    np.testing.assert_array_equal(features.log_mel(wave, fb.astype(np.float64), 1024, 512, 80), first)
    np.testing.assert_array_equal(features.log_mel(wave, fb.copy(), 1024, 512, 80), first)
    with pytest.raises(ValueError, match="filterbank has shape"):
        features.log_mel(wave, fb, 2048, 512, 80)
    silent = features.log_mel(np.zeros(16000, np.float32), fb, 1024, 512, 80)
    np.testing.assert_allclose(silent, -100.0, rtol=1e-6)


def write_recordings(folder, durations, labels):
    rows = []
    for i, (seconds, label) in enumerate(zip(durations, labels, strict=True)):
        path = folder / f"{label}_{i}.ogg"
        sf.write(path, tone(seconds, 800 + 300 * i, seed=i), 32000, format="OGG", subtype="VORBIS")
        rows.append({"filename": path.name, "primary_label": label, "secondary_labels": [],
                     "collection": "XC", "rating": 4.0, "audio_path": str(path)})
    return pd.DataFrame(rows)


def test_cache_is_streamed_identically_for_any_worker_count(tmp_path):
    catalog = write_recordings(tmp_path, [3.0, 1.5, 2.5, 0.4, 4.0], ["a", "a", "b", "b", "c"])
    outputs = []
    for threads in (1, 2):
        out = tmp_path / f"t{threads}"
        stats = mels.build_mel_cache(catalog, out / "m.npy", out / "i.parquet", MEL, threads=threads,
                                     progress=False)
        outputs.append(((out / "m.npy").read_bytes(), pd.read_parquet(out / "i.parquet")))
        assert stats["rare_recordings"] == 0
    assert outputs[0][0] == outputs[1][0]
    pd.testing.assert_frame_equal(outputs[0][1], outputs[1][1])
    cache = np.load(tmp_path / "t2" / "m.npy", mmap_mode="r")
    index = outputs[1][1]
    assert cache.dtype == np.float16 and cache.shape == (int(index["frames"].sum()), 32)
    assert list(index["frames"]) == [features.frames_for(int(min(s, 2.0) * 32000), 512)
                                     for s in (3.0, 1.5, 2.5, 0.4, 4.0)]
    assert not index["rare"].any()
    # The streamed file is byte for byte what numpy writes for the same array.
    reference = tmp_path / "reference.npy"
    np.save(reference, np.asarray(cache))
    assert reference.read_bytes() == (tmp_path / "t2" / "m.npy").read_bytes()


def test_cache_of_nothing_but_bad_audio_is_an_empty_array(tmp_path):
    (tmp_path / "bad.ogg").write_bytes(b"junk")
    catalog = pd.DataFrame({"filename": ["bad.ogg"], "primary_label": ["a"], "secondary_labels": [[]],
                            "collection": ["XC"], "rating": [1.0], "audio_path": [str(tmp_path / "bad.ogg")]})
    stats = mels.build_mel_cache(catalog, tmp_path / "m.npy", tmp_path / "i.parquet", MEL, progress=False)
    assert stats["bad_audio"] == 1 and stats["frames"] == 0
    assert np.load(tmp_path / "m.npy").shape == (0, 32)
    assert len(pd.read_parquet(tmp_path / "i.parquet")) == 0


@pytest.mark.parametrize(("rare_max_seconds", "expected_rare_seconds"), [(3.0, 3.0), (None, 4.0)])
def test_rare_classes_get_longer_caches(tmp_path, rare_max_seconds, expected_rare_seconds):
    # class "a" has 3 recordings, "b" 1: with rare_threshold 2 only "b" is rare.
    catalog = write_recordings(tmp_path, [4.0, 4.0, 4.0, 4.0], ["a", "a", "a", "b"])
    settings = {**MEL, "rare_threshold": 2, "rare_max_seconds": rare_max_seconds}
    stats = mels.build_mel_cache(catalog, tmp_path / "m.npy", tmp_path / "i.parquet", settings,
                                 progress=False)
    index = pd.read_parquet(tmp_path / "i.parquet")
    assert list(index["rare"]) == [False, False, False, True] and stats["rare_recordings"] == 1
    assert list(index["frames"][:3]) == [features.frames_for(2 * 32000, 512)] * 3
    assert index["frames"].iloc[3] == features.frames_for(int(expected_rare_seconds * 32000), 512)
    # Training crops and validation windows of rare recordings use all of their frames.
    from birdclef.train import usable_frames

    usable = usable_frames(index, crop_frames_max=50)
    assert list(usable) == [50, 50, 50, index["frames"].iloc[3]]
    assert list(usable_frames(index.drop(columns="rare"), 50)) == [50] * 4


def test_rare_threshold_zero_keeps_every_recording_at_max_seconds():
    catalog = pd.DataFrame({"primary_label": ["a", "a", "b"]})
    seconds, rare = mels.recording_seconds(catalog, {"max_seconds": 30})
    assert list(seconds) == [30, 30, 30] and not rare.any()
    seconds, rare = mels.recording_seconds(catalog, {"max_seconds": 30, "rare_threshold": 2,
                                                     "rare_max_seconds": 60})
    assert list(seconds) == [30, 30, 60] and list(rare) == [False, False, True]


def test_soundscape_cache_streams_the_direct_windows(tmp_path):
    folder = tmp_path / "sc"
    folder.mkdir()
    wave = tone(2.5, 1500)
    sf.write(folder / "s1.ogg", wave, 32000, format="OGG", subtype="VORBIS")
    mels.build_soundscape_cache([str(folder / "s1.ogg")], tmp_path / "m.npy", tmp_path / "i.parquet",
                                MEL, threads=2, progress=False)
    array = np.load(tmp_path / "m.npy", mmap_mode="r")
    from birdclef.runtime.audio import read_audio

    decoded = read_audio(folder / "s1.ogg", 32000)
    windows = features.window_waves(decoded, 32000, 1.0, 3)
    fb = features.mel_filterbank(MEL)
    assert array.shape == (3, 32, features.window_frames(MEL))
    for k in range(3):
        direct = features.log_mel(windows[k], fb, 1024, 512, 80).astype(np.float16)
        np.testing.assert_array_equal(array[k], direct)


def test_normalization_setting_is_checked():
    from birdclef.train.model import build_model

    with pytest.raises(ValueError, match="mels.normalization"):
        build_model({"backbone": "test_efficientnet", "n_classes": 3, "normalization": "zscore"})


@pytest.mark.parametrize("normalization", ["per_example", "minmax", "none"])
def test_model_normalization_travels_with_the_checkpoint_and_converts(tmp_path, normalization):
    import openvino as ov
    import torch

    from birdclef.train.model import InferenceWrapper, build_model, load_model, save_checkpoint

    spec = {"backbone": "test_efficientnet", "n_classes": 3, "normalization": normalization}
    torch.manual_seed(0)
    model = build_model(spec).eval()
    save_checkpoint(tmp_path / "m.pt", model, spec)
    loaded, _ = load_model(tmp_path / "m.pt")
    assert loaded.normalization == normalization
    x = torch.randn(2, 1, 32, 63) * 10 - 40
    with torch.no_grad():
        expected = InferenceWrapper(loaded)(x).numpy()
        # The scaling is in the graph: a constant shift of the dB changes nothing
        # for the per-example scalings, and something for none.
        shifted = InferenceWrapper(loaded)(x + 7.0).numpy()
    assert np.allclose(expected, shifted, atol=1e-5) == (normalization != "none")
    converted = ov.convert_model(InferenceWrapper(loaded).eval(), example_input=x)
    compiled = ov.compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    np.testing.assert_allclose(compiled(x.numpy())[0], expected, atol=1e-4)
    assert build_model({"backbone": "test_efficientnet", "n_classes": 3}).normalization == "per_example"
    with pytest.raises(ValueError, match="mels.normalization"):
        build_model({**spec, "normalization": "zscore"})
