#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment in .venv and installs dlms into it.
# Sourced by scripts/demo.sh and scripts/test.sh; reinstalls only when pyproject.toml changes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DLMS_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[dlms] creating virtual environment in $VENV" >&2
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.dlms-installed"
WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[dlms] installing dlms and its dependencies (torch==2.13.0 CPU build, first time only)" >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2 || true
  # torch first and alone, pinned, so nothing else can pull a CUDA build.
  "$VENV/bin/python" -m pip install --quiet "torch==2.13.0" >&2
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[dev]" >&2
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
