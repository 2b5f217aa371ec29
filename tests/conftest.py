"""Shared test helpers: tiny BirdCLEF-layout folders built in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
REAL_AUDIO = REPO.parent / "shared" / "data" / "real-audio"


def tone(seconds: float, freq: float, sample_rate: int = 32000, seed: int = 0) -> np.ndarray:
    """A tone with a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture
def mini_dataset(tmp_path: Path) -> Path:
    """A three-class BirdCLEF-layout folder: train.csv, taxonomy.csv, train_audio/."""
    root = tmp_path / "data"
    labels = ["aaa1", "bbb1", "ccc1"]
    pd.DataFrame(
        {
            "primary_label": labels,
            "inat_taxon_id": [1, 2, 3],
            "scientific_name": ["A a", "B b", "C c"],
            "common_name": ["A", "B", "C"],
            "class_name": ["Aves"] * 3,
        }
    ).to_csv(root.mkdir(parents=True) or root / "taxonomy.csv", index=False)
    rows = []
    for k, label in enumerate(labels):
        for i in range(4):
            name = f"{label}/XC{k}{i}.ogg"
            path = root / "train_audio" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, tone(2.0 + i, 1000 * (k + 1), seed=i), 32000, format="OGG", subtype="VORBIS")
            rows.append(
                {
                    "primary_label": label,
                    "secondary_labels": "['bbb1']" if label == "aaa1" and i == 0 else "[]",
                    "type": "['song']",
                    "filename": name,
                    "collection": "XC",
                    "rating": 4.0,
                    "url": f"https://xeno-canto.org/{k}{i}",
                    "latitude": 0.0,
                    "longitude": 0.0,
                    "scientific_name": "x",
                    "common_name": "x",
                    "author": "me",
                    "license": "CC BY 4.0",
                }
            )
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    return root
