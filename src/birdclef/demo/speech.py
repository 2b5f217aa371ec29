"""The speech clips mixed into some training recordings (package data).

The clips are espeak-ng output shipped in `birdclef/data/speech/` (see its
`README.md`); espeak-ng is never called here.
"""

from __future__ import annotations

import importlib.resources
from functools import lru_cache

import numpy as np

from birdclef.runtime.audio import BadAudioError, read_audio


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
