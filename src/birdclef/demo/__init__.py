"""A synthetic BirdCLEF+ 2026 competition folder, so the workflow runs with no download.

`generate_demo` writes the real 2026 layout, file names and column names plus
`test_ground_truth.csv` and `demo_info.json`; `demo_stage` is the workflow's
`demo_data` stage. Modules:

- `layout`: column orders, window and label-rule constants, sites, random-stream ids;
- `species`: the synthetic species (call archetypes, names, taxonomy);
- `calls`: call synthesis, coloured background noise, mixing;
- `speech`: the speech clips shipped as package data (`birdclef/data/speech`);
- `ogg`: reproducible Ogg Vorbis files (serial number from the file name);
- `recordings`: plan and render the training recordings;
- `soundscapes`: soundscape names, sites, labelled ones, rendering;
- `draft`: everything drawn from the seed before any audio;
- `tables`: window labels and the CSV files;
- `info`: the summary and demo_info.json;
- `generate`: `generate_demo`, the whole folder, built atomically;
- `stage`: `demo_stage`, the workflow stage.
"""

from birdclef.demo.generate import generate_demo
from birdclef.demo.layout import N_SITES, SAMPLE_SUBMISSION_ROWS, TRAIN_COLUMNS_2026
from birdclef.demo.ogg import set_ogg_serial
from birdclef.demo.species import classes_without_train_audio, demo_species
from birdclef.demo.stage import demo_stage
from birdclef.demo.tables import window_labels

__all__ = [
    "N_SITES",
    "SAMPLE_SUBMISSION_ROWS",
    "TRAIN_COLUMNS_2026",
    "classes_without_train_audio",
    "demo_species",
    "demo_stage",
    "generate_demo",
    "set_ogg_serial",
    "window_labels",
]
