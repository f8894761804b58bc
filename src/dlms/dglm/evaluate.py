"""`dlms dglm eval`: steering success, fluency and diversity of the DGLM pipeline, beside the
unguided pipeline and the plain AR decoder, over a sweep of guidance scales.

Prompts are prefixes of held-out texts (the embed stage's cuts). On the built-in corpus only
prefixes of sentiment-neutral words within the first sentence are used, and each is steered to
every sentiment; the exact checker judges the whole text. On a labelled file each prefix is
steered to the opposite of its text's label (`--target opposite`) or to a named value, and a
TF-IDF judge fitted on the training split judges the continuation.

Fluency: perplexity of the continuations (with their end token) given the prefix under a
reference AR model (default: the base decoder, before any fine-tuning). Diversity: distinct-1/2/3
over the continuations.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..data.sources import parse_builtin
from ..errors import ConfigError
from ..eval.text_metrics import distinct_n
from ..reporting.tables import markdown_table, write_csv
from .data import PairTokenizer, load_split_texts
from .judges import BuiltinJudge, TfidfJudge
from .pairs import cut_pairs_indexed
from .pipeline import DglmPipeline
from .soft_prompt import CausalLM

COLUMNS = ["system", "guidance", "success", "grammatical", "fluency_ppl", "distinct_1", "distinct_2", "distinct_3",
           "samples", "seconds"]


@dataclass
class Prompts:
    prefixes: list[str]
    targets: list[str]


def builtin_prompts(pipe: DglmPipeline, attribute: str, classes: list[str], count: int,
                    target: str | None = None) -> Prompts:
    """Neutral prefixes of held-out built-in texts, each steered to every class (or to `target`)."""
    from ..data.corpus import sentiment_neutral_words
    from .train import EMBED, load_embed_stage

    if attribute != "sentiment":
        raise ConfigError("on the built-in corpus the exact checker judges 'sentiment'; steer the label 'sentiment'",
                          cli="on the built-in corpus the exact checker judges 'sentiment'; pass --label sentiment")
    if target is not None and target not in classes:
        said = (f"'{target}' is not a class of '{attribute}' here; the built-in corpus's prefixes are neutral, "
                f"so pass one of {', '.join(classes)}, or leave")
        raise ConfigError(f"target {said} target None to steer to each", cli=f"--target {said} --target out to steer to each")
    if target is not None:
        classes = [target]
    neutral = sentiment_neutral_words() - {"."}
    seen, chosen = set(), []
    for prefix, _ in load_embed_stage(pipe.run_dir / EMBED).val_pairs:
        if prefix not in seen and set(prefix.split()) <= neutral and pipe.fits(prefix):
            seen.add(prefix)
            chosen.append(prefix)
    chosen = chosen[:count]
    if not chosen:
        raise ConfigError("no held-out prefix is sentiment-neutral; embed more built-in texts")
    return Prompts([p for p in chosen for _ in classes], [c for _ in chosen for c in classes])


def labelled_prompts(pipe: DglmPipeline, attribute: str, target: str, count: int,
                     classes: list[str]) -> tuple[Prompts, TfidfJudge]:
    """Prefixes of held-out labelled texts and their targets; the judge fitted on the train split."""
    d = pipe.cfg.data
    texts = load_split_texts(d, (attribute,))
    judge = TfidfJudge.fit(attribute, (texts.train, texts.train_labels[attribute]),
                           (texts.val, texts.val_labels[attribute]))
    labels = texts.val_labels[attribute]
    prefixes, targets = [], []
    for i, prefix, _ in cut_pairs_indexed(texts.val, d.seed + 1, d.min_words):
        if labels[i] is None or not pipe.fits(prefix):
            continue
        if target == "opposite":
            if len(classes) != 2:
                raise ConfigError(f"target 'opposite' needs a two-class attribute; '{attribute}' has {classes}",
                                  cli=f"--target opposite needs a two-class attribute; '{attribute}' has {classes}")
            goal = classes[1 - classes.index(labels[i])] if labels[i] in classes else None
        else:
            goal = target
        if goal is not None:
            prefixes.append(prefix)
            targets.append(goal)
        if len(prefixes) == count:
            break
    return Prompts(prefixes, targets), judge


@torch.no_grad()
def continuation_perplexity(lm: CausalLM, tokens: PairTokenizer, prefixes: list[str], continuations: list[str],
                            batch: int = 64) -> float:
    """exp(mean NLL per token) of the continuations (+ end token) given their prefixes. Each row
    is <bos> prefix continuation <eos>, padded on the right, so a causal model never sees padding
    before a scored token."""
    total, count = 0.0, 0
    device = next(lm.parameters()).device
    for start in range(0, len(prefixes), batch):
        rows, scored = [], []
        for prefix, continuation in zip(prefixes[start:start + batch], continuations[start:start + batch]):
            ids, head = tokens.whole(prefix, continuation)
            rows.append(ids)
            scored.append([False] * head + [True] * (len(ids) - head))
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [tokens.pad_id] * (width - len(r)) for r in rows], device=device)
        mask = torch.tensor([m + [False] * (width - len(m)) for m in scored], device=device)
        logits = lm.logits(lm.token_embeddings(ids))[:, :-1]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        total += float((nll * mask[:, 1:]).sum())
        count += int(mask[:, 1:].sum())
    return math.exp(total / max(count, 1))


def evaluate(pipe: DglmPipeline, attribute: str, guidance_scales: list[float], num_prefixes: int = 100,
             target: str | None = None, reference: str | None = None, seed: int = 0, include_plain: bool = True,
             log: Callable[[str], None] = print, **overrides: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of the results table (plain AR, then the pipeline at each guidance scale) and facts
    about the set-up (judge, its accuracy, prompts)."""
    from .config import AT_LEAST_1, check_value
    from .decoder_loading import load_decoder_for
    from ..checks import check_number

    check_value("num_prefixes", num_prefixes, AT_LEAST_1)
    for scale in guidance_scales:
        check_number("guidance", scale, 0.0, optional=False, note="each guidance scale; 0: unguided")
    if not guidance_scales and not include_plain:
        raise ConfigError("nothing to evaluate: give at least one guidance scale (0: the unguided pipeline)")
    classes = pipe.classifier(attribute).classes
    if parse_builtin(pipe.cfg.data.dataset, pipe.cfg.data.builtin_examples) is not None:
        prompts, judge = builtin_prompts(pipe, attribute, classes, num_prefixes, target), BuiltinJudge()
        info: dict[str, Any] = {"judge": judge.name}
    else:
        prompts, judge = labelled_prompts(pipe, attribute, target or "opposite", num_prefixes, classes)
        info = {"judge": judge.name, "judge_held_out_accuracy": round(judge.held_out_accuracy, 4)}
    unknown = sorted(set(prompts.targets) - set(classes))
    if unknown:
        raise ConfigError(f"target '{unknown[0]}' is not a class of '{attribute}'; choose from {', '.join(classes)}")
    reference_name = reference or pipe.cfg.auto_regressive_model_name
    ref = load_decoder_for("reference model" if reference else "auto_regressive_model_name", reference_name,
                           pipe.device, positions=pipe.positions())
    ref_lm = CausalLM(ref.model).eval()
    ref_tokens = PairTokenizer(ref.tokenizer, pipe.cfg.decoder.max_prefix_tokens, pipe.positions())
    info.update(prompts=len(prompts.prefixes), unique_prefixes=len(set(prompts.prefixes)), reference=reference_name,
                attribute=attribute, target=target or ("every class" if isinstance(judge, BuiltinJudge) else "opposite"))

    examples: dict[str, list[str]] = {}  # the first samples of each system, for the report

    def fluency(texts: list[str]) -> float:  # scored in the pipeline's precision
        with pipe.autocast():
            return continuation_perplexity(ref_lm, ref_tokens, prompts.prefixes, texts)

    def row(system: str, guidance: float | None, make: Callable[[], list[str]]) -> dict[str, Any]:
        tic = time.perf_counter()
        texts = make()
        seconds = time.perf_counter() - tic
        verdict = judge.judge(prompts.prefixes, texts, prompts.targets)
        result = {"system": system, "guidance": guidance,
                  "success": round(sum(verdict["success"]) / len(texts), 4),
                  "grammatical": round(sum(verdict["grammatical"]) / len(texts), 4) if "grammatical" in verdict else None,
                  "fluency_ppl": round(fluency(texts), 3),
                  **{f"distinct_{n}": round(distinct_n(texts, n), 4) for n in (1, 2, 3)},
                  "samples": len(texts), "seconds": round(seconds, 1)}
        log(json.dumps(result))
        shown = [f"[{t}] {p} | {text}" for p, t, text in list(zip(prompts.prefixes, prompts.targets, texts))[:4]]
        examples[f"{system}" + ("" if guidance is None else f" (guidance {guidance:g})")] = shown
        for line in shown:
            log(f"    {line}")
        return result

    info["generation"] = {k: v for k, v in vars(pipe.settings(**overrides)).items() if k != "guidance"}
    rows = []
    if include_plain:
        rows.append(row("plain-ar", None, lambda: pipe.generate_plain(prompts.prefixes, 1, seed, **overrides)))
    for scale in guidance_scales:
        name = "dglm-unguided" if scale == 0 else "dglm-guided"
        rows.append(row(name, scale, lambda s=scale: pipe.generate(prompts.prefixes, 1, {attribute: prompts.targets},
                                                                    s, seed, **overrides)))
    info["examples"] = examples
    return rows, info


def plot_sweep(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Success and fluency perplexity against the guidance scale; the plain AR decoder as lines."""
    from ..reporting import plots

    sweep = sorted((r for r in rows if r["guidance"] is not None), key=lambda r: r["guidance"])
    plain = next((r for r in rows if r["system"] == "plain-ar"), None)
    fig, (left, right) = plots.new_grid(2)
    scales = [r["guidance"] for r in sweep]
    left.plot(scales, [r["success"] for r in sweep], "o-", label="DGLM")
    if sweep and sweep[0].get("grammatical") is not None:
        left.plot(scales, [r["grammatical"] for r in sweep], "s--", label="DGLM grammatical")
    right.plot(scales, [r["fluency_ppl"] for r in sweep], "o-", label="DGLM")
    if plain:
        left.axhline(plain["success"], color="gray", linestyle=":", label="plain AR")
        right.axhline(plain["fluency_ppl"], color="gray", linestyle=":", label="plain AR")
    left.set(xlabel="guidance scale", ylabel="share of samples", title="steering success", ylim=(0, 1.02))
    right.set(xlabel="guidance scale", ylabel="perplexity under the reference AR", title="fluency")
    for ax in (left, right):
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return plots.save(fig, path)


def write_report(rows: list[dict[str, Any]], info: dict[str, Any], out: Path, title: str) -> list[Path]:
    """results.csv, guidance_sweep.png and report.md in `out`."""
    try:
        return _write_report(rows, info, out, title)
    except OSError as exc:
        said = f"cannot write the evaluation report into '{out}' ({exc.strerror or exc}); pass another"
        raise ConfigError(f"{said} folder", cli=f"{said} --out") from None


def _write_report(rows: list[dict[str, Any]], info: dict[str, Any], out: Path, title: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "results.csv", rows)
    plot = plot_sweep(rows, out / "guidance_sweep.png", title)
    facts = {k: v for k, v in info.items() if k != "examples"}
    table = markdown_table([{k: ("-" if v is None else v) for k, v in r.items()} for r in rows], COLUMNS)
    lines = [f"# {title}", "", *(f"- {k}: {v}" for k, v in facts.items()), "", table, "",
             f"![guidance sweep]({plot.name})", "", "## First samples of each system", "",
             "`[target] prefix | continuation`", ""]
    for system, shown in info.get("examples", {}).items():
        lines += [f"**{system}**", "", "```", *shown, "```", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    (out / "setup.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return [out / "results.csv", plot, out / "report.md"]
