#!/usr/bin/env bash
# The demo: trains the autoregressive baseline and a masked diffusion model (`small` preset) on
# the built-in corpus, and a third AR model, the judge, then prints samples and their figures:
# validation NLL (a bound for diffusion) with its standard error, perplexity of the samples under
# the judge (gen_ppl; the judge is neither of the models compared, so no model scores its own
# samples), the samples' mean words and unigram entropy beside the validation texts' own
# (length_gap, entropy_gap, at_data_length: a quality figure counts only at the data's length),
# their diversity across samples beside the data's (distinct-2, at_data_diversity), and the share
# of samples the corpus's exact checker accepts as grammatical. About 20 minutes on 2 CPU cores.
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
# Both models are conditioned on the corpus's review label; each eval draws the same number of
# samples for every label (so samples follow the corpus's own label distribution), at temperature 1
# unless said otherwise, and reports them beside the data's own length and unigram entropy.
echo "== autoregressive baseline (each label in turn, temperature 1)"
dlms eval --checkpoint runs/demo-ar --evaluator runs/demo-judge --num_samples 200 --passes 1
echo "== masked diffusion, its default sampler: confidence-ordered, blocks of 8, 24 steps (each label in turn, temperature 1)"
dlms eval --checkpoint runs/demo-masked --evaluator runs/demo-judge --num_samples 200 --passes 8
echo "== masked diffusion, other samplers and temperatures (one line each)"
dlms eval --checkpoint runs/demo-masked --evaluator runs/demo-judge --num_samples 200 --passes 0 --sampler threshold --block_size 8 --cache dual | tail -1
dlms eval --checkpoint runs/demo-masked --evaluator runs/demo-judge --num_samples 200 --passes 0 --sampler ancestral --num_steps 24 | tail -1
dlms eval --checkpoint runs/demo-ar --evaluator runs/demo-judge --num_samples 200 --passes 0 --temperature 0.7 | tail -1
dlms eval --checkpoint runs/demo-masked --evaluator runs/demo-judge --num_samples 200 --passes 0 --temperature 0.7 | tail -1
echo "== unconditional samples (the null class, temperature 1): AR, then masked"
dlms eval --checkpoint runs/demo-ar --evaluator runs/demo-judge --num_samples 200 --passes 0 --label none | tail -1
dlms eval --checkpoint runs/demo-masked --evaluator runs/demo-judge --num_samples 200 --passes 0 --label none | tail -1
echo "== prompted samples"
dlms generate --checkpoint runs/demo-masked --prompt "the chef" --label positive-food --num_samples 3
dlms generate --checkpoint runs/demo-ar --prompt "the chef" --label negative-food --num_samples 3
