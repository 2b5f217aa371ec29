#!/usr/bin/env bash
# Regenerate the speech clips that birdclef.demo mixes into some synthetic
# training recordings (so the VAD stage has real human speech to find).
#
# Needs espeak-ng (apt-get install espeak-ng) and the project virtualenv
# (numpy, soundfile, soxr). The demo generator itself never calls espeak-ng;
# it only reads the committed .ogg files from src/birdclef/data/speech/.
#
# Usage: bench/make_speech_clips.sh [PYTHON]   (default: .venv/bin/python)
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${1:-.venv/bin/python}"
OUT=src/birdclef/data/speech
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

# name|voice|words per minute|pitch (0-99)|text
CLIPS=(
  "field_note_en|en-us|170|45|Recording twelve. Two birds singing near the creek, light wind."
  "field_note_es|es-419|170|55|Grabación cerca del río. Hay un colibrí y dos tángaras."
  "field_note_pt|pt-br|170|40|Gravação na mata. Um sabiá cantando perto da trilha."
)

for clip in "${CLIPS[@]}"; do
  IFS='|' read -r name voice speed pitch text <<<"$clip"
  espeak-ng -v "$voice" -s "$speed" -p "$pitch" -w "$WORK/$name.wav" "$text"
done

# espeak-ng writes 22050 Hz mono 16-bit WAV: resample to 32 kHz with soxr
# (HQ), trim leading/trailing silence, peak-normalise to -3 dBFS and write
# Ogg Vorbis (libsndfile's encoder, default quality), with the Ogg stream
# serial number fixed so that reruns give byte-identical files.
PYTHONPATH=src "$PYTHON" - "$WORK" "$OUT" <<'PY'
import pathlib
import sys
import zlib

import numpy as np
import soundfile as sf
import soxr

from birdclef.demo import set_ogg_serial

work, out = map(pathlib.Path, sys.argv[1:3])
for wav in sorted(work.glob("*.wav")):
    wave, rate = sf.read(wav, dtype="float32", always_2d=True)
    wave = wave.mean(axis=1)
    wave = soxr.resample(wave, rate, 32000, quality="HQ").astype(np.float32)
    loud = np.flatnonzero(np.abs(wave) > 0.01 * np.abs(wave).max())
    pad = int(0.05 * 32000)
    wave = wave[max(loud[0] - pad, 0) : loud[-1] + pad]
    wave = wave / np.abs(wave).max() * 10 ** (-3 / 20)
    target = out / f"{wav.stem}.ogg"
    sf.write(target, wave, 32000, format="OGG", subtype="VORBIS")
    target.write_bytes(set_ogg_serial(target.read_bytes(), zlib.crc32(target.name.encode())))
    print(f"{wav.stem}.ogg: {len(wave) / 32000:.2f} s")
PY
