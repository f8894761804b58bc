"""Data-to-text on E2E NLG: every family's responses to the validation meaning representations.

Each run (`--runs`, prompt/response runs trained on the same data, e.g. configs/e2e-{ar,masked,
gaussian}.yaml) answers every distinct validation prompt of its data once, with its own sampler
settings (those of its config's `sample` section) unless `--sampling` overrides them, exactly
as `dlms eval --checkpoint RUN --references --num_samples 0` does (the same function:
dlms.eval.reference_task). Prompt i is sampled with seed `--seed` + i.

Per run it prints one JSON line: BLEU with its bootstrap standard error over prompts, ROUGE-1/2/L,
the share of responses that mention every slot value of their MR (with its binomial standard
error) and the share of slots mentioned, mean length in words beside the references', the share
of empty responses, unigram entropy and distinct-2 of the responses (beside those of the first
reference of each prompt: as many texts, since both figures grow with the text pooled), the
seconds and network calls per response (one prompt at a time, as `respond` goes), and BLEU as a
ratio of the first run's (the baseline: put the ar run first). With `--report DIR` it writes there results.jsonl (those
lines), outputs.jsonl (every response, by prompt, with its references) and report.md (the
table and the first responses of each run side by side).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/data_to_text.py \\
        --runs runs/e2e-ar runs/e2e-masked runs/e2e-gaussian --report docs/data-to-text-e2e
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

from threads import set_threads  # bench/threads.py, beside this script

FIGURES = ("bleu", "bleu_se", "rouge1", "rouge2", "rougeL", "slot_coverage", "slot_coverage_se", "slot_recall",
           "mean_words", "reference_mean_words", "empty_share", "reference_slot_coverage")


def unigram_entropy(texts: list[str]) -> float:
    """Entropy (nats) of the pooled lower-cased word distribution of `texts`; 0.0 without words."""
    counts = Counter(w for t in texts for w in t.lower().split())
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values()) if total else 0.0


def distinct_2(texts: list[str]) -> float:
    """Distinct word bigrams over all bigrams of `texts` (lower-cased); 0.0 without bigrams."""
    grams = [tuple(w[i:i + 2]) for t in texts for w in [t.lower().split()] for i in range(len(w) - 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def evaluate_run(run: str, sampling: dict, seed: int, num_prompts: int | None) -> tuple[dict, list[dict]]:
    """(the run's figures, its responses as {"prompt", "response", "references"}) on its
    validation prompts."""
    from dlms.eval.reference_task import evaluate_with_references, load_reference_groups
    from dlms.model import DiffusionLM

    lm = DiffusionLM.load_checkpoint(run, device="cpu")
    groups = load_reference_groups(lm, True, None)
    count = len(groups.prompts) if num_prompts is None else min(num_prompts, len(groups.prompts))
    start = time.perf_counter()
    calls = 0

    def counting(*args, **kwargs):  # respond() generates prompt by prompt: the network calls of each
        nonlocal calls
        out = generate(*args, **kwargs)
        calls += lm.last_sampler.stats.network_calls
        return out

    generate, lm.generate_continuations = lm.generate_continuations, counting
    result = evaluate_with_references(lm, groups, num_prompts=count, seed=seed, sampling=sampling, show=count)
    seconds = time.perf_counter() - start
    responses = [e["response"] for e in result["ref_examples"]]
    # One reference per prompt (the first), as many texts as responses: pooled entropy and
    # distinct-n grow with the amount of text, so all references would not compare.
    references = [refs[0] for refs in groups.references[:count]]
    line = {"bench": "data_to_text", "run": run, "method": lm.cfg.method.name,
            "sampler": lm.last_sampler.name, "options": lm.last_options,
            **{k: result[f"ref_{k}"] for k in FIGURES if f"ref_{k}" in result},
            "entropy": unigram_entropy(responses), "reference_entropy": unigram_entropy(references),
            "distinct_2": distinct_2(responses), "reference_distinct_2": distinct_2(references),
            "prompts": count, "seconds_per_response": seconds / count, "calls_per_response": calls / count,
            "notes": result["notes"]}
    outputs = [{"prompt": p, "response": r, "references": refs}
               for p, r, refs in zip(groups.prompts[:count], responses, groups.references[:count])]
    return line, outputs


def report(lines: list[dict], outputs: dict[str, list[dict]], out: Path, command: str, first: int) -> None:
    """results.jsonl, outputs.jsonl and report.md in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    with (out / "outputs.jsonl").open("w", encoding="utf-8") as fh:
        for run, rows in outputs.items():
            for row in rows:
                fh.write(json.dumps({"run": run, **row}) + "\n")
    ref = lines[0]
    table = ["| run | sampler | BLEU | x first | ROUGE-L | all slots | slot recall | words (refs) | empty | "
             "entropy (refs) | distinct-2 (refs) | calls / response | s / response |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for line in lines:
        table.append(
            f"| {line['run']} | {line['sampler']} | {line['bleu']:.1f} ± {line['bleu_se']:.1f} | "
            f"{'-' if line['bleu_ratio'] is None else format(line['bleu_ratio'], '.2f')} | {line['rougeL']:.3f} | "
            f"{line['slot_coverage']:.2f} ± {line['slot_coverage_se']:.2f} | {line['slot_recall']:.2f} | "
            f"{line['mean_words']:.1f} ({line['reference_mean_words']:.1f}) | {line['empty_share']:.2f} | "
            f"{line['entropy']:.2f} ({line['reference_entropy']:.2f}) | "
            f"{line['distinct_2']:.2f} ({line['reference_distinct_2']:.2f}) | {line['calls_per_response']:.0f} | "
            f"{line['seconds_per_response']:.2f} |")
    examples = []
    rows = list(outputs.values())
    for i in range(min(first, len(rows[0]))):
        examples.append(f"**{rows[0][i]['prompt']}**\n")
        examples.append(f"- reference: {rows[0][i]['references'][0]}")
        for run, run_rows in outputs.items():
            examples.append(f"- {run}: {run_rows[i]['response']}")
        examples.append("")
    text = "\n".join([
        "# Data-to-text on E2E NLG: every family on the same split and budget", "",
        "Written by `bench/data_to_text.py`:", "", "```bash", command, "```", "",
        f"{ref['prompts']} distinct validation meaning representations, one response each. BLEU: corpus "
        "BLEU against all the references of each MR (± bootstrap standard error over the MRs); "
        "'x first': BLEU over the first run's. All slots: the share of responses that mention every slot "
        f"value (± binomial standard error); the references themselves: {ref['reference_slot_coverage']:.2f}.", "",
        *table, "", "## First responses", "", *examples])
    (out / "report.md").write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="prompt/response runs; the first is the baseline")
    parser.add_argument("--sampling", default="{}",
                        help='JSON of sampler options for every run, by DiffusionLM.sample names, e.g. {"temperature": 0}')
    parser.add_argument("--num_prompts", type=int, default=None, help="the first N validation prompts (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--report", default=None, help="folder for results.jsonl, outputs.jsonl and report.md")
    parser.add_argument("--first", type=int, default=4, help="responses shown per run in report.md")
    args = parser.parse_args()
    set_threads(args.threads)
    sampling = json.loads(args.sampling)
    lines, outputs = [], {}
    for run in args.runs:
        line, rows = evaluate_run(run, sampling, args.seed, args.num_prompts)
        baseline = lines[0]["bleu"] if lines else line["bleu"]
        line["bleu_ratio"] = line["bleu"] / baseline if baseline > 0 else None  # no ratio to a BLEU of 0
        lines.append(line)
        outputs[run] = rows
        print(json.dumps(line), flush=True)
    if args.report:
        command = "OMP_NUM_THREADS=1 PYTHONPATH=src python bench/data_to_text.py " + " ".join(sys.argv[1:])
        report(lines, outputs, Path(args.report), command, args.first)


if __name__ == "__main__":
    main()
