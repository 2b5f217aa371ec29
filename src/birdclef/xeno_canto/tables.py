"""The stage's tables: a kept recording as a train.csv row, the raw API records as a frame."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import pandas as pd

from birdclef.xeno_canto.parsers import RATINGS, _float_or_nan, _https, license_name
from birdclef.xeno_canto.species import _map_name, _Species


def _metadata_frame(entries: list[dict]) -> pd.DataFrame:
    """Raw API records as strings (nested values JSON-encoded) plus crawl columns."""
    rows = []
    for entry in entries:
        row: dict[str, Any] = {
            "xc_id": entry["xc_id"],
            "query_label": entry["query_label"],
            "query": entry["query"],
            "page": entry["page"],
            "status": entry["status"],
            "primary_label": entry.get("primary_label"),
            "filename": entry.get("filename"),
        }
        for key, value in entry["record"].items():
            if isinstance(value, (dict, list)):
                value = json.dumps(value, ensure_ascii=False, sort_keys=True)
            row[f"xc_{key}" if key in row else key] = None if value is None else str(value)
        rows.append(row)
    lead = ["xc_id", "query_label", "query", "page", "status", "primary_label", "filename"]
    raw = sorted({key for row in rows for key in row} - set(lead))
    frame = pd.DataFrame(rows, columns=lead + raw)
    frame["xc_id"] = frame["xc_id"].astype("int64")
    frame["page"] = frame["page"].astype("int64")
    for column in frame.columns:
        if column not in ("xc_id", "page"):
            frame[column] = frame[column].astype("string")
    return frame


def _row(record: Mapping[str, Any], xc_id: int, sp: _Species, names: Mapping[str, str]) -> dict:
    also = record.get("also") or []
    if isinstance(also, str):
        also = [a for a in re.split(r"[,;]", also) if a.strip()]
    secondary: list[str] = []
    for name in also:
        label = _map_name(names, name)
        if label is not None and label != sp.label and label not in secondary:
            secondary.append(label)
    types = [t.strip() for t in str(record.get("type") or "").split(",") if t.strip()]
    return {
        "primary_label": sp.label,
        "secondary_labels": str(secondary),
        "type": str(types),
        "filename": f"{sp.label}/XC{xc_id}.ogg",
        "collection": "XC",
        "rating": RATINGS.get(str(record.get("q") or "").strip().upper(), 0.0),
        "url": _https(record.get("url"), "https://xeno-canto.org/")
        or f"https://xeno-canto.org/{xc_id}",
        "latitude": _float_or_nan(record.get("lat")),
        "longitude": _float_or_nan(record.get("lon", record.get("lng"))),
        "scientific_name": sp.scientific_name,
        "common_name": sp.common_name or str(record.get("en") or ""),
        "author": str(record.get("rec") or ""),
        "license": license_name(record.get("lic")),
    }
