"""Reproducible Ogg Vorbis output.

libsndfile picks a random Ogg stream serial number for each file, so the
generator rewrites it to a value derived from the file name (and fixes the
page checksums) after encoding.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from birdclef.runtime.audio import write_ogg

_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _ogg_crc(page: bytes) -> int:
    """Ogg's page CRC-32 (polynomial 0x04C11DB7, no reflection, zero init and xor-out).

    zlib computes the reflected CRC-32; reversing the bits of every input byte
    and of the result turns one into the other.
    """
    reflected = zlib.crc32(page.translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def set_ogg_serial(data: bytes, serial: int) -> bytes:
    """Return the Ogg stream `data` with every page's serial number set to `serial`.

    Page checksums are recomputed. Used to make encoded files reproducible:
    libsndfile draws a random serial number for each file it writes.
    """
    out = bytearray(data)
    offset = 0
    serial_bytes = (serial & 0xFFFFFFFF).to_bytes(4, "little")
    while offset < len(out):
        if out[offset : offset + 4] != b"OggS" or offset + 27 > len(out):
            raise ValueError(f"not an Ogg page at byte {offset}")
        n_segments = out[offset + 26]
        body = sum(out[offset + 27 : offset + 27 + n_segments])
        end = offset + 27 + n_segments + body
        if end > len(out):
            raise ValueError(f"truncated Ogg page at byte {offset}")
        out[offset + 14 : offset + 18] = serial_bytes
        out[offset + 22 : offset + 26] = b"\0\0\0\0"
        crc = _ogg_crc(bytes(out[offset:end]))
        out[offset + 22 : offset + 26] = crc.to_bytes(4, "little")
        offset = end
    return bytes(out)


def _write(path: Path, wave: np.ndarray, sample_rate: int, name: str) -> None:
    """Write `wave` as Ogg Vorbis with a serial number derived from `name`."""
    write_ogg(path, wave.astype(np.float32), sample_rate)
    path.write_bytes(set_ogg_serial(path.read_bytes(), zlib.crc32(name.encode())))
