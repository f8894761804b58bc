"""The `dlms` command line: a thin shell over functions Python users can call too.

    dlms train [--config YAML] [section.key=value ...] [--num_epochs N ...] [--init_from RUN]
    dlms generate --checkpoint RUN --prompt "..." --seq_len N --num_steps S [--show_steps] [--task T]
    dlms generate --checkpoint RUN --infill "the chef ___ the soup , and it was ___:2 ."
    dlms view --checkpoint RUN --steps 20 --seq_len 8
    dlms eval --checkpoint RUN [--ar_checkpoint RUN] [--dataset PATH]
    dlms eval --checkpoint RUN --references [PATH] [--num_prompts N]   (responses against references)
    dlms serve --checkpoint RUN [--checkpoint NAME=RUN] [--host 127.0.0.1] [--port 8000]
    dlms distill --checkpoint RUN --steps N [--out_dir DIR] [--rounds R] [--max_steps M] [--resume]
    dlms models check --config DGLM_YAML
    dlms dglm train|train-classifier|generate|eval ...   (see dlms/dglm/cli.py)

Every user error prints one line `error: ...` and exits with status 2 (`--debug` shows the
traceback).
"""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ArgumentError, DlmsError
from .jsonsafe import dumps

if TYPE_CHECKING:
    from .generation import GenerationRequest

DEFAULT_RUN = "runs/default"

# Familiar flags of `dlms train` and the config keys they set.
TRAIN_FLAGS = {
    "method": ("method.name", str), "num_steps": ("sample.num_steps", int), "batch_size": ("train.batch_size", int),
    "learning_rate": ("train.learning_rate", float), "num_epochs": ("train.num_epochs", float),
    "max_steps": ("train.max_steps", int), "dataset": ("data.dataset", str), "max_examples": ("data.max_examples", int),
    "device": ("train.device", str), "seq_len": ("data.seq_len", int), "out_dir": ("train.out_dir", str),
    "preset": ("model.preset", str), "label_column": ("data.label_column", str), "seed": ("train.seed", int),
    "backbone": ("model.backbone", str), "init_from": ("train.init_from", str),
}


def _add_sampling_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=DEFAULT_RUN, help=f"run folder written by `dlms train` (default {DEFAULT_RUN})")
    p.add_argument("--prompt", default=None, help="text the sample starts with (held fixed); on a run trained on "
                                                  "prompt/response data, the prompt to respond to")
    p.add_argument("--task", default=None, help="with --prompt, on a run trained with data.task_column: the task "
                                                "text put before the prompt")
    p.add_argument("--seq_len", type=int, default=None, help="tokens per sample, prompt included")
    p.add_argument("--sampler", default=None, help="ancestral, cached, confidence, threshold (masked and block), ddpm, ddim (gaussian) or ar")
    p.add_argument("--label", default=None, help="class to condition on (models trained with a label column)")
    _add_sampler_option_flags(p)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=None,
                   help="compute precision (default: the one the run was trained in)")


def _add_sampler_option_flags(p: argparse.ArgumentParser, skip: tuple[str, ...] = ("num_steps",)) -> None:
    """A flag per sampling option (dlms/samplers/options.py); unset flags leave the run's default."""
    from .samplers.options import SAMPLER_OPTIONS

    for option in SAMPLER_OPTIONS.values():
        if option.name in skip:
            continue
        if option.type is bool:
            p.add_argument(f"--{option.name}", action="store_true", default=None, help=option.help)
        else:
            p.add_argument(f"--{option.name}", type=option.type, default=None, choices=option.choices,
                           help=option.help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dlms", description="Train, sample and evaluate diffusion language models.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model (YAML config + dotted overrides + familiar flags)")
    train.add_argument("overrides", nargs="*", help="config overrides such as train.batch_size=16")
    train.add_argument("--config", default=None, help="YAML config (see configs/)")
    train.add_argument("--resume", default=None, metavar="RUN", help="continue the run in this folder")
    train.add_argument("--overwrite", action="store_true",
                       help="replace a run already in the output folder (without it, that is an error)")
    for flag, (key, typ) in TRAIN_FLAGS.items():
        train.add_argument(f"--{flag}", type=typ, default=None, help=f"sets {key}")
    train.add_argument("--samples", type=int, default=3, help="samples printed after training")

    gen = sub.add_parser("generate", help="sample texts from a trained model")
    _add_sampling_flags(gen)
    gen.add_argument("--num_steps", type=int, default=None, help="denoising steps")
    gen.add_argument("--num_samples", type=int, default=4)
    gen.add_argument("--show_steps", action="store_true", help="print intermediate states")
    gen.add_argument("--step_interval", type=int, default=1, help="with --show_steps: print every K steps")
    gen.add_argument("--infill", default=None, metavar="TEMPLATE",
                     help="fill the blanks of a text instead of continuing a prompt (masked and gaussian models): "
                          "`___` is a blank of --blank_tokens tokens, `___:N` one of N tokens")
    gen.add_argument("--blank_tokens", type=int, default=None,
                     help="with --infill: tokens in a plain `___` blank (default 1)")

    view = sub.add_parser("view", help="watch noise turn into text, one line per denoising step")
    _add_sampling_flags(view)
    view.add_argument("--steps", type=int, default=None,
                      help="denoising steps (default: the run's; samplers that pick their own, e.g. threshold, take none)")

    ev = sub.add_parser("eval", help="validation NLL (bound) and generation figures")
    ev.add_argument("--checkpoint", default=DEFAULT_RUN)
    ev.add_argument("--dataset", default=None, help="data to score (default: the run's own validation split)")
    ev.add_argument("--evaluator", default=None,
                    help="a dlms 'ar' run or a Hugging Face causal LM folder that scores the samples (gen_ppl); "
                         "never the evaluated run itself, nor any model compared with it")
    ev.add_argument("--ar_checkpoint", default=None, help="the same as --evaluator (older name)")
    ev.add_argument("--passes", type=int, default=None, help="Monte Carlo passes of the bound per sequence (0: skip the likelihood)")
    ev.add_argument("--max_sequences", type=int, default=None)
    ev.add_argument("--batch_size", type=int, default=None, help="likelihood batch size (results do not depend on it)")
    ev.add_argument("--discrete_steps", type=int, default=None,
                    help="steps of the discrete-time bound shown beside the continuous one (default: sampling steps)")
    ev.add_argument("--mauve", action="store_true", help="MAUVE of the samples against validation texts (needs --evaluator)")
    ev.add_argument("--classifier", default=None, help="a Hugging Face sequence classifier folder for label accuracy")
    ev.add_argument("--references", nargs="?", const=True, default=None, metavar="PATH",
                    help="BLEU, ROUGE-L, lengths (and E2E slot coverage) of one response per distinct prompt against "
                         "all its references: a prompt/response run's validation prompts, or PATH (prompt/response "
                         "rows, or JSONL of {prompt, references}: a plain-text run continues those)")
    ev.add_argument("--num_prompts", type=int, default=None,
                    help="with --references: the first N distinct prompts (default: all)")
    ev.add_argument("--multiple_choice", default=None, help="JSONL of {question, choices, answer}: accuracy by likelihood")
    ev.add_argument("--max_items", type=int, default=None, help="at most this many task items")
    ev.add_argument("--num_samples", type=int, default=64, help="samples for the generation figures (0: none)")
    ev.add_argument("--show", type=int, default=5, help="samples printed (and kept as `examples` in the JSON)")
    ev.add_argument("--num_steps", type=int, default=None)
    ev.add_argument("--sampler", default=None)
    ev.add_argument("--label", default=None,
                    help="class of every sample ('none': unconditional); default: each class in turn")
    _add_sampler_option_flags(ev)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--device", default="auto")
    ev.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=None,
                    help="compute precision (default: the one the run was trained in)")
    ev.add_argument("--output", default=None, help="also write the results to this JSON file (and a .md table beside it)")

    dis = sub.add_parser("distill", help="train a few-step student of a masked or gaussian run (resumable)")
    dis.add_argument("--checkpoint", default=DEFAULT_RUN, help=f"the teacher: a run folder (default {DEFAULT_RUN})")
    dis.add_argument("--steps", type=int, default=None, help="the student's sampling steps (fewer than the teacher's)")
    dis.add_argument("--out_dir", default=None, help="folder for the rounds and the final student "
                                                     "(default <checkpoint>-distilled-<steps>)")
    dis.add_argument("--rounds", type=int, default=None, help="rounds (default: halve the steps each round)")
    dis.add_argument("--teacher_steps", type=int, default=None, help="the teacher's steps (default: its sample.num_steps)")
    dis.add_argument("--max_steps", type=int, default=None, help="training steps per round (default: the run's)")
    dis.add_argument("--learning_rate", type=float, default=None, help="default: the run's")
    dis.add_argument("--batch_size", type=int, default=None, help="default: the run's")
    dis.add_argument("--still_masked", choices=("last", "exclude"), default="last",
                     help="masked: target of positions the teacher leaves masked (its last step's prediction, or none)")
    dis.add_argument("--device", default=None, help="default: the run's train.device")
    dis.add_argument("--no_progress", action="store_true", help="no progress bar")
    dis.add_argument("--resume", action="store_true", help="continue the distillation in --out_dir")
    dis.add_argument("--overwrite", action="store_true", help="replace what --out_dir holds")

    serve = sub.add_parser("serve", help="an HTTP API and a live page of the denoising (http://HOST:PORT/)")
    serve.add_argument("--checkpoint", action="append", default=None, metavar="[NAME=]RUN",
                       help="a run to serve (repeatable: the page can compare two side by side); a `dlms train` run or "
                            f"a `dlms dglm train` run; NAME defaults to the folder's name (default {DEFAULT_RUN})")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--device", default="auto")
    serve.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=None,
                       help="compute precision (default: each run's own)")
    serve.add_argument("--max_length", type=int, default=512, help="most tokens per sample a request may ask for")
    serve.add_argument("--max_steps", type=int, default=512, help="most denoising steps a request may ask for")
    serve.add_argument("--max_samples", type=int, default=16, help="most samples per request")
    serve.add_argument("--max_queue", type=int, default=64,
                       help="requests that may wait; beyond it a request is answered 429 with Retry-After")
    serve.add_argument("--max_batch", type=int, default=64, help="most sample rows that share one sampler call")
    serve.add_argument("--no_batching", action="store_true", help="sample each request alone (a baseline)")
    serve.add_argument("--batch_window_ms", type=float, default=2.0,
                       help="how long a batch waits for requests sent at the same moment")
    serve.add_argument("--queue_timeout", type=float, default=60.0,
                       help="seconds a request may wait in the queue before it is answered 503")

    exp = sub.add_parser("experiment", help="run an experiment grid (resumable), writing results.csv and plots")
    exp.add_argument("name", help="data-scaling, guidance-sweep or sampler-ablation")
    exp.add_argument("--config", required=True, help="experiment YAML (see configs/experiments/)")
    exp.add_argument("--out_dir", default=None, help="folder for results.csv, runs and plots (default: the config's)")
    exp.add_argument("--no_progress", action="store_true", help="no progress bar")

    plot = sub.add_parser("plot", help="redraw an experiment's plots from its results.csv")
    plot.add_argument("folder", help="the folder `dlms experiment` wrote")
    plot.add_argument("--copy_to", default=None, help="also copy report.md, the plots and the CSV files here (e.g. docs/)")

    models = sub.add_parser("models", help="the foundational models of a DGLM config")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    check = models_sub.add_parser("check", help="load the sentence encoder and the AR decoder a config names; "
                                                "print their sizes, parameters, device and load time")
    check.add_argument("--config", required=True, help="a DGLM config YAML (see configs/dglm/)")
    check.add_argument("--device", default=None, help="override the config's device (auto, cpu, cuda)")

    from .dglm.cli import add_parsers as add_dglm_parsers

    add_dglm_parsers(sub)
    return parser


# ---------------------------------------------------------------------- commands


def one_line(text: str) -> str:
    """A sample on one terminal line: line breaks shown as '\\n'."""
    return text.replace("\r", "").replace("\n", "\\n")


def cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .training import Trainer

    flags = {key: getattr(args, flag) for flag, (key, _) in TRAIN_FLAGS.items() if getattr(args, flag) is not None}
    if args.resume:
        if args.overrides or args.config or args.overwrite or set(flags) - {"train.max_steps"}:
            raise DlmsError("--resume continues a run as configured; only --max_steps may be given with it")
        trainer = Trainer.resume(args.resume, max_steps=flags.get("train.max_steps"))
    else:
        extra: dict = {}
        for key, value in flags.items():
            section, name = key.split(".")
            extra.setdefault(section, {})[name] = value
        trainer = Trainer(load_config(args.config, args.overrides, extra), overwrite=args.overwrite)
    summary = trainer.train()
    if args.samples > 0:
        from .model import DiffusionLM

        lm = DiffusionLM.from_trainer(trainer)  # in every process: a sharded model is gathered by all
    if trainer.dist.is_main and args.samples > 0:
        if lm.prompted:  # responses to validation prompts: the model was never trained without one
            from .prompting import split_prompts

            for prompt, task, _ in split_prompts(lm.prompts, trainer.dataset.val, args.samples):
                response = lm.respond(prompt, task=task, seed=0)[0]
                print(f"  prompt: {one_line(prompt)}  response: {one_line(response)}")
        else:
            for text in lm.sample(num_samples=args.samples, seed=0):
                print(f"  sample: {one_line(text)}")
    trainer.close()
    if trainer.dist.is_main:
        print(dumps({"run_dir": summary["run_dir"], "step": summary["step"], "loss": round(summary["loss"], 4),
                     "best_val_nll": round(summary["best_val"], 4),
                     **({"notes": summary["notes"]} if summary["notes"] else {})}))
    return 0


def _load(args: argparse.Namespace):
    from .model import DiffusionLM

    return DiffusionLM.load_checkpoint(args.checkpoint, device=args.device, precision=args.precision)


def _sampler_options(args: argparse.Namespace) -> dict:
    """The sampler options given on the command line, by DiffusionLM.sample's argument names."""
    from .samplers.options import SAMPLER_OPTIONS

    return {o.argument: getattr(args, o.name) for o in SAMPLER_OPTIONS.values()
            if o.name != "num_steps" and getattr(args, o.name) is not None}


def _sampling_kwargs(args: argparse.Namespace) -> dict:
    return {"label": args.label, "sampler": args.sampler, "seed": args.seed, **_sampler_options(args)}


def generation_request(args: argparse.Namespace) -> "GenerationRequest":
    """The flags of `dlms generate` as the request the server takes too (dlms/generation.py)."""
    from .generation import GenerationRequest

    return GenerationRequest(prompt=args.prompt, task=args.task, infill=args.infill, blank_tokens=args.blank_tokens,
                             length=args.seq_len, steps=args.num_steps, num_samples=args.num_samples,
                             label=args.label, seed=args.seed, sampler=args.sampler, options=_sampler_options(args))


def cmd_generate(args: argparse.Namespace) -> int:
    from .checks import check_int
    from .generation import generate

    check_int("step_interval", args.step_interval, 1)
    request = generation_request(args)
    request.check()  # before the model loads
    lm = _load(args)

    def show(step: int, total: int, texts: list[str]) -> None:
        if step % max(1, args.step_interval) == 0 or step == total:
            for i, text in enumerate(texts):
                print(f"[step {step:>4}/{total}] #{i}: {one_line(text)}")

    for text in generate(lm, request, show if args.show_steps else None):
        print(one_line(text))
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from .checks import check_int

    check_int("steps", args.steps, 1)
    lm = _load(args)

    def callback(step: int, total: int, texts: list[str]) -> None:
        print(f"step {step:>3}/{total}  {one_line(texts[0])}")

    canvas, _ = lm.canvas(args.prompt, args.seq_len, 1, args.task)
    shown = canvas[:, : args.seq_len or lm.cfg.data.seq_len]
    total = f"/{args.steps}" if args.steps else ""
    print(f"step {0:>3}{total}  {one_line(lm.render(shown)[0])}")
    final = lm.sample(args.prompt, args.seq_len, args.steps, task=args.task, num_samples=1, callback=callback,
                      **_sampling_kwargs(args))
    print(f"final     {one_line(final[0])}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .eval.report import evaluate_run

    if args.output:  # before minutes of work
        from .paths import check_writable

        check_writable(args.output, "--output", folder=False)
    results = evaluate_run(
        args.checkpoint, dataset=args.dataset, evaluator=args.evaluator, ar_checkpoint=args.ar_checkpoint,
        passes=args.passes, max_sequences=args.max_sequences, batch_size=args.batch_size,
        discrete_steps=args.discrete_steps, num_samples=args.num_samples, num_steps=args.num_steps,
        sampler=args.sampler, seed=args.seed, device=args.device, precision=args.precision, label=args.label,
        sampling=_sampler_options(args), mauve=args.mauve, classifier=args.classifier, references=args.references,
        multiple_choice=args.multiple_choice, max_items=args.max_items, num_prompts=args.num_prompts, show=args.show)
    from .eval.report import format_table

    table = format_table(results)
    print(table)
    print(dumps(results))
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(dumps(results, indent=2) + "\n", encoding="utf-8")
        out.with_suffix(".md").write_text(table + "\n", encoding="utf-8")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from .distill import distill

    summary = distill(args.checkpoint, args.steps, out_dir=args.out_dir, rounds=args.rounds,
                      teacher_steps=args.teacher_steps, max_steps=args.max_steps, learning_rate=args.learning_rate,
                      batch_size=args.batch_size, device=args.device, progress=False if args.no_progress else None,
                      resume=args.resume, overwrite=args.overwrite, still_masked=args.still_masked)
    print(dumps(summary))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serving.serve import serve

    return serve(args.checkpoint or [DEFAULT_RUN], host=args.host, port=args.port, device=args.device,
                 precision=args.precision, max_length=args.max_length, max_steps=args.max_steps,
                 max_samples=args.max_samples, max_queue=args.max_queue, max_batch=args.max_batch,
                 batching=not args.no_batching, batch_window_ms=args.batch_window_ms,
                 queue_timeout=args.queue_timeout)


def cmd_experiment(args: argparse.Namespace) -> int:
    from .experiments import load_experiment, run_experiment

    exp = load_experiment(args.config, args.name, args.out_dir)
    exp.out_dir.mkdir(parents=True, exist_ok=True)
    command = " ".join(["dlms experiment", args.name, "--config", args.config,
                        *(["--out_dir", args.out_dir] if args.out_dir else [])])
    (exp.out_dir / "command.txt").write_text(command + "\n", encoding="utf-8")
    results = run_experiment(exp, progress=not args.no_progress)
    print(f"results: {results}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .experiments import copy_report, redraw_plots

    for path in redraw_plots(args.folder):
        print(f"wrote {path}")
    if args.copy_to:
        for path in copy_report(args.folder, args.copy_to):
            print(f"copied {path}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .dglm.check import check_models, format_rows
    from .dglm.config import load_dglm_config

    cfg = load_dglm_config(args.config)
    if args.device:
        cfg = replace(cfg, device=args.device)
    rows = check_models(cfg)
    print(format_rows(rows))
    print(dumps({"config": args.config, "models": rows}))
    return 0


def cmd_dglm(args: argparse.Namespace) -> int:
    from .dglm.cli import cmd_dglm as run

    return run(args)


# Python arguments whose command-line flag has another name (the rest are `--<name>`).
FLAG_ALIASES = {"length": "seq_len", "steps": "num_steps", "guidance": "guidance_scale", "text": "infill"}


def _flag_namer(parser: argparse.ArgumentParser, argv: list[str] | None):
    """name -> how the command line calls it: `--seq_len` for `length` where the command has that
    flag, else the name as it is."""
    words = list(sys.argv[1:] if argv is None else argv)
    flags: set[str] = set()
    current = parser
    while True:  # walk down the subcommands the user typed, collecting the last one's flags
        subs = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        nxt = next((subs[0].choices[w] for w in words if subs and w in subs[0].choices), None)
        if nxt is None:
            break
        current = nxt
    for action in current._actions:
        flags.update(action.option_strings)

    def rename(name: str) -> str:
        for candidate in (f"--{name}", f"--{FLAG_ALIASES.get(name, name)}"):
            if candidate in flags:
                return candidate
        return name

    return rename


COMMANDS = {"train": cmd_train, "generate": cmd_generate, "view": cmd_view, "eval": cmd_eval,
            "experiment": cmd_experiment, "plot": cmd_plot, "models": cmd_models, "dglm": cmd_dglm,
            "distill": cmd_distill, "serve": cmd_serve}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may sit anywhere among the flags: collect the `key=value` words argparse left over.
    args, extra = parser.parse_known_args(argv)
    unknown = [word for word in extra if args.command != "train" or word.startswith("-") or "=" not in word]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "train":
        args.overrides = list(args.overrides) + extra
    try:
        return COMMANDS[args.command](args)
    except DlmsError as exc:
        if args.debug:
            traceback.print_exc()
        message = exc.renamed(_flag_namer(parser, argv)) if isinstance(exc, ArgumentError) else exc.for_cli()
        print(f"error: {one_line(message)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; the last checkpoint is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
