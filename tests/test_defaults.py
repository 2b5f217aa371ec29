"""Every default lives once: the library's defaults are the config schema's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from birdclef import mels, xeno_canto
from birdclef.runtime import postprocess
from birdclef.train.model import MODEL_DEFAULTS
from birdclef.train.settings import SPECIALIST_UPSAMPLE
from birdclef.train.wave_augment import WaveAugmentSettings

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[1] / "schemas/config.schema.yaml").read_text())


def schema_defaults(*path: str) -> dict:
    """Defaults of the properties of the schema object at `path` (array items followed)."""
    node = SCHEMA
    for key in path:
        node = node["properties"][key]
        if node.get("type") == "array":
            node = node["items"]
    return {name: spec["default"] for name, spec in node["properties"].items() if "default" in spec}


@pytest.mark.parametrize(
    ("library", "path"),
    [
        (xeno_canto.DEFAULT_SETTINGS, ("xeno_canto",)),
        (mels.DEFAULTS, ("mels",)),
        (postprocess.POSTPROCESS_DEFAULTS, ("ensemble", "postprocess")),
    ],
    ids=["xeno_canto", "mels", "postprocess"],
)
def test_library_defaults_are_the_schemas(library, path):
    defaults = schema_defaults(*path)
    for key, value in library.items():
        assert key in defaults, f"{'.'.join(path)}.{key} has no default in the schema"
        assert defaults[key] == value, (key, value, defaults[key])


def test_model_defaults_are_the_backbone_and_mel_defaults():
    backbone = schema_defaults("train", "backbones")
    for key in ("in_chans", "pretrained", "drop_rate", "drop_path_rate"):
        assert MODEL_DEFAULTS[key] == backbone[key], key
    assert MODEL_DEFAULTS["normalization"] == schema_defaults("mels")["normalization"]


def test_specialist_upsample_default_is_the_schemas():
    specialist = SCHEMA["properties"]["train"]["properties"]["backbones"]["items"]["properties"]["specialist"]
    assert specialist["properties"]["upsample"]["default"] == SPECIALIST_UPSAMPLE
def test_wave_augment_defaults_are_the_schemas():
    defaults = schema_defaults("train", "wave_augment")
    library = dataclasses.asdict(WaveAugmentSettings())
    assert library == defaults
