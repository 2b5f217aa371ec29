"""Soundscape inference with an exported OpenVINO bundle: the Kaggle-side code path.

Imports only numpy, pandas, soundfile, openvino (LiteRT for a LiteRT teacher and BirdNET's file) and
the package's torch-free `audio`, `features`, `postprocess` and `teacher` modules, so it runs in a Kaggle notebook
without torch, timm, librosa or Snakemake: the mel filterbanks come from the
bundle's ``mel_filterbank_<g>.npy`` files. (`threadpoolctl` and `soxr` are
used when present.)

Modules:

- `bundle`: `Bundle` (the loaded ensemble; `predict`, `predict_members`), `Member`, `MelGroup`.
- `ensemble`: `ensemble_model`, one OpenVINO model of every member on its mel group's input (and a
  compiled teacher on its audio input, its class mapping in the graph).
- `load`: `load_bundle`, reading ``bundle.json``, filterbanks and IRs and compiling the ensemble.
- `runner`: the asynchronous infer-request runner (`BATCH_WINDOWS` windows per call).
- `windows`: a soundscape's log-mel windows and row ids (`soundscape_windows`, `iter_soundscape_windows`).
- `teacher`: `TeacherBranch`, the bundle's optional teacher (``bundle.json`` ``"teacher"``), checked:
  an IR compiled into the ensemble model (`read_compiled_teacher`) or a model run beside it.
- `soundscapes`: `predict_soundscapes`, the ensemble's probabilities for every window of every file
  (with a teacher: rank-blended with the teacher's).
"""

from birdclef.runtime.inference.load import load_bundle
from birdclef.runtime.inference.runner import BATCH_WINDOWS
from birdclef.runtime.inference.soundscapes import predict_soundscapes
from birdclef.runtime.inference.windows import iter_soundscape_windows, soundscape_windows

__all__ = [
    "BATCH_WINDOWS",
    "iter_soundscape_windows",
    "load_bundle",
    "predict_soundscapes",
    "soundscape_windows",
]
