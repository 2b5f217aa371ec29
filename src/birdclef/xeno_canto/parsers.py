"""Small parsers of xeno-canto values: lengths, licences, Retry-After, ids, ratings, URLs."""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Iterable
from urllib.parse import urljoin

import pandas as pd

RATINGS = {"A": 5.0, "B": 4.0, "C": 3.0, "D": 2.0, "E": 1.0}


def parse_length(value: object) -> float | None:
    """Seconds of an xeno-canto `length` ("0:33", "1:02:33", "45"); None when absent."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        return None
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + part
    return seconds


def license_name(lic: object) -> str:
    """BirdCLEF's licence spelling ("cc-by-nc-sa 4.0") of an xeno-canto `lic` URL."""
    text = str(lic or "").strip()
    match = re.search(r"creativecommons\.org/licenses/([a-z-]+)/([\d.]+)", text, re.IGNORECASE)
    if match:
        return f"cc-{match.group(1).lower()} {match.group(2)}"
    match = re.search(r"creativecommons\.org/publicdomain/zero/([\d.]+)", text, re.IGNORECASE)
    if match:
        return f"cc0 {match.group(1)}"
    return text


def license_excluded(lic: object, exclusions: Iterable[str]) -> bool:
    """Whether a licence matches an exclusion: a component ("nd"), a code ("by-nc-nd") or a name."""
    name = license_name(lic).lower()
    code = name.split(" ")[0].removeprefix("cc-")
    parts = set(code.split("-"))
    for token in exclusions:
        token = str(token).strip().lower()
        if token and (token in parts or token in (code, name, f"cc-{code}")):
            return True
    return False


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta seconds or an HTTP date)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def xc_id_of(value: object) -> int | None:
    """The xeno-canto id in a train.csv filename ("1139490/XC123456.ogg") or url (".../123456")."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    match = re.search(r"XC(\d+)", text, re.IGNORECASE)
    if match:
        return int(match.group(1))
    match = re.search(r"xeno-canto\.org/(\d+)", text, re.IGNORECASE)
    if match:
        return int(match.group(1))
    return None


def train_xc_ids(train: pd.DataFrame) -> set[int]:
    """Every xeno-canto id of the competition's recordings (from filename or url)."""
    ids: set[int] = set()
    for column in ("filename", "url"):
        if column in train.columns:
            ids.update(i for i in map(xc_id_of, train[column]) if i is not None)
    return ids


def _float_or_nan(value: object) -> float:
    try:
        result = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
    return result if math.isfinite(result) else float("nan")


def _https(url: object, base: str) -> str:
    text = str(url or "").strip()
    if text.startswith("//"):
        return "https:" + text
    return urljoin(base, text) if text else ""
