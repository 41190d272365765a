#!/usr/bin/env bash
# Installs the MicroPython ESP32 type stubs into micropython/typings (not committed).  They live
# in their own folder because they replace `time`, `socket` and the rest of the standard library:
# inside the main virtualenv they would shadow CPython's modules.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
"$PY" -m pip install -q --disable-pip-version-check --upgrade --target typings \
  "micropython-esp32-stubs==1.29.0.post1"
