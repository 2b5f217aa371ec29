"""Export a trained ensemble to OpenVINO IR (f32, fp16 or int8) behind an accuracy gate.

Each member checkpoint is rebuilt with `model.load_model`, wrapped in
`model.InferenceWrapper` (log-mel dB in, clip probabilities out) and converted
with `openvino.convert_model` with a dynamic batch dimension. The f32 IR is
always written; an fp16 IR (weights stored in half precision) or an int8 IR
(NNCF post-training quantization calibrated on windows from the mel cache) is
written next to it when asked for.

Precision of the numbers: OpenVINO's CPU plugin runs in bf16 on CPUs that have
it unless told otherwise, so every OpenVINO model this module compiles is
compiled with ``INFERENCE_PRECISION_HINT=f32``. "int8" numbers are therefore
int8 weights/activations where NNCF inserted quantizers, with f32 for the rest;
"fp16" numbers are fp16-stored weights computed in f32.

Mel groups: members may be trained on different mel configurations. The
ensemble definition lists them in ``mel_groups`` (sample_rate, n_fft,
hop_length, n_mels, fmin, fmax, top_db, tag) and each member names its group
(``mel_group``, an index). Every group shares ``window_seconds``, so window k
of a recording covers the same span of time in every group. Each member is
converted, calibrated and gate-scored on windows of its own group; the gate's
windows are aligned across groups (`gate_windows`), so the ensemble AUC
combines the members window by window as Kaggle inference does.

The bundle (``bundle.json`` + ``mel_filterbank_<g>.npy`` per mel group +
``members/<i>/*.xml``) is what `birdclef.runtime.inference.load_bundle` reads; its IR
and filterbank paths are relative to the bundle folder, so the folder can be
uploaded to Kaggle as is.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from birdclef.common.io import atomic_dir, write_json
from birdclef.common.metrics import macro_roc_auc
from birdclef.runtime.features import check_mel_groups, frames_per_second, mel_filterbank
from birdclef.runtime.features import window_frames as group_frames

logger = logging.getLogger(__name__)

PRECISIONS = ("f32", "fp16", "int8")
PRESETS = ("performance", "mixed")
GATE_ACTIONS = ("fail", "fp16", "warn")
INFERENCE_PRECISION_HINT = "f32"
INPUT_NAME = "mel_db"
OUTPUT_NAME = "probabilities"
EVAL_BATCH = 64
MAX_EVAL_WINDOWS = 4096  # most windows the accuracy gate scores


class ExportGateError(RuntimeError):
    """The exported precision lost more ROC-AUC than allowed; carries the numbers.

    ``report`` holds the partial export report (AUCs per precision, ensemble and
    per member) so a caller can log it before failing.
    """

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def window_frames(ensemble: Mapping[str, Any]) -> list[int]:
    """Mel frames of one window for each of the ensemble's ``mel_groups``, in their order."""
    return [group_frames(group, ensemble["window_seconds"]) for group in ensemble["mel_groups"]]


def filterbank_file(group: int) -> str:
    """The bundle file (relative to the bundle folder) holding mel group `group`'s filterbank."""
    return f"mel_filterbank_{int(group)}.npy"


def _per_group(name: str, value: Any, n_groups: int) -> list[np.ndarray]:
    """`value` as one array per mel group: a list/tuple of `n_groups` arrays, or one array when `n_groups` is 1."""
    if isinstance(value, np.ndarray):
        if n_groups != 1:
            raise ValueError(
                f"{name} must be a list of {n_groups} arrays, one per mel group (ensemble "
                "mel_groups order); a single array is only accepted for one mel group"
            )
        return [value]
    values = list(value)
    if len(values) != n_groups:
        raise ValueError(
            f"{name} has {len(values)} arrays, expected {n_groups}: one per mel group "
            "(ensemble mel_groups order)"
        )
    return values


def _check_mels(name: str, mels: np.ndarray, n_mels: int, frames: int) -> np.ndarray:
    mels = np.asarray(mels)
    if mels.ndim != 4 or mels.shape[1:] != (1, n_mels, frames):
        raise ValueError(
            f"{name} must have shape (N, 1, {n_mels}, {frames}) (n_mels, window frames from "
            f"its mel group's settings), got {mels.shape}"
        )
    if mels.shape[0] == 0:
        raise ValueError(f"{name} is empty: need at least one window")
    if not np.all(np.isfinite(mels)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(mels, dtype=np.float32)


def _check_ensemble(ensemble: Mapping[str, Any]) -> None:
    for key in ("classes", "window_seconds", "mel_groups", "members"):
        if key not in ensemble:
            hint = " (an ensemble.json from before mel groups: rerun the ensemble stage)" if (
                key == "mel_groups" and "mel" in ensemble) else ""
            raise ValueError(f"ensemble definition lacks {key!r}{hint}")
    if not ensemble["members"]:
        raise ValueError("ensemble definition has no members")
    check_mel_groups(ensemble["mel_groups"], ensemble["members"])
    weights = [float(member.get("weight", 1.0)) for member in ensemble["members"]]
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"member weights must be finite, >= 0 and not all 0, got {weights}")


def _check_member_windows(member: Mapping[str, Any], payload: Mapping[str, Any],
                          group: Mapping[str, Any], frames: int) -> None:
    """The checkpoint's training windows (when it records them) must match its mel group's."""
    where = f"member {member['name']!r} ({member['checkpoint']}), mel_group {member['mel_group']}"
    trained = payload.get("window_frames")
    if trained is not None and int(trained) != frames:
        raise ValueError(
            f"{where}: trained on {int(trained)}-frame windows, but its mel group "
            f"{group.get('tag', '')!r} gives {frames}-frame windows"
        )
    per_second = payload.get("frames_per_second")
    expected = frames_per_second(group)
    if per_second is not None and not math.isclose(float(per_second), expected, rel_tol=1e-6):
        raise ValueError(
            f"{where}: trained at {float(per_second):g} frames per second, but its mel group "
            f"{group.get('tag', '')!r} (sample_rate / hop_length) gives {expected:g}"
        )


def _ir_files(xml: Path) -> list[Path]:
    return [xml, xml.with_suffix(".bin")]


def _ir_bytes(xml: Path) -> int:
    return sum(path.stat().st_size for path in _ir_files(xml) if path.exists())


def _compile(core, model_or_path, threads: int):
    import openvino as ov

    config = {
        ov.properties.inference_num_threads: int(threads),
        ov.properties.hint.inference_precision: ov.Type.f32,
        ov.properties.hint.performance_mode: ov.properties.hint.PerformanceMode.LATENCY,
    }
    return core.compile_model(model_or_path, "CPU", config)


def _run_openvino(compiled, mels: np.ndarray) -> tuple[np.ndarray, float]:
    """Probabilities for `mels` in batches, and the throughput in windows per second."""
    request = compiled.create_infer_request()
    request.infer({0: mels[:1]})  # warm-up, not timed
    outputs = []
    start = time.perf_counter()
    for begin in range(0, len(mels), EVAL_BATCH):
        request.infer({0: mels[begin : begin + EVAL_BATCH]})
        outputs.append(request.get_output_tensor(0).data.copy())
    seconds = time.perf_counter() - start
    return np.concatenate(outputs).astype(np.float32), len(mels) / max(seconds, 1e-9)


def _run_torch(wrapper, mels: np.ndarray) -> tuple[np.ndarray, float]:
    import torch

    outputs = []
    start = time.perf_counter()
    with torch.inference_mode():
        for begin in range(0, len(mels), EVAL_BATCH):
            outputs.append(wrapper(torch.from_numpy(mels[begin : begin + EVAL_BATCH])).numpy())
    seconds = time.perf_counter() - start
    return np.concatenate(outputs).astype(np.float32), len(mels) / max(seconds, 1e-9)


def _convert(wrapper, example: np.ndarray, n_mels: int, frames: int):
    import openvino as ov
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.trace deprecation
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        ov_model = ov.convert_model(
            wrapper, example_input=torch.from_numpy(example), input=[(-1, 1, n_mels, frames)]
        )
    ov_model.inputs[0].get_tensor().set_names({INPUT_NAME})
    ov_model.outputs[0].get_tensor().set_names({OUTPUT_NAME})
    return ov_model


def preprocessing_ops(ov_model) -> list[str]:
    """Names of the ops that run before any convolution/matmul: the input standardisation.

    `SEDModel` standardises each example (mean, std, subtract, divide) before
    the backbone. Left to itself NNCF quantizes that chain too, including the
    squared deviations inside the std, which costs far more accuracy than the
    rest of the network (lcnet_050: ensemble AUC 0.902 -> 0.828 vs 0.898 with
    these ops kept in f32). The first convolution's input is still quantized.
    """
    weighted = {"Convolution", "GroupConvolution", "MatMul"}
    downstream: set[str] = set()
    names = []
    for op in ov_model.get_ordered_ops():
        name = op.get_friendly_name()
        sources = [
            op.input_value(i).get_node().get_friendly_name() for i in range(op.get_input_size())
        ]
        if op.get_type_name() in weighted or any(source in downstream for source in sources):
            downstream.add(name)
        elif op.get_type_name() not in ("Parameter", "Constant"):
            names.append(name)
    return names


def _quantize(ov_model, calibration: np.ndarray, calibration_size: int, preset: str):
    import nncf

    items = [calibration[i : i + 1] for i in range(len(calibration))]
    return nncf.quantize(
        ov_model,
        nncf.Dataset(items),
        preset=(
            nncf.QuantizationPreset.PERFORMANCE
            if preset == "performance"
            else nncf.QuantizationPreset.MIXED
        ),
        target_device=nncf.TargetDevice.CPU,
        ignored_scope=nncf.IgnoredScope(names=preprocessing_ops(ov_model), validate=False),
        subset_size=int(min(calibration_size, len(items))),
    )


def _weighted_mean(probabilities: list[np.ndarray], weights: list[float]) -> np.ndarray:
    total = float(sum(weights))
    out = np.zeros_like(probabilities[0], dtype=np.float64)
    for probs, weight in zip(probabilities, weights, strict=True):
        out += probs.astype(np.float64) * (weight / total)
    return out.astype(np.float32)


def _auc(targets: np.ndarray, probabilities: np.ndarray) -> float | None:
    value = macro_roc_auc(targets, probabilities)
    return None if math.isnan(value) else round(float(value), 6)


def export_ensemble(
    ensemble: dict,
    out_dir: str | os.PathLike,
    calibration_mels: Sequence[np.ndarray] | np.ndarray,
    precision: str = "int8",
    calibration_size: int = 300,
    preset: str = "performance",
    eval_mels: Sequence[np.ndarray] | np.ndarray | None = None,
    eval_targets: np.ndarray | None = None,
    max_auc_drop: float = 0.003,
    on_gate_fail: str = "fail",
    threads: int = 2,
) -> dict:
    """Export every ensemble member to OpenVINO IR and write a self-contained bundle.

    Writes, atomically (the whole folder appears only when complete):
    ``out_dir/members/<i>/model_f32.xml`` (+ ``.bin``) for every member, plus
    ``model_fp16.xml`` or ``model_int8.xml`` for those precisions,
    ``out_dir/mel_filterbank_<g>.npy`` for every mel group g and
    ``out_dir/bundle.json`` (the ensemble definition with each member's
    ``"ir"`` path relative to ``out_dir``, the precision used, classes, window
    length and ``mel_groups``: each group's mel settings plus its
    ``"filterbank"`` file and ``"window_frames"``).

    `calibration_mels` holds one array per mel group (``ensemble["mel_groups"]``
    order; a bare array is accepted when there is one group): (N_g, 1, n_mels,
    frames) float32 log-mel dB windows of that group, which feed NNCF's int8
    calibration of the group's members (at most `calibration_size` of them,
    `preset` "performance" = symmetric, "mixed" = asymmetric activations).

    With `eval_mels` (one array per mel group, like `calibration_mels`, each
    with the same N windows) and binary `eval_targets` (N, n_classes) an
    accuracy gate runs. Window i of every group must be the same recording and
    the same span of time (`gate_windows`): each member is scored on its own
    group's windows and the members are combined window by window. Scored:
    macro ROC-AUC of torch fp32, OpenVINO f32 and the chosen precision, for the
    weighted ensemble and for each member (all OpenVINO runs compiled with
    INFERENCE_PRECISION_HINT=f32). When the ensemble AUC of the chosen
    precision is more than `max_auc_drop` below OpenVINO f32, `on_gate_fail`
    decides: "fail" raises `ExportGateError` (nothing is written), "fp16"
    exports fp16 IRs instead and records it, "warn" keeps the IRs and records
    a warning. The gate does not apply to precision "f32".

    Returns the report: AUCs with the precision of each, per member (with its
    ``mel_group``), the gate result, window frames and calibration windows per
    mel group, IR sizes in bytes, throughput of the gate runs and seconds taken.
    """
    import openvino as ov
    import torch

    from birdclef.train.model import InferenceWrapper, load_model

    start = time.perf_counter()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    if on_gate_fail not in GATE_ACTIONS:
        raise ValueError(f"on_gate_fail must be one of {GATE_ACTIONS}, got {on_gate_fail!r}")
    if (eval_mels is None) != (eval_targets is None):
        raise ValueError("eval_mels and eval_targets must be given together")
    _check_ensemble(ensemble)

    classes = list(ensemble["classes"])
    n_classes = len(classes)
    groups = ensemble["mel_groups"]
    frames = window_frames(ensemble)
    n_mels = [int(group["n_mels"]) for group in groups]
    calibration = [
        _check_mels(f"calibration_mels[{g}]", mels, n_mels[g], frames[g])
        for g, mels in enumerate(_per_group("calibration_mels", calibration_mels, len(groups)))
    ]
    gate_on = eval_mels is not None
    if gate_on:
        eval_mels = [
            _check_mels(f"eval_mels[{g}]", mels, n_mels[g], frames[g])
            for g, mels in enumerate(_per_group("eval_mels", eval_mels, len(groups)))
        ]
        n_eval = len(eval_mels[0])
        if any(len(mels) != n_eval for mels in eval_mels):
            raise ValueError(
                f"eval_mels have {[len(m) for m in eval_mels]} windows per mel group; every "
                "group needs the same windows (window i: one recording, one span of time)"
            )
        eval_targets = np.asarray(eval_targets)
        if eval_targets.shape != (n_eval, n_classes):
            raise ValueError(
                f"eval_targets must have shape ({n_eval}, {n_classes}), got {eval_targets.shape}"
            )
    members = ensemble["members"]
    weights = [float(member.get("weight", 1.0)) for member in members]

    core = ov.Core()
    out_dir = Path(out_dir)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    report: dict[str, Any] = {
        "requested_precision": precision,
        "precision": precision,
        "inference_precision_hint": INFERENCE_PRECISION_HINT,
        "preset": preset if precision == "int8" else None,
        "calibration_windows": [
            int(min(calibration_size, len(mels))) if precision == "int8" else 0
            for mels in calibration
        ],
        "threads": int(threads),
        "window_frames": frames,
        "members": [],
        "warnings": [],
    }
    try:
        with atomic_dir(out_dir) as tmp:
            member_probs: dict[str, list[np.ndarray]] = {"torch_fp32": [], "openvino_f32": []}
            member_probs[f"openvino_{precision}"] = []
            ov_models = []
            for index, member in enumerate(members):
                t0 = time.perf_counter()
                g = member["mel_group"]
                model, payload = load_model(member["checkpoint"])
                spec_classes = int(payload["spec"]["n_classes"])
                if spec_classes != n_classes:
                    raise ValueError(
                        f"member {member['name']!r} ({member['checkpoint']}) has {spec_classes} "
                        f"outputs but the ensemble lists {n_classes} classes"
                    )
                if "classes" in payload and list(payload["classes"]) != classes:
                    raise ValueError(
                        f"member {member['name']!r} was trained on a different class list or "
                        "order than the ensemble's"
                    )
                _check_member_windows(member, payload, groups[g], frames[g])
                wrapper = InferenceWrapper(model).eval()
                ov_model = _convert(
                    wrapper, calibration[g][: min(2, len(calibration[g]))], n_mels[g], frames[g]
                )
                member_dir = tmp / "members" / str(index)
                member_dir.mkdir(parents=True)
                ov.save_model(ov_model, member_dir / "model_f32.xml", compress_to_fp16=False)
                entry: dict[str, Any] = {
                    "name": member["name"],
                    "mel_group": g,
                    "weight": float(member.get("weight", 1.0)),
                    "ir_f32": f"members/{index}/model_f32.xml",
                    "ir_bytes": {"f32": _ir_bytes(member_dir / "model_f32.xml")},
                }
                if precision == "fp16":
                    ov.save_model(ov_model, member_dir / "model_fp16.xml", compress_to_fp16=True)
                    entry["ir_bytes"]["fp16"] = _ir_bytes(member_dir / "model_fp16.xml")
                elif precision == "int8":
                    t_quant = time.perf_counter()
                    quantized = _quantize(ov_model, calibration[g], calibration_size, preset)
                    ov.save_model(quantized, member_dir / "model_int8.xml", compress_to_fp16=False)
                    entry["ir_bytes"]["int8"] = _ir_bytes(member_dir / "model_int8.xml")
                    entry["quantize_seconds"] = round(time.perf_counter() - t_quant, 2)
                entry["ir"] = f"members/{index}/model_{precision}.xml"
                ov_models.append(ov_model)

                if gate_on:
                    probs, speed = _run_torch(wrapper, eval_mels[g])
                    member_probs["torch_fp32"].append(probs)
                    entry["clips_per_second"] = {"torch_fp32": round(speed, 1)}
                    runs = ["f32"] if precision == "f32" else ["f32", precision]
                    for run in runs:
                        compiled = _compile(core, member_dir / f"model_{run}.xml", threads)
                        probs, speed = _run_openvino(compiled, eval_mels[g])
                        member_probs[f"openvino_{run}"].append(probs)
                        entry["clips_per_second"][f"openvino_{run}"] = round(speed, 1)
                    entry["auc"] = {
                        key: _auc(eval_targets, values[-1]) for key, values in member_probs.items()
                    }
                entry["seconds"] = round(time.perf_counter() - t0, 2)
                report["members"].append(entry)
                logger.info("exported member %d %s: %s", index, member["name"], entry)

            used = precision
            if gate_on:
                aucs = {
                    key: _auc(eval_targets, _weighted_mean(values, weights))
                    for key, values in member_probs.items()
                }
                report["auc"] = aucs
                report["auc_precision"] = {
                    "torch_fp32": "PyTorch float32",
                    "openvino_f32": "OpenVINO f32 IR, INFERENCE_PRECISION_HINT=f32",
                    f"openvino_{precision}": (
                        f"OpenVINO {precision} IR, INFERENCE_PRECISION_HINT=f32"
                        + (
                            " (int8 where NNCF quantized, f32 elsewhere)"
                            if precision == "int8"
                            else ""
                        )
                    ),
                }
                report["eval_windows"] = int(n_eval)
                report["gate"] = _gate(aucs, precision, max_auc_drop, report, members, on_gate_fail)
                if report["gate"]["status"] == "failed":
                    if on_gate_fail == "fail":
                        raise ExportGateError(report["gate"]["message"], report)
                    if on_gate_fail == "fp16" and precision != "fp16":
                        used = "fp16"
                        _fallback_fp16(
                            ov_models,
                            tmp,
                            core,
                            threads,
                            eval_mels,
                            eval_targets,
                            weights,
                            report,
                            max_auc_drop,
                        )
                    else:
                        report["warnings"].append(report["gate"]["message"])
                        logger.warning(
                            "%s; keeping %s (on_gate_fail=%s)",
                            report["gate"]["message"],
                            precision,
                            on_gate_fail,
                        )
            else:
                report["gate"] = {"status": "not run", "reason": "no eval_mels/eval_targets given"}
            report["precision"] = used
            for index, entry in enumerate(report["members"]):
                entry["ir"] = f"members/{index}/model_{used}.xml"

            for g, group in enumerate(groups):
                np.save(tmp / filterbank_file(g), mel_filterbank(group))
            bundle = _bundle_definition(ensemble, report, used)
            write_json(tmp / "bundle.json", bundle)
            report["ir_bytes_total"] = {
                key: sum(entry["ir_bytes"].get(key, 0) for entry in report["members"])
                for key in ("f32", "fp16", "int8")
                if any(key in entry["ir_bytes"] for entry in report["members"])
            }
    finally:
        torch.set_num_threads(previous_threads)
    report["seconds"] = round(time.perf_counter() - start, 2)
    logger.info(
        "export finished in %.1f s: precision %s, gate %s",
        report["seconds"],
        report["precision"],
        report["gate"]["status"],
    )
    return report


def _gate(
    aucs: Mapping[str, float | None],
    precision: str,
    max_auc_drop: float,
    report: dict[str, Any],
    members: list[Mapping[str, Any]],
    on_gate_fail: str,
) -> dict[str, Any]:
    """Compare the chosen precision's ensemble AUC with OpenVINO f32's."""
    if precision == "f32":
        return {"status": "not applicable", "reason": "precision f32 is the reference"}
    reference, chosen = aucs["openvino_f32"], aucs[f"openvino_{precision}"]
    member_drops = []
    for entry in report["members"]:
        ref, val = entry["auc"]["openvino_f32"], entry["auc"][f"openvino_{precision}"]
        member_drops.append(None if ref is None or val is None else round(ref - val, 6))
    if reference is None or chosen is None:
        return {
            "status": "not run",
            "reason": "macro ROC-AUC undefined: no class has both positives and negatives "
            "in eval_targets",
            "member_drops": dict(zip([m["name"] for m in members], member_drops, strict=True)),
        }
    drop = round(reference - chosen, 6)
    gate = {
        "status": "passed" if drop <= max_auc_drop else "failed",
        "drop": drop,
        "max_auc_drop": float(max_auc_drop),
        "reference": "openvino_f32",
        "reference_auc": reference,
        "candidate": f"openvino_{precision}",
        "candidate_auc": chosen,
        "member_drops": dict(zip([m["name"] for m in members], member_drops, strict=True)),
        "on_gate_fail": on_gate_fail,
    }
    if gate["status"] == "failed":
        gate["message"] = (
            f"{precision} export loses {drop:.6f} ensemble macro ROC-AUC vs OpenVINO f32 "
            f"({chosen:.6f} vs {reference:.6f}, both run with INFERENCE_PRECISION_HINT=f32; "
            f"torch fp32 {aucs['torch_fp32']}), more than max_auc_drop={max_auc_drop}; "
            f"per-member drops {gate['member_drops']}"
        )
    return gate


def _fallback_fp16(
    ov_models, tmp: Path, core, threads: int, eval_mels, eval_targets, weights, report, max_drop
) -> None:
    """Write fp16 IRs after a failed gate, evaluate them and record the fallback.

    `eval_mels` holds one array per mel group; each member runs on its group's.
    """
    import openvino as ov

    probs = []
    for index, (ov_model, entry) in enumerate(zip(ov_models, report["members"], strict=True)):
        xml = tmp / "members" / str(index) / "model_fp16.xml"
        ov.save_model(ov_model, xml, compress_to_fp16=True)
        entry["ir_bytes"]["fp16"] = _ir_bytes(xml)
        member_probs, speed = _run_openvino(
            _compile(core, xml, threads), eval_mels[entry["mel_group"]]
        )
        probs.append(member_probs)
        entry["clips_per_second"]["openvino_fp16"] = round(speed, 1)
        entry["auc"]["openvino_fp16"] = _auc(eval_targets, member_probs)
    auc = _auc(eval_targets, _weighted_mean(probs, weights))
    report["auc"]["openvino_fp16"] = auc
    report["auc_precision"]["openvino_fp16"] = "OpenVINO fp16 IR, INFERENCE_PRECISION_HINT=f32"
    reference = report["auc"]["openvino_f32"]
    drop = None if auc is None or reference is None else round(reference - auc, 6)
    report["gate"]["fallback"] = {"precision": "fp16", "auc": auc, "drop": drop}
    for index in range(len(ov_models)):  # the bundle ships only what inference loads
        dropped = tmp / "members" / str(index) / f"model_{report['requested_precision']}.xml"
        for path in _ir_files(dropped):
            path.unlink(missing_ok=True)
    message = f"{report['gate']['message']}; fell back to fp16 IR (ensemble AUC {auc})"
    if drop is not None and drop > max_drop:
        message += f", which also exceeds max_auc_drop (drop {drop:.6f}); kept anyway"
    report["warnings"].append(message)
    logger.warning(message)


def _bundle_definition(ensemble: Mapping[str, Any], report: Mapping[str, Any], used: str) -> dict:
    bundle = copy.deepcopy(dict(ensemble))
    bundle["precision"] = used
    bundle["inference_precision_hint"] = INFERENCE_PRECISION_HINT
    bundle["mel_groups"] = [
        {**dict(group), "filterbank": filterbank_file(g), "window_frames": frames}
        for g, (group, frames) in enumerate(
            zip(ensemble["mel_groups"], report["window_frames"], strict=True)
        )
    ]
    bundle["input_name"] = INPUT_NAME
    bundle["output_name"] = OUTPUT_NAME
    bundle["members"] = [
        {
            **dict(member),
            "weight": float(member.get("weight", 1.0)),
            "ir": entry["ir"],
            "ir_f32": entry["ir_f32"],
        }
        for member, entry in zip(ensemble["members"], report["members"], strict=True)
    ]
    gate = report["gate"]
    bundle["export"] = {
        "requested_precision": report["requested_precision"],
        "gate_status": gate["status"],
        "auc": report.get("auc"),
        "auc_precision": report.get("auc_precision"),
    }
    return bundle


def cache_windows(
    mels: np.ndarray, index, starts: np.ndarray, rows: np.ndarray, frames: int
) -> np.ndarray:
    """(n, 1, n_mels, frames) float32 windows cut from the training mel cache.

    `rows` pick recordings of `index`, `starts` the first frame within each;
    windows running past a recording's end are zero-padded with its minimum.
    """
    n_mels = mels.shape[1]
    out = np.empty((len(rows), 1, n_mels, frames), dtype=np.float32)
    offsets = index["offset"].to_numpy()
    lengths = index["frames"].to_numpy()
    for k, (row, start) in enumerate(zip(rows, starts, strict=True)):
        begin = int(offsets[row] + start)
        take = int(min(frames, lengths[row] - start))
        piece = np.asarray(mels[begin : begin + take], dtype=np.float32).T
        out[k, 0, :, :take] = piece
        out[k, 0, :, take:] = piece.min() if take else 0.0
    return out


def _window_starts(k: np.ndarray, step: float) -> np.ndarray:
    """First frame of window k: round(k * step), halves rounded up.

    `step` is the (fractional) number of frames in one window's time,
    window_seconds * sample_rate / hop_length: 312.5 for 5 s at 32 kHz, hop 512.
    """
    return np.floor(k * step + 0.5).astype(np.int64)


def gate_windows(
    indexes: Sequence,
    folds,
    groups: Sequence[Mapping[str, Any]],
    window_seconds: float,
    max_windows: int = MAX_EVAL_WINDOWS,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Windows the accuracy gate scores, aligned across mel groups: (rows, start frames) per group.

    `indexes` are the mel cache indexes of `groups` (same order; columns
    filename, offset, frames). The recordings are the validated ones (fold >=
    0 in `folds`) present in every index (matched by filename), in the first
    index's order. Window k of a recording starts at time k * `window_seconds`
    in every group: frame round(k * window_seconds * sample_rate / hop_length)
    of that group. A recording gets as many windows as fit whole into its
    cached frames in every group (the minimum over the groups), at least one
    (from its start; `cache_windows` pads a recording shorter than a window).
    At most `max_windows` windows, taken evenly across the list, the same ones
    in every group. Returns (rows, starts): one int64 array per group, rows of
    that group's index and start frames within the recording; entry i of every
    group is the same recording and span of time.
    """
    import pandas as pd

    if len(indexes) != len(groups) or not groups:
        raise ValueError(f"gate_windows needs one index per mel group: {len(indexes)} indexes, "
                         f"{len(groups)} groups")
    for g, index in enumerate(indexes):
        duplicated = index["filename"][index["filename"].duplicated()]
        if len(duplicated):
            raise ValueError(f"the mel cache index of mel group {g} lists {duplicated.iloc[0]!r} "
                             "more than once; expected one row per recording")
    validated = set(folds.loc[folds["fold"] >= 0, "filename"])
    names = indexes[0]["filename"]
    keep = names.isin(validated)
    for index in indexes[1:]:
        keep &= names.isin(set(index["filename"]))
    names = names[keep]
    counts = None
    recording_rows, steps = [], []
    for group, index in zip(groups, indexes, strict=True):
        rows = pd.Index(index["filename"]).get_indexer(names).astype(np.int64)
        step = float(window_seconds) * int(group["sample_rate"]) / int(group["hop_length"])
        room = index["frames"].to_numpy(np.int64)[rows] - group_frames(group, window_seconds)
        # window k fits when its start <= room (the last start that leaves a whole
        # window): k < (room + 0.5) / step; the two corrections undo float rounding
        # Windows k with start(k) <= room, i.e. k < (room + 0.5) / step; the two
        # corrections after the ceil only undo float error at the boundary.
        fit = np.where(room >= 0, np.ceil((room + 0.5) / step), 0).astype(np.int64)
        fit -= (fit > 0) & (_window_starts(np.maximum(fit - 1, 0), step) > room)
        fit += (room >= 0) & (_window_starts(fit, step) <= room)
        counts = fit if counts is None else np.minimum(counts, fit)
        recording_rows.append(rows)
        steps.append(step)
    counts = np.maximum(1, counts)
    first = np.cumsum(counts) - counts
    k = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(first, counts)
    if len(k) > max_windows:
        pick = np.linspace(0, len(k) - 1, max_windows).round().astype(np.int64)
    else:
        pick = np.arange(len(k))
    rows = [np.repeat(r, counts)[pick] for r in recording_rows]
    starts = [_window_starts(k[pick], step) for step in steps]
    return rows, starts


def gate_targets(index, rows: np.ndarray, classes) -> np.ndarray:
    """Binary targets (primary and secondary labels) of each gate window's recording.

    Looked up once per recording of `rows` (rows of `index`), then repeated per window.
    """
    from birdclef.common.labels import targets_of

    recordings, window_recording = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
    targets = targets_of(index, index["filename"].iloc[recordings].tolist(), classes)
    return targets[window_recording.reshape(-1)]


def labelled_soundscape_windows(
    soundscape_mels_paths: Sequence[str],
    soundscape_index_paths: Sequence[str],
    labelled_path: str,
    classes: Sequence[str],
) -> tuple[list[np.ndarray], np.ndarray]:
    """The held-out labelled soundscape windows of every mel group, and their targets.

    One (n, 1, n_mels, frames) float32 array per group (that group's
    soundscape cache, matched by row_id, so window i is the same span of
    audio in every group) and the (n, n_classes) 0/1 targets.
    """
    import pandas as pd

    from birdclef.soundscapes import validation_windows, window_positions

    held = validation_windows(pd.read_parquet(labelled_path))
    arrays = []
    for mels_path, index_path in zip(soundscape_mels_paths, soundscape_index_paths, strict=True):
        rows = window_positions(pd.read_parquet(index_path), held["row_id"], index_path)
        cache = np.load(mels_path, mmap_mode="r")
        arrays.append(np.asarray(cache[rows], dtype=np.float32)[:, None])
    return arrays, held[list(classes)].to_numpy(np.float32)


def score_bundle_windows(
    bundle_dir: str | os.PathLike, mels: Sequence[np.ndarray], targets: np.ndarray, threads: int = 2
) -> dict[str, float | None]:
    """Macro ROC-AUC of the exported ensemble on windows `mels` (one array per mel group).

    Runs each member's f32 IR and the IR the bundle uses (OpenVINO,
    INFERENCE_PRECISION_HINT=f32), combines by the weighted mean (as the gate
    does) and scores against `targets`. Returns ``{"openvino_f32": auc,
    "openvino_<precision>": auc}``.
    """
    import openvino as ov

    from birdclef.common.io import read_json

    bundle_dir = Path(bundle_dir)
    bundle = read_json(bundle_dir / "bundle.json")
    core = ov.Core()
    runs = {"openvino_f32": "ir_f32", f"openvino_{bundle['precision']}": "ir"}
    weights = [float(member.get("weight", 1.0)) for member in bundle["members"]]
    scores: dict[str, float | None] = {}
    for name, key in runs.items():
        probabilities = []
        for member in bundle["members"]:
            compiled = _compile(core, bundle_dir / member[key], threads)
            probabilities.append(_run_openvino(compiled, mels[int(member["mel_group"])])[0])
        scores[name] = _auc(targets, _weighted_mean(probabilities, weights))
    return scores


def export_stage(
    ensemble_path: str,
    mels_paths: Sequence[str],
    index_paths: Sequence[str],
    folds_path: str,
    out_bundle: str,
    out_manifest: str,
    settings: Mapping[str, Any],
    tag: str,
    upstream: Mapping[str, Any],
    threads: int = 2,
    seed: int = 0,
    soundscape_mels_paths: Sequence[str] | None = None,
    soundscape_index_paths: Sequence[str] | None = None,
    labelled_path: str | None = None,
) -> dict:
    """The export stage: IR per member, quantization, accuracy gate, manifest.

    `mels_paths` and `index_paths` are the training mel caches (``.npy``) and
    their parquet indexes, one per mel group of the ensemble definition, in
    its ``mel_groups`` order; the mel settings come from the definition.
    Calibration windows are drawn at random (seeded) from each group's cache;
    the gate scores the windows of `gate_windows` (validated recordings,
    fold >= 0, cached in every group; at most `MAX_EVAL_WINDOWS`, spread
    evenly, aligned in time across the groups), each against its recording's
    primary and secondary labels. With `labelled_path` (the soundscape_labels
    table) and each group's soundscape cache, the exported f32 and chosen-precision
    ensembles are also scored on the held-out labelled soundscape windows
    (``soundscape_auc`` in the report; the gate itself is decided on the
    recordings' windows).
    """
    import pandas as pd

    from birdclef.common.io import read_json
    from birdclef.common.manifest import StageManifest

    if isinstance(mels_paths, (str, os.PathLike)) or isinstance(index_paths, (str, os.PathLike)):
        raise TypeError("mels_paths and index_paths must be lists of paths, one per mel group")
    manifest = StageManifest(
        "export", tag, settings, upstream, [ensemble_path, *index_paths, folds_path]
    )
    ensemble = read_json(ensemble_path)
    try:
        _check_ensemble(ensemble)
    except ValueError as error:
        raise ValueError(f"{ensemble_path}: {error}") from None
    groups = ensemble["mel_groups"]
    if len(mels_paths) != len(groups) or len(index_paths) != len(groups):
        raise ValueError(
            f"{ensemble_path} has {len(groups)} mel groups "
            f"({[group.get('tag') for group in groups]}), but the export got "
            f"{len(mels_paths)} mel caches and {len(index_paths)} indexes: expected one of each "
            "per group, in mel_groups order"
        )
    frames = window_frames(ensemble)
    mels = [np.load(path, mmap_mode="r") for path in mels_paths]
    indexes = [pd.read_parquet(path) for path in index_paths]
    for g, (array, group, path) in enumerate(zip(mels, groups, mels_paths, strict=True)):
        if array.ndim != 2 or array.shape[1] != int(group["n_mels"]):
            raise ValueError(
                f"{path}: mel cache of shape {array.shape}, but mel_groups[{g}] of {ensemble_path} "
                f"(tag {group.get('tag')!r}) expects (frames, {int(group['n_mels'])})"
            )
    folds = pd.read_parquet(folds_path)
    rng = np.random.default_rng(seed)

    calibration = []
    for array, index, group_window in zip(mels, indexes, frames, strict=True):
        size = min(int(settings["calibration_size"]), max(1, len(index) * 4))
        rows = rng.integers(0, len(index), size=size)
        spare = np.maximum(index["frames"].to_numpy()[rows] - group_window, 0)
        starts = (rng.random(size) * (spare + 1)).astype(np.int64)
        calibration.append(cache_windows(array, index, starts, rows, group_window))

    eval_rows, eval_starts = gate_windows(indexes, folds, groups, ensemble["window_seconds"])
    eval_mels = [
        cache_windows(array, index, starts, rows, group_window)
        for array, index, starts, rows, group_window in zip(
            mels, indexes, eval_starts, eval_rows, frames, strict=True
        )
    ]
    eval_targets = gate_targets(indexes[0], eval_rows[0], ensemble["classes"])

    report = export_ensemble(
        ensemble,
        Path(out_bundle).parent,
        calibration,
        precision=settings["precision"],
        calibration_size=int(settings["calibration_size"]),
        preset=settings["preset"],
        eval_mels=eval_mels,
        eval_targets=eval_targets,
        max_auc_drop=settings["max_auc_drop"],
        on_gate_fail=settings["on_gate_fail"],
        threads=threads,
    )
    if labelled_path and soundscape_mels_paths and soundscape_index_paths:
        windows, targets = labelled_soundscape_windows(
            soundscape_mels_paths, soundscape_index_paths, labelled_path, ensemble["classes"])
        report["soundscape_auc"] = (
            score_bundle_windows(Path(out_bundle).parent, windows, targets, threads) if len(targets)
            else None)
        report["soundscape_windows_scored"] = int(len(targets))
        logger.info("export: labelled-soundscape AUC %s on %d held-out windows",
                    report["soundscape_auc"], len(targets))
    manifest.headline.update(report)
    manifest.write(out_manifest)
    logger.info(
        "export: %s members in %d mel groups, precision %s (requested %s), AUC %s (OpenVINO numbers "
        "with INFERENCE_PRECISION_HINT f32)",
        len(ensemble["members"]), len(groups), report.get("precision"), settings["precision"],
        report.get("auc"),
    )
    return report
