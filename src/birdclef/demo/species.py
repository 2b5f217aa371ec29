"""The synthetic species: call archetypes, made-up names and the taxonomy rows.

Species are synthetic: each has its own call shape (pitch, frequency
modulation, rhythm, harmonics, bandwidth) so that a small CNN on log-mel
spectrograms can tell them apart.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_SPECIES = 24

# Call archetypes, ordered by the centre frequency they are given.
_KINDS: list[tuple[str, str, dict[str, Any]]] = [
    ("croak", "Amphibia", {"duration_s": 0.45, "pulse_hz": 45.0, "n_harmonics": 7}),
    (
        "harmonic_stack",
        "Aves",
        {"duration_s": 0.35, "slide": -0.08, "harmonics": [1, 0.7, 0.45, 0.3]},
    ),
    ("two_note", "Aves", {"notes": [1.15, 0.85], "note_s": [0.18, 0.28], "gap_s": 0.06}),
    ("down_sweep", "Aves", {"duration_s": 0.3, "start": 1.4, "end": 0.7}),
    ("vibrato", "Aves", {"duration_s": 0.7, "fm_hz": 28.0, "fm_depth": 0.07}),
    ("flat_whistle", "Aves", {"duration_s": 0.55, "drift": 0.02}),
    (
        "phrase",
        "Aves",
        {
            "notes": [1.0, 1.2, 0.9],
            "note_s": 0.1,
            "gap_s": 0.04,
            "repeats": 2,
            "repeat_gap_s": 0.15,
        },
    ),
    ("up_sweep", "Aves", {"duration_s": 0.25, "start": 0.7, "end": 1.4}),
    (
        "trill",
        "Aves",
        {"duration_s": 0.8, "pulse_hz": 18.0, "pulse_s": 0.03, "start": 1.1, "end": 0.9},
    ),
    (
        "chirp_series",
        "Aves",
        {"n_chirps": 5, "chirp_s": 0.045, "period_s": 0.12, "start": 1.25, "end": 0.8},
    ),
    ("buzz", "Aves", {"duration_s": 0.6, "bandwidth": 0.3, "am_hz": 60.0}),
    ("stridulation", "Insecta", {"duration_s": 1.4, "pulse_hz": 35.0, "bandwidth": 0.08}),
]
_LOW_HZ, _HIGH_HZ = 1000.0, 9500.0

# Made-up names, two per archetype (the second for n_species > 12, when
# archetypes repeat). Bird labels follow the eBird pattern (3 + 3 letters,
# sometimes a digit); as in the 2026 data, the frogs' labels are their
# iNaturalist taxon id and the crickets' are sonotypes (`<taxon id>son<nn>`,
# 47158 being iNaturalist's Insecta).
_NAMES: dict[str, list[tuple[str, str, str]]] = {
    "croak": [
        ("Marsh Tink Frog", "Pristimantis paludis", "1139490"),
        ("Clicking Rain Frog", "Craugastor crepitans", "1480151"),
    ],
    "harmonic_stack": [
        ("Rufous Cawbill", "Corvirostra rufa", "rufcaw1"),
        ("Dusky Marshbird", "Paludicola fusca", "dusmar"),
    ],
    "two_note": [
        ("Andean Tinkerbird", "Tintinnus andinus", "andtin"),
        ("Banded Reedling", "Harundinella fasciata", "banree"),
    ],
    "down_sweep": [
        ("Sooty Swiftlet-Wren", "Fuliginura celer", "sooswi"),
        ("Montane Solitaire", "Eremita montana", "monsol"),
    ],
    "vibrato": [
        ("Quivering Piha", "Tremulipiha vibrans", "quipih"),
        ("Lesser Cloudsinger", "Nubicantor minor", "lesclo1"),
    ],
    "flat_whistle": [
        ("Azure Whistler", "Sibilator caeruleus", "azuwhi"),
        ("Pale Flutist", "Tibicen pallidus", "palflu1"),
    ],
    "phrase": [
        ("Chestnut Phrasewing", "Verbicanta castanea", "chephr"),
        ("Silver Warbler", "Argentiparula cantans", "silwar"),
    ],
    "up_sweep": [
        ("Rising Tyrannulet", "Ascendia surgens", "ristyr"),
        ("Olive Ridgetail", "Jugicauda olivacea", "olirid1"),
    ],
    "trill": [
        ("Golden Trillbird", "Trillops aureus", "goltri"),
        ("Speckled Antvireo", "Formicivora guttata", "speant"),
    ],
    "chirp_series": [
        ("Cinnamon Chirper", "Pipilator cinnamomeus", "cinchi1"),
        ("Scarlet Seedeater", "Granivora coccinea", "scasee1"),
    ],
    "buzz": [
        ("Buzzing Hermit", "Bombylornis susurrans", "buzher"),
        ("Crested Foliage-Hopper", "Frondisaltor cristatus", "crefol"),
    ],
    "stridulation": [
        ("Insecta sonotype 01", "Insecta sp. son01", "47158son01"),
        ("Insecta sonotype 02", "Insecta sp. son02", "47158son02"),
    ],
}

_SONOTYPE = re.compile(r"(\d+)son\d+")


@dataclass(frozen=True)
class Species:
    """One synthetic species: its taxonomy row and call shape."""

    label: str
    inat_taxon_id: int
    scientific_name: str
    common_name: str
    class_name: str
    kind: str
    centre_hz: float
    params: dict[str, Any] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        """The species as a JSON-ready dict (for demo_info.json)."""
        return {
            "primary_label": self.label,
            "common_name": self.common_name,
            "scientific_name": self.scientific_name,
            "class_name": self.class_name,
            "call_kind": self.kind,
            "centre_hz": round(self.centre_hz, 1),
            "params": self.params,
        }


def demo_species(n_species: int = 12) -> list[Species]:
    """The `n_species` synthetic species, in taxonomy order (sorted by label).

    Independent of the seed. Centre frequencies are spaced evenly on a log
    scale from 1 kHz to 9.5 kHz; up to 12 species each get a different call
    archetype, beyond that archetypes repeat at other pitches.
    """
    if not 2 <= n_species <= MAX_SPECIES:
        raise ValueError(f"n_species must be between 2 and {MAX_SPECIES}, got {n_species}")
    centres = np.geomspace(_LOW_HZ, _HIGH_HZ, n_species)
    n_kinds = len(_KINDS)
    uses: dict[str, int] = {}
    species = []
    for i, centre in enumerate(centres):
        if n_species <= n_kinds:
            kind_index = round(i * (n_kinds - 1) / (n_species - 1))
        else:
            kind_index = i * n_kinds // n_species
        kind, class_name, params = _KINDS[kind_index]
        common, scientific, label = _NAMES[kind][uses.get(kind, 0)]
        uses[kind] = uses.get(kind, 0) + 1
        if label.isdigit():
            taxon_id = int(label)
        elif sonotype := _SONOTYPE.fullmatch(label):
            taxon_id = int(sonotype[1])
        else:
            taxon_id = 7000000 + zlib.crc32(label.encode()) % 1000000
        species.append(
            Species(label, taxon_id, scientific, common, class_name, kind, float(centre), params)
        )
    return sorted(species, key=lambda s: s.label)


def classes_without_train_audio(species: Sequence[Species]) -> list[str]:
    """Labels of the species that get no training recording (one, a bird).

    Independent of the seed: the middle bird in taxonomy order. It still calls
    in the soundscapes, so only the soundscape labels can teach it (in 2026, 28
    of 234 classes had no training audio).
    """
    birds = [s.label for s in species if s.class_name == "Aves"]
    return [birds[len(birds) // 2]] if len(species) >= 3 and birds else []
