"""Training recordings: plan their train.csv rows, then synthesise and write their audio.

A recording holds calls of its primary species in sequence, a few quieter
calls of its secondary species, coloured background noise and, for some,
a speech clip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from birdclef.demo.calls import _add, _call, _Noise
from birdclef.demo.layout import _STREAM_RECORDING
from birdclef.demo.ogg import _write
from birdclef.demo.species import Species
from birdclef.demo.speech import _speech_clips

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


# --------------------------------------------------------------------------- rendering


@dataclass
class _Mix:
    """A recording being mixed: its random stream, noise, wave and the calls placed so far."""

    rng: np.random.Generator
    noise: _Noise
    wave: np.ndarray
    sample_rate: int
    calls: list[list[Any]] = field(default_factory=list)

    def make(
        self, sp: Species, count: int, level_db: float, sp_pitch: float, sp_stretch: float
    ) -> list[np.ndarray]:
        """`count` calls of `sp` at about `level_db` in-band SNR (each within 3 dB)."""
        rng = self.rng
        out = []
        for _ in range(count):
            call_pitch = sp_pitch * rng.normal(1.0, 0.01)
            call = _call(sp, self.sample_rate, rng, call_pitch, sp_stretch)
            out.append(
                call * self.noise.call_gain(sp, call_pitch, level_db + rng.uniform(-3.0, 3.0))
            )
        return out

    def place(self, sp: Species, part: np.ndarray, start: int) -> None:
        """Add `part` at sample `start` and note the call `[label, start_s, end_s]`."""
        end = _add(self.wave, part, start)
        sample_rate = self.sample_rate
        self.calls.append([sp.label, round(start / sample_rate, 3), round(end / sample_rate, 3)])


def _place_primary(mix: _Mix, plan: _Recording, n: int, snr_db: float) -> None:
    """Primary calls in sequence with random gaps, covering at most 3/4 of the recording."""
    rng = mix.rng
    pitch = rng.normal(1.0, 0.03)
    stretch = float(np.clip(rng.normal(1.0, 0.08), 0.8, 1.25))
    low = max(2, int(plan.seconds / 5))
    high = max(low + 1, int(plan.seconds / 1.5))
    primary = mix.make(plan.species, int(rng.integers(low, high + 1)), snr_db, pitch, stretch)
    while len(primary) > 1 and sum(c.size for c in primary) > 0.75 * n:
        primary.pop()
    gaps = rng.dirichlet(np.ones(len(primary) + 1)) * max(n - sum(c.size for c in primary), 0)
    start = 0.0
    for gap, call in zip(gaps, primary, strict=False):
        start += gap
        mix.place(plan.species, call, int(start))
        start += call.size


def _place_secondary(mix: _Mix, plan: _Recording, n: int, snr_db: float) -> None:
    """Secondary species: fewer, quieter calls anywhere."""
    rng = mix.rng
    for sp in plan.secondary:
        sp_pitch, sp_stretch = (
            rng.normal(1.0, 0.03),
            float(np.clip(rng.normal(1.0, 0.08), 0.8, 1.25)),
        )
        level_db = snr_db - rng.uniform(6.0, 12.0)
        for call in mix.make(sp, int(rng.integers(1, 4)), level_db, sp_pitch, sp_stretch):
            mix.place(sp, call, int(rng.integers(0, max(n - call.size, 1))))


def _mix_speech(mix: _Mix, plan: _Recording, n: int) -> dict[str, Any]:
    """Add the plan's speech clip at a random place and level; return the speech event."""
    rng, sample_rate = mix.rng, mix.sample_rate
    name, clip = _speech_clips(sample_rate)[plan.speech_clip]
    clip = clip[: n - 1].astype(np.float64)
    speech_snr = float(rng.uniform(0.0, 15.0))
    gain = math.sqrt(np.mean(mix.wave**2) * 10 ** (speech_snr / 10) / np.mean(clip**2))
    start = int(rng.integers(0, max(n - clip.size, 1)))
    end = _add(mix.wave, gain * clip, start)
    return {
        "filename": plan.row["filename"],
        "clip": name,
        "start_s": round(start / sample_rate, 3),
        "end_s": round(end / sample_rate, 3),
        "snr_db": round(speech_snr, 2),
    }


def _render_recording(
    plan: _Recording, seed: int, sample_rate: int, audio_dir: Path
) -> tuple[list[list[Any]], dict[str, Any] | None]:
    """Synthesise and write one training recording; return its calls and speech event."""
    rng = np.random.default_rng([seed, _STREAM_RECORDING, plan.index])
    n = int(round(plan.seconds * sample_rate))
    noise = _Noise(rng, n, sample_rate)
    mix = _Mix(rng, noise, noise.wave.copy(), sample_rate)
    # Lower rating: lower in-band signal-to-noise ratio (0 dB at 0, +17.5 dB at 5).
    snr_db = 3.5 * plan.rating + rng.normal(0.0, 1.5)
    _place_primary(mix, plan, n, snr_db)
    _place_secondary(mix, plan, n, snr_db)
    mix.calls.sort(key=lambda c: (c[1], c[0]))

    speech = None
    if plan.speech_clip is not None:
        speech = _mix_speech(mix, plan, n)

    wave = mix.wave
    wave *= rng.uniform(0.3, 0.9) / np.max(np.abs(wave))
    _write(audio_dir / plan.row["filename"], wave, sample_rate, plan.row["filename"])
    return mix.calls, speech
