"""The demo folder's fixed shape: column orders, the 5 s window and its label rule,
the size of the sample submission, the number of sites and the random-stream ids."""

from __future__ import annotations

# train.csv columns in the order of the 2026 file (the 2025 columns, reordered,
# plus class_name and inat_taxon_id).
TRAIN_COLUMNS_2026 = [
    "primary_label",
    "secondary_labels",
    "type",
    "latitude",
    "longitude",
    "scientific_name",
    "common_name",
    "class_name",
    "inat_taxon_id",
    "author",
    "license",
    "rating",
    "url",
    "filename",
    "collection",
]
TAXONOMY_COLUMNS = [
    "primary_label",
    "inat_taxon_id",
    "scientific_name",
    "common_name",
    "class_name",
]
WINDOW_SECONDS = 5
# A species is present in a 5 s test window when one of its calls overlaps the
# window by at least this long (or by half the call, for calls shorter than 1 s).
MIN_OVERLAP_SECONDS = 0.5
# Rows of sample_submission.csv: the first windows of the first test soundscape
# (Kaggle's sample lists a few rows; the hidden test set is not listed).
SAMPLE_SUBMISSION_ROWS = 3
# Recording sites the soundscapes come from (S01..S09, drawn from the seed).
N_SITES = 4

# Random-stream ids: every random draw comes from default_rng([seed, stream, index]).
_STREAM_META = 0
_STREAM_RECORDING = 1
_STREAM_TRAIN_SOUNDSCAPE = 2
_STREAM_TEST_SOUNDSCAPE = 3
