"""Benchmark of the VAD stage (birdclef.vad): quality on known truth, and speed.

Quality (part "quality"):
  Real speech clips (`../shared/data/real-audio/speech_*.flac` and the demo's
  espeak-ng clips in `src/birdclef/data/speech/`) are mixed at known positions
  into the four real field recordings at SNR -5, 0, 5, 10 and 20 dB. The SNR is
  local: speech power over its active frames against the background's power
  over the same samples. Truth is the clip's active 10 ms frames (energy within
  40 dB of its loudest), gaps under 0.1 s closed. Reported per SNR: recall of
  speech seconds by the detected spans (and by the padded spans the stage cuts),
  seconds detected more than 0.3 s away from the speech, and the error of the
  first span's start and the last span's end. False alarms: seconds of speech
  found in the bird-only recordings (the four field recordings, whole; and the
  speech-free synthetic recordings of the demo data), per hour of audio. A
  small sweep of threshold / min_speech_seconds shows the trade-off, and the
  demo's own speech insertions are checked against `demo_info.json`.

Speed (part "speed"):
  40 one-minute Ogg Vorbis files at 32 kHz are built from the real field
  recordings (every fourth with a speech clip in it) in a temporary folder.
  End to end (decode + soxr 32 -> 16 kHz + VAD -> speech spans) is timed for
  the baseline (per file: `silero_vad.get_speech_timestamps` on the TorchScript
  model, one process) and for `birdclef.vad.scan_files` at 1 and 2 processes,
  plus the full stage (`run_vad`, which also writes the cleaned copies), and
  each part alone. "x real time per core" is seconds of 32 kHz audio per
  second of wall time per process.

Usage:
  .venv/bin/python bench/bench_vad.py                 # both parts (~2-4 min)
  .venv/bin/python bench/bench_vad.py --part quality
  .venv/bin/python bench/bench_vad.py --part speed --files 40 --repeats 3
  .venv/bin/python bench/bench_vad.py --out bench/vad_results.md   # also write the tables
Prints markdown for bench/README.md. The real recordings are looked for at
`<repo>/../shared/data/real-audio` (or --real-audio).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from benchlib import best_of, machine, markdown  # noqa: E402

from birdclef import vad  # noqa: E402
from birdclef.runtime.audio import read_audio, resample  # noqa: E402
from birdclef.vad.model import _import_silero  # noqa: E402

SR = 32000
SR16 = vad.VAD_SAMPLE_RATE
FIELD_RECORDINGS = ["birds_10s", "soundscape_1min", "great_plains_toad", "spinetail"]
SNRS_DB = [-5, 0, 5, 10, 20]
TOLERANCE_S = 0.3
TRUTH_FRAME_S = 0.01
TRUTH_RANGE_DB = 40.0
TRUTH_GAP_S = 0.1
VERSIONS = ("silero-vad", "openvino", "onnxruntime", "torch", "soxr", "soundfile", "numpy")
SWEEP = [(0.5, 0.25), (0.5, 0.5), (0.5, 0.75), (0.6, 0.25), (0.7, 0.25), (0.7, 0.5)]

warnings.filterwarnings("ignore", category=FutureWarning)


# --------------------------------------------------------------------------- report helpers


class Report:
    """Collects markdown and prints it as it comes."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, text: str = "") -> None:
        print(text, flush=True)
        self.parts.append(text)

    def text(self) -> str:
        return "\n".join(self.parts) + "\n"


# --------------------------------------------------------------------------- audio


def find_real_audio(given: str | None) -> Path:
    """The shared real-audio folder, or exit with where it was looked for."""
    candidates = [Path(given)] if given else [REPO.parent / "shared/data/real-audio"]
    for folder in candidates:
        if (folder / "soundscape_1min.flac").exists():
            return folder
    sys.exit(f"real recordings not found in {', '.join(map(str, candidates))}: pass --real-audio")


def speech_clips(real: Path) -> dict[str, np.ndarray]:
    """Every speech clip at 32 kHz: the shared flac ones and the package's espeak-ng ones."""
    paths = sorted(real.glob("speech_*.flac")) + sorted(
        (REPO / "src/birdclef/data/speech").glob("*.ogg")
    )
    if not paths:
        sys.exit("no speech clips found")
    return {path.name: read_audio(path, SR) for path in paths}


def speech_truth(clip: np.ndarray) -> np.ndarray:
    """Active 10 ms frames of a clean speech clip (bool per frame), short gaps closed."""
    hop = int(TRUTH_FRAME_S * SR)
    n = clip.size // hop
    power = (clip[: n * hop].astype(np.float64).reshape(n, hop) ** 2).mean(axis=1)
    level = 10 * np.log10(power + 1e-20)
    active = level > level.max() - TRUTH_RANGE_DB
    gap = int(round(TRUTH_GAP_S / TRUTH_FRAME_S))
    idx = np.flatnonzero(active)
    for a, b in zip(idx[:-1], idx[1:], strict=True):
        if 1 < b - a <= gap + 1:
            active[a:b] = True
    return active


def frame_mask(spans: Sequence[Sequence[float]], n_frames: int) -> np.ndarray:
    """Spans in seconds as a bool mask on the 10 ms truth grid."""
    mask = np.zeros(n_frames, dtype=bool)
    for span in spans:
        a = max(0, int(round(span[0] / TRUTH_FRAME_S)))
        b = min(n_frames, int(round(span[1] / TRUTH_FRAME_S)))
        mask[a:b] = True
    return mask


def dilate(mask: np.ndarray, frames: int) -> np.ndarray:
    """A bool mask widened by `frames` on both sides."""
    if frames <= 0 or not mask.any():
        return mask.copy()
    kernel = np.ones(2 * frames + 1)
    return np.convolve(mask.astype(float), kernel, "same") > 0


def tiled(wave: np.ndarray, n: int) -> np.ndarray:
    """`wave` repeated to exactly `n` samples."""
    return np.tile(wave, -(-n // wave.size))[:n].copy()


# --------------------------------------------------------------------------- quality


def build_mixtures(
    backgrounds: dict[str, np.ndarray], clips: dict[str, np.ndarray], positions: int, seed: int
) -> list[dict]:
    """Every background x clip x SNR x position: the mixture and its truth."""
    rng = np.random.default_rng(seed)
    mixtures = []
    for bg_name, background in backgrounds.items():
        for clip_name, clip in clips.items():
            truth = speech_truth(clip)
            hop = int(TRUTH_FRAME_S * SR)
            active_samples = np.repeat(truth, hop)
            active_samples = np.pad(active_samples, (0, clip.size - active_samples.size))
            speech_power = float(np.mean(clip[active_samples].astype(np.float64) ** 2))
            n = max(background.size, clip.size + 4 * SR)
            bed = tiled(background, n)
            for _ in range(positions):
                offset = int(rng.integers(SR, n - clip.size - SR + 1))
                segment = bed[offset : offset + clip.size][active_samples].astype(np.float64)
                bg_power = float(np.mean(segment**2))
                for snr in SNRS_DB:
                    gain = np.sqrt(bg_power * 10 ** (snr / 10) / speech_power)
                    wave = bed.copy()
                    wave[offset : offset + clip.size] += (gain * clip).astype(np.float32)
                    peak = float(np.abs(wave).max())
                    if peak > 1.0:
                        wave /= peak
                    n_frames = int(np.ceil(n / hop))
                    truth_mask = np.zeros(n_frames, dtype=bool)
                    first = offset // hop
                    truth_mask[first : first + truth.size] = truth[: n_frames - first]
                    mixtures.append(
                        {
                            "background": bg_name,
                            "clip": clip_name,
                            "snr_db": snr,
                            "offset_s": offset / SR,
                            "wave": wave,
                            "truth": truth_mask,
                        }
                    )
    return mixtures


def probabilities(waves_32k: Sequence[np.ndarray], model) -> list[np.ndarray]:
    """Frame probabilities of 32 kHz waves (resampled as the stage does)."""
    waves = [resample(w, SR, SR16) for w in waves_32k]
    out: list[np.ndarray] = []
    for start in range(0, len(waves), vad.DEFAULT_BATCH_FILES):
        out += vad.batch_speech_probabilities(waves[start : start + vad.DEFAULT_BATCH_FILES], model)
    return out


def score_mixtures(mixtures: list[dict], probs: list[np.ndarray], settings) -> pd.DataFrame:
    """Per mixture: truth, found and cut seconds, spill, boundary errors."""
    rows = []
    spill_frames = int(round(TOLERANCE_S / TRUTH_FRAME_S))
    for mixture, p in zip(mixtures, probs, strict=True):
        n16 = int(round(mixture["wave"].size * SR16 / SR))
        spans = vad.spans_from_probabilities(p, n16, settings)
        truth = mixture["truth"]
        duration = mixture["wave"].size / SR
        found = frame_mask(spans, truth.size)
        cut = frame_mask(vad.merge_spans(spans, duration, settings.pad_seconds), truth.size)
        near = dilate(truth, spill_frames)
        idx = np.flatnonzero(truth)
        start_err = end_err = np.nan
        if spans:
            start_err = abs(spans[0][0] - idx[0] * TRUTH_FRAME_S)
            end_err = abs(spans[-1][1] - (idx[-1] + 1) * TRUTH_FRAME_S)
        rows.append(
            {
                "snr_db": mixture["snr_db"],
                "background": mixture["background"],
                "clip": mixture["clip"],
                "truth_s": truth.sum() * TRUTH_FRAME_S,
                "found_s": (truth & found).sum() * TRUTH_FRAME_S,
                "cut_s": (truth & cut).sum() * TRUTH_FRAME_S,
                "spill_s": (found & ~near).sum() * TRUTH_FRAME_S,
                "audio_s": duration,
                "start_err_s": start_err,
                "end_err_s": end_err,
                "detected": bool(spans),
            }
        )
    return pd.DataFrame(rows)


def false_alarm_seconds(probs: Sequence[np.ndarray], waves_len: Sequence[int], settings) -> float:
    """Seconds inside detected spans, summed over bird-only recordings."""
    total = 0.0
    for p, n32 in zip(probs, waves_len, strict=True):
        n16 = int(round(n32 * SR16 / SR))
        total += sum(e - s for s, e, _ in vad.spans_from_probabilities(p, n16, settings))
    return total


def demo_recordings(
    workdir: Path, seed: int
) -> tuple[list[np.ndarray], list[dict | None], list[str]]:
    """The demo's training recordings, with each one's speech insertion (or None)."""
    from birdclef.demo import generate_demo

    root = workdir / "demo"
    generate_demo(root, seed=seed)
    info = json.loads((root / "demo_info.json").read_text())
    speech = {s["filename"]: s for s in info["speech"]}
    names = sorted(
        str(p.relative_to(root / "train_audio")) for p in (root / "train_audio").rglob("*.ogg")
    )
    waves = [read_audio(root / "train_audio" / name, SR) for name in names]
    return waves, [speech.get(name) for name in names], names


def quality(report: Report, real: Path, args, workdir: Path) -> None:
    """The quality part: mixtures, false alarms, sweep, demo check."""
    settings = vad.VadSettings()
    model = vad.load_vad_model()
    clips = speech_clips(real)
    backgrounds = {name: read_audio(real / f"{name}.flac", SR) for name in FIELD_RECORDINGS}
    started = time.perf_counter()
    mixtures = build_mixtures(backgrounds, clips, args.positions, args.seed)
    mix_probs = probabilities([m["wave"] for m in mixtures], model)
    bird_probs = probabilities(list(backgrounds.values()), model)
    bird_lengths = [w.size for w in backgrounds.values()]
    bird_seconds = sum(bird_lengths) / SR

    demo = None
    if not args.no_demo:
        waves, speech, names = demo_recordings(workdir, args.demo_seed)
        demo = {"probs": probabilities(waves, model), "lengths": [w.size for w in waves]}
        demo.update(speech=speech, names=names)

    report.add("## VAD quality on known truth")
    report.add()
    report.add(
        f"Model: Silero VAD {version('silero-vad')} `{vad.MODEL_FILES['openvino']}` "
        f"({vad.MODEL_ENGINES['openvino']}), audio 32 kHz -> 16 kHz with soxr HQ. "
        f"Settings: threshold {settings.threshold}, min_speech_seconds "
        f"{settings.min_speech_seconds}, min_silence_seconds {settings.min_silence_seconds}, "
        f"pad_seconds {settings.pad_seconds} (the stage's defaults)."
    )
    report.add()
    report.add(
        f"{len(clips)} speech clips ({', '.join(clips)}) x {len(backgrounds)} field recordings "
        f"x {args.positions} random positions x {len(SNRS_DB)} SNRs = {len(mixtures)} mixtures. "
        "SNR is local (speech power over its active frames vs the background over the same "
        "samples). Speech seconds = the clip's active 10 ms frames (within 40 dB of its "
        "loudest frame, gaps < 0.1 s closed). *found*: covered by a detected span; *cut*: "
        "covered by the padded spans the stage removes; *outside*: detected seconds more than "
        "0.3 s from any speech; boundary errors: first span start and last span end vs the "
        "speech, median and worst."
    )
    report.add()
    scores = score_mixtures(mixtures, mix_probs, settings)
    rows = []
    for snr, group in scores.groupby("snr_db"):
        rows.append(
            {
                "SNR dB": int(snr),
                "mixtures": len(group),
                "speech s": group["truth_s"].sum(),
                "found %": 100 * group["found_s"].sum() / group["truth_s"].sum(),
                "cut %": 100 * group["cut_s"].sum() / group["truth_s"].sum(),
                "worst mixture found %": 100 * (group["found_s"] / group["truth_s"]).min(),
                "missed entirely": int((~group["detected"]).sum()),
                "outside s": group["spill_s"].sum(),
                "start err med/max s": f"{group['start_err_s'].median():.2f} / {group['start_err_s'].max():.2f}",
                "end err med/max s": f"{group['end_err_s'].median():.2f} / {group['end_err_s'].max():.2f}",
            }
        )
    report.add(markdown(rows, "{:.1f}"))
    report.add()
    at_or_above_0 = scores[scores["snr_db"] >= 0]
    recall0 = 100 * at_or_above_0["found_s"].sum() / at_or_above_0["truth_s"].sum()
    report.add(f"Recall of speech seconds at SNR >= 0 dB: **{recall0:.1f}%** (target >= 95%).")
    report.add()
    by_bg = scores[scores["snr_db"] >= 0].groupby("background")[["found_s", "truth_s"]].sum()
    report.add(
        "Recall at SNR >= 0 dB by background: "
        + ", ".join(f"{bg} {100 * r.found_s / r.truth_s:.1f}%" for bg, r in by_bg.iterrows())
        + "."
    )
    report.add()

    fa_rows = []
    for name, p, n in zip(backgrounds, bird_probs, bird_lengths, strict=True):
        seconds = false_alarm_seconds([p], [n], settings)
        fa_rows.append(
            {
                "bird-only audio": name,
                "seconds": n / SR,
                "max frame prob": float(p.max()),
                "speech found s": seconds,
                "per hour s": seconds / (n / SR) * 3600,
            }
        )
    real_fa = false_alarm_seconds(bird_probs, bird_lengths, settings)
    fa_rows.append(
        {
            "bird-only audio": "**all four field recordings**",
            "seconds": bird_seconds,
            "max frame prob": float(max(p.max() for p in bird_probs)),
            "speech found s": real_fa,
            "per hour s": real_fa / bird_seconds * 3600,
        }
    )
    if demo is not None:
        free = [i for i, s in enumerate(demo["speech"]) if s is None]
        seconds = sum(demo["lengths"][i] for i in free) / SR
        found = false_alarm_seconds(
            [demo["probs"][i] for i in free], [demo["lengths"][i] for i in free], settings
        )
        fa_rows.append(
            {
                "bird-only audio": f"demo synthetic recordings without speech ({len(free)} files)",
                "seconds": seconds,
                "max frame prob": float(max(demo["probs"][i].max() for i in free)),
                "speech found s": found,
                "per hour s": found / seconds * 3600,
            }
        )
    report.add("False alarms (speech found in bird-only audio; target <= 10 s per hour):")
    report.add()
    report.add(markdown(fa_rows, "{:.2f}"))
    report.add()

    # Settings sweep from the same probabilities.
    sweep_rows = []
    for threshold, min_speech in SWEEP:
        s = vad.VadSettings(threshold=threshold, min_speech_seconds=min_speech)
        sc = score_mixtures(mixtures, mix_probs, s)
        row: dict = {"threshold": f"{threshold:g}", "min_speech_s": f"{min_speech:g}"}
        for snr in SNRS_DB:
            g = sc[sc["snr_db"] == snr]
            row[f"found % @{snr} dB"] = 100 * g["found_s"].sum() / g["truth_s"].sum()
        row["field FA s/h"] = false_alarm_seconds(bird_probs, bird_lengths, s) / bird_seconds * 3600
        if demo is not None:
            speech_files = [i for i, t in enumerate(demo["speech"]) if t is not None]
            free = [i for i, t in enumerate(demo["speech"]) if t is None]
            seconds = sum(demo["lengths"][i] for i in free) / SR
            fa = false_alarm_seconds(
                [demo["probs"][i] for i in free], [demo["lengths"][i] for i in free], s
            )
            flagged = sum(
                bool(false_alarm_seconds([demo["probs"][i]], [demo["lengths"][i]], s)) for i in free
            )
            found = sum(
                bool(false_alarm_seconds([demo["probs"][i]], [demo["lengths"][i]], s))
                for i in speech_files
            )
            row["demo FA s/h"] = fa / seconds * 3600
            row["demo files: speech found / false"] = (
                f"{found}/{len(speech_files)} / {flagged}/{len(free)}"
            )
        sweep_rows.append(row)
    report.add("Settings sweep (same probabilities; FA = false alarm seconds per hour):")
    report.add()
    report.add(markdown(sweep_rows, "{:.1f}"))
    report.add()

    if demo is not None:
        report.add(
            f"Demo data (`generate_demo(seed={args.demo_seed})`), default settings: speech "
            "spans found per training recording vs `demo_info.json`:"
        )
        report.add()
        demo_rows = []
        for name, p, n, truth in zip(
            demo["names"], demo["probs"], demo["lengths"], demo["speech"], strict=True
        ):
            spans = vad.spans_from_probabilities(p, int(round(n * SR16 / SR)), settings)
            if not spans and truth is None:
                continue
            demo_rows.append(
                {
                    "file": name,
                    "inserted speech s": "-"
                    if truth is None
                    else f"{truth['start_s']:.2f}-{truth['end_s']:.2f} ({truth['snr_db']:.0f} dB)",
                    "found spans s (max prob)": ", ".join(
                        f"{a:.2f}-{b:.2f} ({m:.2f})" for a, b, m in spans
                    )
                    or "none",
                    "verdict": "false alarm" if truth is None else ("found" if spans else "missed"),
                }
            )
        report.add(markdown(demo_rows, "{:.1f}"))
        report.add()
    report.add(f"(quality part: {time.perf_counter() - started:.0f} s)")
    report.add()


# --------------------------------------------------------------------------- speed


def build_speed_files(
    real: Path, folder: Path, count: int, seconds: float, seed: int
) -> list[Path]:
    """`count` Ogg Vorbis files of `seconds` each from the field recordings; every 4th has speech."""
    rng = np.random.default_rng(seed)
    beds = np.concatenate([read_audio(real / f"{n}.flac", SR) for n in FIELD_RECORDINGS])
    clips = list(speech_clips(real).values())
    n = int(seconds * SR)
    paths = []
    for k in range(count):
        start = int(rng.integers(0, beds.size))
        wave = np.roll(beds, -start)[:n] if beds.size >= n else tiled(np.roll(beds, -start), n)
        wave = wave.copy()
        if k % 4 == 0:
            clip = clips[k // 4 % len(clips)]
            offset = int(rng.integers(0, n - clip.size))
            gain = np.sqrt(np.mean(wave**2) * 10**0.5 / np.mean(clip**2))  # 5 dB
            wave[offset : offset + clip.size] += gain * clip
        wave *= 0.9 / max(1e-6, float(np.abs(wave).max()))
        path = folder / f"rec{k:03d}.ogg"
        sf.write(path, wave, SR, format="OGG", subtype="VORBIS")
        paths.append(path)
    return paths


def baseline_spans(paths: Sequence[Path], settings) -> dict[str, list[tuple[float, float]]]:
    """Per file: read_audio, soxr, get_speech_timestamps on the TorchScript model."""
    import torch

    silero_vad = _import_silero(1)
    torch.set_num_threads(1)
    model = silero_vad.load_silero_vad()
    out = {}
    for path in paths:
        wave = resample(read_audio(path, SR), SR, SR16)
        stamps = silero_vad.get_speech_timestamps(
            torch.from_numpy(wave),
            model,
            threshold=settings.threshold,
            sampling_rate=SR16,
            min_speech_duration_ms=settings.min_speech_seconds * 1000,
            min_silence_duration_ms=settings.min_silence_seconds * 1000,
            speech_pad_ms=0,
        )
        out[path.name] = [(s["start"] / SR16, min(s["end"], wave.size) / SR16) for s in stamps]
    return out


def ours_spans(
    paths, settings, threads, kind=vad.DEFAULT_MODEL_KIND, batch=vad.DEFAULT_BATCH_FILES
):
    """scan_files over `paths` (spans only, nothing written)."""
    jobs = [vad.ScanJob(i, p.name, str(p)) for i, p in enumerate(paths)]
    out = {}
    for i, result in vad.scan_files(
        jobs, settings, threads, SR, model_kind=kind, batch_files=batch
    ):
        out[paths[i].name] = [(s, e) for s, e, _ in result["spans"]]
    return out


def run_stage(paths, settings, threads, folder: Path):
    """The full stage: run_vad on a catalog of `paths` (writes cleaned copies)."""
    catalog = pd.DataFrame(
        {
            "filename": [f"x/{p.name}" for p in paths],
            "collection": "train",
            "path": [str(p) for p in paths],
        }
    )
    return vad.run_vad(catalog, "path", folder, settings, threads=threads, progress=False)


def compare(reference: dict, other: dict) -> str:
    """Agreement of two span sets: identical files, worst boundary difference."""
    same = 0
    worst = 0.0
    for name, spans in reference.items():
        theirs = other.get(name, [])
        if len(theirs) == len(spans):
            same += 1
            for (a, b), (c, d) in zip(spans, theirs, strict=True):
                worst = max(worst, abs(a - c), abs(b - d))
        else:
            worst = float("inf")
    text = f"{same}/{len(reference)} files same span count"
    return text + (f", boundaries within {worst * 1000:.0f} ms" if np.isfinite(worst) else "")


def speed(report: Report, real: Path, args, workdir: Path) -> None:
    """The speed part: end to end and by part."""
    settings = vad.VadSettings()
    folder = workdir / "speed"
    folder.mkdir()
    started = time.perf_counter()
    paths = build_speed_files(real, folder, args.files, args.seconds, args.seed)
    audio_s = args.files * args.seconds
    with_speech = sum(1 for k in range(args.files) if k % 4 == 0)
    report.add("## VAD speed")
    report.add()
    report.add(
        f"{args.files} files x {args.seconds:.0f} s = {audio_s / 60:.0f} min of 32 kHz mono Ogg "
        f"Vorbis built from the real field recordings, {with_speech} with a speech clip at 5 dB. "
        "End to end = decode + soxr HQ 32 -> 16 kHz + Silero VAD + span extraction (threshold "
        f"{settings.threshold}, min speech {settings.min_speech_seconds} s, min silence "
        f"{settings.min_silence_seconds} s). Float32 everywhere; one inference thread per "
        f"process. Best of {args.repeats} runs (baseline: 1 run); worker start-up and model "
        "loading included. x real time per core = audio seconds / (wall seconds x processes); "
        "spans vs baseline compares the detected spans with the baseline's."
    )
    report.add()

    rows = []

    def add(name, model, processes, timer, agreement="") -> None:
        wall, cpu = timer.wall, timer.cpu
        rows.append(
            {
                "run": name,
                "model / engine": model,
                "processes": processes,
                "wall s": wall,
                "CPU s": cpu,
                "x real time": audio_s / wall,
                "x real time per core": audio_s / wall / processes,
                "x real time per CPU-second": audio_s / cpu,
                "vs baseline (per core)": np.nan,
                "spans vs baseline": agreement,
            }
        )

    ov = "sequence ONNX, OpenVINO"
    timer, base = best_of(1, lambda: baseline_spans(paths, settings))
    add("baseline: per-file `get_speech_timestamps`", "silero_vad.jit, TorchScript", 1, timer, "-")
    for processes in (1, 2):
        timer, spans = best_of(args.repeats, lambda p=processes: ours_spans(paths, settings, p))
        add("`scan_files`, 8 files batched", ov, processes, timer, compare(base, spans))
    timer, spans = best_of(args.repeats, lambda: ours_spans(paths, settings, 1, batch=1))
    add("`scan_files`, one file per model call", ov, 1, timer, compare(base, spans))
    timer, spans = best_of(
        args.repeats, lambda: ours_spans(paths, settings, 1, kind="sequence", batch=1)
    )
    add(
        "`scan_files`, previous engine",
        "sequence ONNX, onnxruntime",
        1,
        timer,
        compare(base, spans),
    )
    runs = iter(range(1000))
    for processes in (1, 2):
        timer, _ = best_of(
            args.repeats,
            lambda p=processes: run_stage(paths, settings, p, folder / f"stage{next(runs)}"),
        )
        add("full stage `run_vad` (+ writes cleaned FLAC)", ov, processes, timer)
    table = pd.DataFrame(rows)
    table["vs baseline (per core)"] = (
        table["x real time per core"] / table.loc[0, "x real time per core"]
    )
    report.add(markdown(table.to_dict("records"), "{:.1f}"))
    report.add()
    report.add(
        "x real time per CPU-second counts the CPU time of the process and its workers "
        "(user + system): the per-core rate with less sensitivity to other load on the machine."
    )
    report.add()

    # Parts alone, one thread, on a subset held in memory.
    subset = paths[: min(len(paths), args.part_files)]
    sub_s = len(subset) * args.seconds
    part_rows = []

    def part(name: str, timer, audio: float, note: str = "") -> None:
        part_rows.append(
            {
                "part (1 thread)": name,
                "x real time": audio / timer.wall,
                "x real time per CPU-second": audio / timer.cpu,
                "note": note,
            }
        )

    timer, waves = best_of(args.repeats, lambda: [read_audio(p, SR) for p in subset])
    part("decode Ogg Vorbis -> 32 kHz float32 (soundfile)", timer, sub_s)
    timer, waves16 = best_of(args.repeats, lambda: [resample(w, SR, SR16) for w in waves])
    part("resample 32 -> 16 kHz (soxr HQ)", timer, sub_s)
    ov_model = vad.load_vad_model("openvino", threads=1)
    timer, probs = best_of(args.repeats, lambda: vad.batch_speech_probabilities(waves16, ov_model))
    part(f"model: {ov}, {len(subset)} files batched", timer, sub_s)
    timer, _ = best_of(args.repeats, lambda: [vad.speech_probabilities(w, ov_model) for w in waves16])
    part(f"model: {ov}, one file per call", timer, sub_s)
    seq_model = vad.load_vad_model("sequence", threads=1)
    timer, _ = best_of(
        args.repeats, lambda: [vad.speech_probabilities(w, seq_model) for w in waves16]
    )
    part("model: sequence ONNX, onnxruntime, one file per call", timer, sub_s)
    onnx_model = vad.load_vad_model("onnx", threads=1)
    timer, _ = best_of(1, lambda: vad.speech_probabilities(waves16[0], onnx_model))
    part(
        "model: streaming silero_vad.onnx, onnxruntime (frame by frame)",
        timer,
        args.seconds,
        "1 file",
    )
    jit_model = vad.load_vad_model("jit", threads=1)
    timer, _ = best_of(1, lambda: vad.speech_probabilities(waves16[0], jit_model))
    part("model: silero_vad.jit, TorchScript (frame by frame)", timer, args.seconds, "1 file")
    timer, _ = best_of(
        args.repeats,
        lambda: [
            vad.spans_from_probabilities(p, w.size, settings)
            for p, w in zip(probs, waves16, strict=True)
        ],
    )
    part("spans from probabilities (Silero's state machine)", timer, sub_s)
    report.add(f"Each part alone, one thread, {len(subset)} of the files held in memory:")
    report.add()
    report.add(markdown(part_rows, "{:.0f}"))
    report.add()
    report.add(f"(speed part: {time.perf_counter() - started:.0f} s)")
    report.add()


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["quality", "speed", "all"], default="all")
    parser.add_argument(
        "--real-audio", help="folder of the real recordings (default ../shared/data/real-audio)"
    )
    parser.add_argument(
        "--positions", type=int, default=2, help="random positions per clip and background"
    )
    parser.add_argument("--files", type=int, default=40, help="files in the speed set")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds per speed file")
    parser.add_argument("--part-files", type=int, default=8, help="files for the per-part timings")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demo-seed", type=int, default=0)
    parser.add_argument("--no-demo", action="store_true", help="skip the demo-data checks")
    parser.add_argument("--out", help="also write the markdown to this file")
    args = parser.parse_args(argv)

    real = find_real_audio(args.real_audio)
    report = Report()
    report.add(f"# VAD benchmark ({dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z})")
    report.add()
    report.add(f"Machine: {machine(VERSIONS, load=True)}.")
    report.add()
    report.add(f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`")
    report.add()
    with tempfile.TemporaryDirectory(prefix="bench_vad_") as tmp:
        if args.part in ("quality", "all"):
            quality(report, real, args, Path(tmp))
        if args.part in ("speed", "all"):
            speed(report, real, args, Path(tmp))
    if args.out:
        Path(args.out).write_text(report.text())


if __name__ == "__main__":
    main()
