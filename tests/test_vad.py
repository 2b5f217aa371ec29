"""Tests for the VAD stage (birdclef.vad): detection, cutting and the stage itself.

Speech comes from real recordings in the shared data folder beside the repo
(`../shared/data/real-audio`) or, failing that, from the espeak-ng clips shipped
as package data (`src/birdclef/data/speech/*.ogg`); tests that need one skip
with the reason when it is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import birdclef
from birdclef import vad
from birdclef.runtime.audio import BadAudioError, read_audio, resample
from birdclef.vad import scan as vad_scan

REPO = Path(__file__).resolve().parents[1]
REAL_AUDIO = Path(__file__).resolve().parents[2] / "shared/data/real-audio"
PACKAGE_SPEECH = Path(birdclef.__file__).resolve().parent / "data/speech"
FIELD_RECORDINGS = ["birds_10s", "soundscape_1min", "great_plains_toad", "spinetail"]
SR = 32000
TOLERANCE_S = 0.3


def real_audio(name: str) -> np.ndarray:
    """A real recording at 32 kHz, or skip the test when the shared folder is missing."""
    path = REAL_AUDIO / f"{name}.flac"
    if not path.exists():
        pytest.skip(f"real recordings not found at {REAL_AUDIO} (CI has them beside the repo)")
    return read_audio(path, SR)


def package_speech_clips() -> list[Path]:
    """The espeak-ng speech clips shipped as package data (may be none yet)."""
    return sorted(PACKAGE_SPEECH.glob("*.ogg")) if PACKAGE_SPEECH.is_dir() else []


def any_speech_clip() -> np.ndarray:
    """A speech clip at 32 kHz from the shared folder or the package data, else skip."""
    path = REAL_AUDIO / "speech_en.flac"
    if path.exists():
        return read_audio(path, SR)
    clips = package_speech_clips()
    if clips:
        return read_audio(clips[0], SR)
    pytest.skip(f"no speech clip: neither {REAL_AUDIO} nor {PACKAGE_SPEECH}/*.ogg exists")


def any_background(seconds: float) -> np.ndarray:
    """A bird field recording when available, else quiet white noise, `seconds` long."""
    path = REAL_AUDIO / "soundscape_1min.flac"
    if path.exists():
        wave = read_audio(path, SR)
    else:
        wave = np.random.default_rng(1).normal(0, 0.01, int(60 * SR)).astype(np.float32)
    return wave[: int(seconds * SR)].copy()


def active_extent(speech: np.ndarray, sample_rate: int = SR) -> tuple[float, float]:
    """First and last second where the clip's 10 ms energy is within 35 dB of its peak."""
    window = sample_rate // 100
    envelope = np.sqrt(
        np.convolve(speech.astype(np.float64) ** 2, np.ones(window) / window, "same")
    )
    active = np.flatnonzero(envelope > envelope.max() * 10 ** (-35 / 20))
    return active[0] / sample_rate, active[-1] / sample_rate


def mix(background: np.ndarray, speech: np.ndarray, offset_s: float) -> np.ndarray:
    """Add `speech` at `offset_s`, scaled to the background's RMS (0 dB SNR)."""
    start = int(offset_s * SR)
    assert start + speech.size <= background.size
    first, last = active_extent(speech)
    speech_rms = np.sqrt(np.mean(speech[int(first * SR) : int(last * SR)] ** 2))
    gain = np.sqrt(np.mean(background**2)) / speech_rms
    out = background.copy()
    out[start : start + speech.size] += gain * speech
    return out


def to_16k(wave: np.ndarray) -> np.ndarray:
    """32 kHz -> 16 kHz the way the stage does it."""
    return resample(wave, SR, vad.VAD_SAMPLE_RATE)


def assert_found_at(spans, truth: tuple[float, float]) -> None:
    """Detected spans start and end at the true speech extent, within tolerance."""
    assert spans, f"no speech found, expected {truth}"
    first, last = spans[0][0], spans[-1][1]
    assert abs(first - truth[0]) <= TOLERANCE_S, (spans, truth)
    assert abs(last - truth[1]) <= TOLERANCE_S, (spans, truth)
    covered = sum(end - start for start, end, _ in spans)
    assert covered >= 0.6 * (truth[1] - truth[0]), (spans, truth)
    assert all(0.5 <= prob <= 1.0 for _, _, prob in spans)


@pytest.fixture(scope="module")
def model():
    """One Silero model for the module."""
    return vad.load_vad_model()


# --------------------------------------------------------------------------- model loading


def test_loading_the_model_restores_torch_threads():
    """`import silero_vad` sets one thread; load_vad_model puts the caller's value back."""
    code = (
        "import torch\n"
        "torch.set_num_threads(3)\n"
        "from birdclef.vad import load_vad_model\n"
        "load_vad_model()\n"
        "assert torch.get_num_threads() == 3, torch.get_num_threads()\n"
        "import numpy as np\n"
        "from birdclef.vad import VadSettings, spans_from_probabilities\n"
        "spans_from_probabilities(np.ones(40, np.float32), 40 * 512, VadSettings())\n"
        "assert torch.get_num_threads() == 3, torch.get_num_threads()\n"
        "load_vad_model('onnx', threads=2)\n"
        "assert torch.get_num_threads() == 2, torch.get_num_threads()\n"
        "torch.set_num_threads(3)\n"
        "load_vad_model('jit')\n"
        "load_vad_model('sequence')\n"
        "assert torch.get_num_threads() == 3, torch.get_num_threads()\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_load_vad_model_batch_files():
    """`batch_files` reaches the OpenVINO model; the other kinds take it and ignore it."""
    assert vad.load_vad_model().max_batch_files == vad.DEFAULT_BATCH_FILES
    assert vad.load_vad_model(threads=1, batch_files=3).max_batch_files == 3
    assert type(vad.load_vad_model("sequence", batch_files=3)).__name__ == "SileroVADSequence"


@pytest.fixture(scope="module")
def mixed_waves():
    """16 kHz signals of many lengths (empty, sub-frame, exact frames, seconds), speech among them."""
    rng = np.random.default_rng(0)
    noise = (0.05 * rng.normal(size=16000 * 9)).astype(np.float32)
    speech = to_16k(any_speech_clip())
    with_speech = noise.copy()
    with_speech[16000 : 16000 + min(speech.size, 7 * 16000)] += speech[: 7 * 16000]
    lengths = [0, 1, 100, 511, 512, 513, 1024, 16000, 16000 * 3 + 100, 16000 * 9]
    return [noise[:n] for n in lengths] + [with_speech, speech]


def test_model_kinds_agree(model, mixed_waves):
    """OpenVINO (batched and not) and onnxruntime give the streaming ONNX model's probabilities."""
    waves = [mixed_waves[8], mixed_waves[-2]]  # 3 s of noise, 9 s with speech
    reference = [vad.speech_probabilities(w, vad.load_vad_model("onnx")) for w in waves]
    assert reference[1].max() > 0.9  # the check covers speech, not only silence
    for kind_model in (model, vad.load_vad_model("sequence")):
        for wave, ref in zip(waves, reference, strict=True):
            probs = vad.speech_probabilities(wave, kind_model)
            assert probs.shape == (int(np.ceil(wave.size / 512)),)
            np.testing.assert_allclose(probs, ref, atol=1e-5)


def test_batched_files_match_one_file_at_a_time(model, mixed_waves):
    """Several files per call (encoder chunks across and within files, LSTM batches) change nothing."""
    single = [vad.speech_probabilities(w, model) for w in mixed_waves]
    assert [p.size for p in single] == [int(np.ceil(w.size / 512)) for w in mixed_waves]
    together = vad.batch_speech_probabilities(mixed_waves, model)
    small_chunks = vad.OpenVinoSileroVad(max_batch_files=3, encoder_frames=7)
    for probs in (together, small_chunks.probabilities(mixed_waves)):
        for a, b in zip(probs, single, strict=True):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, atol=1e-5)


def test_frames_match_silero_framing(mixed_waves):
    """The model input (64 context samples + 512) is built as silero's own framing builds it."""
    from silero_vad.sequence_vad import frame_blocks

    for wave in mixed_waves[1:]:
        n = vad.OpenVinoSileroVad.frame_count(wave.size)
        expected = np.concatenate(list(frame_blocks(wave, 512, 64, 10**9)))
        np.testing.assert_array_equal(vad.OpenVinoSileroVad.frames(wave, 0, n), expected)
        if n > 3:  # a block from the middle
            np.testing.assert_array_equal(vad.OpenVinoSileroVad.frames(wave, 2, n), expected[2:])


def test_lstm_batches_group_similar_lengths(model):
    groups = model.batches([10, 9, 5, 100, 0, 50, 55, 7])
    assert groups == [[3], [6, 5], [0, 1, 7], [2]]  # empty signals need no model call
    assert all(len(g) <= model.max_batch_files for g in model.batches([50] * 20))


def test_openvino_model_runs_float32_on_one_thread(model):
    compiled = model._encoder.get_compiled_model()
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) in ("f32", "<Type: 'float32'>")
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert compiled.get_property("ENABLE_CPU_PINNING") is False


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("speech_name", "background_name", "offset_s"),
    [
        ("speech_en", "soundscape_1min", 20.0),
        ("speech_es", "spinetail", 4.0),
        ("speech_en", "great_plains_toad", 30.0),
    ],
)
def test_speech_in_a_field_recording_is_found_where_it_was_put(
    model, speech_name, background_name, offset_s
):
    speech = real_audio(speech_name)
    background = real_audio(background_name)
    first, last = active_extent(speech)
    spans = vad.detect_speech(to_16k(mix(background, speech, offset_s)), vad.VadSettings(), model)
    assert_found_at(spans, (offset_s + first, offset_s + last))


@pytest.mark.parametrize("name", FIELD_RECORDINGS)
def test_no_speech_in_bird_field_recordings(model, name):
    assert vad.detect_speech(to_16k(real_audio(name)), vad.VadSettings(), model) == []


def test_packaged_speech_clips_are_found_in_noise(model):
    """Self-contained: the package's espeak-ng clips, mixed into synthetic noise."""
    clips = package_speech_clips()
    if not clips:
        pytest.skip(f"no packaged speech clips in {PACKAGE_SPEECH}")
    rng = np.random.default_rng(2)
    for clip in clips:
        speech = read_audio(clip, SR)
        background = rng.normal(0, 0.02, speech.size + 6 * SR).astype(np.float32)
        first, last = active_extent(speech)
        spans = vad.detect_speech(to_16k(mix(background, speech, 3.0)), vad.VadSettings(), model)
        assert_found_at(spans, (3.0 + first, 3.0 + last))


def test_no_speech_in_tones_noise_or_silence(model):
    sr = vad.VAD_SAMPLE_RATE
    t = np.arange(8 * sr) / sr
    rng = np.random.default_rng(3)
    signals = {f"tone {f} Hz": 0.5 * np.sin(2 * np.pi * f * t) for f in (200, 440, 1000, 3000)}
    signals["chirp"] = 0.5 * np.sin(2 * np.pi * (200 * t + 300 * t**2))
    signals["white noise"] = rng.normal(0, 0.3, t.size)
    signals["loud white noise"] = np.clip(rng.normal(0, 1, t.size), -1, 1)
    signals["silence"] = np.zeros(t.size)
    for name, wave in signals.items():
        assert vad.detect_speech(wave.astype(np.float32), vad.VadSettings(), model) == [], name


@pytest.mark.parametrize("length", [0, 1, 100, 511, 512, 513])
def test_tiny_inputs_do_not_crash(model, length):
    wave = np.random.default_rng(length).normal(0, 0.1, length).astype(np.float32)
    assert vad.detect_speech(wave, vad.VadSettings(), model) == []
    assert vad.speech_probabilities(wave, model).size == int(np.ceil(length / 512))


# --------------------------------------------------------------------------- cutting


def max_step(wave: np.ndarray) -> float:
    """Largest sample-to-sample jump."""
    return float(np.abs(np.diff(wave)).max()) if wave.size > 1 else 0.0


def test_remove_spans_length_and_no_click():
    sr = SR
    t = np.arange(6 * sr) / sr
    wave = (0.5 * np.sin(2 * np.pi * 210 * t)).astype(np.float32)
    spans = [(1.0, 1.4567), (3.2031, 3.9)]  # cut at phases that would click
    fade_s = 0.02
    fade = int(round(fade_s * sr))
    out = vad.remove_spans(wave, sr, spans, fade_s)

    cut = sum(int(np.ceil(e * sr)) - int(np.floor(s * sr)) for s, e in spans)
    assert out.size == wave.size - cut - 2 * fade
    # Untouched audio before the first crossfade and after the last one.
    np.testing.assert_array_equal(out[: sr - fade], wave[: sr - fade])
    np.testing.assert_array_equal(out[-sr:], wave[-sr:])

    # The sine's natural step vs the step at the joins.
    natural = max_step(wave)
    joins = [sr - fade, sr - fade + (int(3.2031 * sr) - int(np.ceil(1.4567 * sr))) - fade]
    for join in joins:
        around = out[join - 2 * fade : join + 2 * fade]
        assert max_step(around) <= 2.0 * natural, (join, max_step(around), natural)
    # A plain concatenation at the same places does click, so the check has teeth.
    naive = vad.remove_spans(wave, sr, spans, 0.0)
    assert naive.size == wave.size - cut
    assert max_step(naive) > 10 * natural


def test_remove_spans_on_noise_keeps_level_and_length():
    rng = np.random.default_rng(4)
    wave = rng.normal(0, 0.1, 5 * SR).astype(np.float32)
    out = vad.remove_spans(wave, SR, [(0.5, 1.0), (2.0, 2.25)], 0.02)
    assert out.size == wave.size - int(0.75 * SR) - 2 * int(0.02 * SR)
    # Equal-power crossfade: no dip or bump in level through the joins.
    join = int(0.5 * SR) - int(0.02 * SR)
    level = np.sqrt(np.mean(out[join : join + int(0.02 * SR)] ** 2))
    assert 0.06 < level < 0.14
    assert max_step(out) <= 1.5 * max_step(wave)


def test_remove_spans_edge_cases():
    wave = np.arange(1000, dtype=np.float32) / 1000
    sr = 1000
    # No spans: an unchanged copy.
    out = vad.remove_spans(wave, sr, [], 0.01)
    np.testing.assert_array_equal(out, wave)
    assert out is not wave
    # Spans at the edges need no crossfade; overlapping spans merge; extra items ignored.
    out = vad.remove_spans(wave, sr, [(-1.0, 0.1, 0.9), (0.95, 2.0, 0.8), (0.05, 0.2, 0.7)], 0.01)
    np.testing.assert_array_equal(out, wave[200:950])
    # Everything cut: empty.
    assert vad.remove_spans(wave, sr, [(0.0, 1.0)], 0.01).size == 0
    # A piece shorter than the crossfade: the overlap shrinks to fit.
    out = vad.remove_spans(wave, sr, [(0.1, 0.5), (0.503, 0.9)], 0.01)
    assert out.size == 1000 - 400 - 397 - 3 - 10
    assert np.all(np.isfinite(out))


def test_merge_spans_pads_clips_and_merges():
    spans = [(0.05, 1.0, 0.9), (1.15, 2.0, 0.8), (5.0, 9.95, 0.7)]
    padded = vad.merge_spans(spans, duration=10.0, pad=0.1)
    np.testing.assert_allclose(padded, [(0.0, 2.1), (4.9, 10.0)])
    unpadded = vad.merge_spans(spans, duration=10.0)
    np.testing.assert_allclose(unpadded, [(0.05, 1.0), (1.15, 2.0), (5.0, 9.95)])
    assert vad.merge_spans([(3.0, 2.0), (11.0, 12.0)], duration=10.0) == []


def test_settings_validate():
    with pytest.raises(ValueError):
        vad.VadSettings(threshold=1.5)
    with pytest.raises(TypeError):
        vad.VadSettings(collections="xc")
    settings = vad.VadSettings(collections=["xc"])
    assert settings.collections == ("xc",)
    assert settings.scans("xc") and not settings.scans("inat")
    assert vad.VadSettings().scans("anything")


# --------------------------------------------------------------------------- the stage


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """Audio files and a catalog: speech-bearing, clean, speech-only, corrupt, empty."""
    speech = any_speech_clip()
    root = tmp_path_factory.mktemp("audio")
    speech_offset = 4.0
    first, last = active_extent(speech)
    files = {
        "sp1/XC1.ogg": mix(any_background(speech.size / SR + 10.0), speech, speech_offset),
        "sp1/XC2.ogg": any_background(12.0),
        "sp2/XC3.ogg": speech,
        "sp2/tiny.ogg": any_background(0.01),  # 320 samples at 32 kHz: < 1 VAD frame
    }
    for name, wave in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / name, wave, SR, format="OGG", subtype="VORBIS")
    (root / "sp2/corrupt.ogg").write_bytes(np.random.default_rng(5).bytes(4000))
    (root / "sp2/zero_bytes.ogg").write_bytes(b"")
    sf.write(root / "sp2/no_samples.ogg", np.zeros(0, np.float32), SR, format="OGG")
    (root / "other").mkdir()
    names = [*files, "sp2/corrupt.ogg", "sp2/zero_bytes.ogg", "sp2/no_samples.ogg"]
    catalog = pd.DataFrame(
        {
            "filename": [*names, "other/skipped.ogg"],
            "collection": ["train"] * len(names) + ["soundscapes"],
            "primary_label": "x",
        }
    )
    catalog["path"] = [str(root / name) for name in catalog["filename"]]
    catalog.index = catalog.index + 100  # a non-default index must survive
    truth = (speech_offset + first, speech_offset + last)
    return catalog, truth


EXPECTED_STATUS = {
    "sp1/XC1.ogg": "cleaned",
    "sp1/XC2.ogg": "clean",
    "sp2/XC3.ogg": "dropped",
    "sp2/tiny.ogg": "clean",
    "sp2/corrupt.ogg": "bad_audio",
    "sp2/zero_bytes.ogg": "bad_audio",
    "sp2/no_samples.ogg": "bad_audio",
    "other/skipped.ogg": "not_scanned",
}


def test_run_vad_end_to_end(tiny_dataset, tmp_path):
    import torch

    catalog, truth = tiny_dataset
    settings = vad.VadSettings(collections=("train",))
    torch.set_num_threads(2)
    spans, cleaned, stats = vad.run_vad(
        catalog, "path", tmp_path / "vad", settings, threads=1, progress=False
    )
    assert torch.get_num_threads() == 2

    # The catalog: every row, same index, the right statuses.
    assert list(cleaned.index) == list(catalog.index)
    assert dict(zip(cleaned["filename"], cleaned["vad_status"], strict=True)) == EXPECTED_STATUS
    dropped = set(cleaned.loc[cleaned["vad_dropped"], "filename"])
    assert dropped == {"sp2/XC3.ogg", "sp2/corrupt.ogg", "sp2/zero_bytes.ogg", "sp2/no_samples.ogg"}
    by_name = cleaned.set_index("filename")
    assert by_name.loc["sp2/XC3.ogg", "speech_fraction"] > settings.max_speech_fraction
    assert by_name.loc["sp1/XC2.ogg", "speech_seconds"] == 0.0
    assert np.isnan(by_name.loc["other/skipped.ogg", "speech_seconds"])
    assert np.isnan(by_name.loc["sp2/corrupt.ogg", "speech_fraction"])
    for name in ("sp1/XC2.ogg", "sp2/XC3.ogg", "other/skipped.ogg", "sp2/corrupt.ogg"):
        assert by_name.loc[name, "audio_path"] == by_name.loc[name, "path"]

    # The cleaned file: clean/<filename>.flac, shorter by about the padded speech.
    clean_file = tmp_path / "vad" / "clean" / "sp1" / "XC1.flac"
    assert by_name.loc["sp1/XC1.ogg", "audio_path"] == str(clean_file)
    original = read_audio(by_name.loc["sp1/XC1.ogg", "path"], SR)
    shorter = read_audio(clean_file, SR)
    removed = stats["speech_seconds_removed_by_collection"]["train"]
    assert (original.size - shorter.size) / SR == pytest.approx(removed, abs=0.25)
    assert removed >= 0.8 * (truth[1] - truth[0])
    assert sorted(p.name for p in (tmp_path / "vad" / "clean").rglob("*")) == ["XC1.flac", "sp1"]
    assert sf.info(clean_file).format == "FLAC" and sf.info(clean_file).samplerate == SR
    # What is left has no speech in it.
    model = vad.load_vad_model()
    assert vad.detect_speech(to_16k(shorter), settings, model) == []

    # Spans: only where speech is, at the right place.
    assert set(spans["filename"]) == {"sp1/XC1.ogg", "sp2/XC3.ogg"}
    assert list(spans.columns) == ["filename", "start_s", "end_s", "max_prob"]
    xc1 = spans[spans["filename"] == "sp1/XC1.ogg"]
    assert_found_at(list(zip(xc1["start_s"], xc1["end_s"], xc1["max_prob"], strict=True)), truth)

    # Stats.
    assert stats["files_total"] == 8
    assert stats["files_scanned"] == 7
    assert stats["files_not_scanned"] == 1
    assert stats["files_with_speech"] == 2
    assert stats["files_cleaned"] == 1
    assert stats["files_dropped"] == 1
    assert stats["files_bad"] == 3
    bad = {entry["filename"]: entry["reason"] for entry in stats["bad_files"]}
    assert set(bad) == {"sp2/corrupt.ogg", "sp2/zero_bytes.ogg", "sp2/no_samples.ogg"}
    assert "zero-length" in bad["sp2/no_samples.ogg"]
    scanned = stats["audio_seconds_scanned"]
    assert scanned == pytest.approx(
        original.size / SR + 12.0 + 0.01 + stats["dropped_audio_seconds_by_collection"]["train"],
        abs=0.05,
    )
    assert stats["wall_seconds"] > 0
    json.dumps(stats)  # JSON-ready

    # Worker processes give the same answer.
    spans2, cleaned2, stats2 = vad.run_vad(
        catalog, "path", tmp_path / "vad2", settings, threads=2, progress=False
    )
    pd.testing.assert_frame_equal(spans2, spans)
    assert list(cleaned2["vad_status"]) == list(cleaned["vad_status"])
    assert stats2["files_bad"] == 3
    assert (tmp_path / "vad2" / "clean" / "sp1" / "XC1.flac").exists()
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("threads", [1, 2])
def test_run_vad_fails_naming_the_bad_file(tiny_dataset, tmp_path, threads):
    catalog, _ = tiny_dataset
    catalog = catalog[catalog["filename"] != "sp2/zero_bytes.ogg"]
    catalog = catalog[catalog["filename"] != "sp2/no_samples.ogg"]
    out = tmp_path / "vad"
    previous = out / "clean" / "keep.ogg"
    previous.parent.mkdir(parents=True)
    previous.write_bytes(b"from an earlier run")
    with pytest.raises(BadAudioError, match="corrupt.ogg"):
        vad.run_vad(
            catalog,
            "path",
            out,
            vad.VadSettings(),
            threads=threads,
            on_bad_audio="fail",
            progress=False,
        )
    # A failed run leaves the earlier output untouched and no temporary folders.
    assert previous.read_bytes() == b"from an earlier run"
    assert sorted(p.name for p in out.iterdir()) == ["clean"]


def test_run_vad_rejects_bad_arguments(tiny_dataset, tmp_path):
    catalog, _ = tiny_dataset
    with pytest.raises(ValueError, match="on_bad_audio"):
        vad.run_vad(catalog, "path", tmp_path, vad.VadSettings(), on_bad_audio="ignore")
    with pytest.raises(KeyError, match="audio_file"):
        vad.run_vad(catalog, "audio_file", tmp_path, vad.VadSettings())
    escaping = catalog.assign(filename="../outside.ogg")
    with pytest.raises(ValueError, match="relative path"):
        vad.run_vad(escaping, "path", tmp_path, vad.VadSettings(), progress=False)


def test_run_vad_with_nothing_to_scan(tiny_dataset, tmp_path):
    catalog, _ = tiny_dataset
    spans, cleaned, stats = vad.run_vad(
        catalog, "path", tmp_path, vad.VadSettings(collections=("none",)), progress=False
    )
    assert spans.empty and list(spans.columns) == vad.SPAN_COLUMNS
    assert set(cleaned["vad_status"]) == {"not_scanned"}
    assert not cleaned["vad_dropped"].any()
    assert stats["files_scanned"] == 0
    assert (tmp_path / "clean").is_dir()


def scan_jobs(catalog: pd.DataFrame) -> list:
    """ScanJobs (no cleaned copies) for the scanned rows of the tiny dataset."""
    rows = catalog[catalog["collection"] == "train"]
    return [
        vad.ScanJob(i, name, path)
        for i, (name, path) in enumerate(zip(rows["filename"], rows["path"], strict=True))
    ]


def test_scan_files_engines_and_batching_agree(tiny_dataset):
    """Batched OpenVINO, one file per call, and onnxruntime: same statuses and spans."""
    catalog, truth = tiny_dataset
    jobs = scan_jobs(catalog)
    settings = vad.VadSettings()
    batched = dict(vad.scan_files(jobs, settings, batch_files=3))
    assert sorted(batched) == list(range(len(jobs)))
    by_name = {job.filename: batched[job.position] for job in jobs}
    # No clean_path: the verdict is reported, nothing is written.
    assert by_name["sp1/XC1.ogg"]["status"] == "cleaned"
    assert by_name["sp1/XC1.ogg"]["cleaned_seconds"] < by_name["sp1/XC1.ogg"]["duration_s"]
    assert by_name["sp2/corrupt.ogg"]["status"] == "bad_audio"
    for kind, batch_files in (("openvino", 1), ("sequence", 1)):
        other = dict(vad.scan_files(jobs, settings, model_kind=kind, batch_files=batch_files))
        for i, result in batched.items():
            assert other[i]["status"] == result["status"]
            spans, other_spans = result.get("spans", []), other[i].get("spans", [])
            assert len(spans) == len(other_spans)
            np.testing.assert_allclose(np.array(other_spans), np.array(spans), atol=1e-4)


def test_unexpected_errors_name_the_files(tiny_dataset, monkeypatch):
    catalog, _ = tiny_dataset
    jobs = [job for job in scan_jobs(catalog) if job.filename in ("sp1/XC1.ogg", "sp1/XC2.ogg")]

    def broken(waves, model):
        raise MemoryError("out of memory")

    monkeypatch.setattr(vad_scan, "batch_speech_probabilities", broken)  # looked up by _scan_group
    with pytest.raises(vad.VadScanError, match=r"sp1/XC1\.ogg.*sp1/XC2\.ogg.*out of memory"):
        list(vad.scan_files(jobs, vad.VadSettings()))


@pytest.mark.parametrize(("files", "workers"), [(40, 2), (17, 16), (1000, 16), (9, 1), (1, 4)])
def test_scan_tasks_are_balanced_model_batches(files, workers):
    groups = vad_scan._groups(list(range(files)), workers, 8)
    assert sum(groups, []) == list(range(files))  # every job once, in order
    sizes = [len(group) for group in groups]
    assert max(sizes) <= 8 and max(sizes) - min(sizes) <= 1
    assert len(groups) == files or len(groups) % workers == 0
