"""The report figures (birdclef.report), drawn from small synthetic artifacts without Snakemake."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Text
from PIL import Image

from birdclef import report
from birdclef.catalog import DataError
from birdclef.report import training as report_training

CLASSES = ["aaa1", "bbb1", "ccc1"]
MEL = {"sample_rate": 32000, "n_fft": 1024, "hop_length": 512, "n_mels": 64, "fmin": 50,
       "fmax": 14000, "top_db": 80, "window_seconds": 5}


def texts(figure) -> str:
    """Every piece of text drawn on a figure (titles, labels, ticks, legends), one per line."""
    return "\n".join(t.get_text() for t in figure.findobj(Text) if t.get_text())


def axis_labels(figure) -> list[str]:
    return [label for axis in figure.axes for label in (axis.get_xlabel(), axis.get_ylabel()) if label]


def assert_png(path: Path, min_width: int = 500, min_height: int = 250) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as image:
        width, height = image.size
    assert min_width <= width <= 4000 and min_height <= height <= 6000, (path, image.size)
    assert not list(path.parent.glob(f".{path.name}.*")), "temporary file left behind"


@pytest.fixture
def taxonomy(tmp_path: Path) -> Path:
    path = tmp_path / "taxonomy.csv"
    pd.DataFrame({
        "primary_label": CLASSES,
        "inat_taxon_id": [1, 2, 3],
        "scientific_name": ["A a", "B b", "C c"],
        "common_name": ["Azure Whistler", "Buzzing Hermit", None],
        "class_name": ["Aves"] * 3,
    }).to_csv(path, index=False)
    return path


def catalog_frame() -> pd.DataFrame:
    rows = []
    for k, (label, collection) in enumerate([("aaa1", "XC")] * 4 + [("aaa1", "iNat"), ("bbb1", "XC")]):
        rows.append({"primary_label": label, "filename": f"{label}/XC{k}.ogg", "collection": collection,
                     "duration_s": 5.0 + 3 * k, "secondary_labels": []})
    return pd.DataFrame(rows)


def mel_index(n_frames: int = 400) -> pd.DataFrame:
    rows = []
    labels = ["aaa1", "aaa1", "bbb1", "bbb1", "ccc1", "ccc1"]
    for k, label in enumerate(labels):
        rows.append({"filename": f"{label}/XC{k}.ogg", "primary_label": label,
                     "secondary_labels": ["bbb1"] if k == 0 else [], "collection": "XC",
                     "rating": 4.0 - k % 2, "offset": k * n_frames, "frames": n_frames,
                     "seconds": n_frames * 512 / 32000})
    return pd.DataFrame(rows)


def test_class_names_read_common_name_and_code():
    taxonomy = pd.DataFrame({"primary_label": ["aaa1", "bbb1", "1234"],
                             "common_name": ["Azure Whistler", None, "1234"]})
    assert report.class_names(taxonomy) == {"aaa1": "Azure Whistler (aaa1)", "bbb1": "bbb1", "1234": "1234"}


def test_data_figures_show_every_class_duration_and_collection(tmp_path, taxonomy):
    catalog = catalog_frame()
    catalog.to_parquet(tmp_path / "catalog.parquet")
    out = {name: tmp_path / "report" / f"{name}.png" for name in ("classes", "durations", "collections")}
    report.data_report(str(tmp_path / "catalog.parquet"), str(taxonomy), str(out["classes"]),
                       str(out["durations"]), str(out["collections"]))
    for path in out.values():
        assert_png(path)

    _, names = report.read_class_names(taxonomy)
    figure = report.plot_recordings_per_class(catalog, CLASSES, names, tmp_path / "c.png")
    ticks = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    # Every taxonomy class, the one without recordings too; most recorded on top.
    assert ticks[::-1] == ["Azure Whistler (aaa1)", "Buzzing Hermit (bbb1)", "ccc1"]
    assert axis_labels(figure) == ["recordings", "audio (minutes)"]
    assert "2 of 3 classes with recordings" in figure._suptitle.get_text()
    assert "XC" in texts(figure) and "iNat" in texts(figure)

    figure = report.plot_durations(catalog, tmp_path / "d.png")
    assert axis_labels(figure) == ["recording duration (s)", "recordings"]
    assert "median" in texts(figure)
    figure = report.plot_collections(catalog, tmp_path / "k.png")
    assert {"recordings", "audio (minutes)", "classes with recordings"} <= set(axis_labels(figure))


def test_vad_figures_mark_the_cut_speech(tmp_path, taxonomy):
    import soundfile as sf

    rate = MEL["sample_rate"]
    rng = np.random.default_rng(0)
    t = np.arange(6 * rate) / rate
    wave = (0.2 * np.sin(2 * np.pi * 2000 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    sf.write(tmp_path / "orig.flac", wave, rate)
    sf.write(tmp_path / "clean.flac", wave[: 4 * rate], rate)
    catalog = pd.DataFrame({
        "filename": ["aaa1/a.ogg", "bbb1/b.ogg", "bbb1/c.ogg"],
        "primary_label": ["aaa1", "bbb1", "bbb1"],
        "collection": ["XC", "XC", "iNat"],
        "path": [str(tmp_path / "orig.flac")] * 3,
        "audio_path": [str(tmp_path / "clean.flac"), str(tmp_path / "orig.flac"), str(tmp_path / "orig.flac")],
        "duration_s": [6.0, 6.0, 6.0],
        "speech_seconds": [1.8, 0.0, 4.0],
        "speech_fraction": [0.3, 0.0, 0.67],
        "vad_status": ["cleaned", "clean", "dropped"],
        "vad_dropped": [False, False, True],
    })
    spans = pd.DataFrame({"filename": ["aaa1/a.ogg", "aaa1/a.ogg", "bbb1/c.ogg"],
                          "start_s": [1.0, 3.0, 0.0], "end_s": [2.0, 3.8, 4.0], "max_prob": [0.9] * 3})
    manifest = {"settings": {"pad_seconds": 0.1}, "headline": {
        "files_scanned": 3,
        "speech_seconds_removed_by_collection": {"XC": 2.2},
        "dropped_audio_seconds_by_collection": {"iNat": 6.0},
        "audio_seconds_scanned_by_collection": {"XC": 12.0, "iNat": 6.0},
        "a_key_added_later": 1,
    }}
    catalog.to_parquet(tmp_path / "vad.parquet")
    spans.to_parquet(tmp_path / "spans.parquet")
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    removed, example = tmp_path / "out/removed.png", tmp_path / "out/example.png"
    report.vad_report(str(tmp_path / "vad.parquet"), str(tmp_path / "spans.parquet"),
                      str(tmp_path / "manifest.json"), str(taxonomy), MEL, str(removed), str(example))
    assert_png(removed)
    assert_png(example)

    figure = report.plot_vad_removed(catalog, manifest["headline"], tmp_path / "r.png")
    text = texts(figure)
    assert "2.2 s = 18.3% of 0.2 min scanned" in text and "6.0 s = 100.0%" in text
    assert "speech cut out" in text and "dropped (mostly speech)" in text
    assert "audio removed (s)" in axis_labels(figure)

    assert report.pick_vad_example(catalog, spans)["filename"] == "aaa1/a.ogg"
    figure = report.plot_vad_example(wave, wave[: 4 * rate], [(1.0, 2.0), (3.0, 3.8)], MEL,
                                     "aaa1/a.ogg", tmp_path / "e.png", pad_seconds=0.1)
    assert [a.get_ylabel() for a in figure.axes[:2]] == ["frequency (kHz)", "frequency (kHz)"]
    assert figure.axes[1].get_xlabel() == "time (s)"
    assert figure.axes[2].get_ylabel() == "power (dB below the recording's peak)"  # the colour bar
    assert "speech found by VAD" in texts(figure)
    # Two shaded spans and their padded outlines on the original's spectrogram.
    assert len(figure.axes[0].patches) == 4


def test_vad_report_without_speech_says_so(tmp_path, taxonomy):
    catalog = pd.DataFrame({"filename": ["aaa1/a.ogg"], "primary_label": ["aaa1"], "collection": ["XC"],
                            "duration_s": [5.0], "speech_seconds": [0.0], "vad_status": ["clean"]})
    catalog.to_parquet(tmp_path / "vad.parquet")
    pd.DataFrame(columns=["filename", "start_s", "end_s", "max_prob"]).to_parquet(tmp_path / "spans.parquet")
    headline = {"files_scanned": 1, "speech_seconds_removed_by_collection": {"XC": 0.0},
                "dropped_audio_seconds_by_collection": {}, "audio_seconds_scanned_by_collection": {"XC": 5.0}}
    (tmp_path / "manifest.json").write_text(json.dumps({"headline": headline}))
    report.vad_report(str(tmp_path / "vad.parquet"), str(tmp_path / "spans.parquet"),
                      str(tmp_path / "manifest.json"), str(taxonomy), MEL,
                      str(tmp_path / "removed.png"), str(tmp_path / "example.png"))
    assert_png(tmp_path / "removed.png")
    assert_png(tmp_path / "example.png", min_height=200)
    figure = report.plot_vad_removed(catalog, headline, tmp_path / "r.png")
    assert "0.0 s = 0.0% of 0.1 min scanned" in texts(figure)


def test_vad_removed_says_when_vad_is_disabled(tmp_path):
    # vad.enabled false: birdclef.vad scans nothing but still writes every headline key.
    catalog = pd.DataFrame({"filename": ["aaa1/a.ogg", "bbb1/b.ogg"], "primary_label": ["aaa1", "bbb1"],
                            "collection": ["XC", "iNat"], "duration_s": [5.0, 7.0],
                            "speech_seconds": [0.0, 0.0], "vad_status": ["not_scanned"] * 2})
    headline = {"files_scanned": 0, "speech_seconds_removed_by_collection": {},
                "dropped_audio_seconds_by_collection": {}, "audio_seconds_scanned_by_collection": {}}
    figure = report.plot_vad_removed(catalog, headline, tmp_path / "removed.png")
    assert_png(tmp_path / "removed.png", min_height=200)
    text = texts(figure)
    assert "VAD disabled" in text and "no recording was scanned" in text
    assert "scanned removed" not in text and "min scanned" not in text  # no claim that audio was scanned
    assert axis_labels(figure) == []


def test_mel_examples_come_in_pages_of_classes(tmp_path):
    index = mel_index()
    rng = np.random.default_rng(1)
    mels = (rng.standard_normal((len(index) * 400, MEL["n_mels"])) * 5 - 40).astype(np.float16)
    names = {"aaa1": "Azure Whistler (aaa1)", "bbb1": "bbb1", "ccc1": "ccc1", "ddd1": "Dodo (ddd1)"}
    out = tmp_path / "examples"
    figures = report.plot_mel_examples(mels, index, ["aaa1", "bbb1", "ccc1", "ddd1"], names, MEL, out,
                                       per_page=3)
    assert sorted(p.name for p in out.iterdir()) == ["classes_1-3.png", "classes_4-4.png"]
    for path in out.iterdir():
        assert_png(path, min_width=300, min_height=200)
    first = texts(figures[0])
    assert "Azure Whistler (aaa1)" in first and "time in the recording (s)" in first
    assert "frequency (kHz)" in first and "classes 1-3 of 4" in first
    # The best-rated recording of a class is shown; a class without one says so.
    assert "XC0.ogg" in first
    assert "no recording\nin the cache" in texts(figures[1])
    # The window is as long as training's (birdclef.mels.window_frames: 313 frames of 5 s).
    left, right, _, _ = figures[0].axes[0].get_images()[0].get_extent()
    assert (right - left) * MEL["sample_rate"] / MEL["hop_length"] == pytest.approx(313)


def test_loudest_window_finds_the_call():
    mel = np.full((100, 4), -60.0, dtype=np.float32)
    mel[70:80] = 0.0
    start = report.loudest_window(mel, 20, 5)
    assert start <= 70 and start + 20 >= 80


def test_training_curves_draw_every_fold(tmp_path):
    metrics_paths = []
    for fold in (0, 1):
        history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "oof_auc": 0.5 + 0.04 * e}
                   for e in range(1, 6)]
        path = tmp_path / f"fold{fold}" / "metrics.json"
        path.parent.mkdir()
        path.write_text(json.dumps({"fold": fold, "epochs": history, "best_epoch": 5,
                                    "settings": {"loss": "bce"}, "n_pseudo": 0, "new_key": {}}))
        metrics_paths.append(str(path))
    out = tmp_path / "curves.png"
    report.training_report(metrics_paths, "tiny, round 0: training curves", str(out))
    assert_png(out)
    histories = {f: json.loads(Path(p).read_text())["epochs"] for f, p in enumerate(metrics_paths)}
    figure = report.plot_training_curves(histories, "tiny", tmp_path / "c.png", loss_name="bce loss",
                                         best_epochs={0: 5, 1: 5})
    assert axis_labels(figure) == ["epoch", "bce loss (mean per sample)", "epoch",
                                   "OOF macro ROC-AUC (validation fold)"]
    loss_axis, auc_axis = figure.axes
    assert len(loss_axis.get_lines()) == 4  # train and validation per fold
    legend = {t.get_text() for t in auc_axis.get_legend().get_texts()}
    assert legend == {"fold 0 (kept: 0.700 at epoch 5)", "fold 1 (kept: 0.700 at epoch 5)"}


def test_oof_per_class_auc_pools_the_folds(tmp_path, taxonomy):
    index = mel_index()
    index.to_parquet(tmp_path / "index.parquet")
    paths = []
    for fold, rows in enumerate((index.iloc[::2], index.iloc[1::2])):
        oof = pd.DataFrame({"filename": rows["filename"].to_numpy(), "fold": fold})
        for label in CLASSES:
            oof[label] = (rows["primary_label"] == label).astype(float).to_numpy() * 0.8 + 0.1
        oof["provenance"] = "ignored"
        path = tmp_path / f"oof{fold}.parquet"
        oof.to_parquet(path)
        paths.append(str(path))
    auc, positives = report.oof_per_class(paths, index, CLASSES)
    assert auc == {"aaa1": 1.0, "bbb1": pytest.approx(7.5 / 9), "ccc1": 1.0}
    assert positives == {"aaa1": 2, "bbb1": 3, "ccc1": 2}
    out = tmp_path / "auc.png"
    report.oof_report(paths, str(tmp_path / "index.parquet"), str(taxonomy), "tiny, round 0", str(out))
    assert_png(out)
    _, names = report.read_class_names(taxonomy)
    figure = report.plot_per_class_auc({**auc, "ccc1": float("nan")}, positives, names, "tiny",
                                       "ROC-AUC", tmp_path / "x.png")
    ticks = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert ticks[-1] == "Buzzing Hermit (bbb1)"  # the worst class on top
    assert ticks[0] == "ccc1"  # an unscored class at the bottom, said so
    assert "not scored (2 positive recordings)" in texts(figure)
    assert "0.833  (3 positive recordings)" in texts(figure)
    assert "macro ROC-AUC 0.917 over 2 scored classes" in figure.axes[0].get_title()


def test_oof_per_class_refuses_overlapping_folds(tmp_path):
    index = mel_index()
    paths = []
    for fold, rows in enumerate((index.iloc[:4], index.iloc[3:])):  # XC3 is in both folds
        oof = pd.DataFrame({"filename": rows["filename"].to_numpy(), "fold": fold,
                            **{label: 0.5 for label in CLASSES}})
        oof.to_parquet(tmp_path / f"oof{fold}.parquet")
        paths.append(str(tmp_path / f"oof{fold}.parquet"))
    with pytest.raises(ValueError, match="out of fold in two members"):
        report.oof_per_class(paths, index, CLASSES)


def test_round_scores_draw_the_soundscape_score_beside_the_oof_score(tmp_path):
    scores = pd.DataFrame({"round": [0, 0, 1, 1], "backbone": ["tiny"] * 4,
                           "oof_auc": [0.7, 0.71, 0.8, 0.81], "soundscape_auc": [0.6, None, 0.65, 0.7]})
    figure = report.plot_round_scores(scores, tmp_path / "scores.png")
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert "tiny: labelled soundscapes (held-out sites)" in labels
    assert (tmp_path / "scores.png").stat().st_size > 0


def test_pseudo_rounds_show_scores_and_label_shift(tmp_path, taxonomy, monkeypatch):
    index = mel_index()
    index.to_parquet(tmp_path / "index.parquet")
    fold_metrics = {}
    for round_ in (0, 1):
        fold_metrics[round_] = []
        for fold in (0, 1):
            # The folder name says nothing: backbone and score come from metrics.json.
            path = tmp_path / f"run{round_}" / f"f{fold}" / "metrics.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps({"backbone": "tiny", "fold": fold, "epochs": [],
                                        "oof_auc": 0.7 + 0.1 * round_ + 0.01 * fold,
                                        "soundscape_auc": 0.6 + 0.1 * round_ if fold else None}))
            fold_metrics[round_].append(str(path))
    labels = pd.DataFrame({"row_id": ["s_5", "s_10"], "soundscape": ["s", "s"], "end_s": [5, 10],
                           "aaa1": [0.9, 0.8], "bbb1": [0.1, 0.0], "ccc1": [0.0, 0.2]})
    # As birdclef.pseudo writes it: the mean soft label per class over the kept windows.
    manifest = {"headline": {"windows": 3, "windows_kept": 2},
                "label_distribution": {"before": {}, "after": labels[CLASSES].mean().to_dict()}}
    (tmp_path / "pseudo.json").write_text(json.dumps(manifest))
    drawn = {}
    # pseudo_report looks its plotters up in birdclef.report.training.
    monkeypatch.setattr(report_training, "plot_round_scores", lambda frame, out: drawn.update(scores=frame))
    monkeypatch.setattr(report_training, "plot_label_shift",
                        lambda distributions, classes, names, out: drawn.update(shift=distributions))
    report.pseudo_report(fold_metrics, {1: str(tmp_path / "pseudo.json")}, str(tmp_path / "index.parquet"),
                         str(taxonomy), str(tmp_path / "scores.png"), str(tmp_path / "shift.png"))
    scores = drawn["scores"]
    assert scores[["round", "backbone", "oof_auc"]].to_dict("list") == {
        "round": [0, 0, 1, 1], "backbone": ["tiny"] * 4, "oof_auc": pytest.approx([0.7, 0.71, 0.8, 0.81])}
    # The held-out labelled soundscape score rides along (missing where a fold has none).
    assert scores["soundscape_auc"].tolist()[1::2] == pytest.approx([0.6, 0.7])
    assert scores["soundscape_auc"].isna().tolist() == [True, False, True, False]
    shift = drawn["shift"]
    assert list(shift) == ["labelled training recordings (primary labels)", "round 1 pseudo-labels (2 windows)"]
    # The manifest's per-class means give the shares of the summed labels.
    assert shift["round 1 pseudo-labels (2 windows)"] == pytest.approx(report.label_distribution(labels, CLASSES))
    assert shift["labelled training recordings (primary labels)"] == pytest.approx([1 / 3] * 3)
    # Labels name the backbone entries (one timm model on two mel configurations).
    labels_of = {path: f"tiny-{fold}" for paths in fold_metrics.values() for fold, path in enumerate(paths)}
    report.pseudo_report(fold_metrics, {1: str(tmp_path / "pseudo.json")}, str(tmp_path / "index.parquet"),
                         str(taxonomy), str(tmp_path / "scores.png"), str(tmp_path / "shift.png"),
                         backbone_labels=labels_of)
    assert drawn["scores"]["backbone"].tolist() == ["tiny-0", "tiny-1", "tiny-0", "tiny-1"]
    monkeypatch.undo()
    scores, shift_png = tmp_path / "scores.png", tmp_path / "shift.png"
    report.pseudo_report(fold_metrics, {1: str(tmp_path / "pseudo.json")}, str(tmp_path / "index.parquet"),
                         str(taxonomy), str(scores), str(shift_png))
    assert_png(scores)
    assert_png(shift_png)

    frame = pd.DataFrame({"round": [0, 0, 1, 1], "backbone": ["tiny"] * 4, "oof_auc": [0.7, 0.71, 0.8, 0.81]})
    figure = report.plot_round_scores(frame, tmp_path / "s.png")
    assert axis_labels(figure) == ["training round", "macro ROC-AUC (OOF folds; dashed: held-out soundscapes)"]
    assert "0.705" in texts(figure) and "0.805" in texts(figure)
    shares = report.label_distribution(labels, CLASSES)
    assert shares == pytest.approx([0.85, 0.05, 0.1])
    assert report.total_variation([1, 0], [0, 1]) == 1.0
    figure = report.plot_label_shift({"labelled": np.array([1 / 3] * 3), "round 1": shares}, CLASSES,
                                      {"aaa1": "Azure Whistler (aaa1)"}, tmp_path / "l.png")
    assert "TV distance from previous 0.517" in texts(figure)
    assert axis_labels(figure) == ["share of the label mass (%)"]


def test_ensemble_members_figure(tmp_path):
    # The member name says nothing of the round: the `round` key does.
    ensemble = {"combine": "mean", "oof_auc": 0.86, "classes": CLASSES, "future_key": [1],
                "members": [{"name": "m0", "backbone": "tiny", "fold": 0, "round": 1, "weight": 0.5,
                             "oof_auc": 0.84, "checkpoint": "x"},
                            {"name": "m1", "backbone": "tiny", "fold": 1, "round": 1, "weight": 0.5,
                             "oof_auc": None}]}
    path = tmp_path / "ensemble.json"
    path.write_text(json.dumps(ensemble))
    report.ensemble_report(str(path), str(tmp_path / "members.png"))
    assert_png(tmp_path / "members.png")
    figure = report.plot_ensemble_members(ensemble, tmp_path / "m.png")
    text = texts(figure)
    assert "tiny, round 1, fold 0" in text and "0.840  (weight 0.50)" in text
    assert "no OOF rows" in text
    assert "ensemble OOF 0.860 (recordings every backbone predicted out of fold)" in text
    assert figure.axes[0].get_title() == "Ensemble members (mean of 2 models)"

    # With ensemble.soup a member carries its kept ingredients; their rounds come from the rule.
    rounds = {"results/train/tiny-r0-aa/fold0/best.pt": 0, "results/train/tiny-r1-bb/fold0/best.pt": 1,
              "results/train/tiny-r1-bb/fold1/best.pt": 1}
    ensemble = {**ensemble, "combine": "rank_mean", "members": [
        {**ensemble["members"][0], "soup": ["results/train/tiny-r1-bb/fold0/best.pt",
                                            "results/train/tiny-r0-aa/fold0/best.pt"]},
        {**ensemble["members"][1], "soup": ["results/train/tiny-r1-bb/fold1/best.pt"]}]}
    path.write_text(json.dumps(ensemble))
    report.ensemble_report(str(path), str(tmp_path / "soup.png"), rounds)
    assert_png(tmp_path / "soup.png")
    figure = report.plot_ensemble_members(ensemble, tmp_path / "s.png", rounds)
    ticks = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert ticks == ["tiny, soup r0+r1, fold 0", "tiny, soup r1, fold 1"]
    assert figure.axes[0].get_title() == "Ensemble members (rank_mean of 2 models)"


def test_export_figure_compares_precisions(tmp_path):
    headline = {
        "precision": "int8", "requested_precision": "int8", "threads": 2, "eval_windows": 300,
        "auc": {"torch_fp32": 0.8512, "openvino_f32": 0.8511, "openvino_int8": 0.8490},
        "gate": {"status": "passed", "drop": 0.0021, "max_auc_drop": 0.003, "candidate": "openvino_int8"},
        "ir_bytes_total": {"f32": 4_000_000, "int8": 1_200_000},
        "members": [{"clips_per_second": {"torch_fp32": 100.0, "openvino_f32": 400.0, "openvino_int8": 800.0}},
                    {"clips_per_second": {"torch_fp32": 100.0, "openvino_f32": 400.0, "openvino_int8": 800.0}}],
    }
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"headline": headline}))
    report.export_report(str(path), str(tmp_path / "export.png"))
    assert_png(tmp_path / "export.png")
    figure = report.plot_export(headline, tmp_path / "e.png")
    text = texts(figure)
    assert "OpenVINO int8" in text and "PyTorch f32" in text
    assert "0.8490" in text and "400" in text  # two members at 800 clips/s each: 400 for the ensemble
    assert "gate passed: OpenVINO int8 -0.0021 vs OpenVINO f32 (may lose 0.0030)" in text
    assert any("clips per second" in label for label in axis_labels(figure))
    assert "model files, all members (MB)" in axis_labels(figure) and "1.20" in text and "no IR" in text
    # The held-out labelled soundscape score of the same IRs rides along.
    scored = report.plot_export({**headline, "soundscape_auc": {"openvino_f32": 0.8, "openvino_int8": 0.79},
                                 "soundscape_windows_scored": 36}, tmp_path / "s.png")
    assert "held-out labelled soundscapes (36 windows)" in texts(scored)


def test_submission_figures_score_and_histograms(tmp_path, taxonomy):
    rng = np.random.default_rng(2)
    rows = [f"s{k // 12}_{5 * (k % 12 + 1)}" for k in range(48)]
    truth = pd.DataFrame({"row_id": rows, **{c: (rng.random(48) < 0.3).astype(int) for c in CLASSES}})
    truth["ccc1"] = 0  # never present: not scored
    submission = pd.DataFrame({"row_id": rows, **{c: np.clip(truth[c] * 0.6 + rng.random(48) * 0.4, 0, 1)
                                                   for c in CLASSES}})
    submission.to_csv(tmp_path / "submission.csv", index=False)
    truth.to_csv(tmp_path / "truth.csv", index=False)
    histograms, score = tmp_path / "histograms", tmp_path / "score.png"
    report.submission_report(str(tmp_path / "submission.csv"), str(taxonomy), str(histograms),
                             str(tmp_path / "truth.csv"))
    report.submission_score_report(str(tmp_path / "submission.csv"), str(tmp_path / "truth.csv"),
                                   str(taxonomy), str(score))
    assert [p.name for p in histograms.iterdir()] == ["classes_1-3.png"]
    assert_png(histograms / "classes_1-3.png")
    assert_png(score)

    _, names = report.read_class_names(taxonomy)
    (figure,) = report.plot_prediction_histograms(submission, truth, CLASSES, names, tmp_path / "h")
    text = texts(figure)
    assert "windows with the species (ground truth)" in text and "windows without the species" in text
    present = int(truth["aaa1"].sum())
    assert f"Azure Whistler (aaa1)\npresent in {present} of 48 windows" in text
    assert "predicted probability" in axis_labels(figure)
    (figure,) = report.plot_prediction_histograms(submission, None, CLASSES, names, tmp_path / "h2")
    assert "no ground truth" in figure._suptitle.get_text()
    auc, positives = report.submission_per_class(submission, truth, CLASSES)
    assert auc["aaa1"] == 1.0 and np.isnan(auc["ccc1"]) and positives["ccc1"] == 0
    # Rows of the submission the ground truth lacks are an error, as when the stage scores it.
    partial = truth.iloc[1:]
    with pytest.raises(DataError, match="ground truth lacks rows"):
        report.submission_per_class(submission, partial, CLASSES)
    with pytest.raises(DataError, match="ground truth lacks rows"):
        report.plot_prediction_histograms(submission, partial, CLASSES, names, tmp_path / "h3")
    assert not (tmp_path / "h3").exists()


def test_teacher_mapping_counts_classes_per_class_group(tmp_path):
    labels = ["aaa1", "bbb1", "ccc1", "frog1", "frog2", "son1", "son2", "son3"]
    pd.DataFrame({
        "primary_label": labels,
        "scientific_name": ["A a", "B b", "C c", "Rana x", "Rana y", "Son 1", "Son 2", "Son 3"],
        "common_name": labels,
        "class_name": ["Aves"] * 3 + ["Amphibia"] * 2 + ["Insecta"] * 3,
    }).to_csv(tmp_path / "taxonomy.csv", index=False)
    status = ["matched", "matched", "genus", "matched", "unmatched", "unmatched", "unmatched", "unmatched"]
    pd.DataFrame({
        "primary_label": labels,
        "scientific_name": ["A a", "B b", "C c", "Rana x", "Rana y", "Son 1", "Son 2", "Son 3"],
        "status": status,
        "teacher_indices": [[0], [1], [2, 3], [4], [], [], [], []],
        "teacher_names": [["A a"], ["B b"], ["C d", "C e"], ["Rana x"], [], [], [], []],
    }).to_parquet(tmp_path / "mapping.parquet", index=False)
    headline = {"model": "birdnet", "runtime": "litert", "windows": 1234,
                "audio_seconds_per_core_second": 56.7, "classes": {"matched": 3, "genus": 1, "unmatched": 4}}
    (tmp_path / "manifest.json").write_text(json.dumps({"headline": headline}))
    out = tmp_path / "teacher" / "class_mapping.png"
    out.parent.mkdir()
    counts = report.teacher_report(str(tmp_path / "mapping.parquet"), str(tmp_path / "manifest.json"),
                                   str(tmp_path / "taxonomy.csv"), str(out))
    assert_png(out)
    assert counts.to_dict("index") == {
        "Aves": {"matched": 2, "genus": 1, "unmatched": 0},
        "Insecta": {"matched": 0, "genus": 0, "unmatched": 3},
        "Amphibia": {"matched": 1, "genus": 0, "unmatched": 1},
    }
    assert list(counts.index) == ["Aves", "Insecta", "Amphibia"]  # largest group first, ties by name
    figure = report.plot_teacher_mapping(counts, headline, tmp_path / "t.png")
    text = texts(figure)
    assert "Teacher birdnet on litert: 4 of 8 classes mapped (50%)" in text
    assert "1,234 windows" in text and "57 s of audio per core-second" in text
    assert "matched" in text and "by genus" in text and "unmatched" in text
    assert "Aves (3)" in text and "Insecta (3)" in text and "Amphibia (2)" in text
    # Without class_name every class is one group.
    flat = report.mapping_counts_by_group(pd.read_parquet(tmp_path / "mapping.parquet"),
                                          pd.DataFrame({"primary_label": labels}))
    assert flat.to_dict("index") == {"all classes": {"matched": 3, "genus": 1, "unmatched": 4}}
