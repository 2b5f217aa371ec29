"""Waveform augmentation (train.wave_augment): the transforms, the cache-equal unaugmented path,
the noise and speech sources, bad settings and bad noise files, and the training data path."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import tone

from birdclef.common.plan_rounds import check_wave_augment, unused_option_keys, used_wave_augment
from birdclef.mels import build_mel_cache
from birdclef.train.data import TrainWindows, tiled_window
from birdclef.train.settings import TrainSettings
from birdclef.train.wave_augment import (
    WAVE_STREAM,
    SegmentBank,
    WaveAugmentSettings,
    WaveSources,
    apply_gain,
    colored_noise,
    empty_labelled_windows,
    empty_teacher_windows,
    folder_bank,
    load_wave_sources,
    mean_power,
    mix_at_snr,
    overlay_at_snr,
    speech_bank,
)

SR = 32000
MEL = {"sample_rate": SR, "n_fft": 1024, "hop_length": 512, "n_mels": 64, "fmin": 50, "fmax": 14000,
       "top_db": 80, "window_seconds": 5, "max_seconds": 12, "rare_threshold": 0, "rare_max_seconds": None}
WINDOW = 313


def snr_db(signal: np.ndarray, added: np.ndarray) -> float:
    return 10 * math.log10(mean_power(signal) / mean_power(added))


def psd_slope_db_per_octave(noise: np.ndarray) -> float:
    """Least-squares slope of the power spectrum (dB) against log2 frequency, 100 Hz .. 10 kHz."""
    spectrum = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(noise.size, 1 / SR)
    band = (freqs > 100) & (freqs < 10000)
    return float(np.polyfit(np.log2(freqs[band]), 10 * np.log10(spectrum[band]), 1)[0])


# --------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("target", [-5.0, 3.0, 20.0])
def test_mix_at_snr_achieves_the_snr(target):
    rng = np.random.default_rng(0)
    signal = tone(5.0, 1500)
    noise = rng.standard_normal(3 * SR).astype(np.float32) * 7  # shorter: tiled
    mixed = mix_at_snr(signal, noise, target)
    assert mixed.shape == signal.shape
    assert snr_db(signal, mixed - signal) == pytest.approx(target, abs=0.01)


def test_gain_scales_the_level():
    signal = tone(1.0, 500)
    assert 10 * math.log10(mean_power(apply_gain(signal, -6.0)) / mean_power(signal)) == pytest.approx(-6.0, abs=1e-3)
    assert 10 * math.log10(mean_power(apply_gain(signal, 4.5)) / mean_power(signal)) == pytest.approx(4.5, abs=1e-3)


@pytest.mark.parametrize("slope", [-6.02, -3.01, 0.0, 3.01])
def test_colored_noise_has_the_spectral_slope(slope):
    noise = colored_noise(10 * SR, slope, np.random.default_rng(1))
    assert mean_power(noise) == pytest.approx(1.0, rel=1e-3)
    fitted = psd_slope_db_per_octave(noise)
    assert fitted == pytest.approx(slope, abs=0.3)
    if slope:
        assert np.sign(fitted) == np.sign(slope)


def test_speech_overlay_at_the_snr_over_the_covered_part():
    signal = np.concatenate([np.zeros(SR, np.float32), tone(4.0, 800)])
    clip = tone(1.0, 300, seed=3) * 5
    out = overlay_at_snr(signal, clip, 12.0, 2 * SR)
    added = out - signal
    assert np.all(added[: 2 * SR] == 0) and np.all(added[3 * SR :] == 0)
    assert snr_db(signal[2 * SR : 3 * SR], added[2 * SR : 3 * SR]) == pytest.approx(12.0, abs=0.01)
    # past the end: the clip is cut, the signal keeps its length
    assert overlay_at_snr(signal, clip, 12.0, signal.size - 100).shape == signal.shape


# --------------------------------------------------------------------------- settings


def test_bad_ranges_name_the_setting():
    with pytest.raises(ValueError, match=r"train\.wave_augment\.snr_db .*min 30.* > max 3"):
        WaveAugmentSettings(prob=0.5, snr_db=[30.0, 3.0])
    with pytest.raises(ValueError, match=r"train\.wave_augment\.speech_snr_db"):
        check_wave_augment({"speech_snr_db": [5, 1]})
    with pytest.raises(ValueError, match=r"train\.wave_augment\.noise_prob"):
        check_wave_augment({"noise_prob": 1.5})
    with pytest.raises(ValueError, match="unknown train.wave_augment settings"):
        WaveAugmentSettings.from_dict({"snr": [1, 2]})


def test_off_leaves_the_block_out_and_on_keeps_only_used_keys():
    assert "wave_augment" in unused_option_keys({"wave_augment": {"prob": 0.0}})
    assert "wave_augment" not in unused_option_keys({"wave_augment": {"prob": 0.5}})
    full = {"prob": 0.5, "noise_source": None, "noise_prob": 0.5, "snr_db": [3, 30], "empty_threshold": 0.1,
            "gain_db": [-6, 6], "color_noise_prob": 0.3, "color_noise_snr_db": [10, 40],
            "color_noise_slope_db": [-6, 3], "speech_prob": 0.0, "speech_snr_db": [10, 30]}
    assert used_wave_augment(full) == {"prob": 0.5, "gain_db": [-6, 6], "color_noise_prob": 0.3,
                                       "color_noise_snr_db": [10, 40], "color_noise_slope_db": [-6, 3]}
    folder = used_wave_augment({**full, "noise_source": "noise/"})
    assert folder["noise_source"] == "noise/" and "empty_threshold" not in folder
    assert used_wave_augment({**full, "noise_source": "soundscapes"})["empty_threshold"] == 0.1
    # the settings rebuilt from the used keys: the parts left out are off
    settings = TrainSettings(wave_augment=used_wave_augment(full))
    assert settings.wave_augment.prob == 0.5 and not settings.wave_augment.noise_on
    assert settings.wave_augment.speech_prob == 0.0


# --------------------------------------------------------------------------- sources


def test_noise_folder_without_audio_names_the_folder(tmp_path):
    folder = tmp_path / "noise"
    folder.mkdir()
    (folder / "readme.txt").write_text("no audio here")
    with pytest.raises(ValueError, match=f"noise_source: the folder {folder} holds no audio"):
        folder_bank(folder, SR)
    with pytest.raises(ValueError, match="is not a folder"):
        folder_bank(tmp_path / "missing", SR)


def test_unreadable_noise_file_is_skipped_and_counted(tmp_path):
    folder = tmp_path / "noise"
    (folder / "sub").mkdir(parents=True)
    sf.write(folder / "sub" / "rain.flac", tone(2.0, 200), SR)
    (folder / "broken.ogg").write_bytes(b"not an ogg file at all")
    bank, skipped = folder_bank(folder, SR)
    assert bank.paths == [str(folder / "sub" / "rain.flac")] and bank.lengths.tolist() == [2 * SR]
    assert [s["path"] for s in skipped] == [str(folder / "broken.ogg")]
    clip = bank.draw(np.random.default_rng(0), SR)
    assert clip.shape == (SR,)
    # the counts reach the train manifest through WaveSources.stats
    catalog = tmp_path / "catalog.parquet"
    pd.DataFrame({"filename": ["a.ogg"], "path": ["a.ogg"], "audio_path": ["a.ogg"]}).to_parquet(catalog)
    sources = load_wave_sources(WaveAugmentSettings(prob=1.0, noise_source=str(folder), noise_prob=1.0),
                                {"wave_catalog": str(catalog), "noise_dir": str(folder)}, MEL, ["x"], None)
    assert sources.stats["noise_files_skipped"] == 1 and sources.stats["noise_segments"] == 1
    assert sources.stats["noise_skipped"][0]["path"] == str(folder / "broken.ogg")
    bank.paths[0] = str(folder / "broken.ogg")  # a file that breaks later: no clip, counted
    assert bank.draw(np.random.default_rng(0), SR) is None and bank.failed == 1


def test_empty_soundscape_windows():
    labelled = pd.DataFrame({"row_id": ["s1_5", "s1_10", "s2_5", "s3_5"], "soundscape": ["s1", "s1", "s2", "s3"],
                             "end_s": [5, 10, 5, 5], "split": ["train", "train", "train", "validation"],
                             "a": [1.0, 0.0, 0.0, 0.0], "b": [0.0, 0.0, 0.0, 0.0]})
    assert empty_labelled_windows(labelled, ["a", "b"])["row_id"].tolist() == ["s1_10", "s2_5"]
    index = pd.DataFrame({"source": ["recording", "soundscape", "soundscape", "soundscape"],
                          "filename": ["r/x.ogg", "s1.ogg", "s1.ogg", "s3.ogg"],
                          "row_id": ["x_5", "s1_5", "s1_10", "s3_5"], "end_s": [5.0, 5.0, 10.0, 5.0]})
    logits = np.array([[-9, -9], [3.0, np.nan], [-4.0, np.nan], [-9, -9]], np.float32)
    empty = empty_teacher_windows(index, logits, 0.1, exclude_row_ids=["s3_5"])
    assert empty["row_id"].tolist() == ["s1_10"] and empty["soundscape"].tolist() == ["s1"]


def test_speech_bank_reads_the_original_recordings():
    spans = pd.DataFrame({"filename": ["a/1.ogg", "a/1.ogg", "gone.ogg"], "start_s": [0.5, 2.0, 0.0],
                          "end_s": [1.0, 2.0, 1.0]})
    catalog = pd.DataFrame({"filename": ["a/1.ogg"], "path": ["/data/a/1.ogg"]})
    bank = speech_bank(spans, catalog, SR)
    assert bank.paths == ["/data/a/1.ogg"] and bank.starts.tolist() == [SR // 2] and bank.lengths.tolist() == [SR // 2]


# --------------------------------------------------------------------------- cache-equal windows


@pytest.fixture
def cached(tmp_path: Path):
    """Three recordings (7.3 s, 20 s longer than max_seconds, 2.1 s shorter than a window), their
    mel cache and the `WaveSources` that read them."""
    rng = np.random.default_rng(5)
    rows = []
    for k, seconds in enumerate([7.3, 20.0, 2.1]):
        path = tmp_path / f"r{k}.ogg"
        wave = tone(seconds, 700 + 400 * k, seed=k) * np.linspace(0.2, 1.0, int(seconds * SR), dtype=np.float32)
        wave += 0.02 * rng.standard_normal(wave.size).astype(np.float32)
        sf.write(path, wave, SR, format="OGG", subtype="VORBIS")
        rows.append({"filename": f"r{k}.ogg", "path": str(path), "audio_path": str(path), "primary_label": "a",
                     "secondary_labels": [], "collection": "XC", "rating": 4.0})
    catalog = pd.DataFrame(rows)
    build_mel_cache(catalog, tmp_path / "mels.npy", tmp_path / "index.parquet", MEL, progress=False)
    mels = np.load(tmp_path / "mels.npy", mmap_mode="r")
    index = pd.read_parquet(tmp_path / "index.parquet")
    catalog.to_parquet(tmp_path / "catalog.parquet")
    sources = WaveSources(WaveAugmentSettings(prob=1.0), dict(zip(catalog["filename"], catalog["audio_path"],
                                                                  strict=True)), MEL)
    return mels, index, sources


def test_unaugmented_window_equals_the_cached_window(cached):
    mels, index, sources = cached
    augmenter = sources.augmenter(index)
    for row in range(len(index)):
        offset, frames = int(index["offset"][row]), int(index["frames"][row])
        recording = np.asarray(mels[offset : offset + frames], np.float32)
        starts = [0] if frames <= WINDOW else [0, 1, 2, 3, 57, frames - WINDOW - 1, frames - WINDOW]
        for start in starts:
            expected = tiled_window(recording, start, WINDOW).T
            window = augmenter.window(mels, row, start, frames, WINDOW, None)
            assert window.shape == expected.shape == (MEL["n_mels"], WINDOW)
            # float16 rounding of the top_db reference may move a clipped value by one step
            assert np.abs(window - expected).max() <= 0.07, (row, start)
            assert np.mean(window == expected) > 0.99, (row, start)


def test_augmented_window_changes_the_crop_and_dataset_path(cached, tmp_path):
    mels, index, sources = cached
    noise_dir = tmp_path / "noise"
    noise_dir.mkdir()
    sf.write(noise_dir / "hiss.flac", np.random.default_rng(2).standard_normal(3 * SR).astype(np.float32) * 0.1, SR)
    wave = WaveAugmentSettings(prob=1.0, noise_source=str(noise_dir), noise_prob=1.0, snr_db=[0.0, 0.0],
                               gain_db=[0.0, 0.0], color_noise_prob=1.0)
    bank, _ = folder_bank(noise_dir, SR)
    sources = WaveSources(wave, sources.audio_paths, MEL, noise=bank)
    settings = TrainSettings(spec_augment=False, wave_augment=wave)
    targets = np.ones((len(index), 1), np.float32)
    dataset = TrainWindows(mels, index["offset"].to_numpy(), index["frames"].to_numpy(), targets, WINDOW,
                           10_000, settings, wave=sources.augmenter(index))
    plain = TrainWindows(mels, index["offset"].to_numpy(), index["frames"].to_numpy(), targets, WINDOW,
                         10_000, TrainSettings(spec_augment=False))
    augmented, cached_mel = dataset[(0, 1, 123)][0].numpy(), plain[(0, 1, 123)][0].numpy()
    assert augmented.shape == cached_mel.shape
    # noise at 0 dB SNR lifts the quiet bins of the tone recording
    assert np.median(augmented) > np.median(cached_mel) + 3
    assert np.array_equal(augmented, dataset[(0, 1, 123)][0].numpy())  # the example's seed decides
    assert not np.array_equal(augmented, dataset[(0, 1, 124)][0].numpy())
    # prob 0.5: an example's own stream decides whether it is augmented
    half = TrainSettings(spec_augment=False, wave_augment={**dataclasses.asdict(wave), "prob": 0.5})
    dataset = TrainWindows(mels, index["offset"].to_numpy(), index["frames"].to_numpy(), targets, WINDOW,
                           10_000, half, wave=sources.augmenter(index))
    for seed in range(6):
        changed = not np.array_equal(dataset[(0, 1, seed)][0].numpy(), plain[(0, 1, seed)][0].numpy())
        assert changed == (np.random.default_rng([seed, WAVE_STREAM]).random() < 0.5), seed


def test_segment_bank_draw_cuts_long_segments(tmp_path):
    path = tmp_path / "long.flac"
    sf.write(path, np.arange(4 * SR, dtype=np.float32) / (4 * SR), SR)
    bank = SegmentBank([str(path)], np.array([SR]), np.array([2 * SR]), SR)
    clip = bank.draw(np.random.default_rng(0), SR // 2)
    assert clip.size == SR // 2
    first = int(round(clip[0] * 4 * SR))
    assert SR <= first <= 3 * SR - SR // 2  # inside the segment


# --------------------------------------------------------------------------- the plan


def _train_tags(plan) -> list[str]:
    return sorted(plan.train_runs)


def test_the_plan_tags_and_checks_wave_augment():
    from test_plan import EVERYTHING_EXISTS, load_config, make_plan

    base = make_plan(load_config(), **EVERYTHING_EXISTS)
    on = make_plan(load_config({"train": {"wave_augment": {"prob": 0.5, "noise_source": "soundscapes"}}}),
                   **EVERYTHING_EXISTS)
    assert _train_tags(on) != _train_tags(base) and on.mels_tag == base.mels_tag
    run = on.train_runs[_train_tags(on)[0]]
    assert run["settings"]["wave_augment"] == {"prob": 0.5, "noise_source": "soundscapes", "noise_prob": 0.5,
                                               "snr_db": [3.0, 30.0], "empty_threshold": 0.1,
                                               "gain_db": [-6.0, 6.0]}
    # keys of parts that are off change no tag; off (prob 0) is the tag without the block
    idle = make_plan(load_config({"train": {"wave_augment": {"prob": 0.5, "noise_source": "soundscapes",
                                                             "speech_snr_db": [0, 1]}}}), **EVERYTHING_EXISTS)
    assert _train_tags(idle) == _train_tags(on)
    off = make_plan(load_config({"train": {"wave_augment": {"prob": 0.0, "snr_db": [1, 2]}}}), **EVERYTHING_EXISTS)
    assert _train_tags(off) == _train_tags(base)
    with pytest.raises(ValueError, match=r"train\.wave_augment\.snr_db is \[20, 5\]: min 20 > max 5"):
        make_plan(load_config({"train": {"wave_augment": {"prob": 0.5, "snr_db": [20, 5]}}}), **EVERYTHING_EXISTS)
    with pytest.raises(ValueError, match=r"train\.wave_augment\.noise_source is 'soundscapes' but teacher"):
        make_plan(load_config({"soundscape_labels": {"file": None},
                               "train": {"wave_augment": {"prob": 0.5, "noise_source": "soundscapes"}}}),
                  **EVERYTHING_EXISTS)
    with pytest.raises(ValueError, match=r"train\.wave_augment\.speech_prob is 0\.3 but vad\.enabled is false"):
        make_plan(load_config({"vad": {"enabled": False}, "train": {"wave_augment": {"prob": 0.5, "speech_prob": 0.3}}}),
                  **EVERYTHING_EXISTS)
