"""Longer windows: how a 10 or 20 s model's predictions are best spread back to the 5 s rows.

Reads the trained fold models (``best.pt``) of train tags in a `bench/bench_quality.py` workdir
and scores each rule on the real-audio benchmark's test soundscapes (macro ROC-AUC, the folds'
probabilities averaged; torch fp32, no export, no post-processing):

- ``segment attention`` (what the pipeline does: `SEDModel.forward_rows`): m consecutive 5 s
  windows joined, each row the head's attention pooling over its own part of the frames;
- ``segment frame max``: the same chunks, each row the maximum frame logit of its part;
- ``chunk clip``: the same chunks, every row of a chunk the chunk's clip output;
- ``overlapping chunks``: every run of m consecutive windows (stride one window: m times the
  compute), each row the mean clip probability of the chunks that hold it;
- ``one 5 s window``: each window fed alone (the model sees a shorter input than it trained on).

Usage: python bench/bench_context_rules.py --workdir /tmp/bq_context --tags TAG [TAG ...]
[--data ../shared/data/real-benchmark]. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from benchlib import machine, markdown  # noqa: E402

from birdclef.common.metrics import macro_roc_auc  # noqa: E402
from birdclef.runtime.audio import AUDIO_SUFFIXES, decode_audio  # noqa: E402
from birdclef.runtime.features import log_mel, mel_filterbank, window_waves  # noqa: E402
from birdclef.runtime.inference.windows import window_count  # noqa: E402
from birdclef.train.model import join_rows, load_model  # noqa: E402

RULES = ("segment attention", "segment frame max", "chunk clip", "overlapping chunks", "one 5 s window")


def soundscape_mels(data: Path, mel: dict) -> list[tuple[np.ndarray, list[str]]]:
    """Each test soundscape's log-mel windows (as the submission cuts them, plus silent windows past the end up to
    a multiple of 4, as Kaggle inference pads for a context model) and its row ids."""
    filterbank = mel_filterbank(mel)
    out = []
    for path in sorted(p for p in (data / "test_soundscapes").iterdir() if p.suffix.lower() in AUDIO_SUFFIXES):
        wave, _ = decode_audio(path, int(mel["sample_rate"]), repair=True)
        n = window_count(wave.size / int(mel["sample_rate"]), float(mel["window_seconds"]))
        windows = window_waves(wave, int(mel["sample_rate"]), float(mel["window_seconds"]), -(-n // 4) * 4)
        mels = np.stack([log_mel(w, filterbank, mel["n_fft"], mel["hop_length"], mel["top_db"]) for w in windows])
        out.append((mels.astype(np.float32), [f"{path.stem}_{5 * (i + 1)}" for i in range(n)]))
    return out


@torch.no_grad()
def row_probabilities(model, mels: np.ndarray, n_rows: int, rule: str) -> np.ndarray:
    """(n_rows, K) probabilities of one file's windows (`mels`: its rows, then silent windows) under `rule`."""
    m = model.context_windows
    mels = mels[: -(-n_rows // m) * m]
    x = torch.from_numpy(mels[:, None])
    if rule == "segment attention":
        logits = model.forward_rows(x)
    elif rule == "one 5 s window":
        logits = model(x)[0]
    elif rule == "chunk clip":
        logits = model(join_rows(x, m))[0].repeat_interleave(m, 0)
    elif rule == "segment frame max":
        _, frames = model(join_rows(x, m))
        steps = frames.shape[-1]
        parts = [frames[..., s * steps // m:(s + 1) * steps // m].amax(-1) for s in range(m)]
        logits = torch.stack(parts, 1).reshape(-1, frames.shape[1])
    else:  # overlapping chunks, stride one window, over the rows only
        mels = mels[:n_rows]
        x = torch.from_numpy(mels[:, None])
        total = torch.zeros(len(mels), model.head.cla.out_channels)
        count = torch.zeros(len(mels), 1)
        for start in range(max(1, len(mels) - m + 1)):
            rows = [min(start + j, len(mels) - 1) for j in range(m)]
            chunk = torch.cat(list(x[rows]), dim=-1)[None]
            total[rows] += torch.sigmoid(model(chunk)[0])
            count[rows] += 1
        return (total / count).numpy()
    return torch.sigmoid(logits).numpy()[:n_rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--tags", nargs="+", required=True, help="train tags (results/train/<tag>)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "real-benchmark")
    args = parser.parse_args()
    torch.set_num_threads(2)
    truth = pd.read_csv(args.data / "test_ground_truth.csv", dtype={"row_id": str}).set_index("row_id")
    classes = list(truth.columns)
    mel = yaml.safe_load((REPO / "bench" / "quality.yaml").read_text())["mels"]
    files = soundscape_mels(args.data, mel)
    row_ids = [row for _, rows in files for row in rows]
    table = []
    for tag in args.tags:
        paths = sorted((args.workdir / "results" / "train" / tag).glob("fold*/best.pt"))
        models = [load_model(path)[0] for path in paths]
        row = {"train tag": tag, "seconds per example": 5 * models[0].context_windows, "folds": len(models)}
        for rule in RULES:
            probs = np.concatenate([np.mean([row_probabilities(model, mels, len(rows), rule) for model in models],
                                            axis=0) for mels, rows in files])
            frame = pd.DataFrame(probs, index=row_ids, columns=classes)
            row[rule] = round(macro_roc_auc(truth.to_numpy(), frame.loc[truth.index, classes].to_numpy()), 4)
        table.append(row)
    print(f"\nMachine: {machine(['torch'])}; {dt.date.today().isoformat()}; data {args.data} ({len(truth)} test "
          f"windows); torch fp32, the folds' probabilities averaged, no export, no post-processing\n")
    print(markdown(table))


if __name__ == "__main__":
    main()
