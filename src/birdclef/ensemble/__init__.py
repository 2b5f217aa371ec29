"""The ensemble stage: weights, optional model soups and the scores of the final round's models.

Modules: `definition` (torch-free: member weights, OOF and labelled-soundscape
scores, the definition written to ``ensemble.json``), `soup` (greedy weight
averaging of one fold's checkpoints over rounds; torch) and `stage` (the
Snakemake stage, `ensemble_stage`). The package re-exports the torch-free
definition API only, so the report can read OOF scores without loading torch;
import the stage and the soup from their modules.
"""

from birdclef.ensemble.definition import (
    WEIGHT_GRID,
    backbone_oof,
    build_ensemble,
    check_mel_groups,
    ensemble_oof,
    fit_weights,
    soundscape_predictions,
)

__all__ = [
    "WEIGHT_GRID",
    "backbone_oof",
    "build_ensemble",
    "check_mel_groups",
    "ensemble_oof",
    "fit_weights",
    "soundscape_predictions",
]
