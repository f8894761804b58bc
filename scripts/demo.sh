#!/usr/bin/env bash
# The demo: trains the autoregressive baseline and a masked diffusion model (`small` preset) on
# the built-in corpus, and a third AR model, the judge, then prints samples and their figures:
# validation NLL (a bound for diffusion) with its standard error, perplexity of the samples under
# the judge (gen_ppl; the judge is neither of the models compared, so no model scores its own
# samples), the samples' mean words and unigram entropy beside the validation texts' own
# (length_gap, entropy_gap, at_data_length: a quality figure counts only at the data's length),
# and the share of samples the corpus's exact checker accepts as grammatical.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
start=$(date +%s)
# --overwrite: running the demo again trains its three runs afresh (other runs are never replaced silently).
dlms train --config configs/demo-ar.yaml --overwrite "$@"
dlms train --config configs/demo-masked.yaml --overwrite "$@"
# The judge: another AR run (another seed and validation split, no label) that scores both models' samples.
dlms train --config configs/demo-judge.yaml --overwrite --samples 0 "$@"
echo "== trained in $(( $(date +%s) - start )) s"
# Both models are conditioned on the corpus's review label; the eval draws the same number of
# samples for every label (so samples follow the corpus's own label distribution) at the
# configs' temperature 0.7, and also shows the raw unconditional figures at temperature 1.
echo "== autoregressive baseline (a sample per review label in turn, temperature 0.7)"
dlms eval --checkpoint runs/demo-ar --evaluator runs/demo-judge --num_samples 200 --passes 1
echo "== masked diffusion, confidence-ordered sampler (24 steps, each label in turn, temperature 0.7)"
dlms eval --checkpoint runs/demo-masked --evaluator runs/demo-judge --num_samples 200 --passes 8
echo "== for comparison: unconditional samples at temperature 1 (AR; masked ancestral and confidence)"
dlms eval --checkpoint runs/demo-ar --evaluator runs/demo-judge --num_samples 200 --passes 0 --label none --temperature 1 | tail -1
dlms eval --checkpoint runs/demo-masked --evaluator runs/demo-judge --num_samples 200 --passes 0 --label none --temperature 1 --sampler ancestral | tail -1
dlms eval --checkpoint runs/demo-masked --evaluator runs/demo-judge --num_samples 200 --passes 0 --label none --temperature 1 | tail -1
echo "== prompted samples"
dlms generate --checkpoint runs/demo-masked --prompt "the chef" --label positive-food --num_samples 3
dlms generate --checkpoint runs/demo-ar --prompt "the chef" --label negative-food --num_samples 3
