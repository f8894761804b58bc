"""Infilling quality on the built-in corpus: fill blanked words of validation sentences.

Validation texts of the run's own data that are grammatical and fit the canvas, in the split's
order; the bench takes `--n` of them after skipping `--offset`, so settings can be chosen on one
slice and reported on another that they never saw:

    # choose settings on texts 0..299, report on texts 300..599 (and another seed)
    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/infill_quality.py --checkpoint runs/masked-6k \\
        --n 300 --offset 0 --seed 0 --samplers confidence,ancestral --temperatures 0,0.3,0.7 --label_from_data
    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/infill_quality.py --checkpoint runs/masked-6k \\
        --n 300 --offset 300 --seed 1 --label_from_data

Text i is a template with one word blanked (even i) or two (odd i), chosen at random among the
non-punctuation words:
- exact: each word becomes `___:N`, N its true token count;
- plain_<k>: each word becomes a plain `___` with `blank_tokens=k` (k in `--plain`), the case of a
  user who does not know the length: what decides the default blank length (a template that
  no longer fits the canvas is skipped: skipped_too_long).

Each template is filled `--samples` times (one `infill` call, seeds differ per template). For
every setting (sampler x temperature x block size x guidance x label), the JSON line gives:
- grammatical (overall, 1 word, 2 words): the share of fills the corpus's exact checker accepts;
- equals_original: the share of fills that give back the original text;
- distinct_fills: distinct fills per template / samples, averaged (1: every fill differs; 1 /
  samples: always the same fill), the diversity beside the quality;
- inferred_label_accuracy (label "inferred"): how often the class the model reads in the
  template (`DiffusionLM.infill_classes`, its likeliest) is the data row's label;
- failures: the ungrammatical fills by cause (`failure_kind`): a filled word that marks another
  topic or sentiment than the rest of the text, an "a"/"an" that disagrees with the next word,
  or other (a word of the right labels in a wrong place).
Labels: "inferred" (no label given: infill's default draws the class from the model's
posterior given the template's words), "null" (`--null_class`: no label, infer_label=False, the
null class), "data" (`--label_from_data`: the data row's own label passed as `label=`).
`--samplers`/`--temperatures`/... left out use `DiffusionLM.infill`'s defaults ("default").
`--show_failures K` prints K ungrammatical fills with their cause to stderr.
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time

import torch

from threads import set_threads  # bench/threads.py, beside this script


def validation_texts(lm) -> list[tuple[str, str | None]]:
    """Every validation text of the run's data that is grammatical and fits the canvas with its
    start token and end-of-text (a row cut at seq_len is neither whole nor judgeable), in the
    split's order, with its data label (the run's label column; None without one)."""
    from dlms.data.corpus.checker import check_text
    from dlms.eval.generation import data_reference_texts

    data = lm.dataset()
    split, column = data.val, lm.cfg.data.label_column
    labels: list[str | None] = [None] * len(split)
    if lm.cfg.data.layout == "padded":  # one text per row, so each has its row's label
        texts = lm.decode(torch.as_tensor(split.ids[:].astype("int64")))
        if column and split.labels is not None:
            names = lm.label_names[column]
            labels = [names[int(k)] for k in split.labels[:, split.label_index(column)]]
    else:
        texts = data_reference_texts(lm, data, n=len(split))
    width = lm.cfg.data.seq_len
    start = len(lm.encode_prompt(None))
    out = []
    for text, label in zip(texts, labels):
        fits = start + len(lm.tokenizer.encode(text, add_special_tokens=False)) < width
        if fits and check_text(text).grammatical:
            out.append((text, label))
    return out


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


def failure_kind(original: str, filled: str) -> str:
    """Why an ungrammatical fill of the grammatical `original` fails: "topic" / "sentiment" (a
    word of the fill marks another topic / sentiment than the original's, which the grammar
    forbids within a text), "article" ("a" before a vowel or "an" before a consonant), "length"
    (a different number of words), else "other" (right labels, wrong place)."""
    from dlms.data.corpus import check_text
    from dlms.data.corpus.grammar import article_for, label_words

    if len(filled.split()) != len(original.split()):
        return "length"
    want = check_text(original)
    new = [w for w, o in zip(filled.split(), original.split()) if w != o]
    marks = label_words()
    for attribute, own in (("topic", want.topic), ("sentiment", want.sentiment)):
        if any(w in words for (a, label), words in marks.items() if a == attribute and label != own for w in new):
            return attribute
    words = filled.split()
    if any(w in ("a", "an") and w != article_for(nxt) for w, nxt in zip(words, words[1:])):
        return "article"
    return "other"


def fits(lm, template: str, blank_tokens: int | None) -> bool:
    """Does `template` fit the canvas with its start token (plain blanks of k > 1 tokens can
    make a long text too long)?"""
    from dlms.infill import parse_template, template_ids

    ids, _ = template_ids(parse_template(template, blank_tokens),
                          lambda piece: lm.tokenizer.encode(piece, add_special_tokens=False), lm.method.special.mask)
    return len(lm.encode_prompt(None)) + len(ids) <= lm.cfg.data.seq_len


def fill_all(lm, texts, blank_tokens: int | None, setting: dict, args) -> dict:
    """Fill every template of `texts` ([(text, data label)]) `args.samples` times under `setting`
    (sampler, temperature, block_size, guidance: None for infill's default; label: "inferred",
    "null" or "data"): the figures of one JSON entry."""
    from dlms.data.corpus.checker import check_text

    good, count, same, distinct, read, skipped = {1: 0, 2: 0}, {1: 0, 2: 0}, 0, 0.0, 0, 0
    failures: dict[str, int] = {}
    shown = 0
    for i, (text, label) in enumerate(texts):
        blanks = 1 + i % 2
        template = make_template(lm, text, blanks, random.Random(args.seed * 100003 + i), blank_tokens is not None)
        if not fits(lm, template, blank_tokens):
            skipped += 1
            continue
        fills = lm.infill(template, num_samples=args.samples, seed=args.seed * 100003 + i, blank_tokens=blank_tokens,
                          sampler=setting["sampler"], temperature=setting["temperature"],
                          block_size=setting["block_size"], guidance=setting["guidance"],
                          label=label if setting["label"] == "data" else None,
                          infer_label=setting["label"] != "null")
        fills = [" ".join(f.split()) for f in fills]
        if setting["label"] == "inferred" and label is not None:  # does the model read the data's label?
            classes = lm.infill_classes(template, blank_tokens=blank_tokens)
            read += bool(classes) and max(classes, key=classes.get) == label
        distinct += len(set(fills)) / len(fills)
        for fill in fills:
            count[blanks] += 1
            ok = check_text(fill).grammatical
            good[blanks] += ok
            same += fill == " ".join(text.split())
            if not ok:
                kind = failure_kind(text, fill)
                failures[kind] = failures.get(kind, 0) + 1
                if shown < args.show_failures:
                    shown += 1
                    print(f"[{kind}] {template!r} -> {fill!r} (original {text!r}, label {label})", file=sys.stderr)
    total = sum(count.values())
    return {"grammatical": round(sum(good.values()) / total, 3),
            "grammatical_1_word": round(good[1] / max(count[1], 1), 3),
            "grammatical_2_words": round(good[2] / max(count[2], 1), 3),
            "equals_original": round(same / total, 3), "distinct_fills": round(distinct / (len(texts) - skipped), 3),
            "skipped_too_long": skipped,
            "failures": dict(sorted(failures.items())),
            **({"inferred_label_accuracy": round(read / (len(texts) - skipped), 3)}
               if setting["label"] == "inferred" and texts and texts[0][1] is not None else {})}


def listed(text: str | None, kind) -> list:
    """A comma-separated option as a list of `kind` (None: [None], the model's default)."""
    return [None] if text is None else [kind(x) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--n", type=int, default=100, help="templates (texts)")
    parser.add_argument("--offset", type=int, default=0,
                        help="usable validation texts skipped first: choose settings on one slice, report on another")
    parser.add_argument("--samples", type=int, default=4, help="fills per template (for distinct_fills)")
    parser.add_argument("--plain", default="", help="blank_tokens values to try with plain `___` blanks, e.g. 1,2")
    parser.add_argument("--samplers", default=None, help="comma-separated samplers (default: infill's default)")
    parser.add_argument("--temperatures", default=None,
                        help="comma-separated temperatures, 0 greedy (default: infill's default)")
    parser.add_argument("--block_sizes", default=None,
                        help="comma-separated decoding blocks of the masked samplers (default: the sampler's)")
    parser.add_argument("--guidances", default=None,
                        help="comma-separated classifier-free guidance scales (default: infill's, 1 = off)")
    parser.add_argument("--label_from_data", action="store_true",
                        help="also fill with each text's own data label (label=...), beside without a label")
    parser.add_argument("--null_class", action="store_true",
                        help="also fill without a label with the null class (infer_label=False)")
    parser.add_argument("--show_failures", type=int, default=0, help="print this many failures per setting to stderr")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        set_threads(args.threads)
    from dlms.model import DiffusionLM

    lm = DiffusionLM.load_checkpoint(args.checkpoint, device="cpu")
    usable = validation_texts(lm)
    if args.label_from_data and any(label is None for _, label in usable):
        sys.exit("--label_from_data needs a run trained with data.label_column on padded data; drop the flag")
    texts = usable[args.offset:args.offset + args.n]
    if len(texts) < args.n:
        print(f"note: only {len(texts)} usable validation texts after --offset {args.offset}", file=sys.stderr)
    began = time.perf_counter()
    variants = {"exact": None, **{f"plain_{k}": int(k) for k in args.plain.split(",") if k}}
    grid = itertools.product(listed(args.samplers, str), listed(args.temperatures, float),
                             listed(args.block_sizes, int), listed(args.guidances, float),
                             ["inferred"] + ["null"] * args.null_class + ["data"] * args.label_from_data)
    settings = []
    for sampler, temperature, block_size, guidance, label in grid:
        setting = {"sampler": sampler, "temperature": temperature, "block_size": block_size, "guidance": guidance,
                   "label": label}
        for name, blank_tokens in variants.items():
            setting[name] = fill_all(lm, texts, blank_tokens, setting, args)
        resolved = {"sampler": lm.last_sampler.name, "temperature": lm.cfg.sample.temperature}
        settings.append({k: (f"default ({resolved[k]})" if k in resolved else "default") if v is None else v
                         for k, v in setting.items()})
    print(json.dumps({"checkpoint": args.checkpoint, "n": len(texts), "offset": args.offset, "seed": args.seed,
                      "samples": args.samples, "usable": len(usable), "settings": settings,
                      "seconds": round(time.perf_counter() - began, 1)}))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
