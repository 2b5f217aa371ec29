"""Synthetic sound: call shapes of the archetypes, coloured background noise, mixing.

Every call is rendered at unit RMS; `_Noise.call_gain` scales it to an in-band
signal-to-noise ratio against the background it is added to.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from birdclef.demo.species import Species


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


# --------------------------------------------------------------------------- call shapes
# Each takes the archetype's params `p`, the centre frequency `fc`, the sample
# rate `sr`, `samples` (seconds -> samples, with the duration factor applied)
# and the random generator; it returns the call before normalisation.

Samples = Callable[[float], int]


def _croak(p: dict, fc: float, sr: int, samples: Samples, rng: np.random.Generator) -> np.ndarray:
    n = samples(p["duration_s"])
    f0 = fc / 2
    weights = [math.exp(-0.5 * ((k * f0 - fc) / (0.6 * fc)) ** 2) for k in range(1, 8)]
    wave = _tone(np.full(n, f0), sr, weights[: p["n_harmonics"]])
    t = np.arange(n) / sr
    wave *= (0.5 + 0.5 * np.sin(2 * np.pi * p["pulse_hz"] * t)) ** 2
    wave *= _envelope(n, sr)
    return wave


def _harmonic_stack(
    p: dict, fc: float, sr: int, samples: Samples, rng: np.random.Generator
) -> np.ndarray:
    n = samples(p["duration_s"])
    return _tone(_sweep(fc, fc * (1 + p["slide"]), n), sr, p["harmonics"]) * _envelope(n, sr)


def _two_note(
    p: dict, fc: float, sr: int, samples: Samples, rng: np.random.Generator
) -> np.ndarray:
    """Notes at `fc` times each ratio in `p["notes"]`, separated by gaps."""
    notes = p["notes"]
    lengths = p["note_s"] if isinstance(p["note_s"], list) else [p["note_s"]] * len(notes)
    gap = np.zeros(samples(p["gap_s"]))
    parts: list[np.ndarray] = []
    for ratio, seconds in zip(notes, lengths, strict=True):
        n = samples(seconds)
        parts += [_tone(np.full(n, fc * ratio), sr, (1.0, 0.2)) * _envelope(n, sr), gap]
    return np.concatenate(parts[:-1])


def _phrase(p: dict, fc: float, sr: int, samples: Samples, rng: np.random.Generator) -> np.ndarray:
    """The notes of `_two_note`, repeated `p["repeats"]` times with pauses."""
    phrase = _two_note(p, fc, sr, samples, rng)
    pause = np.zeros(samples(p["repeat_gap_s"]))
    return np.concatenate([phrase, pause] * (p["repeats"] - 1) + [phrase])


def _sweep_call(
    p: dict, fc: float, sr: int, samples: Samples, rng: np.random.Generator
) -> np.ndarray:
    n = samples(p["duration_s"])
    return _tone(_sweep(fc * p["start"], fc * p["end"], n), sr) * _envelope(n, sr, 0.008)


def _vibrato(p: dict, fc: float, sr: int, samples: Samples, rng: np.random.Generator) -> np.ndarray:
    n = samples(p["duration_s"])
    t = np.arange(n) / sr
    freq = fc * (1 + p["fm_depth"] * np.sin(2 * np.pi * p["fm_hz"] * t))
    return _tone(freq, sr) * _envelope(n, sr, 0.03)


def _flat_whistle(
    p: dict, fc: float, sr: int, samples: Samples, rng: np.random.Generator
) -> np.ndarray:
    n = samples(p["duration_s"])
    return _tone(_sweep(fc, fc * (1 + p["drift"]), n), sr) * _envelope(n, sr, 0.04)


def _pulses(
    p: dict, fc: float, sr: int, samples: Samples, period: float, count: int, pulse_s: float
) -> np.ndarray:
    """`count` swept pulses of `pulse_s`, one every `period` seconds."""
    step = samples(period)
    n_pulse = min(samples(pulse_s), step)
    pulse = _tone(_sweep(fc * p["start"], fc * p["end"], n_pulse), sr)
    pulse *= _envelope(n_pulse, sr, 0.004)
    wave = np.zeros(step * (count - 1) + n_pulse)
    for i in range(count):
        wave[i * step : i * step + n_pulse] += pulse
    return wave


def _trill(p: dict, fc: float, sr: int, samples: Samples, rng: np.random.Generator) -> np.ndarray:
    period = 1.0 / p["pulse_hz"]
    count = max(int(p["duration_s"] / period), 2)
    return _pulses(p, fc, sr, samples, period, count, p["pulse_s"])


def _chirp_series(
    p: dict, fc: float, sr: int, samples: Samples, rng: np.random.Generator
) -> np.ndarray:
    return _pulses(p, fc, sr, samples, p["period_s"], p["n_chirps"], p["chirp_s"])


def _buzz(p: dict, fc: float, sr: int, samples: Samples, rng: np.random.Generator) -> np.ndarray:
    n = samples(p["duration_s"])
    t = np.arange(n) / sr
    wave = _band_noise(rng, n, sr, fc, p["bandwidth"] * fc)
    wave *= (0.6 + 0.4 * np.sin(2 * np.pi * p["am_hz"] * t)) * _envelope(n, sr, 0.02)
    return wave


def _stridulation(
    p: dict, fc: float, sr: int, samples: Samples, rng: np.random.Generator
) -> np.ndarray:
    n = samples(p["duration_s"])
    t = np.arange(n) / sr
    carrier = _tone(np.full(n, fc), sr)
    noise = _band_noise(rng, n, sr, fc, p["bandwidth"] * fc)
    carrier += 0.5 * noise / (np.std(noise) + 1e-12)
    return carrier * np.abs(np.sin(np.pi * p["pulse_hz"] * t)) ** 4 * _envelope(n, sr, 0.05)


_SHAPES: dict[str, Callable[..., np.ndarray]] = {
    "croak": _croak,
    "harmonic_stack": _harmonic_stack,
    "two_note": _two_note,
    "phrase": _phrase,
    "down_sweep": _sweep_call,
    "up_sweep": _sweep_call,
    "vibrato": _vibrato,
    "flat_whistle": _flat_whistle,
    "trill": _trill,
    "chirp_series": _chirp_series,
    "buzz": _buzz,
    "stridulation": _stridulation,
}


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
    shape = _SHAPES.get(kind)
    if shape is None:  # pragma: no cover - the archetype table and _SHAPES must agree
        raise ValueError(f"unknown call kind {kind!r}")
    wave = shape(p, fc, sr, samples, rng)
    rms = float(np.sqrt(np.mean(wave**2)))
    return wave / rms if rms > 0 else wave


# --------------------------------------------------------------------------- noise and mixing


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
