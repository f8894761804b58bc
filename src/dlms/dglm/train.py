"""`dlms dglm train`: the DGLM stages, in order, each resumable and each runnable alone.

    <out_dir>/dglm_config.yaml    the resolved DGLM config (precision resolved to bf16 or fp32)
    <out_dir>/embed/              prefix / continuation pairs, their embeddings and the standardizer
    <out_dir>/latent_diffusion/   the latent diffusion model (+ standardizer, progress, optimizer)
    <out_dir>/decoder/            the soft prompt and the fine-tuned decoder (+ progress, optimizer)
    <out_dir>/metrics.jsonl       one line per checkpoint: stage, step, train and held-out loss

Stage "embed" cuts every text at a random word boundary and encodes both sides; "diffusion"
learns p(continuation embedding | prefix embedding); "decoder" fine-tunes the AR decoder to
follow soft prompts made from the true continuation's embedding, noised at random levels.
The trained stages run their forward passes and losses under the run's precision (bf16
autocast or fp32, `stage_loop.train_stage`); sentence encoding stays fp32 (see `train_embed`).
Nothing is written until a stage's inputs (data, encoder, decoder, earlier stages) are loaded.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import yaml

from ..assembly import precision_note, resolve_precision
from ..data.cache import staged_entry
from ..errors import CheckpointError, ConfigError
from ..paths import check_writable
from ..schedules import build_schedule
from ..checkpoint import load_weights, read_tensors
from ..run_folder import DGLM_RUN_CONFIG as RUN_CONFIG  # the resolved config, in the run folder
from ..devices import resolve_device
from ..training.distributed import barrier, init_distributed, shutdown
from ..training.progress import MetricsLog, TrainingProgress
from .config import DglmConfig, read_dglm_yaml
from .data import PairTokenizer, load_split_texts
from .decoder_loading import load_decoder_for
from .embeddings import Standardizer, encode_cached
from .encoder import load_sentence_encoder
from .latent_diffusion import LatentDenoiser, LatentDiffusion, save_latent_stage
from .pairs import cut_pairs
from .soft_prompt import SoftPrompt, SoftPromptedDecoder, load_decoder_stage, noise_embedding, save_decoder_stage
from .stage_loop import train_stage
from .stages import read_stage_meta, read_training_state, write_stage_meta

STAGES = ("embed", "diffusion", "decoder")
EMBED, LATENT, DECODER = "embed", "latent_diffusion", "decoder"  # folder names
VAL_BATCHES = 4  # held-out batches per checkpoint


@dataclass
class EmbeddedPairs:
    """The embed stage's output: pairs of texts and their embeddings [N, D] (float32, rows of norm 1)."""

    encoder: str
    standardizer: Standardizer
    train_pairs: list[tuple[str, str]]
    val_pairs: list[tuple[str, str]]
    train_prefix: torch.Tensor
    train_continuation: torch.Tensor
    val_prefix: torch.Tensor
    val_continuation: torch.Tensor


def load_embed_stage(folder: str | Path) -> EmbeddedPairs:
    folder = Path(folder)
    meta = read_stage_meta(folder, "embed", "embed")
    try:
        pairs = json.loads((folder / "pairs.json").read_text(encoding="utf-8"))
        arrays = {name: torch.from_numpy(np.load(folder / f"{name}.npy", allow_pickle=False))
                  for name in ("train_prefix", "train_continuation", "val_prefix", "val_continuation")}
        train, val = [tuple(p) for p in pairs["train"]], [tuple(p) for p in pairs["val"]]
        encoder = str(meta["encoder"])
        if any(len(arrays[f"{split}_{side}"]) != len(rows) for split, rows in (("train", train), ("val", val))
               for side in ("prefix", "continuation")):
            raise ValueError("the embeddings and the pairs differ in number")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"embed stage '{folder}' is damaged ({first}); delete it and run the embed stage "
                              "again") from None
    return EmbeddedPairs(encoder, Standardizer.load(folder / "standardizer.safetensors"), train, val, **arrays)


class DglmTrainer:
    """Trains the stages of the DGLM pipeline described by a `DglmConfig` into `cfg.out_dir`.

    `cfg.precision` is resolved for the device ("auto": bf16 where it is fast) and saved
    resolved in the run's config; an "auto" run that already has a resolved precision keeps it,
    so a resumed run trains in the precision it was started with."""

    def __init__(self, cfg: DglmConfig, log=print, progress: bool = True):
        self.out = Path(cfg.out_dir)
        self.device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
        # Under torchrun the trained stages are data parallel (training/step.py); the main process
        # alone embeds the pairs, writes the run folder and logs.
        self.dist = init_distributed(self.device)
        saved = self._saved_precision() if cfg.precision == "auto" else None
        if saved:
            self.precision_note = f"{saved} (auto: kept from the run's {RUN_CONFIG})"
        else:
            self.precision_note = precision_note(self.device, cfg.precision)
        self.cfg = replace(cfg, precision=saved or resolve_precision(self.device, cfg.precision))
        self.precision = self.cfg.precision
        self.log = log if self.dist.is_main else _silent
        self.show_progress = progress and self.dist.is_main
        self.metrics = MetricsLog(self.out / "metrics.jsonl", self.dist.is_main)
        self._started = False

    def _saved_precision(self) -> str | None:
        """The resolved precision in the run's saved config, if the run folder has one."""
        path = self.out / RUN_CONFIG
        if not path.is_file():
            return None
        saved = read_dglm_yaml(path).get("precision")
        return saved if saved in ("bf16", "fp32") else None

    def run(self, stages: tuple[str, ...] = STAGES) -> Path:
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ConfigError(f"unknown stage '{unknown[0]}'; choose from {', '.join(STAGES)}")
        self._check_out_dir(stages)
        barrier(self.dist)  # every process has checked the folder before the main one writes to it
        self.log(f"dglm: stages {', '.join(s for s in STAGES if s in stages)} into {self.out} on {self.device}, "
                 f"precision {self.precision_note}")
        for stage in STAGES:
            if stage in stages:
                getattr(self, f"train_{stage}")()
        return self.out

    def close(self) -> None:
        """Leave the process group torchrun started (nothing to do in one process)."""
        shutdown(self.dist)

    def _check_out_dir(self, stages: tuple[str, ...]) -> None:
        """Before anything is written: out_dir can be written, is new, empty or a DGLM run, and
        holds the embed stage when the later stages run without it."""
        check_writable(self.out, "out_dir folder")
        if self.out.is_dir() and not (self.out / RUN_CONFIG).is_file() and any(self.out.iterdir()):
            said = f"out_dir '{self.out}' is not empty and holds no DGLM run (no {RUN_CONFIG}); pass a new or empty folder"
            raise ConfigError(f"{said} as out_dir", cli=f"{said} as --out_dir (or out_dir in the config)")
        if "embed" not in stages and not (self.out / EMBED / "pairs.json").is_file():
            raise ConfigError(f"'{self.out}' has no embed stage yet, which the {' and '.join(stages)} stage needs; "
                              "run `dlms dglm train --config ...` without --stage (or with --stage embed) first")

    def _begin(self) -> None:
        """Create the run folder and write the resolved config, once its inputs are known good."""
        if self._started or not self.dist.is_main:
            self._started = True
            return
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / RUN_CONFIG).write_text(yaml.safe_dump(asdict(self.cfg), sort_keys=False), encoding="utf-8")
        except OSError as exc:
            said = f"cannot write the run folder '{self.out}' ({exc.strerror or exc}); pass another"
            raise ConfigError(f"{said} out_dir", cli=f"{said} --out_dir") from None
        self._started = True

    def _bar(self, steps: int, start: int, name: str, unit: str) -> TrainingProgress:
        return TrainingProgress(steps, start, enabled=self.show_progress, description=name, unit=unit)

    # ---------------------------------------------------------------- embed
    def train_embed(self) -> Path:
        """Cut and encode the pairs (in the main process; the others wait for its folder)."""
        folder = self.out / EMBED
        if self.dist.is_main:
            self._embed(folder)
        barrier(self.dist)
        self._begin()
        return folder

    def _embed(self, folder: Path) -> None:
        if (folder / "pairs.json").is_file():
            self._begin()
            self.log(f"embed: already done ({folder}); delete it to embed again")
            return
        d = self.cfg.data
        texts = load_split_texts(d)
        pairs = {"train": cut_pairs(texts.train, d.seed, d.min_words), "val": cut_pairs(texts.val, d.seed + 1, d.min_words)}
        for split, chosen in pairs.items():
            if not chosen:
                raise ConfigError(f"no {split} text has {2 * d.min_words} words to cut into a prefix and a continuation; "
                                  "lower data.min_words or use longer texts")
        encoder = load_sentence_encoder(self.cfg.sentence_encoder_model_name, self.device)
        self._begin()
        # Sentence embeddings are always computed in fp32, whatever the precision: they are
        # the diffusion model's targets and the classifiers' inputs, they are cached by encoder
        # weights and texts (a bf16 pass would round them to 8 mantissa bits and make the cache
        # and the standardisation depend on the machine), and encoding is a small share of the
        # cost (once per text). Generation encodes prefixes the same way.
        self.log(f"embed: encoding {len(pairs['train'])} training and {len(pairs['val'])} held-out pairs "
                 f"with {self.cfg.sentence_encoder_model_name} (in fp32 at any precision)")
        vectors = {}
        for split, chosen in pairs.items():
            for side, index in (("prefix", 0), ("continuation", 1)):
                vectors[f"{split}_{side}"] = np.asarray(encode_cached(encoder, [p[index] for p in chosen],
                                                                      show_progress=self.show_progress))
        standardizer = Standardizer.fit(np.concatenate([vectors["train_prefix"], vectors["train_continuation"]]))
        with staged_entry(folder, replace=True) as tmp:
            for name, array in vectors.items():
                np.save(tmp / f"{name}.npy", array, allow_pickle=False)
            standardizer.save(tmp / "standardizer.safetensors")
            (tmp / "pairs.json").write_text(json.dumps(pairs), encoding="utf-8")
            write_stage_meta(tmp, "embed", encoder=self.cfg.sentence_encoder_model_name, dim=encoder.dim,
                             train_pairs=len(pairs["train"]), val_pairs=len(pairs["val"]))
        self.log(f"embed: wrote {folder}")

    def _embedded(self) -> EmbeddedPairs:
        data = load_embed_stage(self.out / EMBED)
        if data.encoder != self.cfg.sentence_encoder_model_name:
            raise ConfigError(f"'{self.out / EMBED}' was embedded with '{data.encoder}', but the config names "
                              f"'{self.cfg.sentence_encoder_model_name}'; delete that folder or use another out_dir")
        return data

    # ---------------------------------------------------------------- diffusion
    def train_diffusion(self) -> Path:
        data, folder, cfg = self._embedded(), self.out / LATENT, self.cfg.diffusion
        std = data.standardizer
        resume = read_training_state(folder)
        torch.manual_seed(self.cfg.seed)  # the same initial weights on every run of the config
        denoiser = LatentDenoiser(std.dim, self.cfg.latent)
        if resume[0]:
            started = read_stage_meta(folder, "latent_diffusion", "latent diffusion").get("config", {})
            changed = [k for k, v in asdict(self.cfg.latent).items() if k in started and started[k] != v]
            if changed:
                raise ConfigError(f"'{folder}' was started with latent.{changed[0]} = {started[changed[0]]!r}, the config "
                                  f"says {getattr(self.cfg.latent, changed[0])!r}; use the latent settings it was started "
                                  f"with, or delete '{folder}' to train the diffusion stage again")
            load_weights(denoiser, read_tensors(folder / "model.safetensors"), folder / "model.safetensors")
        denoiser.to(self.device)
        self._begin()
        diffusion = LatentDiffusion(denoiser)
        x = std.transform(data.train_continuation).to(self.device)
        prefix = std.transform(data.train_prefix).to(self.device)
        val_x = std.transform(data.val_continuation).to(self.device)
        val_prefix = std.transform(data.val_prefix).to(self.device)

        def loss_fn(gen: torch.Generator) -> torch.Tensor:
            denoiser.train()
            idx = torch.randint(len(x), (cfg.batch_size,), generator=gen, device=self.device)
            return diffusion.loss(x[idx], prefix[idx], gen)

        @torch.no_grad()
        def val_fn() -> float:
            denoiser.eval()
            gen = torch.Generator(device=self.device).manual_seed(12345)
            losses = [diffusion.loss(val_x[i:i + cfg.batch_size], val_prefix[i:i + cfg.batch_size], gen).item()
                      for i in range(0, min(len(val_x), VAL_BATCHES * cfg.batch_size), cfg.batch_size)]
            return float(np.mean(losses))

        def save(progress: dict, optimizer_state: dict) -> None:
            save_latent_stage(folder, diffusion, std, progress, optimizer_state)

        params = sum(p.numel() for p in denoiser.parameters())
        self.log(f"diffusion: latent denoiser ({params:,} parameters) on {len(x)} pairs, {cfg.steps} steps, "
                 f"batch {cfg.batch_size}, precision {self.precision}")
        train_stage(name="diffusion", cfg=cfg, model=denoiser, param_groups=lambda m: [{"params": list(m.parameters())}],
                    loss_fn=loss_fn, save=save, val_fn=val_fn, device=self.device, seed=self.cfg.seed,
                    precision=self.precision,
                    metrics=self.metrics, progress=self._bar(cfg.steps, int(resume[0].get("step", 0)), "diffusion", "pairs/s"),
                    units_per_step=cfg.batch_size, resume=resume, log=self.log, dist=self.dist)
        return folder

    # ---------------------------------------------------------------- decoder
    def train_decoder(self) -> Path:
        data, folder, cfg = self._embedded(), self.out / DECODER, self.cfg.decoder
        std = data.standardizer
        resume = read_training_state(folder)
        source = self.cfg.auto_regressive_model_name  # where the decoder's config and tokenizer are copied from
        if resume[0]:
            model, tokenizer = load_decoder_stage(folder, self.device)
            source = str(folder / "decoder")
        else:
            base = load_decoder_for("auto_regressive_model_name", self.cfg.auto_regressive_model_name, self.device,
                                    positions=cfg.max_prefix_tokens + cfg.num_soft_tokens + cfg.max_continuation_tokens)
            torch.manual_seed(self.cfg.seed + 1)
            model = SoftPromptedDecoder(base.model, SoftPrompt(std.dim, base.hidden_size, cfg.num_soft_tokens,
                                                               cfg.soft_prompt_width)).to(self.device)
            tokenizer = base.tokenizer
        self._begin()
        pair_tokens = PairTokenizer(tokenizer, cfg.max_prefix_tokens, cfg.max_continuation_tokens)
        schedule = build_schedule(self.cfg.latent.schedule)
        x = std.transform(data.train_continuation)
        val_x = std.transform(data.val_continuation)

        def batch_loss(pairs: list[tuple[str, str]], emb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            prefix_ids = pair_tokens.prefixes([p for p, _ in pairs], self.device)
            cont_ids, mask = pair_tokens.continuations([c for _, c in pairs], self.device)
            emb = emb.to(self.device)
            t = torch.rand(len(pairs), generator=gen, device=self.device) * cfg.max_noise_level
            return model.loss(prefix_ids, cont_ids, noise_embedding(schedule, emb, t, gen), t, mask)

        def loss_fn(gen: torch.Generator) -> torch.Tensor:
            model.train()
            idx = torch.randint(len(x), (cfg.batch_size,), generator=gen, device=self.device).cpu()
            return batch_loss([data.train_pairs[i] for i in idx.tolist()], x[idx], gen)

        @torch.no_grad()
        def val_fn() -> float:
            model.eval()
            gen = torch.Generator(device=self.device).manual_seed(12345)
            stop = min(len(val_x), VAL_BATCHES * cfg.batch_size)
            return float(np.mean([batch_loss(data.val_pairs[i:i + cfg.batch_size], val_x[i:i + cfg.batch_size], gen).item()
                                  for i in range(0, stop, cfg.batch_size)]))

        def save(progress: dict, optimizer_state: dict) -> None:
            save_decoder_stage(folder, model, self.cfg.auto_regressive_model_name, tokenizer, source, progress,
                               optimizer_state)

        if cfg.decoder_learning_rate <= 0:
            model.decoder.requires_grad_(False)

        def groups(m: SoftPromptedDecoder) -> list[dict]:
            soft = [{"params": list(m.soft_prompt.parameters()), "lr": cfg.learning_rate}]
            if cfg.decoder_learning_rate <= 0:
                return soft
            return soft + [{"params": list(m.decoder.parameters()), "lr": cfg.decoder_learning_rate}]
        self.log(f"decoder: soft prompt ({sum(p.numel() for p in model.soft_prompt.parameters()):,} parameters, "
                 f"{cfg.num_soft_tokens} tokens) on {self.cfg.auto_regressive_model_name}, {cfg.steps} steps, "
                 f"batch {cfg.batch_size}, precision {self.precision}")
        train_stage(name="decoder", cfg=cfg, model=model, param_groups=groups, loss_fn=loss_fn, save=save, val_fn=val_fn,
                    device=self.device, seed=self.cfg.seed, metrics=self.metrics, precision=self.precision,
                    progress=self._bar(cfg.steps, int(resume[0].get("step", 0)), "decoder", "pairs/s"),
                    units_per_step=cfg.batch_size, resume=resume, log=self.log, dist=self.dist)
        return folder


def _silent(_: str) -> None:
    """The log of a process other than the main one."""
