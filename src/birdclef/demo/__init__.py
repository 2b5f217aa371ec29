"""A synthetic BirdCLEF+ 2026 competition folder, so the workflow runs with no download.

`generate_demo` writes the same layout, file names and column names as the
real 2026 competition data (`train.csv`, `taxonomy.csv`, `train_audio/`,
`train_soundscapes/`, `train_soundscapes_labels.csv`, `test_soundscapes/`,
`sample_submission.csv`) plus two files the real data does not have:
`test_ground_truth.csv` (labels for every test window, so the submission can
be scored) and `demo_info.json` (species call shapes, every synthesised call
and where human speech was mixed in, the ground truth for the voice-activity
stage).

What the 2026 data has and the demo copies:

- soundscapes named `BC2026_(Train|Test)_<nnnn>_<site>_<YYYYMMDD>_<HHMMSS>.ogg`
  from a few recording sites;
- `train_soundscapes_labels.csv` for about half of the train soundscapes
  (`filename, start, end, primary_label`; times `HH:MM:SS`; the labels of a
  5 s window joined by `;`; windows without a call left out; every row
  listed twice, as in the file Kaggle shipped);
- a `sample_submission.csv` of a few rows only (the hidden test set is not
  listed), while `test_ground_truth.csv` lists every test window;
- one class with no training audio (a taxonomy row, but no `train.csv` row,
  no `train_audio/` folder and never a secondary label) that calls in the
  soundscapes, so only the soundscape labels can teach it;
- labels that are strings but look like other things: a numeric iNaturalist
  taxon id (the frog) and a sonotype (`47158son01`, the cricket) beside
  eBird-style codes: read label columns as strings;
- `train.csv` with `class_name` and `inat_taxon_id` and the 2026 column order.

Species are synthetic: each has its own call shape (pitch, frequency
modulation, rhythm, harmonics, bandwidth) so that a small CNN on log-mel
spectrograms can tell them apart. The speech clips are espeak-ng output
shipped as package data (see `data/speech/README.md`); espeak-ng is never
called here.

Everything is a function of `seed`: the same arguments give byte-identical
files. libsndfile picks a random Ogg stream serial number for each file, so
the generator rewrites it to a value derived from the file name (and fixes the
page checksums) after encoding.
"""

from __future__ import annotations

import importlib.resources
import inspect
import logging
import math
import os
import re
import zlib
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef.common.io import atomic_dir, atomic_path, write_json
from birdclef.runtime.audio import BadAudioError, read_audio, write_ogg
from birdclef.soundscapes import LABEL_COLUMNS

log = logging.getLogger(__name__)

# train.csv columns in the order of the 2026 file (the 2025 columns, reordered,
# plus class_name and inat_taxon_id).
TRAIN_COLUMNS_2026 = [
    "primary_label",
    "secondary_labels",
    "type",
    "latitude",
    "longitude",
    "scientific_name",
    "common_name",
    "class_name",
    "inat_taxon_id",
    "author",
    "license",
    "rating",
    "url",
    "filename",
    "collection",
]
TAXONOMY_COLUMNS = [
    "primary_label",
    "inat_taxon_id",
    "scientific_name",
    "common_name",
    "class_name",
]
WINDOW_SECONDS = 5
# A species is present in a 5 s test window when one of its calls overlaps the
# window by at least this long (or by half the call, for calls shorter than 1 s).
MIN_OVERLAP_SECONDS = 0.5
MAX_SPECIES = 24
# Rows of sample_submission.csv: the first windows of the first test soundscape
# (Kaggle's sample lists a few rows; the hidden test set is not listed).
SAMPLE_SUBMISSION_ROWS = 3
# Recording sites the soundscapes come from (S01..S09, drawn from the seed).
N_SITES = 4

# Random-stream ids: every random draw comes from default_rng([seed, stream, index]).
_STREAM_META = 0
_STREAM_RECORDING = 1
_STREAM_TRAIN_SOUNDSCAPE = 2
_STREAM_TEST_SOUNDSCAPE = 3

# Call archetypes, ordered by the centre frequency they are given.
_KINDS: list[tuple[str, str, dict[str, Any]]] = [
    ("croak", "Amphibia", {"duration_s": 0.45, "pulse_hz": 45.0, "n_harmonics": 7}),
    (
        "harmonic_stack",
        "Aves",
        {"duration_s": 0.35, "slide": -0.08, "harmonics": [1, 0.7, 0.45, 0.3]},
    ),
    ("two_note", "Aves", {"notes": [1.15, 0.85], "note_s": [0.18, 0.28], "gap_s": 0.06}),
    ("down_sweep", "Aves", {"duration_s": 0.3, "start": 1.4, "end": 0.7}),
    ("vibrato", "Aves", {"duration_s": 0.7, "fm_hz": 28.0, "fm_depth": 0.07}),
    ("flat_whistle", "Aves", {"duration_s": 0.55, "drift": 0.02}),
    (
        "phrase",
        "Aves",
        {
            "notes": [1.0, 1.2, 0.9],
            "note_s": 0.1,
            "gap_s": 0.04,
            "repeats": 2,
            "repeat_gap_s": 0.15,
        },
    ),
    ("up_sweep", "Aves", {"duration_s": 0.25, "start": 0.7, "end": 1.4}),
    (
        "trill",
        "Aves",
        {"duration_s": 0.8, "pulse_hz": 18.0, "pulse_s": 0.03, "start": 1.1, "end": 0.9},
    ),
    (
        "chirp_series",
        "Aves",
        {"n_chirps": 5, "chirp_s": 0.045, "period_s": 0.12, "start": 1.25, "end": 0.8},
    ),
    ("buzz", "Aves", {"duration_s": 0.6, "bandwidth": 0.3, "am_hz": 60.0}),
    ("stridulation", "Insecta", {"duration_s": 1.4, "pulse_hz": 35.0, "bandwidth": 0.08}),
]
_LOW_HZ, _HIGH_HZ = 1000.0, 9500.0

# Made-up names, two per archetype (the second for n_species > 12, when
# archetypes repeat). Bird labels follow the eBird pattern (3 + 3 letters,
# sometimes a digit); as in the 2026 data, the frogs' labels are their
# iNaturalist taxon id and the crickets' are sonotypes (`<taxon id>son<nn>`,
# 47158 being iNaturalist's Insecta).
_NAMES: dict[str, list[tuple[str, str, str]]] = {
    "croak": [
        ("Marsh Tink Frog", "Pristimantis paludis", "1139490"),
        ("Clicking Rain Frog", "Craugastor crepitans", "1480151"),
    ],
    "harmonic_stack": [
        ("Rufous Cawbill", "Corvirostra rufa", "rufcaw1"),
        ("Dusky Marshbird", "Paludicola fusca", "dusmar"),
    ],
    "two_note": [
        ("Andean Tinkerbird", "Tintinnus andinus", "andtin"),
        ("Banded Reedling", "Harundinella fasciata", "banree"),
    ],
    "down_sweep": [
        ("Sooty Swiftlet-Wren", "Fuliginura celer", "sooswi"),
        ("Montane Solitaire", "Eremita montana", "monsol"),
    ],
    "vibrato": [
        ("Quivering Piha", "Tremulipiha vibrans", "quipih"),
        ("Lesser Cloudsinger", "Nubicantor minor", "lesclo1"),
    ],
    "flat_whistle": [
        ("Azure Whistler", "Sibilator caeruleus", "azuwhi"),
        ("Pale Flutist", "Tibicen pallidus", "palflu1"),
    ],
    "phrase": [
        ("Chestnut Phrasewing", "Verbicanta castanea", "chephr"),
        ("Silver Warbler", "Argentiparula cantans", "silwar"),
    ],
    "up_sweep": [
        ("Rising Tyrannulet", "Ascendia surgens", "ristyr"),
        ("Olive Ridgetail", "Jugicauda olivacea", "olirid1"),
    ],
    "trill": [
        ("Golden Trillbird", "Trillops aureus", "goltri"),
        ("Speckled Antvireo", "Formicivora guttata", "speant"),
    ],
    "chirp_series": [
        ("Cinnamon Chirper", "Pipilator cinnamomeus", "cinchi1"),
        ("Scarlet Seedeater", "Granivora coccinea", "scasee1"),
    ],
    "buzz": [
        ("Buzzing Hermit", "Bombylornis susurrans", "buzher"),
        ("Crested Foliage-Hopper", "Frondisaltor cristatus", "crefol"),
    ],
    "stridulation": [
        ("Insecta sonotype 01", "Insecta sp. son01", "47158son01"),
        ("Insecta sonotype 02", "Insecta sp. son02", "47158son02"),
    ],
}

_SITE_POOL = [f"S{i:02d}" for i in range(1, 10)]
_SONOTYPE = re.compile(r"(\d+)son\d+")
_AUTHORS = [
    "Ana María Rojas",
    "Carlos Gómez",
    "Jorge Eliécer Ramírez",
    "Luisa Fernanda Ortiz",
    "Mateo Salazar",
    "Paula Andrea Cárdenas",
    "Diego Quintero",
    "Sofía Herrera",
    "Camila Restrepo",
    "Andrés Felipe Mejía",
]
_LICENSES = ["cc-by-nc-sa 4.0", "cc-by-nc-sa 4.0", "cc-by-nc 4.0", "cc-by 4.0", "cc-by-sa 4.0"]
_TYPES = ["['song']", "['call']", "['call', 'song']", "['song']", "['flight call']", "['call']"]


@dataclass(frozen=True)
class Species:
    """One synthetic species: its taxonomy row and call shape."""

    label: str
    inat_taxon_id: int
    scientific_name: str
    common_name: str
    class_name: str
    kind: str
    centre_hz: float
    params: dict[str, Any] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        """The species as a JSON-ready dict (for demo_info.json)."""
        return {
            "primary_label": self.label,
            "common_name": self.common_name,
            "scientific_name": self.scientific_name,
            "class_name": self.class_name,
            "call_kind": self.kind,
            "centre_hz": round(self.centre_hz, 1),
            "params": self.params,
        }


def demo_species(n_species: int = 12) -> list[Species]:
    """The `n_species` synthetic species, in taxonomy order (sorted by label).

    Independent of the seed. Centre frequencies are spaced evenly on a log
    scale from 1 kHz to 9.5 kHz; up to 12 species each get a different call
    archetype, beyond that archetypes repeat at other pitches.
    """
    if not 2 <= n_species <= MAX_SPECIES:
        raise ValueError(f"n_species must be between 2 and {MAX_SPECIES}, got {n_species}")
    centres = np.geomspace(_LOW_HZ, _HIGH_HZ, n_species)
    n_kinds = len(_KINDS)
    uses: dict[str, int] = {}
    species = []
    for i, centre in enumerate(centres):
        if n_species <= n_kinds:
            kind_index = round(i * (n_kinds - 1) / (n_species - 1))
        else:
            kind_index = i * n_kinds // n_species
        kind, class_name, params = _KINDS[kind_index]
        common, scientific, label = _NAMES[kind][uses.get(kind, 0)]
        uses[kind] = uses.get(kind, 0) + 1
        if label.isdigit():
            taxon_id = int(label)
        elif sonotype := _SONOTYPE.fullmatch(label):
            taxon_id = int(sonotype[1])
        else:
            taxon_id = 7000000 + zlib.crc32(label.encode()) % 1000000
        species.append(
            Species(label, taxon_id, scientific, common, class_name, kind, float(centre), params)
        )
    return sorted(species, key=lambda s: s.label)


def classes_without_train_audio(species: Sequence[Species]) -> list[str]:
    """Labels of the species that get no training recording (one, a bird).

    Independent of the seed: the middle bird in taxonomy order. It still calls
    in the soundscapes, so only the soundscape labels can teach it (in 2026, 28
    of 234 classes had no training audio).
    """
    birds = [s.label for s in species if s.class_name == "Aves"]
    return [birds[len(birds) // 2]] if len(species) >= 3 and birds else []


# --------------------------------------------------------------------------- synthesis


def _envelope(n: int, sample_rate: int, edge_s: float = 0.012) -> np.ndarray:
    """Raised-cosine attack and release over `edge_s`, flat in between."""
    env = np.ones(n)
    edge = max(1, min(int(edge_s * sample_rate), n // 2))
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(edge) / edge)
    env[:edge] = ramp
    env[n - edge :] = ramp[::-1]
    return env


def _tone(freq: np.ndarray, sample_rate: int, harmonics: Sequence[float] = (1.0,)) -> np.ndarray:
    """A (harmonic) oscillator following the instantaneous frequency track `freq`."""
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate
    out = np.zeros_like(phase)
    top = float(freq.max())
    for k, weight in enumerate(harmonics, start=1):
        if weight and k * top < 0.45 * sample_rate:
            out += weight * np.sin(k * phase)
    return out


def _sweep(start_hz: float, end_hz: float, n: int) -> np.ndarray:
    """An exponential frequency sweep of `n` samples."""
    return start_hz * (end_hz / start_hz) ** np.linspace(0.0, 1.0, max(n, 1))


def _fft_len(n: int) -> int:
    """The smallest 5-smooth length (2**a * 3**b * 5**c) >= `n`: FFTs stay fast."""
    best = 1 << max(n - 1, 0).bit_length()
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            candidate = power35
            while candidate < n:
                candidate *= 2
            best = min(best, candidate)
            power35 *= 3
        power5 *= 5
    return best


def _band_noise(rng: np.random.Generator, n: int, sample_rate: int, centre: float, width: float):
    """Gaussian-shaped band of noise around `centre` (standard deviation `width` / 2)."""
    m = _fft_len(n)
    spectrum = np.fft.rfft(rng.standard_normal(m))
    freqs = np.fft.rfftfreq(m, 1.0 / sample_rate)
    spectrum *= np.exp(-0.5 * ((freqs - centre) / (width / 2)) ** 2)
    return np.fft.irfft(spectrum, m)[:n]


def _call(
    species: Species, sample_rate: int, rng: np.random.Generator, pitch: float, stretch: float
) -> np.ndarray:
    """One call of `species` at unit RMS, with pitch and duration factors applied."""
    p = species.params
    fc = species.centre_hz * pitch
    sr = sample_rate

    def samples(seconds: float) -> int:
        return max(int(round(seconds * stretch * sr)), 16)

    kind = species.kind
    if kind == "croak":
        n = samples(p["duration_s"])
        f0 = fc / 2
        weights = [math.exp(-0.5 * ((k * f0 - fc) / (0.6 * fc)) ** 2) for k in range(1, 8)]
        wave = _tone(np.full(n, f0), sr, weights[: p["n_harmonics"]])
        t = np.arange(n) / sr
        wave *= (0.5 + 0.5 * np.sin(2 * np.pi * p["pulse_hz"] * t)) ** 2
        wave *= _envelope(n, sr)
    elif kind == "harmonic_stack":
        n = samples(p["duration_s"])
        wave = _tone(_sweep(fc, fc * (1 + p["slide"]), n), sr, p["harmonics"]) * _envelope(n, sr)
    elif kind in ("two_note", "phrase"):
        notes = p["notes"]
        lengths = p["note_s"] if isinstance(p["note_s"], list) else [p["note_s"]] * len(notes)
        gap = np.zeros(samples(p["gap_s"]))
        parts: list[np.ndarray] = []
        for ratio, seconds in zip(notes, lengths, strict=True):
            n = samples(seconds)
            parts += [_tone(np.full(n, fc * ratio), sr, (1.0, 0.2)) * _envelope(n, sr), gap]
        phrase = np.concatenate(parts[:-1])
        if kind == "phrase":
            pause = np.zeros(samples(p["repeat_gap_s"]))
            phrase = np.concatenate([phrase, pause] * (p["repeats"] - 1) + [phrase])
        wave = phrase
    elif kind in ("down_sweep", "up_sweep"):
        n = samples(p["duration_s"])
        wave = _tone(_sweep(fc * p["start"], fc * p["end"], n), sr) * _envelope(n, sr, 0.008)
    elif kind == "vibrato":
        n = samples(p["duration_s"])
        t = np.arange(n) / sr
        freq = fc * (1 + p["fm_depth"] * np.sin(2 * np.pi * p["fm_hz"] * t))
        wave = _tone(freq, sr) * _envelope(n, sr, 0.03)
    elif kind == "flat_whistle":
        n = samples(p["duration_s"])
        wave = _tone(_sweep(fc, fc * (1 + p["drift"]), n), sr) * _envelope(n, sr, 0.04)
    elif kind in ("trill", "chirp_series"):
        if kind == "trill":
            period = 1.0 / p["pulse_hz"]
            count = max(int(p["duration_s"] / period), 2)
            pulse_s = p["pulse_s"]
        else:
            period, count, pulse_s = p["period_s"], p["n_chirps"], p["chirp_s"]
        step = samples(period)
        n_pulse = min(samples(pulse_s), step)
        pulse = _tone(_sweep(fc * p["start"], fc * p["end"], n_pulse), sr)
        pulse *= _envelope(n_pulse, sr, 0.004)
        wave = np.zeros(step * (count - 1) + n_pulse)
        for i in range(count):
            wave[i * step : i * step + n_pulse] += pulse
    elif kind == "buzz":
        n = samples(p["duration_s"])
        t = np.arange(n) / sr
        wave = _band_noise(rng, n, sr, fc, p["bandwidth"] * fc)
        wave *= (0.6 + 0.4 * np.sin(2 * np.pi * p["am_hz"] * t)) * _envelope(n, sr, 0.02)
    elif kind == "stridulation":
        n = samples(p["duration_s"])
        t = np.arange(n) / sr
        carrier = _tone(np.full(n, fc), sr)
        noise = _band_noise(rng, n, sr, fc, p["bandwidth"] * fc)
        carrier += 0.5 * noise / (np.std(noise) + 1e-12)
        wave = carrier * np.abs(np.sin(np.pi * p["pulse_hz"] * t)) ** 4 * _envelope(n, sr, 0.05)
    else:  # pragma: no cover - the archetype table and this switch must agree
        raise ValueError(f"unknown call kind {kind!r}")
    rms = float(np.sqrt(np.mean(wave**2)))
    return wave / rms if rms > 0 else wave


class _Noise:
    """Background noise at unit RMS and the share of its power in a frequency band."""

    def __init__(self, rng: np.random.Generator, n: int, sample_rate: int) -> None:
        m = _fft_len(n)
        freqs = np.fft.rfftfreq(m, 1.0 / sample_rate)
        alpha = rng.uniform(0.6, 1.8)  # coloured: power falls as 1/f**alpha
        shape = (freqs + 150.0) ** (-alpha / 2)
        spectrum = (rng.standard_normal(freqs.size) + 1j * rng.standard_normal(freqs.size)) * shape
        noise = np.fft.irfft(spectrum, m)[:n]
        noise /= np.std(noise) + 1e-12
        if rng.random() < 0.4:  # wind-like low rumble that comes and goes
            white = np.fft.rfft(rng.standard_normal(m))
            rumble = np.fft.irfft(white / (1 + (freqs / 120.0) ** 4), m)[:n]
            t = np.arange(n) / sample_rate
            rate, phase = rng.uniform(0.05, 0.3), rng.uniform(0, 2 * np.pi)
            rumble *= 1 + 0.8 * np.sin(2 * np.pi * rate * t + phase)
            noise += rng.uniform(0.5, 2.0) * rumble / (np.std(rumble) + 1e-12)
            noise /= np.std(noise) + 1e-12
        self.wave = noise
        power = np.abs(np.fft.rfft(noise, m)) ** 2
        self._cumulative = np.concatenate([[0.0], np.cumsum(power)]) / power.sum()
        self._hz_per_bin = sample_rate / m

    def band_power(self, low_hz: float, high_hz: float) -> float:
        """Mean power of the noise between `low_hz` and `high_hz` (total power is 1)."""
        last = self._cumulative.size - 1
        lo = int(np.clip(round(low_hz / self._hz_per_bin), 0, last))
        hi = int(np.clip(round(high_hz / self._hz_per_bin), lo + 1, last))
        return float(self._cumulative[hi] - self._cumulative[lo])

    def call_gain(self, species: Species, pitch: float, snr_db: float) -> float:
        """Amplitude that puts a unit-RMS call of `species` at `snr_db` in its band.

        The signal-to-noise ratio is measured against the noise between 0.85 and
        1.18 times the call's centre frequency, so calls at every pitch are about
        as visible at the same ratio, whatever the noise colour.
        """
        centre = species.centre_hz * pitch
        noise = self.band_power(0.85 * centre, 1.18 * centre)
        return math.sqrt(max(noise, 1e-12) * 10 ** (snr_db / 10))


def _add(wave: np.ndarray, part: np.ndarray, start: int) -> int:
    """Add `part` into `wave` from sample `start` (clipped at the end); return its end."""
    end = min(start + part.size, wave.size)
    wave[start:end] += part[: end - start]
    return end


@lru_cache(maxsize=4)
def _speech_clips(sample_rate: int) -> tuple[tuple[str, np.ndarray], ...]:
    """The shipped speech clips (name, mono float32 wave) at `sample_rate`."""
    folder = importlib.resources.files("birdclef").joinpath("data", "speech")
    clips = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".ogg"):
            continue
        with importlib.resources.as_file(entry) as path:
            clips.append((entry.name, read_audio(path, sample_rate)))
    if not clips:
        raise BadAudioError(str(folder), "no speech clips (*.ogg) in the package data")
    return tuple(clips)


# --------------------------------------------------------------------------- planning


@dataclass
class _Recording:
    index: int
    species: Species
    stem: str
    collection: str
    seconds: float
    rating: float
    secondary: list[Species]
    speech_clip: int | None
    row: dict[str, Any]


def _plan_recordings(
    rng: np.random.Generator,
    species: list[Species],
    per_species: int,
    seconds_range: tuple[float, float],
    speech_fraction: float,
    n_clips: int,
) -> list[_Recording]:
    """Metadata of every training recording (everything but the audio).

    `species` are the species with training audio: each is a primary label
    `per_species` times, and the secondary labels are drawn from them too.
    """
    total = len(species) * per_species
    numbers = rng.choice(np.arange(100000, 999999), size=total, replace=False)
    n_speech = int(round(speech_fraction * total))
    with_speech = set(rng.choice(total, size=n_speech, replace=False).tolist())
    ratings = np.arange(0, 11) / 2
    rating_p = np.array([1, 1, 2, 3, 5, 7, 9, 10, 9, 7, 6], dtype=float)
    plans = []
    for index in range(total):
        sp = species[index // per_species]
        collection = "XC" if rng.random() < 0.7 else "iNat"
        number = int(numbers[index])
        stem = f"{collection}{number}"
        if collection == "XC":
            url = f"https://xeno-canto.org/{number}"
        else:
            url = f"https://static.inaturalist.org/sounds/{number}.wav"
        others = [s for s in species if s.label != sp.label]
        secondary: list[Species] = []
        if rng.random() < 0.35:
            k = 1 if rng.random() < 0.7 else 2
            picks = rng.choice(len(others), size=k, replace=False)
            secondary = [others[int(i)] for i in sorted(picks)]
        rating = float(rng.choice(ratings, p=rating_p / rating_p.sum()))
        seconds = round(float(rng.uniform(*seconds_range)), 2)
        lat = round(float(rng.uniform(1.0, 11.0)), 4)
        lon = round(float(rng.uniform(-78.0, -70.0)), 4)
        row = {
            "primary_label": sp.label,
            "secondary_labels": str([s.label for s in secondary]),
            "type": str(rng.choice(_TYPES)),
            "filename": f"{sp.label}/{stem}.ogg",
            "collection": collection,
            "rating": rating,
            "url": url,
            "latitude": lat,
            "longitude": lon,
            "scientific_name": sp.scientific_name,
            "common_name": sp.common_name,
            "class_name": sp.class_name,
            "inat_taxon_id": sp.inat_taxon_id,
            "author": str(rng.choice(_AUTHORS)),
            "license": str(rng.choice(_LICENSES)),
        }
        clip = int(rng.integers(n_clips)) if index in with_speech else None
        plans.append(_Recording(index, sp, stem, collection, seconds, rating, secondary, clip, row))
    return plans


def _soundscape_sites(rng: np.random.Generator) -> list[str]:
    """The `N_SITES` recording-site codes (`S` + two digits), sorted."""
    picks = rng.choice(len(_SITE_POOL), size=N_SITES, replace=False)
    return sorted(_SITE_POOL[int(i)] for i in picks)


def _soundscape_stems(
    rng: np.random.Generator, split: str, count: int, sites: Sequence[str], taken: set
) -> list[str]:
    """`BC2026_<split>_<nnnn>_<site>_<YYYYMMDD>_<HHMMSS>` names, numbered from 0001.

    The first `len(sites)` soundscapes are each from a different site (in an
    order drawn from `rng`), the rest from sites drawn at random: a split of
    three or more soundscapes covers at least three sites. Recorded between
    04:30 and 10:00 on a day of February to April 2025; no two soundscapes
    (`taken` is shared by the splits) share site, day and time.
    """
    first = [sites[int(i)] for i in rng.permutation(len(sites))]
    stems: list[str] = []
    while len(stems) < count:
        site = (
            first[len(stems)] if len(stems) < len(first) else sites[int(rng.integers(len(sites)))]
        )
        day = date(2025, 2, 1) + timedelta(days=int(rng.integers(0, 89)))
        second = int(rng.integers(4 * 3600 + 1800, 10 * 3600))
        if (site, day, second) in taken:
            continue
        taken.add((site, day, second))
        clock = f"{second // 3600:02d}{second % 3600 // 60:02d}{second % 60:02d}"
        stems.append(f"BC2026_{split}_{len(stems) + 1:04d}_{site}_{day:%Y%m%d}_{clock}")
    return stems


def _labelled_soundscapes(count: int) -> list[int]:
    """Indices of the train soundscapes that get labels: about half of them.

    Every other one (0001, 0003, ...; both when there are two): the first
    soundscapes come from different sites (`_soundscape_stems`), so three or
    more train soundscapes give labelled ones from at least two sites.
    """
    return [i for i in range(count) if i % 2 == 0 or count == 2]


def _hhmmss(seconds: float) -> str:
    """`HH:MM:SS` of a whole number of seconds, as in train_soundscapes_labels.csv."""
    total = int(round(seconds))
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


# --------------------------------------------------------------------------- rendering


def _render_recording(
    plan: _Recording, seed: int, sample_rate: int, audio_dir: Path
) -> tuple[list[list[Any]], dict[str, Any] | None]:
    """Synthesise and write one training recording; return its calls and speech event."""
    rng = np.random.default_rng([seed, _STREAM_RECORDING, plan.index])
    n = int(round(plan.seconds * sample_rate))
    noise = _Noise(rng, n, sample_rate)
    wave = noise.wave.copy()
    # Lower rating: lower in-band signal-to-noise ratio (0 dB at 0, +17.5 dB at 5).
    snr_db = 3.5 * plan.rating + rng.normal(0.0, 1.5)
    pitch = rng.normal(1.0, 0.03)
    stretch = float(np.clip(rng.normal(1.0, 0.08), 0.8, 1.25))
    calls: list[list[Any]] = []

    def make(sp: Species, count: int, level_db: float, sp_pitch: float, sp_stretch: float):
        out = []
        for _ in range(count):
            call_pitch = sp_pitch * rng.normal(1.0, 0.01)
            call = _call(sp, sample_rate, rng, call_pitch, sp_stretch)
            out.append(call * noise.call_gain(sp, call_pitch, level_db + rng.uniform(-3.0, 3.0)))
        return out

    def place(sp: Species, part: np.ndarray, start: int) -> None:
        end = _add(wave, part, start)
        calls.append([sp.label, round(start / sample_rate, 3), round(end / sample_rate, 3)])

    # Primary calls in sequence with random gaps, covering at most 3/4 of the recording.
    low = max(2, int(plan.seconds / 5))
    high = max(low + 1, int(plan.seconds / 1.5))
    primary = make(plan.species, int(rng.integers(low, high + 1)), snr_db, pitch, stretch)
    while len(primary) > 1 and sum(c.size for c in primary) > 0.75 * n:
        primary.pop()
    gaps = rng.dirichlet(np.ones(len(primary) + 1)) * max(n - sum(c.size for c in primary), 0)
    start = 0.0
    for gap, call in zip(gaps, primary, strict=False):
        start += gap
        place(plan.species, call, int(start))
        start += call.size
    # Secondary species: fewer, quieter calls anywhere.
    for sp in plan.secondary:
        sp_pitch, sp_stretch = (
            rng.normal(1.0, 0.03),
            float(np.clip(rng.normal(1.0, 0.08), 0.8, 1.25)),
        )
        level_db = snr_db - rng.uniform(6.0, 12.0)
        for call in make(sp, int(rng.integers(1, 4)), level_db, sp_pitch, sp_stretch):
            place(sp, call, int(rng.integers(0, max(n - call.size, 1))))
    calls.sort(key=lambda c: (c[1], c[0]))

    speech = None
    if plan.speech_clip is not None:
        name, clip = _speech_clips(sample_rate)[plan.speech_clip]
        clip = clip[: n - 1].astype(np.float64)
        speech_snr = float(rng.uniform(0.0, 15.0))
        gain = math.sqrt(np.mean(wave**2) * 10 ** (speech_snr / 10) / np.mean(clip**2))
        start = int(rng.integers(0, max(n - clip.size, 1)))
        end = _add(wave, gain * clip, start)
        speech = {
            "filename": plan.row["filename"],
            "clip": name,
            "start_s": round(start / sample_rate, 3),
            "end_s": round(end / sample_rate, 3),
            "snr_db": round(speech_snr, 2),
        }

    wave *= rng.uniform(0.3, 0.9) / np.max(np.abs(wave))
    _write(audio_dir / plan.row["filename"], wave, sample_rate, plan.row["filename"])
    return calls, speech


def _render_soundscape(
    stem: str,
    index: int,
    stream: int,
    seed: int,
    species: list[Species],
    seconds: float,
    sample_rate: int,
    folder: Path,
    snr_db: tuple[float, float] = (2.0, 12.0),
    overlap: float = 0.2,
    force: Sequence[str] = (),
) -> list[list[Any]]:
    """Synthesise and write one soundscape; return its calls `[label, start_s, end_s]`.

    Each call after the first lands on top of an earlier one with probability
    `overlap`. The species labelled in `force` call in it whatever the draw.
    """
    rng = np.random.default_rng([seed, stream, index])
    n = int(round(seconds * sample_rate))
    noise = _Noise(rng, n, sample_rate)
    wave = noise.wave.copy()
    n_present = int(rng.integers(min(3, len(species)), min(8, len(species)) + 1))
    chosen = set(rng.choice(len(species), n_present, replace=False).tolist())
    present = [sp for i, sp in enumerate(species) if i in chosen or sp.label in force]
    scale = seconds / 60.0
    calls: list[list[Any]] = []
    for sp in present:
        pitch, stretch = rng.normal(1.0, 0.03), float(np.clip(rng.normal(1.0, 0.08), 0.8, 1.25))
        level_db = rng.uniform(*snr_db)  # in-band SNR of this species in this soundscape
        count = max(1, int(round(rng.integers(1, 7) * scale)))
        for _ in range(count):
            call_pitch = pitch * rng.normal(1.0, 0.01)
            call = _call(sp, sample_rate, rng, call_pitch, stretch)
            call *= noise.call_gain(sp, call_pitch, level_db + rng.uniform(-3.0, 3.0))
            if calls and rng.random() < overlap:  # overlap a call already placed
                other = calls[int(rng.integers(len(calls)))]
                start_s = other[1] + rng.uniform(-0.3, 0.3)
            else:
                start_s = rng.uniform(0.0, max(seconds - call.size / sample_rate, 0.0))
            start = int(np.clip(round(start_s * sample_rate), 0, max(n - call.size, 0)))
            end = _add(wave, call, start)
            calls.append([sp.label, round(start / sample_rate, 3), round(end / sample_rate, 3)])
    calls.sort(key=lambda c: (c[1], c[0]))
    wave *= rng.uniform(0.3, 0.8) / np.max(np.abs(wave))
    _write(folder / f"{stem}.ogg", wave, sample_rate, f"{folder.name}/{stem}.ogg")
    return calls


# --------------------------------------------------------------------------- Ogg output

_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _ogg_crc(page: bytes) -> int:
    """Ogg's page CRC-32 (polynomial 0x04C11DB7, no reflection, zero init and xor-out).

    zlib computes the reflected CRC-32; reversing the bits of every input byte
    and of the result turns one into the other.
    """
    reflected = zlib.crc32(page.translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def set_ogg_serial(data: bytes, serial: int) -> bytes:
    """Return the Ogg stream `data` with every page's serial number set to `serial`.

    Page checksums are recomputed. Used to make encoded files reproducible:
    libsndfile draws a random serial number for each file it writes.
    """
    out = bytearray(data)
    offset = 0
    serial_bytes = (serial & 0xFFFFFFFF).to_bytes(4, "little")
    while offset < len(out):
        if out[offset : offset + 4] != b"OggS" or offset + 27 > len(out):
            raise ValueError(f"not an Ogg page at byte {offset}")
        n_segments = out[offset + 26]
        body = sum(out[offset + 27 : offset + 27 + n_segments])
        end = offset + 27 + n_segments + body
        if end > len(out):
            raise ValueError(f"truncated Ogg page at byte {offset}")
        out[offset + 14 : offset + 18] = serial_bytes
        out[offset + 22 : offset + 26] = b"\0\0\0\0"
        crc = _ogg_crc(bytes(out[offset:end]))
        out[offset + 22 : offset + 26] = crc.to_bytes(4, "little")
        offset = end
    return bytes(out)


def _write(path: Path, wave: np.ndarray, sample_rate: int, name: str) -> None:
    """Write `wave` as Ogg Vorbis with a serial number derived from `name`."""
    write_ogg(path, wave.astype(np.float32), sample_rate)
    path.write_bytes(set_ogg_serial(path.read_bytes(), zlib.crc32(name.encode())))


# --------------------------------------------------------------------------- labels


def window_labels(
    calls: Sequence[Sequence[Any]], seconds: float, labels: Sequence[str]
) -> np.ndarray:
    """0/1 matrix (windows x labels) of which species call in each 5 s window.

    A call counts in a window when it overlaps it by `MIN_OVERLAP_SECONDS`, or
    by half its own length when it is shorter than twice that.
    """
    n_windows = int(round(seconds / WINDOW_SECONDS))
    column = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((n_windows, len(labels)), dtype=np.int64)
    for label, start, end in calls:
        need = min(MIN_OVERLAP_SECONDS, 0.5 * (end - start))
        for w in range(n_windows):
            overlap = min(end, (w + 1) * WINDOW_SECONDS) - max(start, w * WINDOW_SECONDS)
            if overlap >= need and overlap > 0:
                matrix[w, column[label]] = 1
    return matrix


def _open_permissions(root: Path) -> None:
    """Give the dataset ordinary permissions (0777 / 0666 less the umask).

    The atomic temporary files and folder are created private (0600 / 0700).
    """
    umask = os.umask(0)
    os.umask(umask)
    root.chmod(0o777 & ~umask)
    for path in root.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


# --------------------------------------------------------------------------- entry point


def generate_demo(
    out_root: str | os.PathLike,
    seed: int = 0,
    n_species: int = 12,
    recordings_per_species: int = 10,
    recording_seconds: tuple[float, float] = (8.0, 20.0),
    n_train_soundscapes: int = 8,
    n_test_soundscapes: int = 6,
    soundscape_seconds: float = 60.0,
    speech_fraction: float = 0.15,
    sample_rate: int = 32000,
    soundscape_snr_db: tuple[float, float] = (2.0, 12.0),
    soundscape_overlap: float = 0.2,
) -> dict:
    """Write a synthetic BirdCLEF+ 2026 competition folder at `out_root`; return a summary.

    The folder holds:

    - `taxonomy.csv`: primary_label, inat_taxon_id, scientific_name,
      common_name, class_name (one row per species, sorted by label);
    - `train.csv` (columns `TRAIN_COLUMNS_2026`, in that order) and
      `train_audio/<label>/*.ogg`, for every species but
      `classes_without_train_audio`;
    - `train_soundscapes/` and `test_soundscapes/`:
      `BC2026_(Train|Test)_<nnnn>_<site>_<YYYYMMDD>_<HHMMSS>.ogg` from
      `N_SITES` sites; the class without audio calls in every other one;
    - `train_soundscapes_labels.csv`: filename, start, end (`HH:MM:SS`),
      primary_label (`;`-joined) for each 5 s window with a call of every other
      train soundscape (0001, 0003, ...), every row listed twice;
    - `sample_submission.csv`: row_id and one column per label (uniform
      values) for the first `SAMPLE_SUBMISSION_ROWS` windows of the first test
      soundscape only, as Kaggle's;
    - `test_ground_truth.csv`: row_id (`<stem>_<end second>`) plus a 0/1
      column per label for every window of every test soundscape, in file
      then time order;
    - `demo_info.json`: seed, settings, species call shapes, every call's
      timing, which train soundscapes are labelled, and each speech
      insertion as `filename`, `start_s`, `end_s`, `snr_db`.

    All audio is mono Ogg Vorbis at `sample_rate`. The same arguments always
    give byte-identical files. The folder is built beside `out_root` and
    renamed into place when complete, replacing an existing `out_root`.
    `soundscape_seconds` must be a multiple of 5. `soundscape_snr_db` is the
    range of each species' in-band SNR in the soundscapes: the default is
    about that of mid-rated training recordings; lower it (e.g. (-3, 8)) for
    a harder variant. `soundscape_overlap` is the chance that a soundscape
    call is placed on top of an earlier one.
    """
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if recordings_per_species < 1:
        raise ValueError("recordings_per_species must be at least 1")
    low, high = (float(x) for x in recording_seconds)
    if not 1.0 <= low <= high:
        raise ValueError(
            f"recording_seconds must be (low, high) with 1 <= low <= high, got {recording_seconds}"
        )
    if n_train_soundscapes < 0 or n_test_soundscapes < 1:
        raise ValueError("need n_train_soundscapes >= 0 and n_test_soundscapes >= 1")
    windows = soundscape_seconds / WINDOW_SECONDS
    if soundscape_seconds <= 0 or abs(windows - round(windows)) > 1e-9:
        raise ValueError(
            f"soundscape_seconds must be a positive multiple of 5, got {soundscape_seconds}"
        )
    if not 0.0 <= speech_fraction <= 1.0:
        raise ValueError(f"speech_fraction must be in [0, 1], got {speech_fraction}")
    if sample_rate < 24000:
        raise ValueError(
            f"sample_rate must be at least 24000 Hz (calls reach ~11 kHz), got {sample_rate}"
        )

    species = demo_species(n_species)
    labels = [s.label for s in species]
    no_audio = classes_without_train_audio(species)
    with_audio = [s for s in species if s.label not in no_audio]
    clips = _speech_clips(sample_rate) if speech_fraction > 0 else ()
    meta_rng = np.random.default_rng([seed, _STREAM_META])
    plans = _plan_recordings(
        meta_rng,
        with_audio,
        recordings_per_species,
        (low, high),
        speech_fraction,
        max(len(clips), 1),
    )
    sites = _soundscape_sites(meta_rng)
    taken: set = set()
    train_stems = _soundscape_stems(meta_rng, "Train", n_train_soundscapes, sites, taken)
    test_stems = _soundscape_stems(meta_rng, "Test", n_test_soundscapes, sites, taken)
    labelled = _labelled_soundscapes(len(train_stems))

    workers = max(1, min(8, os.cpu_count() or 1))
    with atomic_dir(out_root) as tmp:
        audio_dir = tmp / "train_audio"
        audio_dir.mkdir()
        for sp in with_audio:
            (audio_dir / sp.label).mkdir()
        scape_tasks = [
            (stem, i, stream, tmp / folder)
            for folder, stream, stems in (
                ("train_soundscapes", _STREAM_TRAIN_SOUNDSCAPE, train_stems),
                ("test_soundscapes", _STREAM_TEST_SOUNDSCAPE, test_stems),
            )
            for i, stem in enumerate(stems)
        ]
        for name in ("train_soundscapes", "test_soundscapes"):
            (tmp / name).mkdir()
        # Every file has its own random stream, so the thread count and the
        # order of completion cannot change the output. Longest files first.
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            scape_jobs = [
                pool.submit(
                    _render_soundscape,
                    stem,
                    i,
                    stream,
                    seed,
                    species,
                    soundscape_seconds,
                    sample_rate,
                    folder,
                    (float(soundscape_snr_db[0]), float(soundscape_snr_db[1])),
                    float(soundscape_overlap),
                    tuple(no_audio) if i % 2 == 0 else (),
                )
                for stem, i, stream, folder in scape_tasks
            ]
            rec_jobs = [
                pool.submit(_render_recording, plan, seed, sample_rate, audio_dir) for plan in plans
            ]
            # Stop at the first failure instead of rendering everything first.
            wait([*scape_jobs, *rec_jobs], return_when=FIRST_EXCEPTION)
            scape_calls = [job.result() for job in scape_jobs]
            rec_results = [job.result() for job in rec_jobs]
        finally:  # on an error, drop the queued files rather than render them
            pool.shutdown(wait=True, cancel_futures=True)
        train_calls = scape_calls[: len(train_stems)]
        test_calls = scape_calls[len(train_stems) :]

        train = pd.DataFrame([p.row for p in plans], columns=TRAIN_COLUMNS_2026)
        _write_csv(tmp / "train.csv", train)
        taxonomy = pd.DataFrame(
            [
                [s.label, s.inat_taxon_id, s.scientific_name, s.common_name, s.class_name]
                for s in species
            ],
            columns=TAXONOMY_COLUMNS,
        )
        _write_csv(tmp / "taxonomy.csv", taxonomy)

        n_windows = int(round(windows))
        # train_soundscapes_labels.csv: the windows with a call, then the same rows again.
        label_rows = []
        for i in labelled:
            present = window_labels(train_calls[i], soundscape_seconds, labels)
            for w in np.flatnonzero(present.any(axis=1)):
                label_rows.append(
                    [
                        f"{train_stems[i]}.ogg",
                        _hhmmss(w * WINDOW_SECONDS),
                        _hhmmss((w + 1) * WINDOW_SECONDS),
                        ";".join(label for label, on in zip(labels, present[w], strict=True) if on),
                    ]
                )
        scape_labels = pd.DataFrame(label_rows * 2, columns=list(LABEL_COLUMNS))
        _write_csv(tmp / "train_soundscapes_labels.csv", scape_labels)

        row_ids = [
            f"{stem}_{(w + 1) * WINDOW_SECONDS}" for stem in test_stems for w in range(n_windows)
        ]
        truth = np.concatenate(
            [window_labels(calls, soundscape_seconds, labels) for calls in test_calls]
        )
        ground_truth = pd.DataFrame(truth, columns=labels)
        ground_truth.insert(0, "row_id", row_ids)
        _write_csv(tmp / "test_ground_truth.csv", ground_truth)
        # The first windows of the first test soundscape (sorted), uniform values.
        sample_ids = [
            f"{min(test_stems)}_{(w + 1) * WINDOW_SECONDS}"
            for w in range(min(SAMPLE_SUBMISSION_ROWS, n_windows))
        ]
        submission = pd.DataFrame(
            np.full((len(sample_ids), len(labels)), 1.0 / len(labels)), columns=labels
        )
        submission.insert(0, "row_id", sample_ids)
        _write_csv(tmp / "sample_submission.csv", submission)

        speech = [s for _, s in rec_results if s is not None]
        train_seconds = float(sum(p.seconds for p in plans))
        summary = {
            "species": len(species),
            "classes_without_train_audio": len(no_audio),
            "recordings": len(plans),
            "train_soundscapes": len(train_stems),
            "labelled_train_soundscapes": len(labelled),
            "labelled_windows": len(label_rows),
            "soundscape_label_rows": len(scape_labels),
            "test_soundscapes": len(test_stems),
            "test_windows": len(row_ids),
            "sample_submission_rows": len(submission),
            "sites": len({stem.split("_")[3] for stem in [*train_stems, *test_stems]}),
            "speech_recordings": len(speech),
            "recordings_with_secondary": sum(bool(p.secondary) for p in plans),
            "train_audio_seconds": round(train_seconds, 2),
            "soundscape_audio_seconds": round(
                (len(train_stems) + len(test_stems)) * soundscape_seconds, 2
            ),
        }
        info = {
            "generator": "birdclef.demo.generate_demo",
            "seed": seed,
            "settings": {
                "n_species": n_species,
                "recordings_per_species": recordings_per_species,
                "recording_seconds": [low, high],
                "n_train_soundscapes": n_train_soundscapes,
                "n_test_soundscapes": n_test_soundscapes,
                "soundscape_seconds": soundscape_seconds,
                "speech_fraction": speech_fraction,
                "sample_rate": sample_rate,
                "soundscape_snr_db": [float(soundscape_snr_db[0]), float(soundscape_snr_db[1])],
                "soundscape_overlap": float(soundscape_overlap),
            },
            "label_rule": (
                f"a label is 1 in a {WINDOW_SECONDS} s window when one of its calls overlaps the "
                f"window by >= min({MIN_OVERLAP_SECONDS} s, half the call)"
            ),
            "summary": summary,
            "classes_without_train_audio": no_audio,
            "species": [{**s.info(), "train_audio": s.label not in no_audio} for s in species],
            "speech": speech,
            "recordings": [
                {"filename": p.row["filename"], "rating": p.rating, "calls": calls}
                for p, (calls, _) in zip(plans, rec_results, strict=True)
            ],
            "train_soundscapes": [
                {"filename": f"{stem}.ogg", "labelled": i in labelled, "calls": calls}
                for i, (stem, calls) in enumerate(zip(train_stems, train_calls, strict=True))
            ],
            "test_soundscapes": [
                {"filename": f"{stem}.ogg", "calls": calls}
                for stem, calls in zip(test_stems, test_calls, strict=True)
            ],
        }
        write_json(tmp / "demo_info.json", info)
        _open_permissions(tmp)
        total_bytes = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
    summary["bytes"] = total_bytes
    summary["out_root"] = str(Path(out_root))
    return summary


def demo_stage(out_root: str | os.PathLike, settings: dict[str, Any]) -> dict:
    """Workflow stage `demo_data`: generate the demo folder at `out_root` from config settings.

    `settings` is the config's `data.demo` section without `enabled`; its keys
    are `generate_demo` keyword arguments (seed, n_species, ...). Unknown keys
    raise a `ValueError` naming them. Returns the summary of `generate_demo`.
    """
    known = set(inspect.signature(generate_demo).parameters) - {"out_root"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown demo settings {unknown}: expected some of {sorted(known)}")
    kwargs = dict(settings)
    for key in ("recording_seconds", "soundscape_snr_db"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    log.info("generating demo data in %s with %s", out_root, kwargs)
    summary = generate_demo(out_root, **kwargs)
    log.info("demo data: %s", summary)
    return summary
