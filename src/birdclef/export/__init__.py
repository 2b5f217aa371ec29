"""Export a trained ensemble to OpenVINO IR (f32, fp16 or int8) behind an accuracy gate.

Each member checkpoint is rebuilt with `model.load_model`, wrapped in
`model.InferenceWrapper` (log-mel dB in, clip probabilities out) and converted
with `openvino.convert_model` with a dynamic batch dimension. The f32 IR is
always written; an fp16 IR (weights stored in half precision) or an int8 IR
(NNCF post-training quantization calibrated on windows from the mel cache) is
written next to it when asked for.

Precision of the numbers: OpenVINO's CPU plugin runs in bf16 on CPUs that have
it unless told otherwise, so every OpenVINO model this package compiles is
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
``members/<i>/*.xml``, and with a teacher ``teacher/``) is what
`birdclef.runtime.inference.load_bundle` reads; its IR
and filterbank paths are relative to the bundle folder, so the folder can be
uploaded to Kaggle as is.

Modules:

- `checks`: checks of the inputs (options, ensemble definition, window arrays, checkpoints).
- `convert`: torch -> OpenVINO IR conversion and the IR files.
- `quantize`: NNCF int8 quantization, the input standardisation kept in f32.
- `scoring`: running IRs and torch wrappers on windows; AUCs; scoring a written bundle.
- `member`: one member: checkpoint, IRs, gate scores.
- `gate`: the accuracy gate and the fp16 fallback.
- `bundle`: ``bundle.json`` and the mel filterbank files.
- `ensemble`: `export_ensemble`, the whole export into one atomically written folder.
- `windows`: calibration, gate and labelled soundscape windows.
- `stage`: `export_stage`, the Snakemake stage with its manifest.
- `teacher`: the bundle's teacher (``ensemble.teacher_weight`` > 0): entry, mapping, files; an ONNX
  Perch converted to IR (int8 behind the teacher's own gate, else f32) for the ensemble model.
- `teacher_windows`: the compiled teacher's calibration and gate audio, from the recordings' audio.
- `kaggle`: packing a bundle for Kaggle (``python -m birdclef.export.kaggle``).
"""

from birdclef.export.bundle import window_frames
from birdclef.export.ensemble import export_ensemble
from birdclef.export.gate import ExportGateError
from birdclef.export.stage import export_stage
from birdclef.export.windows import MAX_EVAL_WINDOWS, cache_windows, gate_targets, gate_windows

__all__ = [
    "MAX_EVAL_WINDOWS",
    "ExportGateError",
    "cache_windows",
    "export_ensemble",
    "export_stage",
    "gate_targets",
    "gate_windows",
    "window_frames",
]
