"""Waveform augmentation of training crops (setting ``train.wave_augment``), before the log-mel.

The mel cache holds log-mels, which cannot be mixed with noise at a chosen SNR, so an
augmented example is read from audio: the crop's samples (plus the STFT frames' context)
of the recording the cache was built from (the VAD-cleaned file where VAD cut speech, read
from a seek: `birdclef.runtime.audio.read_audio_span`), changed in this order

1. speech: a human-speech clip (a span the VAD cut out of a training recording) added at a
   random place, at ``speech_snr_db`` over the part it covers (3rd place 2025);
2. background noise from a `SegmentBank` (empty train_soundscapes windows, or a folder) at
   ``snr_db`` over the crop;
3. coloured Gaussian noise (power spectrum slope ``color_noise_slope_db`` dB per octave) at
   ``color_noise_snr_db``;
4. a gain of ``gain_db``;

and turned into the window's log-mel by `birdclef.runtime.features.log_mel`, the cache's own
function, clipped ``top_db`` below the larger of the cached recording's maximum and the
augmented window's, and rounded through float16 as the cache is: with nothing drawn the
window equals the cached one (tests/test_wave_augment.py).

audiomentations and torch-audiomentations are not dependencies of this project; the four
transforms are a few lines of numpy each, and draw from the example's own generator
(``default_rng([seed, WAVE_STREAM])``), so a resumed run draws what an uninterrupted one does
(audiomentations draws from the global ``random`` and ``np.random`` state).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.fft
from threadpoolctl import ThreadpoolController

from birdclef.common.plan_rounds import check_wave_augment, dataclass_from_mapping
from birdclef.runtime.audio import AUDIO_SUFFIXES, BadAudioError, audio_seconds, read_audio_span
from birdclef.runtime.features import log_mel, mel_filterbank

log = logging.getLogger(__name__)

# The waveform stream of an example: np.random.default_rng([seed, WAVE_STREAM]).
WAVE_STREAM = 2


@dataclass
class WaveAugmentSettings:
    """train.wave_augment; the defaults are the schema's (tests/test_defaults.py)."""

    prob: float = 0.0
    noise_source: str | None = None
    noise_prob: float = 0.5
    snr_db: list[float] = field(default_factory=lambda: [3.0, 30.0])
    empty_threshold: float = 0.1
    gain_db: list[float] = field(default_factory=lambda: [-6.0, 6.0])
    color_noise_prob: float = 0.0
    color_noise_snr_db: list[float] = field(default_factory=lambda: [10.0, 40.0])
    color_noise_slope_db: list[float] = field(default_factory=lambda: [-6.0, 3.0])
    speech_prob: float = 0.0
    speech_snr_db: list[float] = field(default_factory=lambda: [10.0, 30.0])

    def __post_init__(self) -> None:
        check_wave_augment(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> WaveAugmentSettings:
        """From a train.wave_augment mapping (missing keys: defaults); unknown keys raise."""
        return dataclass_from_mapping(cls, values, "train.wave_augment")

    @property
    def noise_on(self) -> bool:
        return bool(self.noise_source) and self.noise_prob > 0


# --------------------------------------------------------------------------- transforms


def mean_power(wave: np.ndarray) -> float:
    """Mean square of `wave` (float64 accumulation)."""
    return float(np.mean(np.square(wave, dtype=np.float64))) if wave.size else 0.0


def fit_length(wave: np.ndarray, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """`wave` cut to `n` samples (from a random offset with `rng`) or tiled up to `n`."""
    if wave.size == 0:
        return np.zeros(n, dtype=np.float32)
    if wave.size >= n:
        start = 0 if rng is None else int(rng.integers(0, wave.size - n + 1))
        return wave[start : start + n]
    return np.resize(wave, n)


def scaled_to_snr(signal_power: float, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`noise` scaled so that 10 log10(signal_power / its power) = `snr_db` (zeros for silent noise)."""
    noise_power = mean_power(noise)
    if noise_power <= 0:
        return np.zeros_like(noise, dtype=np.float32)
    target = max(signal_power, 1e-20) / 10.0 ** (snr_db / 10.0)
    return (noise * math.sqrt(target / noise_power)).astype(np.float32)


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`signal` plus `noise` (tiled or cut to its length) at `snr_db` dB over the whole signal."""
    noise = fit_length(np.asarray(noise, dtype=np.float32), signal.size)
    return (signal + scaled_to_snr(mean_power(signal), noise, snr_db)).astype(np.float32)


def overlay_at_snr(signal: np.ndarray, clip: np.ndarray, snr_db: float, position: int) -> np.ndarray:
    """`signal` with `clip` added from sample `position`, at `snr_db` dB over the samples it covers
    (the whole signal's power where those are silent); a clip running past the end is cut."""
    out = np.array(signal, dtype=np.float32)
    position = max(0, min(int(position), out.size))
    clip = np.asarray(clip, dtype=np.float32)[: out.size - position]
    if clip.size == 0:
        return out
    covered = out[position : position + clip.size]
    power = mean_power(covered) or mean_power(out)
    out[position : position + clip.size] += scaled_to_snr(power, clip, snr_db)
    return out


def apply_gain(wave: np.ndarray, gain_db: float) -> np.ndarray:
    """`wave` times 10^(gain_db / 20)."""
    return (wave * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32)


def colored_noise(n: int, slope_db_per_octave: float, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of Gaussian noise whose power spectrum falls (or rises) by `slope_db_per_octave`
    dB per octave (0 white, -3.01 pink, -6.02 brown), unit mean power.

    White noise's spectrum times f^(slope / (20 log10 2)) (amplitude), the DC bin set to 0;
    float32, single-threaded scipy FFTs.
    """
    white = rng.standard_normal(n, dtype=np.float32)
    spectrum = scipy.fft.rfft(white, workers=1)
    freqs = np.fft.rfftfreq(n).astype(np.float32)
    scale = np.zeros_like(freqs)
    scale[1:] = freqs[1:] ** np.float32(slope_db_per_octave / (20.0 * math.log10(2.0)))
    noise = scipy.fft.irfft(spectrum * scale, n=n, workers=1)
    power = mean_power(noise)
    return (noise / math.sqrt(power) if power > 0 else noise).astype(np.float32)


def uniform(rng: np.random.Generator, bounds: Sequence[float]) -> float:
    """A draw from U[bounds[0], bounds[1]]."""
    return float(rng.uniform(float(bounds[0]), float(bounds[1])))


# --------------------------------------------------------------------------- sources


@dataclass
class SegmentBank:
    """Audio segments (file, start, length in samples at `sample_rate`) to draw clips from."""

    paths: list[str]
    starts: np.ndarray
    lengths: np.ndarray
    sample_rate: int
    failed: int = 0  # reads that failed during training (in this process)

    def __len__(self) -> int:
        return len(self.paths)

    def draw(self, rng: np.random.Generator, max_samples: int) -> np.ndarray | None:
        """A random segment, cut to at most `max_samples` from a random offset (None when the
        file cannot be read now: counted in `failed`, logged)."""
        k = int(rng.integers(0, len(self.paths)))
        length = int(self.lengths[k])
        offset = int(rng.integers(0, length - max_samples + 1)) if length > max_samples else 0
        try:
            return read_audio_span(self.paths[k], self.sample_rate, int(self.starts[k]) + offset,
                                   min(length, max_samples))
        except BadAudioError as error:
            self.failed += 1
            log.warning("wave_augment: skipping unreadable clip %s", error)
            return None


def folder_bank(folder: str | os.PathLike, sample_rate: int) -> tuple[SegmentBank, list[dict[str, str]]]:
    """Every audio file under `folder` (recursive; suffixes `AUDIO_SUFFIXES`) as one segment each,
    and the files whose header could not be read (skipped: ``{"path", "reason"}``).

    Raises ValueError naming the folder (and the setting) when it is missing or holds no audio,
    or when none of its files can be read.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"train.wave_augment.noise_source: {root} is not a folder (expected "
                         "'soundscapes' or a folder of audio files)")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ValueError(f"train.wave_augment.noise_source: the folder {root} holds no audio files "
                         f"(expected files ending in {', '.join(AUDIO_SUFFIXES)})")
    paths, lengths, skipped = [], [], []
    for path in files:
        try:
            seconds = audio_seconds(path)
        except BadAudioError as error:
            log.warning("wave_augment: skipping unreadable noise file %s", error)
            skipped.append({"path": str(path), "reason": error.reason})
            continue
        paths.append(str(path))
        lengths.append(int(seconds * sample_rate))
    if not paths:
        raise ValueError(f"train.wave_augment.noise_source: none of the {len(files)} audio files in "
                         f"{root} can be read (e.g. {skipped[0]['path']}: {skipped[0]['reason']})")
    return SegmentBank(paths, np.zeros(len(paths), np.int64), np.asarray(lengths, np.int64),
                       sample_rate), skipped


def soundscape_files(folder: str | os.PathLike) -> dict[str, str]:
    """Soundscape stem -> audio path of every audio file in `folder`."""
    return {p.stem: str(p) for p in sorted(Path(folder).iterdir()) if p.suffix.lower() in AUDIO_SUFFIXES}


def empty_labelled_windows(labelled: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """The labelled train-split soundscape windows with no label (row_id, soundscape, end_s)."""
    train = labelled[labelled["split"] == "train"]
    empty = train[list(classes)].to_numpy(np.float64).sum(axis=1) == 0
    return train.loc[empty, ["row_id", "soundscape", "end_s"]].reset_index(drop=True)


def empty_teacher_windows(index: pd.DataFrame, logits: np.ndarray, threshold: float,
                          exclude_row_ids: Sequence[str] = ()) -> pd.DataFrame:
    """The teacher's train_soundscapes windows whose largest sigmoid probability over the classes
    it maps (finite logits) is below `threshold`, minus `exclude_row_ids` (validation windows):
    (row_id, soundscape, end_s)."""
    rows = np.flatnonzero((index["source"] == "soundscape").to_numpy())
    chosen = logits[rows].astype(np.float64)
    known = np.isfinite(chosen)
    top = np.where(known, 1.0 / (1.0 + np.exp(-np.where(known, chosen, 0.0))), 0.0).max(axis=1, initial=0.0)
    keep = rows[top < threshold]
    table = index.iloc[keep]
    out = pd.DataFrame({"row_id": table["row_id"].astype(str).to_numpy(),
                        "soundscape": [Path(str(f)).stem for f in table["filename"]],
                        "end_s": table["end_s"].to_numpy(np.float64)})
    return out[~out["row_id"].isin(set(map(str, exclude_row_ids)))].reset_index(drop=True)


def window_bank(windows: pd.DataFrame, files: Mapping[str, str], window_seconds: float,
                sample_rate: int) -> SegmentBank:
    """The soundscape `windows` (soundscape, end_s) as segments of their files in `files`."""
    missing = sorted(set(windows["soundscape"].astype(str)) - set(files))
    if missing:
        raise ValueError(f"train.wave_augment noise windows name soundscapes with no audio file in "
                         f"train_soundscapes: {missing[:5]}")
    size = int(round(window_seconds * sample_rate))
    starts = np.round((windows["end_s"].to_numpy(np.float64) - window_seconds) * sample_rate).astype(np.int64)
    return SegmentBank([files[s] for s in windows["soundscape"].astype(str)], np.maximum(starts, 0),
                       np.full(len(windows), size, np.int64), sample_rate)


def speech_bank(spans: pd.DataFrame, catalog: pd.DataFrame, sample_rate: int) -> SegmentBank:
    """The VAD's speech spans (filename, start_s, end_s) as segments of the original recordings
    (the catalog's ``path``, not the cleaned copy)."""
    paths = dict(zip(catalog["filename"].astype(str), catalog["path"].astype(str), strict=True))
    spans = spans[spans["filename"].astype(str).isin(paths)]
    starts = np.round(spans["start_s"].to_numpy(np.float64) * sample_rate).astype(np.int64)
    ends = np.round(spans["end_s"].to_numpy(np.float64) * sample_rate).astype(np.int64)
    keep = ends > starts
    return SegmentBank([paths[f] for f in spans["filename"].astype(str)[keep]], starts[keep],
                       (ends - starts)[keep], sample_rate)


@dataclass
class WaveSources:
    """What waveform augmentation reads: each recording's audio path, the noise and speech banks,
    the mel settings, and counts for the train manifest (`stats`)."""

    settings: WaveAugmentSettings
    audio_paths: Mapping[str, str]  # filename -> audio file the cache was built from
    mel: Mapping[str, Any]
    noise: SegmentBank | None = None
    speech: SegmentBank | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def augmenter(self, table: pd.DataFrame) -> WaveAugmenter:
        """A `WaveAugmenter` for the recordings of `table` (the training rows, in order)."""
        names = table["filename"].astype(str)
        missing = sorted(set(names) - set(self.audio_paths))
        if missing:
            raise ValueError(f"train.wave_augment: {len(missing)} training recordings are not in the "
                             f"VAD catalog, e.g. {missing[:3]}")
        rare = table["rare"].fillna(False).to_numpy(bool) if "rare" in table.columns else np.zeros(len(table), bool)
        rare_seconds = self.mel.get("rare_max_seconds")
        seconds = np.where(rare, math.inf if rare_seconds is None else float(rare_seconds),
                           float(self.mel["max_seconds"]))
        return WaveAugmenter(self.settings, self.mel, [self.audio_paths[n] for n in names],
                             table["offset"].to_numpy(np.int64), table["frames"].to_numpy(np.int64),
                             seconds, self.noise, self.speech)


def load_wave_sources(settings: WaveAugmentSettings, inputs: Mapping[str, str], mel: Mapping[str, Any],
                      classes: Sequence[str], labelled: pd.DataFrame | None,
                      teacher_index: pd.DataFrame | None = None,
                      teacher_logits: np.ndarray | None = None) -> WaveSources:
    """The `WaveSources` of a train job from its inputs (``wave_catalog``; ``speech_spans``;
    ``noise_dir`` or ``noise_soundscapes``), the labelled windows and the teacher's artifact."""
    sample_rate = int(mel["sample_rate"])
    catalog = pd.read_parquet(inputs["wave_catalog"])
    audio = catalog["audio_path"] if "audio_path" in catalog.columns else catalog["path"]
    audio_paths = dict(zip(catalog["filename"].astype(str), audio.astype(str), strict=True))
    stats: dict[str, Any] = {}
    noise = speech = None
    if settings.noise_on:
        if settings.noise_source == "soundscapes":
            files = soundscape_files(inputs["noise_soundscapes"])
            validation = [] if labelled is None else labelled.loc[labelled["split"] != "train", "row_id"]
            if teacher_index is not None and teacher_logits is not None:
                windows = empty_teacher_windows(teacher_index, teacher_logits, settings.empty_threshold,
                                                validation)
                stats["noise_from"] = f"teacher (largest probability < {settings.empty_threshold})"
            elif labelled is not None:
                windows = empty_labelled_windows(labelled, classes)
                stats["noise_from"] = "labelled train-split soundscape windows without a label"
            else:
                raise ValueError("train.wave_augment.noise_source is 'soundscapes' but neither the "
                                 "teacher's artifact nor the labelled soundscape windows were given")
            if windows.empty:
                raise ValueError(f"train.wave_augment.noise_source 'soundscapes': no empty window "
                                 f"({stats['noise_from']}): expected a noise folder or noise_prob 0")
            noise = window_bank(windows, files, float(mel["window_seconds"]), sample_rate)
            skipped: list[dict[str, str]] = []
        else:
            noise, skipped = folder_bank(inputs["noise_dir"], sample_rate)
            stats["noise_from"] = str(inputs["noise_dir"])
        stats.update(noise_segments=len(noise), noise_files_skipped=len(skipped), noise_skipped=skipped)
    if settings.speech_prob > 0:
        speech = speech_bank(pd.read_parquet(inputs["speech_spans"]), catalog, sample_rate)
        if not len(speech):
            raise ValueError(f"train.wave_augment.speech_prob is {settings.speech_prob} but the VAD found "
                             f"no speech span ({inputs['speech_spans']} is empty): expected speech_prob 0")
        stats["speech_clips"] = len(speech)
    return WaveSources(settings, audio_paths, dict(mel), noise, speech, stats)


# --------------------------------------------------------------------------- the augmenter


class WaveAugmenter:
    """Log-mel windows of training recordings computed from their audio, with augmentation.

    Row i of the training table: audio file `paths[i]`, cached at mel-cache rows
    `offsets[i]` .. `offsets[i] + frames[i]` from its first `seconds[i]` seconds.
    """

    def __init__(self, settings: WaveAugmentSettings, mel: Mapping[str, Any], paths: Sequence[str],
                 offsets: np.ndarray, frames: np.ndarray, seconds: np.ndarray,
                 noise: SegmentBank | None = None, speech: SegmentBank | None = None) -> None:
        self.settings = settings
        self.sample_rate = int(mel["sample_rate"])
        self.n_fft, self.hop = int(mel["n_fft"]), int(mel["hop_length"])
        self.top_db = mel.get("top_db")
        self.filterbank = mel_filterbank(mel)
        # STFT frames reach n_fft / 2 samples either side of their centre: this many frames of
        # context make a window's frames those of the whole recording.
        self.margin = -(-(self.n_fft // 2) // self.hop)
        self.paths = list(paths)
        self.offsets, self.frames = np.asarray(offsets, np.int64), np.asarray(frames, np.int64)
        self.sample_caps = [None if math.isinf(s) else int(round(s * self.sample_rate)) for s in seconds]
        self.noise, self.speech = noise, speech
        self._maxima: dict[int, float] = {}
        self._blas = None  # numpy's BLAS held at one thread around log_mel (see `window`)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_blas": None}  # a thread-pool controller is per process

    def _one_blas_thread(self):
        """A context holding numpy's BLAS libraries at one thread: `log_mel`'s small matrix
        products ran 15x slower with a thread per core on a busy 2-core machine. The controller is
        built once per process (30 ms); each limit costs about 0.1 ms. torch's own pools
        (OpenMP) are not touched."""
        if self._blas is None:
            self._blas = ThreadpoolController().select(user_api="blas")
        return self._blas.limit(limits=1)

    def recording_max(self, index: int, mels: np.ndarray) -> float:
        """The largest value of recording `index` in the mel cache `mels` (the cache's top_db
        reference)."""
        if index not in self._maxima:
            start = int(self.offsets[index])
            self._maxima[index] = float(np.max(mels[start : start + int(self.frames[index])]))
        return self._maxima[index]

    def augment(self, wave: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
        """`wave` with the parts drawn by `rng` applied (speech, noise, coloured noise, gain), and
        what was drawn."""
        s, drawn = self.settings, {}
        if self.speech is not None and rng.random() < s.speech_prob:
            clip = self.speech.draw(rng, wave.size)
            if clip is not None and clip.size:
                position = int(rng.integers(0, max(1, wave.size - clip.size + 1)))
                drawn["speech_snr_db"] = uniform(rng, s.speech_snr_db)
                wave = overlay_at_snr(wave, clip, drawn["speech_snr_db"], position)
        if self.noise is not None and rng.random() < s.noise_prob:
            clip = self.noise.draw(rng, wave.size)
            if clip is not None and clip.size:
                drawn["snr_db"] = uniform(rng, s.snr_db)
                wave = mix_at_snr(wave, clip, drawn["snr_db"])
        if s.color_noise_prob > 0 and rng.random() < s.color_noise_prob:
            drawn["color_noise_slope_db"] = uniform(rng, s.color_noise_slope_db)
            drawn["color_noise_snr_db"] = uniform(rng, s.color_noise_snr_db)
            noise = colored_noise(wave.size, drawn["color_noise_slope_db"], rng)
            wave = mix_at_snr(wave, noise, drawn["color_noise_snr_db"])
        drawn["gain_db"] = uniform(rng, s.gain_db)
        return apply_gain(wave, drawn["gain_db"]), drawn

    def window(self, mels: np.ndarray, index: int, start: int, usable: int, window_frames: int,
               rng: np.random.Generator | None) -> np.ndarray:
        """The (n_mels, window_frames) float32 log-mel of recording `index` (of the mel cache
        `mels`) from frame `start` (tiled when its `usable` frames are fewer than a window, as `tiled_window` tiles the
        cache), its audio augmented with `rng` (None: not augmented: the cached window)."""
        hop = self.hop
        tiled = start + window_frames > usable
        first = 0 if tiled else max(0, start - self.margin)
        last = usable if tiled else start + window_frames  # frames first .. last - 1 are needed
        end = (last - 1) * hop + self.n_fft // 2 + (1 if tiled else 0)
        cap = self.sample_caps[index]
        if cap is not None:
            end = min(end, cap)
        if tiled:  # the whole cached audio: its frame count must be the cache's
            end = cap if cap is not None else (usable + 1) * hop
        wave = read_audio_span(self.paths[index], self.sample_rate, first * hop, end - first * hop)
        if rng is not None:
            wave, _ = self.augment(wave, rng)
        with self._one_blas_thread():
            mel = log_mel(wave, self.filterbank, self.n_fft, hop, None)
        if self.top_db is not None:
            np.maximum(mel, max(self.recording_max(index, mels), float(mel.max())) - float(self.top_db), out=mel)
        mel = mel.astype(np.float16).astype(np.float32)
        if tiled:
            frames = mel[:, :usable]
            rows = np.arange(window_frames) % usable
            return np.ascontiguousarray(frames[:, rows])
        return np.ascontiguousarray(mel[:, start - first : start - first + window_frames])
