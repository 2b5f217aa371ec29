"""Cutting speech out of a recording: merging padded spans, joining the pieces with a crossfade."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np


def merge_spans(
    spans: Iterable[Sequence[float]], duration: float, pad: float = 0.0
) -> list[tuple[float, float]]:
    """Pad spans by `pad` on both sides, clip them to [0, duration] and merge overlaps."""
    clipped = []
    for span in spans:
        start = max(0.0, float(span[0]) - pad)
        end = min(float(duration), float(span[1]) + pad)
        if end > start:
            clipped.append((start, end))
    merged: list[tuple[float, float]] = []
    for start, end in sorted(clipped):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def remove_spans(
    wave: np.ndarray,
    sample_rate: int,
    spans: list[tuple[float, float]],
    crossfade_seconds: float,
) -> np.ndarray:
    """Cut `spans` (seconds) out of `wave` and join the pieces with a crossfade.

    Spans are clipped to the signal and merged where they overlap (extra tuple
    items, such as detect_speech's max_prob, are ignored). At every join the
    last `crossfade_seconds` of the piece before and the first of the piece
    after overlap under an equal-power (sin/cos) crossfade, so the result is
    shorter than `len(wave) - cut samples` by one crossfade per join (less when
    a piece is shorter than the crossfade). No removed sample is kept. Returns
    a new float32 array, possibly empty when everything is cut.
    """
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    n = wave.size
    cuts = []
    for span in spans:
        start = max(0, min(n, int(math.floor(float(span[0]) * sample_rate))))
        end = max(0, min(n, int(math.ceil(float(span[1]) * sample_rate))))
        if end > start:
            cuts.append((start, end))
    if not cuts:
        return wave.copy()
    cuts.sort()
    pieces = []
    position = 0
    for start, end in cuts:
        if start > position:
            pieces.append(wave[position:start])
        position = max(position, end)
    if position < n:
        pieces.append(wave[position:])
    if not pieces:
        return np.zeros(0, dtype=np.float32)

    fade = max(0, int(round(crossfade_seconds * sample_rate)))
    out = np.empty(sum(piece.size for piece in pieces), dtype=np.float32)
    filled = 0
    for piece in pieces:
        overlap = min(fade, filled, piece.size)
        if overlap:
            angle = (np.arange(overlap, dtype=np.float64) + 0.5) / overlap * (np.pi / 2)
            tail = out[filled - overlap : filled]
            tail[:] = tail * np.cos(angle) + piece[:overlap] * np.sin(angle)
        rest = piece.size - overlap
        out[filled : filled + rest] = piece[overlap:]
        filled += rest
    return out[:filled].copy()
