#!/usr/bin/env bash
# The demo: trains the autoregressive baseline and a masked diffusion model (`small` preset) on
# the built-in corpus, then prints samples and their figures: validation NLL (a bound for
# diffusion) with its standard error, perplexity of the samples under the AR model, unigram
# entropy, and the share of samples the corpus's exact checker accepts as grammatical.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
start=$(date +%s)
dlms train --config configs/demo-ar.yaml "$@"
dlms train --config configs/demo-masked.yaml "$@"
echo "== trained in $(( $(date +%s) - start )) s"
echo "== autoregressive baseline"
dlms eval --checkpoint runs/demo-ar --num_samples 200 --passes 1
echo "== masked diffusion, ancestral sampler (32 steps)"
dlms eval --checkpoint runs/demo-masked --ar_checkpoint runs/demo-ar --num_samples 200 --passes 8
echo "== masked diffusion, confidence-ordered sampler (32 steps)"
dlms eval --checkpoint runs/demo-masked --ar_checkpoint runs/demo-ar --num_samples 200 --passes 1 --max_sequences 64 --sampler confidence
echo "== prompted samples"
dlms generate --checkpoint runs/demo-masked --prompt "the chef" --num_samples 3
dlms generate --checkpoint runs/demo-ar --prompt "the chef" --num_samples 3
