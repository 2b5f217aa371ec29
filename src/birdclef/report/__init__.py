"""Figures for `snakemake --report`: what each stage did to the data and to the score.

Every `plot_*` function takes data (DataFrames, dicts, arrays), draws one
matplotlib figure on an Agg canvas (no pyplot state, no display), writes it as
a PNG atomically and returns the Figure, so tests can read its titles and axis
labels. The `*_report` functions read a stage's artifacts (parquet, JSON,
audio, the mel cache) and call the plotters; `workflow_scripts/report_*.py`
call those. Report figures never feed another stage.

Class names read "Common name (code)" from taxonomy.csv wherever a class is
shown.

Modules:

- `figures`: shared helpers (Agg figure, atomic PNG, class names, class-grid pages, mel axes).
- `data`: the data summary of a catalog (recordings and audio per class, durations, collections).
- `vad`: speech removed per collection, and one example recording with its speech spans.
- `mels`: one log-mel window per class from the mel cache, in pages.
- `per_class`: per-class ROC-AUC bars, shared by the OOF and submission-score figures.
- `training`: training curves, per-class OOF ROC-AUC, and the pseudo-label rounds.
- `ensemble`: the ensemble members, and the export's score, speed and size per precision.
- `submission`: per-class prediction histograms and per-class ROC-AUC of a submission.
- `teacher`: the teacher's class mapping (matched, by genus, unmatched) per taxonomy class group.
"""

from birdclef.report.data import (
    data_report,
    plot_collections,
    plot_durations,
    plot_recordings_per_class,
)
from birdclef.report.ensemble import (
    ensemble_report,
    export_report,
    plot_ensemble_members,
    plot_export,
)
from birdclef.report.figures import class_names, read_class_names
from birdclef.report.mels import loudest_window, mels_report, plot_mel_examples
from birdclef.report.per_class import plot_per_class_auc
from birdclef.report.submission import (
    plot_prediction_histograms,
    submission_per_class,
    submission_report,
    submission_score_report,
)
from birdclef.report.teacher import mapping_counts_by_group, plot_teacher_mapping, teacher_report
from birdclef.report.training import (
    label_distribution,
    oof_per_class,
    oof_report,
    plot_label_shift,
    plot_round_scores,
    plot_training_curves,
    pseudo_report,
    total_variation,
    training_report,
)
from birdclef.report.vad import pick_vad_example, plot_vad_example, plot_vad_removed, vad_report

__all__ = [
    "class_names",
    "data_report",
    "ensemble_report",
    "export_report",
    "label_distribution",
    "loudest_window",
    "mapping_counts_by_group",
    "mels_report",
    "oof_per_class",
    "oof_report",
    "pick_vad_example",
    "plot_collections",
    "plot_durations",
    "plot_ensemble_members",
    "plot_export",
    "plot_label_shift",
    "plot_mel_examples",
    "plot_per_class_auc",
    "plot_prediction_histograms",
    "plot_recordings_per_class",
    "plot_round_scores",
    "plot_teacher_mapping",
    "plot_training_curves",
    "plot_vad_example",
    "plot_vad_removed",
    "pseudo_report",
    "read_class_names",
    "submission_per_class",
    "submission_report",
    "submission_score_report",
    "teacher_report",
    "total_variation",
    "training_report",
    "vad_report",
]
