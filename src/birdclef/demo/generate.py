"""`generate_demo`: a synthetic BirdCLEF+ 2026 competition folder, so the workflow runs
with no download.

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

Everything is a function of `seed`: the same arguments give byte-identical
files (see `birdclef.demo.ogg` for the Ogg serial numbers).
"""

from __future__ import annotations

import os
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from birdclef.common.io import atomic_dir, write_json
from birdclef.demo.draft import _Draft, _draft
from birdclef.demo.info import _info, _summary
from birdclef.demo.layout import (
    _STREAM_TEST_SOUNDSCAPE,
    _STREAM_TRAIN_SOUNDSCAPE,
    WINDOW_SECONDS,
)
from birdclef.demo.recordings import _render_recording
from birdclef.demo.soundscapes import _render_soundscape
from birdclef.demo.tables import (
    _write_ground_truth,
    _write_sample_submission,
    _write_soundscape_labels,
    _write_train_and_taxonomy,
)


def _check_settings(
    seed: int,
    recordings_per_species: int,
    recording_seconds: tuple[float, float],
    n_train_soundscapes: int,
    n_test_soundscapes: int,
    soundscape_seconds: float,
    speech_fraction: float,
    sample_rate: int,
) -> tuple[int, float, float, float]:
    """The checked seed, recording length bounds and number of windows; ValueError if bad."""
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
    return seed, low, high, windows


def _render_all(
    tmp: Path,
    draft: _Draft,
    seed: int,
    soundscape_seconds: float,
    sample_rate: int,
    soundscape_snr_db: tuple[float, float],
    soundscape_overlap: float,
) -> tuple[list[list[list[Any]]], list[tuple[list[list[Any]], dict[str, Any] | None]]]:
    """Write every soundscape and recording under `tmp`; return their calls (and speech)."""
    workers = max(1, min(8, os.cpu_count() or 1))
    audio_dir = tmp / "train_audio"
    audio_dir.mkdir()
    for sp in draft.with_audio:
        (audio_dir / sp.label).mkdir()
    scape_tasks = [
        (stem, i, stream, tmp / folder)
        for folder, stream, stems in (
            ("train_soundscapes", _STREAM_TRAIN_SOUNDSCAPE, draft.train_stems),
            ("test_soundscapes", _STREAM_TEST_SOUNDSCAPE, draft.test_stems),
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
                draft.species,
                soundscape_seconds,
                sample_rate,
                folder,
                (float(soundscape_snr_db[0]), float(soundscape_snr_db[1])),
                float(soundscape_overlap),
                tuple(draft.no_audio) if i % 2 == 0 else (),
            )
            for stem, i, stream, folder in scape_tasks
        ]
        rec_jobs = [
            pool.submit(_render_recording, plan, seed, sample_rate, audio_dir)
            for plan in draft.plans
        ]
        # Stop at the first failure instead of rendering everything first.
        wait([*scape_jobs, *rec_jobs], return_when=FIRST_EXCEPTION)
        scape_calls = [job.result() for job in scape_jobs]
        rec_results = [job.result() for job in rec_jobs]
    finally:  # on an error, drop the queued files rather than render them
        pool.shutdown(wait=True, cancel_futures=True)
    return scape_calls, rec_results


def _write_tables_and_info(
    tmp: Path,
    draft: _Draft,
    seed: int,
    settings: dict[str, Any],
    scape_calls: list[list[list[Any]]],
    rec_results: list[tuple[list[list[Any]], dict[str, Any] | None]],
    soundscape_seconds: float,
    windows: float,
) -> dict[str, Any]:
    """Write the CSV files and demo_info.json into `tmp`; return the summary."""
    train_calls = scape_calls[: len(draft.train_stems)]
    test_calls = scape_calls[len(draft.train_stems) :]
    labels, n_windows = draft.labels, int(round(windows))
    _write_train_and_taxonomy(tmp, [p.row for p in draft.plans], draft.species)
    label_rows, scape_labels = _write_soundscape_labels(
        tmp, draft.labelled, draft.train_stems, train_calls, soundscape_seconds, labels
    )
    row_ids = _write_ground_truth(
        tmp, draft.test_stems, test_calls, soundscape_seconds, labels, n_windows
    )
    submission = _write_sample_submission(tmp, draft.test_stems, labels, n_windows)
    speech = [s for _, s in rec_results if s is not None]
    summary = _summary(
        draft,
        label_rows,
        len(scape_labels),
        len(row_ids),
        len(submission),
        speech,
        soundscape_seconds,
    )
    info = _info(draft, seed, settings, summary, speech, rec_results, train_calls, test_calls)
    write_json(tmp / "demo_info.json", info)
    return summary


def _open_permissions(root: Path) -> None:
    """Give the dataset ordinary permissions (0777 / 0666 less the umask).

    The atomic temporary files and folder are created private (0600 / 0700).
    """
    umask = os.umask(0)
    os.umask(umask)
    root.chmod(0o777 & ~umask)
    for path in root.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


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
    seed, low, high, windows = _check_settings(
        seed,
        recordings_per_species,
        recording_seconds,
        n_train_soundscapes,
        n_test_soundscapes,
        soundscape_seconds,
        speech_fraction,
        sample_rate,
    )
    draft = _draft(
        seed,
        n_species,
        recordings_per_species,
        (low, high),
        n_train_soundscapes,
        n_test_soundscapes,
        speech_fraction,
        sample_rate,
    )
    with atomic_dir(out_root) as tmp:
        scape_calls, rec_results = _render_all(
            tmp, draft, seed, soundscape_seconds, sample_rate, soundscape_snr_db, soundscape_overlap
        )
        settings = {
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
        }
        summary = _write_tables_and_info(
            tmp, draft, seed, settings, scape_calls, rec_results, soundscape_seconds, windows
        )
        _open_permissions(tmp)
        total_bytes = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
    summary["bytes"] = total_bytes
    summary["out_root"] = str(Path(out_root))
    return summary
