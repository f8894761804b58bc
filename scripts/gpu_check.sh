#!/usr/bin/env bash
# The GPU check: every family trained, resumed, sampled and evaluated in bf16 on one CUDA device,
# with the measured bf16 matmul peak and each family's MFU. Prints JSON lines (bench/README.md);
# exits non-zero if any family failed. Extra args go to bench/gpu_check.py, e.g.
#   ./scripts/gpu_check.sh                              # CUDA: base preset, ~2-4 min after set-up
#   ./scripts/gpu_check.sh --device cpu --tiny          # the dry run on a CPU (~40 s)
#   ./scripts/gpu_check.sh --families masked,ar --budget_s 200
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
exec python bench/gpu_check.py "$@"
