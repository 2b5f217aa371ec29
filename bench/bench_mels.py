"""Benchmark: mel-cache throughput, decode included, against decode alone and librosa.

Builds one-minute 32 kHz Ogg Vorbis files from the real field recordings in
`<repo>/../shared/data/real-audio` (the four non-speech recordings, joined into
one tape and cut at staggered offsets with a little gain variation; written
once into --workdir and reused), then measures, in seconds of audio per wall
second (x real time):

- decode alone: `birdclef.runtime.audio.read_audio` (soundfile/libsndfile), per file;
- mel alone on decoded audio: `birdclef.runtime.features.log_mel` and librosa's
  `melspectrogram` + `power_to_db` (the script prints their largest difference
  over three of the files: 3.1e-4 dB in the run recorded in bench/README.md);
- the bound the issue names: decode + librosa mel, 1 / (1/decode + 1/librosa mel);
- a per-file `librosa.load` + `librosa.feature.melspectrogram` loop;
- the mel cache itself (`birdclef.mels.build_mel_cache`: decode, mel, float16
  `.npy` + parquet index written, worker start-up included) with 1 and 2
  worker processes.

Every single-process measurement runs with BLAS/OpenMP held to one thread, so
"per core" is honest. Times are the best of --repeats runs.

Usage: python bench/bench_mels.py [--files 60] [--repeats 3] [--processes 1,2]
Prints markdown tables (machine and date included) for bench/README.md; about
1-2 minutes on two cores (plus about a minute the first time, to encode the files).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from benchlib import best_of, machine, markdown  # noqa: E402
from threadpoolctl import threadpool_limits

from birdclef.mels import build_mel_cache
from birdclef.runtime.audio import read_audio
from birdclef.runtime.features import log_mel, mel_filterbank

REPO = Path(__file__).resolve().parents[1]
REAL_AUDIO = REPO.parent / "shared" / "data" / "real-audio"
FIELD_RECORDINGS = ("soundscape_1min.flac", "great_plains_toad.flac", "spinetail.flac", "birds_10s.flac")
SAMPLE_RATE = 32000



def _encode(task: tuple[str, np.ndarray]) -> None:
    path, wave = task
    tmp = f"{path}.tmp.ogg"
    sf.write(tmp, wave, SAMPLE_RATE, format="OGG", subtype="VORBIS")
    os.replace(tmp, path)


def make_files(workdir: Path, n_files: int, seconds: float, processes: int) -> list[str]:
    """`n_files` Ogg Vorbis files of `seconds` each, cut from the field recordings (cached)."""
    folder = workdir / f"ogg_{n_files}x{seconds:g}s"
    paths = [str(folder / f"clip{i:03d}.ogg") for i in range(n_files)]
    if all(os.path.exists(p) for p in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for name in FIELD_RECORDINGS:
        wave, rate = sf.read(REAL_AUDIO / name, dtype="float32", always_2d=True)
        if rate != SAMPLE_RATE:
            raise SystemExit(f"{REAL_AUDIO / name} is {rate} Hz, expected {SAMPLE_RATE}")
        parts.append(wave.mean(axis=1))
    tape = np.concatenate(parts)
    size = int(seconds * SAMPLE_RATE)
    rng = np.random.default_rng(0)
    tasks = []
    for i, path in enumerate(paths):
        start = int(i * 7.3 * SAMPLE_RATE) % tape.size
        rows = (start + np.arange(size)) % tape.size
        gain = float(rng.uniform(0.6, 1.0))
        tasks.append((path, np.clip(tape[rows] * gain, -1.0, 1.0)))
    print(f"encoding {n_files} files of {seconds:g} s into {folder} ...", file=sys.stderr)
    with ProcessPoolExecutor(max_workers=max(1, processes)) as pool:
        list(pool.map(_encode, tasks))
    return paths


def _decode_seconds(path: str) -> float:
    with threadpool_limits(limits=1):
        return read_audio(path, SAMPLE_RATE).size / SAMPLE_RATE


def decode_all(paths: list[str], processes: int) -> float:
    """Decode every file; seconds of audio decoded."""
    if processes == 1:
        return sum(_decode_seconds(p) for p in paths)
    with ProcessPoolExecutor(max_workers=processes) as pool:
        return sum(pool.map(_decode_seconds, paths))


def librosa_loop(paths: list[str], mel: dict) -> None:
    """The plain per-file loop: librosa.load, melspectrogram, power_to_db."""
    import librosa

    for path in paths:
        wave, _ = librosa.load(path, sr=mel["sample_rate"], mono=True)
        power = librosa.feature.melspectrogram(
            y=wave, sr=mel["sample_rate"], n_fft=mel["n_fft"], hop_length=mel["hop_length"],
            n_mels=mel["n_mels"], fmin=mel["fmin"], fmax=mel["fmax"],
        )
        librosa.power_to_db(power, ref=1.0, top_db=mel["top_db"]).astype(np.float16)


def librosa_mel(wave: np.ndarray, mel: dict) -> np.ndarray:
    """librosa's log-mel of a decoded wave (the reference `log_mel` matches)."""
    import librosa

    power = librosa.feature.melspectrogram(
        y=wave, sr=mel["sample_rate"], n_fft=mel["n_fft"], hop_length=mel["hop_length"],
        n_mels=mel["n_mels"], fmin=mel["fmin"], fmax=mel["fmax"], pad_mode="constant",
    )
    return librosa.power_to_db(power, ref=1.0, top_db=mel["top_db"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=60, help="one-minute files to process")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each file")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", default="1,2", help="worker counts for the mel cache")
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "birdclef-bench-mels")
    parser.add_argument("--n-fft", type=int, default=2048)
    parser.add_argument("--hop-length", type=int, default=512)
    parser.add_argument("--n-mels", type=int, default=128)
    parser.add_argument("--fmin", type=float, default=20)
    parser.add_argument("--fmax", type=float, default=16000)
    parser.add_argument("--top-db", type=float, default=80)
    args = parser.parse_args()
    processes = [int(p) for p in args.processes.split(",") if p.strip()]
    mel = {"sample_rate": SAMPLE_RATE, "n_fft": args.n_fft, "hop_length": args.hop_length,
           "n_mels": args.n_mels, "fmin": args.fmin, "fmax": args.fmax, "top_db": args.top_db,
           "window_seconds": 5, "max_seconds": args.seconds}
    args.workdir.mkdir(parents=True, exist_ok=True)
    paths = make_files(args.workdir, args.files, args.seconds, max(processes))
    audio_seconds = sum(sf.info(p).frames for p in paths) / SAMPLE_RATE
    started = dt.datetime.now().astimezone()
    rows = []

    def add(what: str, n_processes: int, seconds_of_audio: float, wall: float) -> float:
        speed = seconds_of_audio / wall
        rows.append({"measurement": what, "processes": n_processes,
                     "audio_s": round(seconds_of_audio, 1), "wall_s": round(wall, 3),
                     "x_real_time": round(speed), "x_real_time_per_core": round(speed / n_processes)})
        return speed

    # Decode alone.
    decode_speed = {}
    for n in processes:
        wall = best_of(args.repeats, lambda n=n: decode_all(paths, n))[0].wall
        decode_speed[n] = add("decode alone (soundfile, read_audio)", n, audio_seconds, wall) / n

    # Mel alone, on decoded audio (a subset, so that memory stays small).
    subset = paths[: min(len(paths), 10)]
    waves = [read_audio(p, SAMPLE_RATE) for p in subset]
    subset_seconds = sum(w.size for w in waves) / SAMPLE_RATE
    filterbank = mel_filterbank(mel)
    with threadpool_limits(limits=1):
        # Warm-up: imports, FFT plans, librosa's caches.
        log_mel(waves[0][:SAMPLE_RATE], filterbank, args.n_fft, args.hop_length, args.top_db)
        librosa_mel(waves[0][:SAMPLE_RATE], mel)
        ours = best_of(args.repeats, lambda: [
            log_mel(w, filterbank, args.n_fft, args.hop_length, args.top_db) for w in waves])[0].wall
        ours_speed = add("mel alone: birdclef.runtime.features.log_mel", 1, subset_seconds, ours)
        reference = best_of(args.repeats, lambda: [librosa_mel(w, mel) for w in waves])[0].wall
        librosa_speed = add("mel alone: librosa melspectrogram + power_to_db", 1,
                            subset_seconds, reference)
        difference = max(
            float(np.abs(log_mel(w, filterbank, args.n_fft, args.hop_length, args.top_db)
                         - librosa_mel(w, mel)).max())
            for w in waves[:3]
        )
        bound = 1.0 / (1.0 / decode_speed[processes[0]] + 1.0 / librosa_speed)
        rows.append({"measurement": "bound: decode + librosa mel, 1/(1/decode + 1/mel)",
                     "processes": 1, "audio_s": None, "wall_s": None,
                     "x_real_time": round(bound), "x_real_time_per_core": round(bound)})
        loop = best_of(max(1, args.repeats - 1), lambda: librosa_loop(paths, mel))[0].wall
        add("per-file librosa.load + melspectrogram loop", 1, audio_seconds, loop)
    waves.clear()

    # The mel cache itself.
    catalog = pd.DataFrame({
        "filename": [Path(p).name for p in paths], "primary_label": "x",
        "secondary_labels": [[] for _ in paths], "collection": "XC", "rating": 5.0,
        "audio_path": paths,
    })
    cache_speed = {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as out:
        for n in processes:
            stats = {}

            def build(n=n, stats=stats):
                stats.update(build_mel_cache(catalog, Path(out) / "mels.npy", Path(out) / "index.parquet",
                                             mel, threads=n, progress=False))

            wall = best_of(args.repeats, build)[0].wall
            cache_speed[n] = add("mel cache: build_mel_cache (decode + mel + write)", n,
                                 stats["cached_seconds"], wall) / n

    print(f"## Mel cache throughput ({started:%Y-%m-%d %H:%M %Z})\n")
    print(f"Machine: {machine()}  ")
    print(f"numpy {np.__version__}; {args.files} Ogg Vorbis files of {args.seconds:g} s "
          f"({audio_seconds:.0f} s of audio) from ../shared/data/real-audio; mel: 32 kHz, "
          f"n_fft {args.n_fft}, hop {args.hop_length}, {args.n_mels} mels, "
          f"{args.fmin:g}-{args.fmax:g} Hz, top_db {args.top_db:g}; best of {args.repeats}. "
          f"Max |log_mel - librosa| = {difference:.1e} dB (top_db {args.top_db:g}).\n")
    print(markdown(rows))
    target = 0.7 * bound
    first = processes[0]
    print()
    print(f"- mel cache, {first} process: {cache_speed[first]:.0f}x real time per core; target "
          f"70% of the decode + librosa-mel bound = {target:.0f}x: "
          f"{'met' if cache_speed[first] >= target else 'NOT met'}.")
    for n in processes[1:]:
        print(f"- scaling to {n} processes: {cache_speed[n] / cache_speed[first]:.0%} of "
              f"{first}-process throughput per core (decode alone: "
              f"{decode_speed[n] / decode_speed[first]:.0%}).")
    print(f"- log_mel alone is {ours_speed / librosa_speed:.1f}x librosa's mel.")


if __name__ == "__main__":
    main()
