"""What a demo run reports: the summary `generate_demo` returns and the content of
demo_info.json (settings, species, every call's timing, the speech insertions)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from birdclef.demo.draft import _Draft
from birdclef.demo.layout import MIN_OVERLAP_SECONDS, WINDOW_SECONDS


def _summary(
    draft: _Draft,
    label_rows: Sequence,
    n_scape_label_rows: int,
    n_test_windows: int,
    n_submission_rows: int,
    speech: Sequence,
    soundscape_seconds: float,
) -> dict[str, Any]:
    """The counts `generate_demo` returns (and demo_info.json holds)."""
    plans, train_stems, test_stems = draft.plans, draft.train_stems, draft.test_stems
    train_seconds = float(sum(p.seconds for p in plans))
    return {
        "species": len(draft.species),
        "classes_without_train_audio": len(draft.no_audio),
        "recordings": len(plans),
        "train_soundscapes": len(train_stems),
        "labelled_train_soundscapes": len(draft.labelled),
        "labelled_windows": len(label_rows),
        "soundscape_label_rows": n_scape_label_rows,
        "test_soundscapes": len(test_stems),
        "test_windows": n_test_windows,
        "sample_submission_rows": n_submission_rows,
        "sites": len({stem.split("_")[3] for stem in [*train_stems, *test_stems]}),
        "speech_recordings": len(speech),
        "recordings_with_secondary": sum(bool(p.secondary) for p in plans),
        "train_audio_seconds": round(train_seconds, 2),
        "soundscape_audio_seconds": round(
            (len(train_stems) + len(test_stems)) * soundscape_seconds, 2
        ),
    }


def _info(
    draft: _Draft,
    seed: int,
    settings: dict[str, Any],
    summary: dict[str, Any],
    speech: list[dict[str, Any]],
    rec_results: Sequence[tuple[list[list[Any]], dict[str, Any] | None]],
    train_calls: Sequence[list[list[Any]]],
    test_calls: Sequence[list[list[Any]]],
) -> dict[str, Any]:
    """The content of demo_info.json."""
    no_audio, labelled = draft.no_audio, draft.labelled
    return {
        "generator": "birdclef.demo.generate_demo",
        "seed": seed,
        "settings": settings,
        "label_rule": (
            f"a label is 1 in a {WINDOW_SECONDS} s window when one of its calls overlaps the "
            f"window by >= min({MIN_OVERLAP_SECONDS} s, half the call)"
        ),
        "summary": summary,
        "classes_without_train_audio": no_audio,
        "species": [{**s.info(), "train_audio": s.label not in no_audio} for s in draft.species],
        "speech": speech,
        "recordings": [
            {"filename": p.row["filename"], "rating": p.rating, "calls": calls}
            for p, (calls, _) in zip(draft.plans, rec_results, strict=True)
        ],
        "train_soundscapes": [
            {"filename": f"{stem}.ogg", "labelled": i in labelled, "calls": calls}
            for i, (stem, calls) in enumerate(zip(draft.train_stems, train_calls, strict=True))
        ],
        "test_soundscapes": [
            {"filename": f"{stem}.ogg", "calls": calls}
            for stem, calls in zip(draft.test_stems, test_calls, strict=True)
        ],
    }
