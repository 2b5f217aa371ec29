"""Voice activity detection: find recordists' spoken notes and cut them out.

Training recordings often start or end with the recordist reading a field note
aloud. This stage runs Silero VAD on every scanned recording, writes a cleaned
copy (speech removed, pieces joined with a short equal-power crossfade; 16-bit
FLAC) for each recording with speech, and flags recordings that are mostly
speech so the caller can leave them out of training. Recordings are scanned in
worker processes (fork), one inference thread each, several files per model
call.

Modules:

- settings: constants, `VadSettings` and where the shipped model files are;
- openvino_model: the sequence model compiled by OpenVINO, files batched (the default);
- model: loading a Silero model by kind (the only module that imports `silero_vad`);
- speech: frame probabilities and speech spans of 16 kHz signals;
- cutting: merging padded spans and cutting them out with a crossfade;
- scan: scanning recordings in worker processes, writing cleaned copies;
- run: `run_vad` over a catalog, with its span table and cleaned catalog;
- stats: the run's counts and seconds per collection;
- stage: `vad_stage`, the Snakemake stage (config, outputs, manifest).
"""

from birdclef.vad.cutting import merge_spans, remove_spans
from birdclef.vad.model import load_vad_model
from birdclef.vad.openvino_model import OpenVinoSileroVad
from birdclef.vad.run import run_vad
from birdclef.vad.scan import ScanJob, VadScanError, scan_files
from birdclef.vad.settings import (
    DEFAULT_BATCH_FILES,
    DEFAULT_MODEL_KIND,
    MODEL_ENGINES,
    MODEL_FILES,
    SPAN_COLUMNS,
    VAD_SAMPLE_RATE,
    VadSettings,
)
from birdclef.vad.speech import (
    batch_speech_probabilities,
    detect_speech,
    spans_from_probabilities,
    speech_probabilities,
)
from birdclef.vad.stage import vad_stage

__all__ = [
    "DEFAULT_BATCH_FILES",
    "DEFAULT_MODEL_KIND",
    "MODEL_ENGINES",
    "MODEL_FILES",
    "SPAN_COLUMNS",
    "VAD_SAMPLE_RATE",
    "OpenVinoSileroVad",
    "ScanJob",
    "VadScanError",
    "VadSettings",
    "batch_speech_probabilities",
    "detect_speech",
    "load_vad_model",
    "merge_spans",
    "remove_spans",
    "run_vad",
    "scan_files",
    "spans_from_probabilities",
    "speech_probabilities",
    "vad_stage",
]
