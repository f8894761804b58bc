"""The speed/quality frontier of generation: tokens per second against sample quality, for AR
decoding with a KV cache and every masked, block, threshold, distilled and gaussian configuration.

Two parts, each printing one JSON object per line:

  speed    random weights (speed does not depend on training): AR with its KV cache against
           masked decoding with a fixed number of tokens per network call (1 = one-token-per-step
           ancestral, the baseline), with blocks and each canvas cache, and block diffusion with
           its exact cache, at each sequence length and batch size. Runs are interleaved, the
           median of `--repeats` is kept, and every record carries its ratio to AR and to the
           one-token-per-step ancestral run of the same shape. A random model is never sure of
           anything, so threshold decoding is timed in the quality part, on trained models,
           where its tokens per call are real.

  quality  trained runs at the data's own length: every configuration samples `--num_samples`
           texts (each label in turn, temperature 1), timed, with their figures beside the
           data's (mean words, empty share, unigram entropy, the gaps and `at_data_length`),
           perplexity under `--judge` (an AR run that is none of the compared models) and, on
           the built-in corpus, grammaticality. `--plot` draws the frontier, `--report` writes
           the JSON lines, the plot and a markdown table into a folder.

    PYTHONPATH=src python bench/generation_frontier.py speed [--preset base] [--seq_lens 128,256]
        [--batches 1,16] [--repeats 2] [--threads N]
    PYTHONPATH=src python bench/generation_frontier.py quality --masked runs/demo-masked
        --ar runs/demo-ar --judge runs/demo-judge [--block RUN] [--distilled RUN] [--gaussian RUN]
        [--num_samples 200] [--batch 50] [--report docs/generation-frontier-builtin]
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from threads import set_threads  # bench/threads.py, beside this script

from dlms.backbones import build_backbone, resolve_model_config
from dlms.config import ModelConfig
from dlms.method_options import METHOD_OPTIONS
from dlms.methods import SpecialTokens, build_method
from dlms.samplers import build_sampler

SPECIAL = SpecialTokens(pad=0, bos=1, eos=2, mask=3, vocab_size=1024)


# ---------------------------------------------------------------------------------------- speed
@dataclass
class SpeedCase:
    label: str  # what is timed, e.g. "masked confidence k=4 block=32 cache=dual"
    family: str
    sampler: str
    options: dict
    seconds: list[float] = field(default_factory=list)
    tokens: int = 0
    calls: int = 0


def random_model(method_name: str, preset: str, seq_len: int, block_size: int = 4):
    options = METHOD_OPTIONS.get(method_name)
    method = build_method(options(block_size=block_size) if method_name == "block" else options(), SPECIAL)
    cfg = resolve_model_config(ModelConfig(preset=preset), seq_len, method.causal)
    torch.manual_seed(0)
    return method, build_backbone(cfg, SPECIAL.vocab_size).eval()


def speed_canvas(batch: int, seq_len: int, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """bos first; for the bidirectional families also a fixed last token, so that no random
    end-of-text ends a row early and every run writes the same number of tokens."""
    canvas = torch.full((batch, seq_len), SPECIAL.mask, dtype=torch.long)
    canvas[:, 0] = SPECIAL.bos
    if not causal:
        canvas[:, -1] = 5
    return canvas, canvas != SPECIAL.mask


def written_tokens(out: torch.Tensor, fixed: torch.Tensor) -> int:
    """Positions the sampler wrote (AR rows that ended early write fewer)."""
    return int(((out != SPECIAL.pad) & ~fixed).sum())


def run_speed(args) -> list[dict]:
    records = []
    for seq_len in args.seq_lens:
        for batch in args.batches:
            models = {name: random_model(name, args.preset, seq_len, args.bd3_block) for name in ("ar", "masked", "block")}
            free = seq_len - 2
            cases = [SpeedCase("ar kv-cache", "ar", "ar", {}),
                     SpeedCase("masked ancestral 1 token/step", "masked", "ancestral", {"num_steps": free + 1})]
            for k in args.tokens_per_call:
                for cache in ("none", "prefix", "dual"):
                    cases.append(SpeedCase(f"masked confidence k={k} block={args.block_size} cache={cache}", "masked",
                                           "confidence", {"tokens_per_step": k, "block_size": args.block_size,
                                                         "cache": cache}))
            for k in (1, args.bd3_block):
                cases.append(SpeedCase(f"block(bd3={args.bd3_block}) confidence k={k} exact cache", "block",
                                       "confidence", {"tokens_per_step": k, "cache": "dual"}))
            if args.only:  # AR always runs: every ratio is to it
                cases = [c for c in cases if c.family == "ar" or re.search(args.only, c.label)]
            for round_ in range(1 + args.repeats):
                order = cases[round_ % len(cases):] + cases[:round_ % len(cases)]
                for case in order:
                    method, model = models[case.family]
                    canvas, fixed = speed_canvas(batch, seq_len, method.causal)
                    sampler = build_sampler(case.sampler, method, model)
                    start = time.perf_counter()
                    out = sampler.sample(canvas, fixed, generator=torch.Generator().manual_seed(round_), **case.options)
                    seconds = time.perf_counter() - start
                    if round_ > 0:  # round 0 warms up
                        case.seconds.append(seconds)
                    case.tokens = written_tokens(out, fixed)
                    case.calls = getattr(sampler, "stats", None).network_calls if hasattr(sampler, "stats") else case.tokens // batch
            ar_speed = cases[0].tokens / statistics.median(cases[0].seconds)
            ancestral = [c for c in cases if c.sampler == "ancestral"]
            base_speed = ancestral[0].tokens / statistics.median(ancestral[0].seconds) if ancestral else None
            for case in cases:
                speed = case.tokens / statistics.median(case.seconds)
                record = {"bench": "generation_frontier", "part": "speed", "config": case.label,
                          "family": case.family, "preset": args.preset, "seq_len": seq_len, "batch": batch,
                          "tokens_per_s": round(speed, 1), "network_calls": case.calls,
                          "tokens_per_call": round(case.tokens / batch / max(case.calls, 1), 2),
                          "vs_ar": round(speed / ar_speed, 3),
                          "vs_ancestral": round(speed / base_speed, 3) if base_speed else None,
                          "seconds": round(statistics.median(case.seconds), 3), "threads": torch.get_num_threads()}
                print(json.dumps(record), flush=True)
                records.append(record)
    return records


# -------------------------------------------------------------------------------------- quality
def quality_configs(args) -> list[tuple[str, str, dict]]:
    """(run role, label, sample options) for every configuration of the quality part."""
    configs = [("ar", "ar kv-cache", {"sampler": "ar"})]
    size = args.block_size
    if args.masked:
        configs += [
            ("masked", "masked ancestral 1 token/step", {"sampler": "ancestral", "steps": "length"}),
            ("masked", f"masked confidence 1 token/step block {size}", {"sampler": "confidence", "tokens_per_step": 1,
                                                                       "block_size": size}),
            ("masked", f"masked confidence 2 tokens/step block {size}", {"sampler": "confidence", "tokens_per_step": 2,
                                                                        "block_size": size}),
            # Ordered by the entropy of each position's distribution, not by the drawn token's
            # probability: no preference for likely draws, so less mode-seeking.
            ("masked", f"masked confidence (entropy) 1 token/step block {size}",
             {"sampler": "confidence", "tokens_per_step": 1, "block_size": size, "confidence": "entropy"}),
        ]
        for threshold in args.thresholds:
            for cache in ("none", "dual"):
                configs.append(("masked", f"masked threshold {threshold} block {size} cache {cache}",
                                {"sampler": "threshold", "threshold": threshold, "block_size": size, "cache": cache}))
            configs.append(("masked", f"masked threshold (entropy) {threshold} block {size} cache dual",
                            {"sampler": "threshold", "threshold": threshold, "block_size": size, "cache": "dual",
                             "confidence": "entropy"}))
        # The rows above end texts as the run's `text_end` "auto" says (drawn for packed rows,
        # frontier for padded ones); these say what each choice does on its own.
        for text_end, said in (("drawn", "end drawn"), ("frontier", "end at frontier")):
            configs += [
                ("masked", f"masked confidence 1 token/step block {size}, {said}",
                 {"sampler": "confidence", "tokens_per_step": 1, "block_size": size, "text_end": text_end}),
                ("masked", f"masked threshold {args.thresholds[0]} block {size} cache dual, {said}",
                 {"sampler": "threshold", "threshold": args.thresholds[0], "block_size": size, "cache": "dual",
                  "text_end": text_end}),
            ]
        configs.append(("masked", f"masked factor 1.0 block {size} cache dual",
                        {"sampler": "threshold", "factor": 1.0, "block_size": size, "cache": "dual"}))
    if args.distilled:
        configs.append(("distilled", "distilled masked student (its steps)", {"sampler": "ancestral"}))
        if args.masked:  # the teacher at the student's steps, undistilled: what the distillation bought
            configs.append(("masked", "masked ancestral at the student's steps", {"sampler": "ancestral",
                                                                                   "steps": "student"}))
    if args.block:
        configs += [("block", "block confidence 1 token/step", {"sampler": "confidence", "tokens_per_step": 1}),
                    ("block", "block threshold 0.9 exact cache", {"sampler": "threshold", "threshold": 0.9,
                                                                  "cache": "dual"})]
    if args.gaussian:
        configs += [("gaussian", f"gaussian {s} {n} steps", {"sampler": s, "steps": n})
                    for s, n in (("ddpm", 200), ("ddim", 50), ("ddim", 16))]
    if args.gaussian_distilled:
        configs.append(("gaussian_distilled", "distilled gaussian student (its steps)", {"sampler": "ddim"}))
    if args.only:  # AR always runs: the baseline
        configs = [c for c in configs if c[0] == "ar" or re.search(args.only, c[1])]
    return configs


def resolved_options(options: dict, lm, runs: dict) -> dict:
    """A configuration's sample options with "length" / "student" steps made numbers."""
    options = dict(options)
    if options.get("steps") == "length":
        options["steps"] = lm.cfg.data.seq_len - len(lm.encode_prompt(None))
    elif options.get("steps") == "student":
        options["steps"] = runs["distilled"].cfg.sample.num_steps
    return options


def load_runs(args) -> dict:
    from dlms.model import DiffusionLM

    return {role: DiffusionLM.load_checkpoint(path, device=args.device)
            for role, path in (("ar", args.ar), ("masked", args.masked), ("distilled", args.distilled),
                               ("block", args.block), ("gaussian", args.gaussian),
                               ("gaussian_distilled", args.gaussian_distilled)) if path}


def run_trained_speed(args) -> list[dict]:
    """Tokens/s of the quality part's configurations on trained runs, at batch 1, interleaved:
    each round samples one text per configuration (the order rotating each round, the same
    seed for every configuration within a round), and each configuration's tokens/s is the median
    over rounds. Ratios: to AR and to one-token-per-step ancestral sampling, both in this process.
    Trained weights decide how many tokens threshold decoding commits per call and where texts
    end, so this is where its speed is real."""
    runs = load_runs(args)
    configs = quality_configs(args)
    rates: dict[str, list[float]] = {label: [] for _, label, _ in configs}
    per_call: dict[str, list[float]] = {label: [] for _, label, _ in configs}
    for round_ in range(args.rounds + 1):  # round 0 warms up
        shift = round_ % len(configs)
        for role, label, options in configs[shift:] + configs[:shift]:
            lm = runs[role]
            options = resolved_options(options, lm, runs)
            begin = time.perf_counter()
            ids = lm.sample_ids(None, lm.cfg.data.seq_len, num_samples=1, seed=args.seed + round_,
                                temperature=args.temperature, **options)
            seconds = time.perf_counter() - begin
            tokens = len(lm.tokenizer.encode(lm.decode(ids)[0], add_special_tokens=False)) + 1  # text + its end
            stats = getattr(getattr(lm, "last_sampler", None), "stats", None)
            if round_ > 0:
                rates[label].append(tokens / seconds)
                per_call[label].append(tokens / max(stats.network_calls, 1) if stats is not None else 1.0)
    medians = {label: statistics.median(v) for label, v in rates.items()}
    ar = medians[configs[0][1]]
    ancestral = next((medians[label] for _, label, o in configs
                      if o.get("sampler") == "ancestral" and o.get("steps") == "length"), None)
    records = []
    for role, label, _ in configs:
        record = {"bench": "generation_frontier", "part": "trained_speed", "config": label, "family": role,
                  "run": getattr(args, role), "batch": 1, "rounds": args.rounds,
                  "tokens_per_s": round(medians[label], 1),
                  "tokens_per_call": round(statistics.median(per_call[label]), 2),
                  "vs_ar": round(medians[label] / ar, 3),
                  "vs_ancestral": round(medians[label] / ancestral, 3) if ancestral else None,
                  "threads": torch.get_num_threads()}
        print(json.dumps(record), flush=True)
        records.append(record)
    return records


def trained_speed_table(records: list[dict], name: str) -> list[str]:
    """Markdown lines for the trained_speed records."""
    first = records[0]
    lines = [f"## Speed on the trained runs, interleaved (`{name}`)", "",
             f"Batch 1, {first['rounds']} rounds of one text per configuration in rotating order (the same seed "
             f"for all within a round), median tokens/s, {first['threads']} thread(s) "
             "(`python bench/generation_frontier.py trained_speed` printed the lines in that file).", "",
             "| config | tokens/s | tokens/call | x AR | x ancestral |", "|---|---|---|---|---|"]
    for r in records:
        anc = "-" if r.get("vs_ancestral") is None else f"{r['vs_ancestral']:.2f}"
        lines.append(f"| {r['config']} | {r['tokens_per_s']} | {r['tokens_per_call']} | {r['vs_ar']:.2f} | {anc} |")
    return lines + [""]


def runs_paths(args) -> list[str]:
    return [p for p in (args.ar, args.masked, args.distilled, args.block, args.gaussian, args.gaussian_distilled) if p]


def run_quality(args) -> list[dict]:
    from dlms.eval.evaluator import load_evaluator
    from dlms.eval.generation import data_reference_texts, generation_figures

    runs = load_runs(args)
    compared = {str(Path(p).resolve()) for p in runs_paths(args)}
    if args.judge and str(Path(args.judge).resolve()) in compared:
        raise SystemExit(f"error: the judge {args.judge} is one of the compared runs; judge with a run that is none "
                         "of them (an AR run of another seed, or a Hugging Face LM)")
    judge = load_evaluator(args.judge, device=args.device) if args.judge else None
    reference = runs["ar"]
    builtin = reference.cfg.data.dataset.startswith("builtin")
    labels = reference.balanced_labels(args.num_samples)
    data_texts = data_reference_texts(reference, n=max(args.num_samples, 1000), labels=labels)
    # Diversity across samples (distinct-2, self-BLEU) of as many data texts as samples: unigram
    # entropy is within each text, and a mode-seeking sampler can match it while repeating itself.
    data_figures = generation_figures(data_texts[:args.num_samples], tokenizer=reference.tokenizer)
    data_diversity = {"data_distinct_2": round(data_figures["distinct_2"], 4),
                      "data_self_bleu": round(data_figures["self_bleu"], 4)}
    records = []
    for role, label, options in quality_configs(args):
        lm = runs[role]
        options = resolved_options(options, lm, runs)
        length = lm.cfg.data.seq_len
        model_labels = labels if lm.balanced_labels(1) else None
        texts, calls, seconds = [], 0, 0.0
        for start in range(0, args.num_samples, args.batch):
            n = min(args.batch, args.num_samples - start)
            begin = time.perf_counter()
            ids = lm.sample_ids(None, length, label=None if model_labels is None else model_labels[start:start + n],
                                num_samples=n, seed=args.seed + start, temperature=args.temperature, **options)
            seconds += time.perf_counter() - begin
            texts += lm.decode(ids)
            stats = getattr(getattr(lm, "last_sampler", None), "stats", None)
            calls += stats.network_calls if stats is not None else 0
        tokens = sum(len(lm.tokenizer.encode(t, add_special_tokens=False)) + 1 for t in texts)  # text + its end
        figures = generation_figures(texts, tokenizer=lm.tokenizer, data_texts=data_texts, evaluator=judge,
                                     builtin=builtin, labels=model_labels,
                                     label_column=lm.cfg.data.label_column if model_labels else None)
        record = {"bench": "generation_frontier", "part": "quality", "config": label, "family": role,
                  "run": getattr(args, role if role != "gaussian_distilled" else "gaussian_distilled"),
                  "num_samples": len(texts), "batch": args.batch, "temperature": args.temperature,
                  "tokens_per_s": round(tokens / seconds, 1), "seconds": round(seconds, 2),
                  # tokens per row and network call: rows of a batch move together, so at batch > 1 a
                  # step waits for the slowest row and this is lower than the sampler's own rate.
                  **({"network_calls": calls, "tokens_per_call": round(tokens / max(calls, 1) / args.batch, 2)}
                     if calls else {}),
                  **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items()}, **data_diversity,
                  "example": texts[0] if texts else ""}
        print(json.dumps(record), flush=True)
        records.append(record)
    return records


# ----------------------------------------------------------------------------------- report
def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quality = [r for r in records if r["part"] == "quality"]
    keys = [k for k in ("grammatical", "gen_ppl") if any(k in r for r in quality)]
    fig, axes = plt.subplots(1, len(keys), figsize=(6.2 * len(keys), 4.6), squeeze=False)
    markers = {"ar": "s", "masked": "o", "distilled": "D", "block": "^", "gaussian": "v", "gaussian_distilled": "P"}
    for ax, key in zip(axes[0], keys):
        for r in quality:
            if key not in r:
                continue
            face = "none" if not (r.get("at_data_length", True) and r.get("at_data_diversity", True)) else None
            ax.scatter(r["tokens_per_s"], r[key], marker=markers.get(r["family"], "o"), s=46,
                       facecolors=face, edgecolors="C%d" % list(markers).index(r["family"]) if r["family"] in markers else "k",
                       color=None if face else "C%d" % list(markers).index(r["family"]))
            ax.annotate(re.sub(r" block \d+", "", r["config"].replace("masked ", "")), (r["tokens_per_s"], r[key]),
                        fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("tokens / s (higher is faster)")
        ax.set_ylabel({"grammatical": "grammatical share (higher is better)",
                       "gen_ppl": "perplexity under the judge (lower is better)"}[key])
        if key == "gen_ppl":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.suptitle("generation frontier\n(hollow: not at the data's length, entropy and diversity across samples)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def report(records: list[dict], folder: Path, command: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for r in records:  # lines written before the verdict existed carry what it is made of
        if r["part"] == "quality" and "at_data_diversity" not in r and r.get("data_distinct_2"):
            r["at_data_diversity"] = abs(r["distinct_2"] / r["data_distinct_2"] - 1) <= 0.10 + 1e-9
    (folder / "frontier.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    plot(records, folder / "frontier.png")
    quality = [r for r in records if r["part"] == "quality"]
    lines = ["# Generation frontier", "", f"Made by `{command}`.", "", *runs_lines(quality),
             "| config | tokens/s | tokens/call | grammatical | perplexity (judge) | mean words | unigram entropy "
             "| at data length | distinct-2 | self-BLEU | at data diversity |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in quality:
        lines.append("| {config} | {tps} | {tpc} | {g} | {p} | {mw:.1f} | {ue:.3f} | {ok} | {d2:.3f} | {sb:.1f} | {dv} |".format(
            config=r["config"], tps=r["tokens_per_s"], tpc=r.get("tokens_per_call", "-"),
            g=r.get("grammatical", "-"), p=round(r["gen_ppl"], 2) if "gen_ppl" in r else "-",
            mw=r["mean_words"], ue=r["unigram_entropy"], ok="yes" if r.get("at_data_length") else "**no**",
            d2=r["distinct_2"], sb=r.get("self_bleu", float("nan")),
            dv="yes" if r.get("at_data_diversity") else "**no**"))
    if quality:
        r = quality[0]
        lines.append("| *the data (validation texts)* | | | | | {:.1f} | {:.3f} | | {:.3f} | {:.1f} | |".format(
            r["data_mean_words"], r["data_unigram_entropy"], r["data_distinct_2"], r["data_self_bleu"]))
    lines += ["", "tokens/call: tokens per row and network call; the rows of a batch move together, so at batch > 1 "
              "a step waits for the slowest row. at data length: mean words within 10% and unigram entropy within "
              "5% of the data's. distinct-2 and self-BLEU measure diversity across samples (the data's: as many "
              "validation texts as samples); at data diversity: distinct-2 within 10% of the data's."]
    lines += ["", "![frontier](frontier.png)", ""]
    trained = folder / "trained-speed.jsonl"
    if trained.exists():
        lines += trained_speed_table([json.loads(line) for line in trained.read_text().splitlines() if line.strip()],
                                     trained.name)
    for speed_file in sorted(folder.glob("speed-*.jsonl")):
        lines += speed_table([json.loads(line) for line in speed_file.read_text().splitlines() if line.strip()],
                             speed_file.name)
    (folder / "report.md").write_text("\n".join(lines))


def runs_lines(quality: list[dict]) -> list[str]:
    """What each compared run is, read from its config.yaml (when the run folder is here)."""
    import yaml

    lines = []
    for run in dict.fromkeys(r["run"] for r in quality if r.get("run")):
        path = Path(run) / "config.yaml"
        if not path.is_file():
            continue
        cfg = yaml.safe_load(path.read_text())
        m, t, d = cfg["method"], cfg["train"], cfg.get("distill") or {}
        what = f"method {m['name']}" + (f" (block {m['block_size']})" if m["name"] == "block" else "")
        what += f", preset {cfg['model']['preset']}, {t['max_steps']} steps, seed {t['seed']}"
        if d.get("teacher"):
            what += (f"; a student of {d['teacher']} ({d['teacher_steps']} -> {cfg['sample']['num_steps']} "
                     f"steps, {d['rounds']} rounds of {t['max_steps']} steps, {d['objective']})")
        lines.append(f"- `{run}`: {what}")
    return lines + ([""] if lines else [])


def speed_table(records: list[dict], name: str) -> list[str]:
    """Markdown lines: tokens/s and the ratios to AR and to ancestral, one column per shape."""
    shapes = sorted({(r["seq_len"], r["batch"]) for r in records})
    configs = list(dict.fromkeys(r["config"] for r in records))
    by = {(r["config"], r["seq_len"], r["batch"]): r for r in records}
    first = records[0]
    lines = [f"## Speed on random weights (`{name}`)", "",
             f"Preset `{first['preset']}`, {first['threads']} thread(s); each cell: tokens/s, then x AR with its KV cache "
             "and x one-token-per-step ancestral, measured in the same process, interleaved, median "
             "(`python bench/generation_frontier.py speed` printed the lines in that file).", "",
             "| config | " + " | ".join(f"{L} tokens, batch {b}" for L, b in shapes) + " |",
             "|---|" + "---|" * len(shapes)]
    for config in configs:
        cells = []
        for L, b in shapes:
            r = by.get((config, L, b))
            anc = "" if r is None or r.get("vs_ancestral") is None else f", {r['vs_ancestral']:.1f}x anc."
            cells.append("-" if r is None else f"{r['tokens_per_s']:.0f} ({r['vs_ar']:.2f}x AR{anc})")
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="part", required=True)
    sp = sub.add_parser("speed")
    sp.add_argument("--preset", default="base", choices=("tiny", "small", "base"))
    sp.add_argument("--seq_lens", type=lambda s: [int(x) for x in s.split(",")], default=[128, 256])
    sp.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16])
    sp.add_argument("--tokens_per_call", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8])
    sp.add_argument("--block_size", type=int, default=32, help="masked decoding blocks")
    sp.add_argument("--bd3_block", type=int, default=4, help="the block-diffusion model's block size")
    sp.add_argument("--only", default=None,
                    help="time only the configurations whose label matches this regular expression (and AR, the "
                         "baseline); e.g. skip one-token-per-step runs that take minutes on the base preset")
    sp.add_argument("--repeats", type=int, default=2)
    sp.add_argument("--threads", type=int, default=0)
    qp = sub.add_parser("quality")
    tp = sub.add_parser("trained_speed", help="tokens/s of the quality configurations on trained runs at batch 1, "
                        "interleaved, median over --rounds")
    for parser in (qp, tp):
        parser.add_argument("--ar", required=True, help="the AR run compared (and the data's reference)")
        parser.add_argument("--masked", default=None)
        parser.add_argument("--distilled", default=None, help="a masked student from `dlms distill`")
        parser.add_argument("--block", default=None, help="a block-diffusion run")
        parser.add_argument("--gaussian", default=None)
        parser.add_argument("--gaussian_distilled", default=None)
        parser.add_argument("--thresholds", type=lambda s: [float(x) for x in s.split(",")], default=[0.9, 0.7, 0.5])
        parser.add_argument("--block_size", type=int, default=8,
                            help="decoding blocks of the masked confidence and threshold configurations")
        parser.add_argument("--only", default=None,
                            help="run only the configurations whose label matches this regular expression (and AR)")
        parser.add_argument("--temperature", type=float, default=1.0)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--device", default="cpu")
        parser.add_argument("--threads", type=int, default=0)
    qp.add_argument("--judge", default=None, help="an AR run (or HF LM) that is none of the compared models")
    qp.add_argument("--num_samples", type=int, default=200)
    qp.add_argument("--batch", type=int, default=50)
    qp.add_argument("--report", default=None, help="folder for frontier.jsonl, frontier.png and report.md")
    tp.add_argument("--rounds", type=int, default=5)
    rp = sub.add_parser("report", help="redraw DIR/report.md and frontier.png from DIR/frontier.jsonl and DIR/speed-*.jsonl")
    rp.add_argument("folder")
    args = p.parse_args(argv)
    if args.part == "report":
        folder = Path(args.folder)
        records = [json.loads(line) for line in (folder / "frontier.jsonl").read_text().splitlines() if line.strip()]
        command = next((line for line in (folder / "report.md").read_text().splitlines() if line.startswith("Made by")),
                       "Made by `?`.")[len("Made by `"):-2] if (folder / "report.md").exists() else "?"
        report(records, folder, command)
        return 0
    set_threads(args.threads)
    if args.part == "speed":
        run_speed(args)
        return 0
    if args.part == "trained_speed":
        run_trained_speed(args)
        return 0
    records = run_quality(args)
    if args.report:
        report(records, Path(args.report), "python bench/generation_frontier.py " + " ".join(argv or sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
