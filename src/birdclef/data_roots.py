"""More than one data root: previous years' competitions mapped onto the main taxonomy.

Each extra root (config `data.extra_roots`) is a BirdCLEF-layout folder (train.csv,
taxonomy.csv, train_audio/). Its labels are mapped onto the main taxonomy by
scientific name: a label whose scientific name is one of the main taxonomy's
becomes that class (2025's eBird code and 2026's iNaturalist id of one species
are one class). A species outside the main taxonomy keeps the label of the
first root that lists it and is a pretrain-only class: its recordings train the
`pretrain` stage only, never round 0 nor the OOF score.

`label_mapping` stops with a `DataError` naming both taxonomy files and the
label when two roots disagree: the same primary_label with another scientific
name, or an extra root's species listed under two labels of the main taxonomy
(the mapping would have two targets).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from birdclef.common.errors import DataError

# What an extra root is used for: `train` (its in-taxonomy recordings join round 0
# and the folds; the others are pretrain-only) or `pretrain` (every recording is
# pretrain-only).
ROOT_USES = ("train", "pretrain")


def normalize_scientific_name(value: object) -> str | None:
    """A scientific name compared case- and space-insensitively; None when missing."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = " ".join(str(value).split()).casefold()
    return text or None


def read_taxonomy_names(taxonomy_csv: str | os.PathLike) -> list[tuple[str, str | None]]:
    """(primary_label, normalised scientific name) of every taxonomy.csv row, in file order.

    The scientific_name column is required: labels are mapped across roots by it.
    """
    try:
        frame = pd.read_csv(taxonomy_csv, dtype={"primary_label": str, "inat_taxon_id": str})
    except FileNotFoundError as error:
        raise DataError(f"{taxonomy_csv}: file not found") from error
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{taxonomy_csv}: not a readable CSV ({error})") from error
    missing = [c for c in ("primary_label", "scientific_name") if c not in frame.columns]
    if missing:
        raise DataError(
            f"{taxonomy_csv}: missing column(s) {missing}; with data.extra_roots every taxonomy.csv "
            "needs primary_label and scientific_name (labels are mapped across roots by scientific name)"
        )
    return [
        (str(label), normalize_scientific_name(name))
        for label, name in zip(frame["primary_label"], frame["scientific_name"], strict=True)
    ]


@dataclass
class LabelMapping:
    """Where every label of every root goes.

    `maps[i]` maps root i's labels (0: the main root) onto catalog labels;
    `main_classes` is the main taxonomy's label list; `extra_classes` the
    pretrain-only classes in order of first appearance, with their scientific
    names and the taxonomy file that introduced them.
    """

    main_classes: list[str]
    maps: list[dict[str, str]]
    extra_classes: list[dict[str, str | None]] = field(default_factory=list)
    by_name: dict[str, str] = field(default_factory=dict)  # normalised scientific name -> label

    def in_taxonomy(self, label: str) -> bool:
        """Whether a catalog label is a class of the main taxonomy."""
        return label in self._main

    def __post_init__(self) -> None:
        self._main = set(self.main_classes)


def label_mapping(main_taxonomy: str | os.PathLike, extra_taxonomies: Sequence[str | os.PathLike]) -> LabelMapping:
    """Map every extra taxonomy's labels onto the main one by scientific name (see the module doc).

    Raises `DataError` naming both files and the label for a label that two roots
    give different scientific names, and for an extra root's species that the main
    taxonomy lists under two labels.
    """
    main_rows = read_taxonomy_names(main_taxonomy)
    main_classes = [label for label, _ in main_rows]
    # label -> (scientific name, file that named it); scientific name -> (canonical label, file)
    label_names: dict[str, tuple[str | None, str]] = {}
    name_labels: dict[str, tuple[str, str]] = {}
    main_name_labels: dict[str, list[str]] = {}
    for label, name in main_rows:
        label_names[label] = (name, str(main_taxonomy))
        if name is not None:
            main_name_labels.setdefault(name, []).append(label)
            name_labels.setdefault(name, (label, str(main_taxonomy)))
    maps: list[dict[str, str]] = [{label: label for label in main_classes}]
    extra_classes: list[dict[str, str | None]] = []
    for taxonomy in extra_taxonomies:
        mapping: dict[str, str] = {}
        for label, name in read_taxonomy_names(taxonomy):
            known = label_names.get(label)
            if known is not None and known[0] is not None and name is not None and known[0] != name:
                raise DataError(
                    f"taxonomy conflict for primary_label {label!r}: {known[1]} names it "
                    f"{known[0]!r} but {taxonomy} names it {name!r}; expected one scientific name per "
                    "label across data.root and data.extra_roots (fix or drop one of the two taxonomy rows)"
                )
            if name is not None and len(main_name_labels.get(name, [])) > 1:
                raise DataError(
                    f"taxonomy conflict for primary_label {label!r} of {taxonomy}: its scientific name "
                    f"{name!r} is listed under {main_name_labels[name]} in {main_taxonomy}, so the label "
                    "cannot be mapped onto one class; expected one label per scientific name in the main taxonomy"
                )
            target = name_labels[name][0] if name is not None and name in name_labels else label
            mapping[label] = target
            if target not in label_names:
                label_names[target] = (name, str(taxonomy))
                extra_classes.append({"primary_label": target, "scientific_name": name, "taxonomy": str(taxonomy)})
            if name is not None:
                name_labels.setdefault(name, (target, str(taxonomy)))
        maps.append(mapping)
    return LabelMapping(main_classes, maps, extra_classes, {name: label for name, (label, _) in name_labels.items()})


def check_extra_roots(extra_roots: Sequence[Mapping[str, str]]) -> None:
    """Each entry has a root and a known use (the schema checks the types)."""
    for i, entry in enumerate(extra_roots):
        if entry.get("use", "train") not in ROOT_USES:
            raise DataError(
                f"data.extra_roots[{i}].use is {entry.get('use')!r}; expected one of {list(ROOT_USES)}"
            )
