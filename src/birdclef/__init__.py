"""birdclef: the library behind the BirdCLEF Snakemake workflow.

Every stage's logic lives here and is importable without Snakemake; the
workflow's `workflow_scripts/*.py` only unpack the `snakemake` object and call
into this package.
"""

__version__ = "0.1.0"
