"""Torch -> OpenVINO IR: convert a member's `InferenceWrapper`, and the IR files it is written to."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import openvino as ov
import torch

INPUT_NAME = "mel_db"
OUTPUT_NAME = "probabilities"


def _ir_files(xml: Path) -> list[Path]:
    return [xml, xml.with_suffix(".bin")]


def _ir_bytes(xml: Path) -> int:
    return sum(path.stat().st_size for path in _ir_files(xml) if path.exists())


def _convert(wrapper, example: np.ndarray, n_mels: int, frames: int):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.trace deprecation
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        ov_model = ov.convert_model(
            wrapper, example_input=torch.from_numpy(example), input=[(-1, 1, n_mels, frames)]
        )
    ov_model.inputs[0].get_tensor().set_names({INPUT_NAME})
    ov_model.outputs[0].get_tensor().set_names({OUTPUT_NAME})
    return ov_model
