"""Soundscape inference with an exported OpenVINO bundle: the Kaggle-side code path.

Imports only numpy, pandas, soundfile, openvino and the package's torch-free
`audio`, `features` and `postprocess` modules, so it runs in a Kaggle notebook
without torch, timm, librosa or Snakemake: the mel filterbanks come from the
bundle's ``mel_filterbank_<g>.npy`` files. (`threadpoolctl` and `soxr` are
used when present.)

Mel groups: the members of a bundle may take different log-mel inputs (their
models were trained on different mel settings: n_mels, n_fft, hop, even the
sample rate). ``bundle.json`` lists each configuration once in
``mel_groups`` (settings, filterbank file, window frames) and each member
names its group (``mel_group``); `Bundle.mel_groups` holds them as `MelGroup`.
All groups share ``window_seconds``, so window k covers the same 5 s in every
group. A bundle of one configuration simply has one group.

A soundscape is decoded once per distinct sample rate of the groups (once in
the usual case; `audio.decode_audio`: mono, resampled to that rate), cut into
consecutive windows (5 s in the competition), and turned into each group's
log-mel windows with `features.log_mel` (the function the mel cache uses);
every member then runs on its group's windows. Members are combined as the
bundle definition's ``combine`` says (weighted mean of probabilities, or of
per-class ranks over the run), followed by its per-soundscape post-processing
(``postprocess``: TTA shifts, smoothing, power adjustment; see
`birdclef.runtime.postprocess`). Row ids are ``<file stem>_<end second>``; a file
gets ceil(duration / 5 s) rows (12 for one minute, 4 for 20 s, 13 for 62 s),
and a file that cannot be decoded gets its rows with every probability 0
(listed in the frame's ``attrs["undecodable"]``).

How it is fast (`predict_soundscapes`): decode + log-mel run in a pool of
worker threads (numpy, libsndfile and OpenVINO release the GIL), several files
ahead of the model; whole soundscapes go into infer calls of at least
`BATCH_WINDOWS` rows (by default one one-minute soundscape per call). All
members are wired into one OpenVINO model (`ensemble_model`: one input per
mel group, each member on its group's input) and compiled once with the
THROUGHPUT hint, one thread per stream, two infer requests per stream: one
request runs every member (of every group) on a batch, each stream
works on its own core, and a stream that finishes a batch starts the next
queued one without waiting for Python. (With one compiled model per member,
OpenVINO pins stream k of every compiled model to core k while it runs: two
requests of two different members both went to their model's first free
stream, so ~80 % of the time both ran on the same core and the other idled;
10 members kept the cores only ~60 % busy.) The log-mel's BLAS call is held
to one thread while this runs (`features.blas_threads`, threadpoolctl):
multi-threaded BLAS inside parallel workers made it 3-4x slower.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import pandas as pd

from birdclef.runtime.audio import BadAudioError, audio_seconds, decode_audio
from birdclef.runtime.features import (
    MEL_KEYS,
    blas_threads,
    log_mel,
    member_mel_group,
    window_frames,
    window_waves,
)
from birdclef.runtime.postprocess import (
    POSTPROCESS_DEFAULTS,
    combine_members,
    combine_method,
    postprocess_settings,
    postprocess_soundscape,
)

logger = logging.getLogger(__name__)

# A 60 s soundscape in 5 s windows: the usual rows per test soundscape, and the rows of an
# undecodable file whose header gives no duration.
DEFAULT_WINDOWS = 12
# Windows per infer call: one one-minute soundscape (compare other sizes with
# bench/bench_inference.py --batch-windows N).
BATCH_WINDOWS = 12
# Infer requests per stream: a stream that finishes a batch starts the next queued one at once.
REQUESTS_PER_STREAM = 2
PRECISION_HINTS = {"f32": ov.Type.f32, "bf16": ov.Type.bf16, "f16": ov.Type.f16}
# What load_bundle needs of each bundle.json mel_groups entry (top_db defaults to 80).
MEL_GROUP_KEYS = (*(key for key in MEL_KEYS if key != "top_db"), "filterbank")


@dataclass(frozen=True)
class MelGroup:
    """One mel configuration of a bundle: its settings, filterbank and window geometry.

    `settings` is the group's entry of ``bundle.json``'s ``mel_groups``
    (sample_rate, n_fft, hop_length, n_mels, fmin, fmax, top_db, tag,
    filterbank file, window_frames); `filterbank` the (n_mels, n_fft // 2 + 1)
    array from that file; the other fields are read from `settings` once
    (`_mel_group`), `frames` being the mel frames of one window (313 for 5 s
    at 32 kHz, hop 512).
    """

    settings: dict[str, Any]
    filterbank: np.ndarray = field(repr=False)
    sample_rate: int
    n_fft: int
    hop_length: int
    n_mels: int
    top_db: float | None
    frames: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The (1, n_mels, frames) shape of one window, as the group's members take it."""
        return (1, self.n_mels, self.frames)


@dataclass
class Member:
    """One ensemble member: its name, weight, IR file and mel group (index into `Bundle.mel_groups`)."""

    name: str
    weight: float
    ir: Path
    mel_group: int


@dataclass
class Bundle:
    """An exported ensemble ready to run: the compiled ensemble model, classes, mel groups.

    `compiled` is one OpenVINO compiled model that holds every member: it has
    one input per mel group (input g takes (N, 1, n_mels, frames) log-mel
    windows of `mel_groups[g]`, every input the same N windows) and returns the
    members' clip probabilities stacked as (n_members, N, n_classes), in
    `members` order. `requests` holds its infer requests (an
    ``ov.AsyncInferQueue``). `mel_groups` lists the groups that members with a
    positive weight use (a group only zero-weight members use is not computed).
    """

    root: Path
    classes: list[str]
    window_seconds: float
    mel_groups: list[MelGroup]
    members: list[Member]
    precision: str
    precision_hint: str
    threads: int
    definition: dict[str, Any] = field(repr=False)
    compiled: Any = field(default=None, repr=False)
    requests: Any = field(default=None, repr=False)
    streams: int = 1
    combine: str = "mean"
    postprocess: dict[str, Any] = field(default_factory=dict)

    @property
    def tta_shift_samples(self) -> list[int]:
        """The TTA shift (``postprocess.tta_shift_seconds``) in samples of each mel group; 0: none."""
        seconds = float(self.postprocess.get("tta_shift_seconds", 0.0))
        return [int(round(seconds * group.sample_rate)) for group in self.mel_groups]

    @property
    def tta_views(self) -> int:
        """Views per window: 3 (unshifted, -shift, +shift) with a non-zero `tta_shift_samples`, else 1."""
        return 3 if any(self.tta_shift_samples) else 1

    @property
    def weights(self) -> np.ndarray:
        """The members' weights, normalised to sum to 1 (float64)."""
        weights = np.array([member.weight for member in self.members], dtype=np.float64)
        return weights / weights.sum()

    def predict_members(
        self, mels: Sequence[np.ndarray] | np.ndarray, batch_windows: int = BATCH_WINDOWS
    ) -> np.ndarray:
        """Every member's clip probabilities (n_members, n_windows, n_classes) for log-mel windows.

        `mels` holds one (n_windows, 1, n_mels, frames) float32 log-mel dB
        array per mel group (`mel_groups` order; a bare array for a one-group
        bundle), window i of every group the same span of audio; each member
        runs on its group's array, in batches of at most `batch_windows`
        windows. No combining, no post-processing.
        """
        parts = self._run(mels, keep_members=True, batch_windows=batch_windows)
        if not parts:
            return np.zeros((len(self.members), 0, len(self.classes)), dtype=np.float32)
        return np.concatenate(parts, axis=1)

    def predict(
        self, mels: Sequence[np.ndarray] | np.ndarray, batch_windows: int = BATCH_WINDOWS
    ) -> np.ndarray:
        """Ensemble clip probabilities (n_windows, n_classes) for log-mel windows.

        `mels` is as for `predict_members` (one array per mel group); every
        member runs on its group's windows (in batches of at most
        `batch_windows` windows) and the members are combined by the bundle's
        method (`combine`: the weighted mean, or with ``"rank"`` the weighted
        mean of per-class ranks over these windows). No post-processing: that
        needs whole soundscapes (`predict_soundscapes`).
        """
        if self.combine == "mean":
            parts = self._run(mels, keep_members=False, batch_windows=batch_windows)
            return np.concatenate(parts) if parts else np.zeros((0, len(self.classes)), np.float32)
        members = self.predict_members(mels, batch_windows)
        if members.shape[1] == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return combine_members(list(members), self.weights.tolist(), self.combine)

    def _run(
        self, mels: Sequence[np.ndarray] | np.ndarray, keep_members: bool, batch_windows: int
    ) -> list[np.ndarray]:
        mels = self._check_mels(mels)
        runner = _Runner(self, keep_members=keep_members)
        step = max(1, int(batch_windows))
        jobs = [
            runner.submit([group[begin : begin + step] for group in mels])
            for begin in range(0, len(mels[0]), step)
        ]
        runner.wait()
        return [job.parts[0] for job in jobs]

    def _check_mels(self, mels: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
        """`mels` as one contiguous float32 array per mel group, shapes and window counts checked.

        A bare array is accepted for a one-group bundle. Raises ValueError
        naming the group whose array has the wrong shape.
        """
        if isinstance(mels, np.ndarray):
            if len(self.mel_groups) != 1:
                raise ValueError(
                    f"mels must be a list of {len(self.mel_groups)} arrays, one per mel group; "
                    "a single array is only accepted for a one-group bundle"
                )
            mels = [mels]
        mels = [np.ascontiguousarray(group, dtype=np.float32) for group in mels]
        if len(mels) != len(self.mel_groups):
            raise ValueError(
                f"mels has {len(mels)} arrays, the bundle has {len(self.mel_groups)} mel groups"
            )
        for g, (array, group) in enumerate(zip(mels, self.mel_groups, strict=True)):
            if array.ndim != 4 or array.shape[1:] != group.input_shape:
                raise ValueError(
                    f"mels[{g}] must have shape (N, {', '.join(map(str, group.input_shape))}) "
                    f"(mel group {group.settings.get('tag', g)!r}), got {array.shape}"
                )
        if any(len(array) != len(mels[0]) for array in mels):
            raise ValueError(
                f"mels have {[len(a) for a in mels]} windows per mel group; every group needs "
                "the same windows"
            )
        return mels


def ensemble_model(
    models: Sequence[Any], input_shapes: Sequence[Sequence[int]], member_inputs: Sequence[int]
) -> Any:
    """One ``ov.Model`` that runs every member model on the input of its mel group.

    The model has one f32 input per entry of `input_shapes`, ``mels_<g>`` of
    shape (N, *input_shapes[g]); each of `models` (read IR, one input (N,
    *input_shape), one output (N, n_classes)) is wired to input
    `member_inputs[i]`. The output ``member_probabilities`` stacks the
    members' outputs as (n_members, N, n_classes). The members' operations
    are only renamed (prefix ``member<i>/``), so every member computes exactly
    what it computes on its own (OpenVINO computes identical subgraphs once,
    so the same IR listed twice on one input costs one member). Compiled
    once, the ensemble needs one infer request per batch instead of one per
    member, and each stream (pinned to its own core) runs whole batches
    through every member. One compiled model per member put two members'
    requests on the same core most of the time: OpenVINO pins stream k of
    every compiled model to core k.
    """
    import openvino.opset13 as ops

    if len(member_inputs) != len(models):
        raise ValueError(f"{len(models)} models but {len(member_inputs)} member_inputs")
    unused = sorted(set(range(len(input_shapes))) - set(member_inputs))
    if unused or any(not 0 <= g < len(input_shapes) for g in member_inputs):
        raise ValueError(
            f"member_inputs {list(member_inputs)} must use every input 0..{len(input_shapes) - 1}"
            " and no other"
        )
    inputs = []
    for g, shape in enumerate(input_shapes):
        parameter = ops.parameter([-1, *map(int, shape)], ov.Type.f32, name=f"mels_{g}")
        parameter.output(0).set_names({f"mels_{g}"})
        inputs.append(parameter)
    outputs = []
    for index, (model, g) in enumerate(zip(models, member_inputs, strict=True)):
        for op in model.get_ordered_ops():
            op.set_friendly_name(f"member{index}/{op.get_friendly_name()}")
            for port in op.outputs():
                names = port.get_names()
                if names:
                    port.set_names({f"member{index}/{name}" for name in names})
        parameter = model.get_parameters()[0]
        source = inputs[g].output(0)
        if parameter.get_element_type() != ov.Type.f32:
            source = ops.convert(inputs[g], parameter.get_element_type()).output(0)
        for target in list(parameter.output(0).get_target_inputs()):
            target.replace_source_output(source)
        output = model.get_results()[0].input_value(0)
        if output.get_element_type() != ov.Type.f32:
            output = ops.convert(output, ov.Type.f32).output(0)
        outputs.append(ops.unsqueeze(output, 0))
    stacked = ops.concat(outputs, 0) if len(outputs) > 1 else outputs[0]
    result = ops.result(stacked)
    result.output(0).set_names({"member_probabilities"})
    return ov.Model([result], inputs, "ensemble")


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
    """
    if precision_hint not in PRECISION_HINTS:
        raise ValueError(
            f"precision_hint must be one of {sorted(PRECISION_HINTS)}, got {precision_hint!r}"
        )
    threads = max(1, int(threads))
    streams = threads if streams is None else max(1, min(int(streams), threads))
    root = Path(bundle_dir).resolve()
    definition = json.loads((root / "bundle.json").read_text())
    group_entries = definition.get("mel_groups")
    if not isinstance(group_entries, list) or not group_entries:
        raise ValueError(
            f"{root}/bundle.json has no mel_groups list (a bundle exported before mel groups "
            "has a single 'mel' instead): re-export the ensemble"
        )
    combine = combine_method(definition)
    postprocess = postprocess_settings(definition)
    classes = list(definition["classes"])
    window_seconds = float(definition["window_seconds"])
    entries = []
    for entry in definition["members"]:
        member_mel_group(entry, len(group_entries), where=f" in {root}/bundle.json")
        if float(entry.get("weight", 1.0)) == 0.0:
            logger.info("skipping member %r: weight 0", entry.get("name"))
            continue
        entries.append(entry)
    if not entries or sum(float(entry.get("weight", 1.0)) for entry in entries) <= 0:
        raise ValueError(f"{root}/bundle.json has no members with positive weight")
    used = sorted({entry["mel_group"] for entry in entries})
    for g in sorted(set(range(len(group_entries))) - set(used)):
        logger.info(
            "mel group %d (%s) is used by no member with positive weight: not computed",
            g,
            group_entries[g].get("tag"),
        )
    groups = [_mel_group(root, g, group_entries[g], window_seconds) for g in used]
    position = {g: i for i, g in enumerate(used)}
    core = ov.Core()
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
        models.append(model)
        members.append(
            Member(
                name=str(entry.get("name", ir.parent.name)),
                weight=float(entry.get("weight", 1.0)),
                ir=ir,
                mel_group=position[entry["mel_group"]],
            )
        )
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": streams,
        "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision_hint],
        "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
    }
    model = ensemble_model(
        models, [group.input_shape for group in groups], [member.mel_group for member in members]
    )
    compiled = core.compile_model(model, "CPU", config)
    requests = ov.AsyncInferQueue(compiled, streams * max(1, int(requests_per_stream)))
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
    )
    logger.info(
        "loaded bundle %s: %d members in %d mel groups, %s IR, OpenVINO CPU "
        "INFERENCE_PRECISION_HINT=%s, %d threads in %d streams, combine %s, postprocess %s",
        root,
        len(members),
        len(groups),
        bundle.precision,
        precision_hint,
        threads,
        streams,
        combine,
        postprocess,
    )
    return bundle


class _Job:
    """One batch of windows on its way through the ensemble model.

    `segments` are (first row, windows) of the files in the batch, each with
    `views` TTA views of its windows (view-major). When the request is done,
    `parts` holds one array per segment, the views averaged: the weighted mean
    over members (n_windows, n_classes), or with `keep_members` every member's
    probabilities (n_members, n_windows, n_classes).
    """

    def __init__(
        self,
        batch: list[np.ndarray],
        segments: Sequence[tuple[int, int]],
        views: int,
        weights: np.ndarray,
        keep_members: bool,
    ) -> None:
        self.batch = batch  # one array per mel group, kept alive: the request reads them in place
        self.segments = list(segments)
        self.views = views
        self.weights = weights
        self.keep_members = keep_members
        self.parts: list[np.ndarray] | None = None

    def finish(self, output: np.ndarray) -> None:
        """Reduce the request's (n_members, rows, n_classes) output; it is only valid during the call."""
        views = self.views
        if self.keep_members:
            n_members, n_classes = output.shape[0], output.shape[2]
            self.parts = [
                output[:, first : first + views * n].reshape(n_members, views, n, n_classes).mean(axis=1)
                for first, n in self.segments
            ]
        else:
            mean = np.tensordot(self.weights, output, axes=1).astype(np.float32)
            self.parts = [
                mean[first : first + views * n].reshape(views, n, -1).mean(axis=0)
                for first, n in self.segments
            ]
        self.batch = None


class _Runner:
    """Asynchronous inference of the ensemble model through the bundle's infer requests."""

    def __init__(self, bundle: Bundle, keep_members: bool) -> None:
        self.bundle = bundle
        self.keep_members = keep_members
        self.weights = bundle.weights
        self.errors: list[BaseException] = []
        bundle.requests.set_callback(self._done)

    def _done(self, request, job: _Job) -> None:
        try:
            job.finish(request.get_output_tensor(0).data)
        except BaseException as error:  # noqa: BLE001 - re-raised by wait()
            self.errors.append(error)

    def submit(
        self,
        batch: Sequence[np.ndarray],
        segments: Sequence[tuple[int, int]] | None = None,
        views: int = 1,
    ) -> _Job:
        """Start the ensemble on `batch`; returns the pending job.

        `batch` holds one (N, 1, n_mels, frames) array per mel group (the same
        N windows in every group; the caller checks the shapes). `segments`
        ((first row, windows) per file, default: the whole batch as one) and
        `views` say how `_Job.finish` splits and reduces the rows. Blocks
        while every infer request is busy.
        """
        if self.errors:
            raise RuntimeError("OpenVINO inference failed") from self.errors[0]
        batch = [np.ascontiguousarray(group, dtype=np.float32) for group in batch]
        segments = [(0, len(batch[0]))] if segments is None else segments
        job = _Job(batch, segments, views, self.weights, self.keep_members)
        self.bundle.requests.start_async(dict(enumerate(batch)), job, share_inputs=True)
        return job

    def wait(self) -> None:
        """Block until every submitted job is done; raise the first inference error."""
        self.bundle.requests.wait_all()
        if self.errors:
            raise RuntimeError("OpenVINO inference failed") from self.errors[0]


def _postprocessing_on(settings: dict[str, Any]) -> bool:
    """Whether `settings` (``postprocess``) turn on smoothing or the power adjustment."""
    keys = ("smoothing", "power_adjust_top_k", "power_adjust_exponent")
    return any(settings.get(key, POSTPROCESS_DEFAULTS[key]) != POSTPROCESS_DEFAULTS[key] for key in keys)


def _end_label(seconds: float) -> str:
    return str(int(round(seconds))) if abs(seconds - round(seconds)) < 1e-6 else f"{seconds:g}"


def _shifted_windows(
    wave: np.ndarray, sample_rate: int, window_seconds: float, n_windows: int, shift: int
) -> np.ndarray:
    """`window_waves` of `wave` moved by `shift` samples (later audio for shift > 0)."""
    if shift > 0:
        wave = wave[shift:]
    elif shift < 0:
        wave = np.concatenate([np.zeros(-shift, dtype=np.float32), wave])
    return window_waves(wave, sample_rate, window_seconds, n_windows)


@dataclass
class SoundscapeWindows:
    """One soundscape ready for the model (`soundscape_windows`).

    `mels` holds one (views * n_windows, 1, n_mels, frames) float32 array per
    mel group (view-major), `row_ids` its n_windows row ids. `error` says why
    the file could not be decoded (None when it was): then `mels` hold no
    windows and the file's rows are predicted as 0 (`predict_soundscapes`).
    """

    path: str
    mels: list[np.ndarray]
    row_ids: list[str]
    error: str | None = None


def window_count(duration: float, window_seconds: float) -> int:
    """The windows (rows) of a `duration`-second soundscape: ceil(duration / window), at least 1."""
    return max(1, math.ceil(duration / window_seconds - 1e-6))


def _undecodable_window_count(path: str | os.PathLike, window_seconds: float) -> tuple[int, str]:
    """Rows for a file that cannot be decoded: from its header's duration, else `DEFAULT_WINDOWS`."""
    try:
        duration = audio_seconds(path)
    except Exception:  # noqa: BLE001 - no usable header: a one-minute soundscape's rows
        return DEFAULT_WINDOWS, f"no readable header: {DEFAULT_WINDOWS} windows"
    n_windows = window_count(duration, window_seconds)
    return n_windows, f"its header says {duration:.2f} s: {n_windows} windows"


def _row_ids(stem: str, n_windows: int, seconds: float) -> list[str]:
    return [f"{stem}_{_end_label((i + 1) * seconds)}" for i in range(n_windows)]


def _log_mels(waves: dict[int, np.ndarray], n_windows: int, bundle: Bundle) -> list[np.ndarray]:
    """Each mel group's (views * n_windows, 1, n_mels, frames) log-mel windows of `waves` (by rate)."""
    views = bundle.tta_views
    mels = []
    for group, shift in zip(bundle.mel_groups, bundle.tta_shift_samples, strict=True):
        shifts = [0, -shift, shift] if views == 3 else [0]
        out = np.empty((views * n_windows, *group.input_shape), dtype=np.float32)
        for view, offset in enumerate(shifts):
            windows = _shifted_windows(
                waves[group.sample_rate], group.sample_rate, bundle.window_seconds, n_windows, offset
            )
            for index, window in enumerate(windows):
                out[view * n_windows + index, 0] = log_mel(
                    window, group.filterbank, group.n_fft, group.hop_length, group.top_db
                )
        mels.append(out)
    return mels


def soundscape_windows(path: str | os.PathLike, bundle: Bundle) -> SoundscapeWindows:
    """Decode one soundscape and compute its log-mel windows for every mel group.

    Decodes `path` once per distinct sample rate of `bundle.mel_groups`
    (`audio.decode_audio` with ``repair=True``: stereo mixed down, another
    rate resampled, NaN/infinite samples set to 0), cuts it into
    `window_count` (ceil(duration / window_seconds), at least 1; the count
    from the first group's rate) consecutive windows, the last one
    zero-padded: 12 for a one-minute file, 4 for 20 s, 13 for 62 s. Computes
    `features.log_mel` per window with each group's settings and filterbank;
    window i of every group is the same span of audio. Views are
    `Bundle.tta_views` (3 with a ``postprocess.tta_shift_seconds`` of at
    least half a sample in some group: unshifted, -s, +s, s in each group's
    own samples; view-major). Row ids are ``"<stem>_<end second>"``, e.g.
    ``soundscape_1_5`` ... ``soundscape_1_60``.

    A file that cannot be decoded (corrupt, empty, missing) is returned with
    `SoundscapeWindows.error` set and no windows; its row count comes from its
    header's duration when soundfile can read it (`audio.audio_seconds`), else
    `DEFAULT_WINDOWS` (12). Every such case (and stereo, resampling to the
    first group's rate, silence, a length other than 60 s) is logged as a
    warning; resampling to the other groups' rates is by design and not logged.
    """
    stem = Path(path).stem
    seconds = bundle.window_seconds
    rates = list(dict.fromkeys(group.sample_rate for group in bundle.mel_groups))
    try:
        rate = rates[0]
        wave, notes = decode_audio(path, rate, repair=True)
        waves = {rate: wave}
        for other in rates[1:]:  # the other groups' rates: resampling by design, no notes
            waves[other] = decode_audio(path, other, repair=True)[0]
    except Exception as error:  # noqa: BLE001 - whatever the file does, its rows must exist
        reason = error.reason if isinstance(error, BadAudioError) else f"cannot decode ({error!r})"
        n_windows, how = _undecodable_window_count(path, seconds)
        logger.warning("%s: %s; undecodable: %s, written as 0", path, reason, how)
        empty = [np.zeros((0, *group.input_shape), dtype=np.float32) for group in bundle.mel_groups]
        return SoundscapeWindows(str(path), empty, _row_ids(stem, n_windows, seconds), reason)
    duration = wave.size / rate
    n_windows = window_count(duration, seconds)
    expected = DEFAULT_WINDOWS * seconds
    if abs(duration - expected) > 1.0 / rate:
        padded = abs(duration - n_windows * seconds) > 1.0 / rate
        notes.append(
            f"{duration:.2f} s long, not {expected:g} s: {n_windows} windows"
            + (" (last one padded with silence)" if padded else "")
        )
    if not np.any(wave):
        notes.append("silent (all samples are 0)")
    if notes:
        logger.warning("%s: %s", path, "; ".join(notes))
    return SoundscapeWindows(str(path), _log_mels(waves, n_windows, bundle), _row_ids(stem, n_windows, seconds))


def iter_soundscape_windows(
    paths: Sequence[str | os.PathLike], bundle: Bundle, workers: int
) -> Iterator[SoundscapeWindows]:
    """`soundscape_windows` of every path, in order, computed `workers` files in parallel.

    At most 2 * `workers` files are decoded ahead of the consumer. Call it
    inside ``features.blas_threads(1, "blas")``.
    """
    ahead = 2 * workers
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="soundscape-mels") as pool:
        pending: list[Future] = []
        position = 0
        for _ in range(len(paths)):
            while position < len(paths) and len(pending) < ahead:
                pending.append(pool.submit(soundscape_windows, paths[position], bundle))
                position += 1
            yield pending.pop(0).result()


@dataclass
class _File:
    """One soundscape of a `predict_soundscapes` run: its rows and where its predictions are."""

    row_ids: list[str]
    job: _Job | None = None  # None: undecodable (rows written as 0) or not yet submitted
    part: int = 0
    undecodable: bool = False


def predict_soundscapes(
    paths: Iterable[str | os.PathLike],
    bundle: Bundle,
    progress: bool = True,
    workers: int | None = None,
    batch_windows: int = BATCH_WINDOWS,
) -> pd.DataFrame:
    """Ensemble probabilities for every window of every soundscape in `paths`.

    Returns a DataFrame with ``row_id`` followed by one column per class (the
    bundle's class order), probabilities as float32, the files in `paths`
    order, each with `window_count` rows (ceil(duration / window_seconds):
    12 for a one-minute file; see `soundscape_windows` for short, long,
    stereo, resampled, silent and corrupt files). Each member's
    probabilities are averaged over the TTA views (``tta_shift_seconds``);
    the members are combined by the bundle's ``combine`` method: the weighted
    mean (accumulated per batch), or ``"rank"``: every member's probabilities
    are kept for all windows of the run and replaced by their per-class ranks
    over those windows before the weighted mean
    (`birdclef.runtime.postprocess.combine_members`), so a run's numbers depend on
    which files it predicts together. Then each soundscape is post-processed
    (`birdclef.runtime.postprocess.postprocess_soundscape`: smoothing, then the power
    adjustment; skipped when both are off).

    A file that cannot be decoded gets its rows (`soundscape_windows` says
    how many) with every probability exactly 0; it takes no part in the model
    run, the rank combine or the post-processing. The file names of such
    files are in ``frame.attrs["undecodable"]`` (a list, empty when all
    decoded).

    Decode + log-mel run in `workers` threads (default `bundle.threads`)
    ahead of the model. Files go whole into infer calls, in order: a call is
    sent once it holds at least `batch_windows` rows (a file's windows times
    its `Bundle.tta_views`), so it holds one or more whole files and can
    exceed `batch_windows` by less than one file's rows (with the default 12
    and 12-window files: one file per call, 36 rows with TTA); the last call
    takes what is left. With `progress`, logs the rate and remaining time
    about every 5 % of the files.
    """
    paths = list(paths)
    workers = bundle.threads if workers is None else max(1, int(workers))
    views = bundle.tta_views
    keep_members = bundle.combine != "mean"
    runner = _Runner(bundle, keep_members=keep_members)
    files: list[_File] = []
    batch: list[list[np.ndarray]] = []  # per file: its windows of every mel group
    batch_rows = 0
    waiting: list[tuple[_File, int]] = []  # (file, first row in the batch)
    start = time.perf_counter()
    step = max(1, len(paths) // 20)
    windows = 0

    def flush() -> None:
        nonlocal batch, batch_rows, waiting
        if batch:
            segments = [(first, len(file.row_ids)) for file, first in waiting]
            mels = [np.concatenate(group) if len(group) > 1 else group[0] for group in zip(*batch, strict=True)]
            job = runner.submit(mels, segments, views)
            for part, (file, _) in enumerate(waiting):
                file.job, file.part = job, part
        batch, batch_rows, waiting = [], 0, []

    with blas_threads(1, user_api="blas"):
        for index, item in enumerate(iter_soundscape_windows(paths, bundle, workers)):
            file = _File(item.row_ids, undecodable=item.error is not None)
            files.append(file)
            windows += len(item.row_ids)
            if not file.undecodable:
                waiting.append((file, batch_rows))
                batch.append(item.mels)
                batch_rows += len(item.mels[0])
                if batch_rows >= batch_windows:
                    flush()
            if progress and ((index + 1) % step == 0 or index + 1 == len(paths)):
                elapsed = max(time.perf_counter() - start, 1e-9)
                rate = (index + 1) / elapsed
                logger.info(
                    "%d/%d soundscapes, %.2f files/s, %.1f windows/s, ~%.0f s left",
                    index + 1,
                    len(paths),
                    rate,
                    windows / elapsed,
                    (len(paths) - index - 1) / rate,
                )
        flush()
        runner.wait()

    n_classes = len(bundle.classes)
    decoded = [file for file in files if not file.undecodable]
    if keep_members and decoded:  # ranks over the decoded files' windows only
        members = np.concatenate([file.job.parts[file.part] for file in decoded], axis=1)
        combined = combine_members(list(members), bundle.weights.tolist(), bundle.combine)
        first = 0
        per_file = []
        for file in decoded:
            per_file.append(combined[first : first + len(file.row_ids)])
            first += len(file.row_ids)
    else:
        per_file = [file.job.parts[file.part] for file in decoded]
    postprocess = _postprocessing_on(bundle.postprocess)
    blocks = []
    results = iter(per_file)
    for file in files:
        if file.undecodable:
            blocks.append(np.zeros((len(file.row_ids), n_classes), np.float32))
            continue
        block = next(results)
        blocks.append(postprocess_soundscape(block, bundle.postprocess) if postprocess else block)
    probs = np.concatenate(blocks) if blocks else np.zeros((0, n_classes), np.float32)
    frame = pd.DataFrame(probs.astype(np.float32, copy=False), columns=bundle.classes)
    frame.insert(0, "row_id", [row for file in files for row in file.row_ids])
    frame.attrs["undecodable"] = [
        Path(path).name for path, file in zip(paths, files, strict=True) if file.undecodable
    ]
    if frame.attrs["undecodable"]:
        logger.warning(
            "%d of %d soundscapes could not be decoded; their rows are 0: %s",
            len(frame.attrs["undecodable"]), len(paths), frame.attrs["undecodable"][:10],
        )
    return frame
