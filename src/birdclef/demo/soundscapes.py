"""Soundscapes: site codes, 2026-style file names, which train ones are labelled, and
the synthesis of one soundscape (several species calling over coloured noise)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from birdclef.demo.calls import _add, _call, _Noise
from birdclef.demo.layout import N_SITES
from birdclef.demo.ogg import _write
from birdclef.demo.species import Species

_SITE_POOL = [f"S{i:02d}" for i in range(1, 10)]


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
