"""Everything drawn before any audio is rendered: the species, the training recordings'
plans and the soundscape names, all from the seed's meta random stream."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from birdclef.demo.layout import _STREAM_META
from birdclef.demo.recordings import _plan_recordings, _Recording
from birdclef.demo.soundscapes import _labelled_soundscapes, _soundscape_sites, _soundscape_stems
from birdclef.demo.species import Species, classes_without_train_audio, demo_species
from birdclef.demo.speech import _speech_clips


@dataclass
class _Draft:
    """Everything drawn before any audio: species, recording plans, soundscape names."""

    species: list[Species]
    labels: list[str]
    no_audio: list[str]
    with_audio: list[Species]
    plans: list[_Recording]
    train_stems: list[str]
    test_stems: list[str]
    labelled: list[int]


def _draft(
    seed: int,
    n_species: int,
    recordings_per_species: int,
    seconds_range: tuple[float, float],
    n_train_soundscapes: int,
    n_test_soundscapes: int,
    speech_fraction: float,
    sample_rate: int,
) -> _Draft:
    """Species, recording plans and soundscape names, all drawn from the meta stream."""
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
        seconds_range,
        speech_fraction,
        max(len(clips), 1),
    )
    sites = _soundscape_sites(meta_rng)
    taken: set = set()
    train_stems = _soundscape_stems(meta_rng, "Train", n_train_soundscapes, sites, taken)
    test_stems = _soundscape_stems(meta_rng, "Test", n_test_soundscapes, sites, taken)
    labelled = _labelled_soundscapes(len(train_stems))
    return _Draft(species, labels, no_audio, with_audio, plans, train_stems, test_stems, labelled)
