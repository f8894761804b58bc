"""Infilling quality on the built-in corpus: fill blanked words of validation sentences.

From `--n` validation texts of the run's own data (spread evenly, grammatical and complete, so a
fill can be judged), each a template with one word blanked (even i) or two (odd i), the words
chosen at random among the non-punctuation ones:

- exact: each word becomes `___:N`, N its true token count; one fill per template;
- plain_<k>: each word becomes a plain `___` with `blank_tokens=k` (k in `--plain`), the case of a
  user who does not know the length: what decides the default blank length.

For each: the share of filled texts that the corpus's exact checker (dlms.data.corpus.checker)
judges grammatical, and (exact only) how often the fill equals the original text. Sampler: the
run's default unless `--sampler` / `--temperature` say otherwise. Prints one JSON line.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/infill_quality.py --checkpoint runs/masked-6k
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time

import torch

from threads import set_threads  # bench/threads.py, beside this script


def usable_texts(lm, n: int) -> list[str]:
    """`n` validation texts, evenly spread, that are grammatical and fit the canvas with their
    start token and end-of-text (a row cut at seq_len is neither whole nor judgeable)."""
    from dlms.data.corpus.checker import check_text
    from dlms.eval.generation import data_reference_texts

    width = lm.cfg.data.seq_len
    start = len(lm.encode_prompt(None))
    out = []
    for text in data_reference_texts(lm, n=8 * n):
        fits = start + len(lm.tokenizer.encode(text, add_special_tokens=False)) < width
        if fits and check_text(text).grammatical:
            out.append(text)
    step = max(1, len(out) // n)
    return out[::step][:n]


def make_template(lm, text: str, blanks: int, rng: random.Random, plain: bool) -> str:
    """`text` with `blanks` random words replaced by `___:N` (N their token count) or plain `___`."""
    words = text.split()
    choices = [i for i, w in enumerate(words) if any(c.isalpha() for c in w)]
    picked = set(rng.sample(choices, min(blanks, len(choices))))
    out = []
    for i, word in enumerate(words):
        if i in picked:
            n = len(lm.tokenizer.encode(word if i == 0 else " " + word, add_special_tokens=False))
            out.append("___" if plain else f"___:{n}")
        else:
            out.append(word)
    return " ".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--n", type=int, default=100, help="templates")
    parser.add_argument("--plain", default="1,2", help="blank_tokens values to try with plain `___` blanks")
    parser.add_argument("--sampler", default=None)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        set_threads(args.threads)
    from dlms.data.corpus.checker import check_text
    from dlms.model import DiffusionLM

    lm = DiffusionLM.load_checkpoint(args.checkpoint, device="cpu")
    texts = usable_texts(lm, args.n)
    began = time.perf_counter()
    options = {"sampler": args.sampler, "temperature": args.temperature}
    variants = {"exact": None, **{f"plain_{k}": int(k) for k in args.plain.split(",") if k}}
    result: dict = {"checkpoint": args.checkpoint, "n": len(texts),
                    "sampler": args.sampler or lm.cfg.sample.sampler,
                    "temperature": lm.cfg.sample.temperature if args.temperature is None else args.temperature}
    for name, blank_tokens in variants.items():
        good = {1: 0, 2: 0}
        same = {1: 0, 2: 0}
        count = {1: 0, 2: 0}
        for i, text in enumerate(texts):
            blanks = 1 + i % 2
            template = make_template(lm, text, blanks, random.Random(args.seed * 100003 + i), blank_tokens is not None)
            filled = lm.infill(template, seed=args.seed + i, blank_tokens=blank_tokens, **options)[0]
            count[blanks] += 1
            good[blanks] += check_text(filled).grammatical
            same[blanks] += " ".join(filled.split()) == " ".join(text.split())
        total = sum(count.values())
        entry = {"grammatical": round(sum(good.values()) / total, 3),
                 "grammatical_1_word": round(good[1] / max(count[1], 1), 3),
                 "grammatical_2_words": round(good[2] / max(count[2], 1), 3)}
        if blank_tokens is None:
            entry["equals_original"] = round(sum(same.values()) / total, 3)
        result[name] = entry
    result["seconds"] = round(time.perf_counter() - began, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
