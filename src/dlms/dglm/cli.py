"""`dlms dglm ...`: train the pipeline, fit attribute classifiers, generate, evaluate."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

DEFAULT_RUN = "runs/dglm"
GENERATION_FLAGS = {"cfg_scale": float, "renoise_level": float, "num_steps": int, "temperature": float,
                    "max_tokens": int, "eta": float}
PRECISIONS = ("auto", "bf16", "fp32")


class OneLineParser(argparse.ArgumentParser):
    """A `dlms dglm` subcommand's parser: a malformed flag (a word where a number belongs, an
    unknown choice, a missing required flag) is one `error:` line, like every other user error."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message}; see `{self.prog} --help`", file=sys.stderr)
        sys.exit(2)


def add_parsers(sub) -> None:
    dglm = sub.add_parser("dglm", help="Diffusion Guided Language Modeling")
    dglm_sub = dglm.add_subparsers(dest="dglm_command", required=True, parser_class=OneLineParser)

    train = dglm_sub.add_parser("train", help="train the stages (embed, diffusion, decoder); resumes where it stopped")
    train.add_argument("--config", required=True, help="a DGLM config YAML (see configs/dglm/)")
    train.add_argument("--stage", action="append", choices=["embed", "diffusion", "decoder"], default=None,
                       help="run only this stage (repeatable; default: all three in order)")
    train.add_argument("--out_dir", default=None, help="override the config's out_dir")
    train.add_argument("--device", default=None, help="override the config's device (auto, cpu, cuda)")
    train.add_argument("--precision", choices=PRECISIONS, default=None,
                       help="override the config's precision (auto: bf16 where the device has fast bf16)")

    clf = dglm_sub.add_parser("train-classifier", help="fit a linear attribute classifier on the sentence embeddings")
    clf.add_argument("--data", required=True, help="a labelled file (.jsonl, .csv, .tsv), folder, or 'builtin'")
    clf.add_argument("--label", required=True, help="the label column, e.g. sentiment")
    clf.add_argument("--run", default=None, help=f"a DGLM run: use its encoder, save into <run>/classifiers/ "
                                                 f"(default {DEFAULT_RUN})")
    clf.add_argument("--config", default=None, help="a DGLM config YAML instead of a run (its encoder and out_dir)")
    clf.add_argument("--out", default=None, help="file stem to write (default: <run>/classifiers/<label>, the "
                                                 "label's characters other than A-Z a-z 0-9 _ . - replaced by _)")
    clf.add_argument("--max_examples", type=int, default=None)
    clf.add_argument("--seed", type=int, default=0)

    gen = dglm_sub.add_parser("generate", help="continue prefixes, optionally steered by attribute classifiers")
    gen.add_argument("--run", default=DEFAULT_RUN, help=f"the folder `dlms dglm train` wrote (default {DEFAULT_RUN})")
    gen.add_argument("--prefix", action="append", default=None, help="text to continue (repeatable; default: '')")
    gen.add_argument("--num_samples", type=int, default=5)
    gen.add_argument("--control", action="append", default=None,
                     help="attribute=value, e.g. sentiment=positive (repeatable; classifiers add up)")
    gen.add_argument("--guidance", type=float, default=None,
                     help="strength of the attribute guidance (0: off; default: the run's generation.guidance)")
    gen.add_argument("--plain", action="store_true", help="the base AR decoder alone, without proposals (baseline)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--device", default=None)
    gen.add_argument("--precision", choices=PRECISIONS, default=None, help="default: the run's own")
    _add_generation_overrides(gen)

    ev = dglm_sub.add_parser("eval", help="steering success, fluency and diversity over a sweep of guidance scales, "
                                          "beside the unguided pipeline and the plain AR decoder")
    ev.add_argument("--run", default=DEFAULT_RUN)
    ev.add_argument("--label", required=True, help="the attribute to steer (a classifier in <run>/classifiers/)")
    ev.add_argument("--target", default=None, help="a class to steer every prefix to, or 'opposite' (default: "
                                                   "every class on the built-in corpus, else opposite)")
    ev.add_argument("--guidance", default="0,2,5,10,20", help="comma-separated guidance scales (0: unguided)")
    ev.add_argument("--num_prefixes", type=int, default=100)
    ev.add_argument("--reference", default=None, help="AR model for fluency (default: the run's base decoder)")
    ev.add_argument("--out", default=None, help="folder for results.csv, guidance_sweep.png, report.md "
                                                "(default: <run>/eval-<label>)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--device", default=None)
    ev.add_argument("--precision", choices=PRECISIONS, default=None, help="default: the run's own")
    ev.add_argument("--no_plain", action="store_true", help="skip the plain AR decoder row")
    _add_generation_overrides(ev)


def _add_generation_overrides(p: argparse.ArgumentParser) -> None:
    for flag, kind in GENERATION_FLAGS.items():
        p.add_argument(f"--{flag}", type=kind, default=None, help="override the run's generation setting")
    p.add_argument("--sampler", choices=["ddim", "ddpm"], default=None)


def _overrides(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in (*GENERATION_FLAGS, "sampler")}


def _check_flags(args: argparse.Namespace, **rules) -> None:
    """Each named flag that was given within its range (`config` rules), before anything is loaded."""
    from .config import GENERATION_RANGES, check_value

    for name, rule in {**{k: GENERATION_RANGES[k] for k in GENERATION_FLAGS if hasattr(args, k)}, **rules}.items():
        if getattr(args, name, None) is not None:
            check_value(f"--{name}", getattr(args, name), rule)


def _config(args: argparse.Namespace):
    from .config import load_dglm_config

    cfg = load_dglm_config(args.config)
    for key in ("out_dir", "device", "precision"):
        if getattr(args, key, None):
            cfg = replace(cfg, **{key: getattr(args, key)})
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from .train import STAGES, DglmTrainer

    trainer = DglmTrainer(_config(args))
    try:
        out = trainer.run(tuple(args.stage) if args.stage else STAGES)
    finally:
        trainer.close()
    trainer.log(f"DGLM run in {out}; try: dlms dglm generate --run {out} --prefix \"...\" --num_samples 5")
    return 0


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from .config import AT_LEAST_1, SEED, dglm_config_from_dict, read_dglm_yaml
    from ..paths import check_writable, safe_stem
    from .train import RUN_CONFIG
    from .train_classifier import train_classifier

    _check_flags(args, max_examples=AT_LEAST_1, seed=SEED)
    if args.config and args.run:
        raise ConfigError("pass either --run (a trained DGLM run) or --config (a DGLM config YAML), not both")
    if args.config:
        cfg = _config(args)
        run = Path(cfg.out_dir)
    else:
        run = Path(args.run or DEFAULT_RUN)
        if not (run / RUN_CONFIG).is_file():
            what = "does not exist" if not run.exists() else f"is not a DGLM run (no {RUN_CONFIG})"
            raise ConfigError(f"--run '{run}' {what}; train it first with `dlms dglm train --config <yaml>`, pass "
                              "--run <a DGLM run folder>, or pass --config <yaml> to use that config's encoder")
        cfg = dglm_config_from_dict(read_dglm_yaml(run / RUN_CONFIG))
    out = Path(args.out) if args.out else run / "classifiers" / safe_stem(args.label)
    check_writable(out, "--out" if args.out else "the classifier", folder=False)
    result = train_classifier(cfg, args.data, args.label, out, args.max_examples, args.seed)
    accuracy = result["held_out_accuracy"]
    print(f"{result['attribute']}: {len(result['classes'])} classes, held-out accuracy "
          f"{'n/a' if accuracy is None else f'{accuracy:.3f}'} on {result['held_out_texts']} texts; "
          f"saved {result['saved']}")
    print(json.dumps(result))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .config import AT_LEAST_0, AT_LEAST_1, SEED
    from .pipeline import DglmPipeline, parse_controls

    _check_flags(args, num_samples=AT_LEAST_1, guidance=AT_LEAST_0, seed=SEED)
    controls = parse_controls(args.control)
    pipe = DglmPipeline.load(args.run, args.device, args.precision)
    prefixes = args.prefix or [""]
    overrides = _overrides(args)
    if args.plain:
        texts = pipe.generate_plain(prefixes, args.num_samples, args.seed, **overrides)
    else:
        texts = pipe.generate(prefixes, args.num_samples, controls, args.guidance, args.seed, **overrides)
    rows = [p for p in prefixes for _ in range(args.num_samples)]
    for prefix, text in zip(rows, texts):
        print(f"{prefix} {text}".strip().replace("\n", "\\n"))
    return 0


def parse_scales(text: str) -> list[float]:
    """'0,5,10' -> [0.0, 5.0, 10.0]: each a finite number >= 0, at least one."""
    import math

    from ..errors import ConfigError

    words = [x.strip() for x in text.split(",") if x.strip()]
    try:
        scales = [float(x) for x in words]
    except ValueError:
        scales = []
    if not scales or not all(math.isfinite(x) and x >= 0 for x in scales):
        raise ConfigError(f"--guidance must be comma-separated finite numbers of at least 0 (0: unguided), "
                          f"e.g. 0,5,10; got '{text}'")
    return scales


def cmd_eval(args: argparse.Namespace) -> int:
    from .config import AT_LEAST_1, SEED
    from .evaluate import evaluate, write_report
    from ..paths import check_writable, safe_stem
    from .pipeline import DglmPipeline

    _check_flags(args, num_prefixes=AT_LEAST_1, seed=SEED)
    scales = parse_scales(args.guidance)
    out = Path(args.out) if args.out else Path(args.run) / f"eval-{safe_stem(args.label)}"
    check_writable(out, "--out folder" if args.out else "the report folder")
    pipe = DglmPipeline.load(args.run, args.device, args.precision)
    rows, info = evaluate(pipe, args.label, scales, args.num_prefixes, args.target, args.reference, args.seed,
                          include_plain=not args.no_plain, **_overrides(args))
    title = f"DGLM steering of '{args.label}' ({pipe.cfg.data.dataset})"
    flags = [f"--{k} {v}" for k, v in (("target", args.target), ("reference", args.reference),
                                       *_overrides(args).items()) if v is not None]
    info["precision"] = pipe.precision
    info["command"] = " ".join([f"dlms dglm eval --run {args.run} --label {args.label} --guidance {args.guidance}",
                                f"--num_prefixes {args.num_prefixes} --seed {args.seed}", *flags])
    for path in write_report(rows, info, out, title):
        print(f"wrote {path}")
    print(json.dumps({k: v for k, v in info.items() if k != "examples"}))
    return 0


COMMANDS = {"train": cmd_train, "train-classifier": cmd_train_classifier, "generate": cmd_generate,
            "eval": cmd_eval}


def cmd_dglm(args: argparse.Namespace) -> int:
    return COMMANDS[args.dglm_command](args)
