"""The Perch-sized stand-in (tests/perch_sized_standin.py, for bench_inference --teacher): its no-DFT
front end computes a log-mel spectrogram, and its ONNX file has Perch v2's exact interface and
size and loads in `PerchTeacher` on ONNX Runtime and OpenVINO, agreeing with the torch module."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf
import torch
from conftest import REAL_AUDIO
from perch_sized_standin import (
    FRONT_END,
    LOG_FLOOR,
    PERCH_CLASSES,
    PERCH_EMBEDDING_DIM,
    PERCH_WINDOW,
    ConvFrontEnd,
    build_perch_sized_standin,
    parameter_count,
)
from teacher_standin import standin_names, write_perch_labels

from birdclef.runtime.features import mel_filterbank
from birdclef.runtime.teacher.perch import PerchTeacher


def real_windows(count: int) -> np.ndarray:
    """`count` consecutive 5 s windows of the real one-minute soundscape (32 kHz)."""
    wave, rate = sf.read(REAL_AUDIO / "soundscape_1min.flac", dtype="float32", always_2d=True)
    assert rate == 32000
    return wave.mean(axis=1)[: count * PERCH_WINDOW].reshape(count, PERCH_WINDOW)


@pytest.fixture(scope="module")
def perch_sized(tmp_path_factory):
    root = tmp_path_factory.mktemp("perch_sized")
    model = build_perch_sized_standin(root / "perch.onnx", real_windows(4), seed=1, matmul_path=root / "matmul.onnx")
    return root, model, write_perch_labels(root / "labels.txt", standin_names())


@pytest.mark.parametrize("stft", ["conv", "matmul"])
def test_front_end_is_a_log_mel_spectrogram(stft):
    """The DFT kernels (Conv1d, or framing + MatMul) give numpy's rfft log-mel of Hann frames, 500 for 5 s."""
    settings = {**FRONT_END, "n_mels": 64}
    front = ConvFrontEnd(**settings, stft=stft).eval()
    wave = real_windows(1)[0]
    with torch.no_grad():
        got = front(torch.from_numpy(wave[None]))[0, 0].numpy()
    pad = (settings["frame"] - settings["hop"]) // 2
    padded = np.pad(wave.astype(np.float64), pad)
    starts = np.arange(0, len(padded) - settings["frame"] + 1, settings["hop"])
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(settings["frame"]) / settings["frame"])
    frames = np.stack([padded[s : s + settings["frame"]] for s in starts]) * hann
    power = np.abs(np.fft.rfft(frames, n=settings["n_fft"], axis=1)) ** 2
    bank = mel_filterbank({"sample_rate": 32000, **{k: settings[k] for k in ("n_fft", "n_mels", "fmin", "fmax")}})
    expected = np.log(np.maximum(bank @ power.T, LOG_FLOOR))
    assert got.shape == expected.shape == (64, 500)
    assert np.abs(got - expected).max() < 2e-2
    assert expected.std() > 1.0  # real audio: the bands differ


@pytest.mark.parametrize("name", ["perch.onnx", "matmul.onnx"])
def test_onnx_has_perch_v2_interface_and_size(perch_sized, name):
    root, model, _ = perch_sized
    graph = onnx.load(str(root / name), load_external_data=False).graph

    def shape(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert [(v.name, shape(v)) for v in graph.input] == [("inputs", ["batch", PERCH_WINDOW])]
    assert [(v.name, shape(v)) for v in graph.output] == [
        ("embedding", ["batch", PERCH_EMBEDDING_DIM]), ("label", ["batch", PERCH_CLASSES])]
    assert not {node.op_type for node in graph.node} & {"DFT", "STFT"}  # the no-DFT front end
    assert 30e6 < parameter_count(model) < 40e6  # EfficientNet-B3 body + the 1536 x 14795 head


@pytest.mark.parametrize(("name", "runtime"), [("perch.onnx", "onnxruntime"), ("perch.onnx", "openvino"),
                                               ("matmul.onnx", "openvino")])
def test_perch_teacher_loads_it_and_matches_torch(perch_sized, name, runtime):
    root, model, labels = perch_sized
    teacher = PerchTeacher(root / name, labels, runtime=runtime, threads=1, batch_windows=2)
    assert teacher.fixed_batch is None
    waves = real_windows(7)[4:]  # windows the BatchNorm statistics were not set from
    embeddings, logits = teacher.infer(waves)
    assert embeddings.shape == (3, PERCH_EMBEDDING_DIM) and logits.shape == (3, PERCH_CLASSES)
    with torch.no_grad():
        ref_embeddings, ref_logits = (t.numpy() for t in model(torch.from_numpy(waves)))
    assert np.abs(logits - ref_logits).max() < 1e-3 * (1 + np.abs(ref_logits).max())
    assert np.abs(embeddings - ref_embeddings).max() < 1e-3 * (1 + np.abs(ref_embeddings).max())
    # BN statistics from real audio: logits move between windows, not a constant
    assert logits.std(axis=0).mean() > 1e-3


def test_windows_must_be_perch_windows(tmp_path: Path):
    with pytest.raises(ValueError, match=r"windows: expected float32 \[n >= 2, 160000\]"):
        build_perch_sized_standin(tmp_path / "x.onnx", np.zeros((4, 32000), np.float32))
