"""The error every data contract raises: bad input, named by file, row and setting."""

from __future__ import annotations


class DataError(ValueError):
    """Input data that does not follow the BirdCLEF layout; the message names the file and row."""
