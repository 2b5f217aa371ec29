"""The taxonomy's species: reading them, which to query, and mapping API names to labels."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from birdclef.catalog import DataError, read_taxonomy

log = logging.getLogger(__name__)

SPECIES_NAME = re.compile(r"^[A-Z][a-z-]+ (?!spp?$|spp? )[a-z-]+( [a-z-]+)?$")


@dataclass
class _Species:
    label: str
    scientific_name: str
    common_name: str
    class_name: str


def _read_species(taxonomy_csv: str | os.PathLike) -> list[_Species]:
    labels = read_taxonomy(taxonomy_csv)
    frame = pd.read_csv(taxonomy_csv, dtype=str, keep_default_na=False)
    if "scientific_name" not in frame.columns:
        raise DataError(
            f"{taxonomy_csv}: no scientific_name column; the xeno-canto stage queries the API by "
            "scientific name (BirdCLEF 2025 taxonomy.csv has primary_label, inat_taxon_id, "
            "scientific_name, common_name, class_name)"
        )
    rows = frame.set_index(frame["primary_label"].astype(str))
    return [
        _Species(
            label,
            " ".join(str(rows.at[label, "scientific_name"]).split()),
            str(rows.at[label, "common_name"]) if "common_name" in rows.columns else "",
            str(rows.at[label, "class_name"]) if "class_name" in rows.columns else "",
        )
        for label in labels
    ]


def _name_index(species: list[_Species]) -> dict[str, str]:
    """Lower-case scientific name (and unambiguous binomial of a trinomial) -> primary_label."""
    index: dict[str, str] = {}
    binomials: dict[str, set[str]] = {}
    for sp in species:
        name = sp.scientific_name.lower()
        index.setdefault(name, sp.label)
        words = name.split()
        if len(words) > 2:
            binomials.setdefault(" ".join(words[:2]), set()).add(sp.label)
    for name, labels in binomials.items():
        if name not in index and len(labels) == 1:
            index[name] = next(iter(labels))
    return index


def _map_name(index: Mapping[str, str], name: str) -> str | None:
    words = " ".join(str(name).split()).lower()
    if words in index:
        return index[words]
    parts = words.split()
    if len(parts) > 2:
        return index.get(" ".join(parts[:2]))
    return None


def outside_label(record: Mapping[str, Any]) -> str | None:
    """The label of a record outside the taxonomy (query mode): its binomial, ``Genus species``;
    None when the record names no species (``Mystery mystery``, ``sp.``, sonotypes)."""
    genus = str(record.get("gen") or "").strip()
    epithet = str(record.get("sp") or "").strip().lower()
    name = f"{genus[:1].upper()}{genus[1:].lower()} {epithet}"
    if genus.lower() == "mystery" or not SPECIES_NAME.match(name):
        return None
    return name


def outside_species(label: str, record: Mapping[str, Any]) -> _Species:
    """The `_Species` of an outside-the-taxonomy label (its row's names come from the record)."""
    return _Species(label, label, str(record.get("en") or ""), str(record.get("grp") or ""))


def _choose_species(
    species: list[_Species],
    by_label: Mapping[str, _Species],
    train_counts: Mapping[str, int],
    s: Mapping[str, Any],
    taxonomy_csv: str | os.PathLike,
) -> tuple[list[_Species], dict[str, list[str]]]:
    """The species to query and the labels skipped, by reason (`xeno_canto.species`, counts, names)."""
    chosen = species
    if s["species"] is not None:
        missing = sorted(set(s["species"]) - set(by_label))
        if missing:
            raise DataError(
                f"xeno_canto.species lists {missing}, which taxonomy.csv {taxonomy_csv} lacks"
            )
        wanted = set(s["species"])
        chosen = [sp for sp in species if sp.label in wanted]
    skipped_species: dict[str, list[str]] = {
        "enough_train_recordings": [],
        "not_a_species_name": [],
    }
    queried: list[_Species] = []
    for sp in chosen:
        if (
            s["only_species_below"] is not None
            and train_counts.get(sp.label, 0) >= s["only_species_below"]
        ):
            skipped_species["enough_train_recordings"].append(sp.label)
        elif not SPECIES_NAME.match(sp.scientific_name):
            skipped_species["not_a_species_name"].append(sp.label)
        else:
            queried.append(sp)
    if skipped_species["not_a_species_name"]:
        log.warning(
            "not queried (scientific_name is not 'Genus species'): %s",
            skipped_species["not_a_species_name"][:20],
        )
    return queried, skipped_species
