#!/usr/bin/env bash
# The GPU check: every family trained, resumed, sampled and evaluated in bf16 on one CUDA device,
# with the measured bf16 matmul peak and each family's MFU. Prints JSON lines (bench/README.md);
# exits non-zero if any family failed. Extra args go to bench/gpu_check.py, e.g.
#   ./scripts/gpu_check.sh                              # CUDA: base preset, ~2-4 min after set-up
#   ./scripts/gpu_check.sh --device cpu --tiny          # the dry run on a CPU (~40 s)
#   ./scripts/gpu_check.sh --families masked,ar --budget_s 200
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
# A GPU machine often has no network but a python3 whose torch already sees CUDA: use it as it is
# (dlms from src/) rather than installing a CPU build into .venv. Elsewhere: the project's venv.
if [ ! -x "$ROOT/.venv/bin/python" ] && [ -z "${DLMS_VENV:-}" ] \
   && python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "[dlms] using $(command -v python3) (torch $(python3 -c 'import torch; print(torch.__version__)'), CUDA) with dlms from src/" >&2
  export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
  exec python3 bench/gpu_check.py "$@"
fi
source "$ROOT/scripts/env.sh"
exec python bench/gpu_check.py "$@"
