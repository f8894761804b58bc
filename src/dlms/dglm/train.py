"""`dlms dglm train`: the DGLM stages, in order, each resumable and each runnable alone.

    <out_dir>/dglm_config.yaml    the resolved DGLM config
    <out_dir>/embed/              prefix / continuation pairs, their embeddings and the standardizer
    <out_dir>/latent_diffusion/   the latent diffusion model (+ standardizer, progress, optimizer)
    <out_dir>/decoder/            the soft prompt and the fine-tuned decoder (+ progress, optimizer)
    <out_dir>/metrics.jsonl       one line per checkpoint: stage, step, train and held-out loss

Stage "embed" cuts every text at a random word boundary and encodes both sides; "diffusion"
learns p(continuation embedding | prefix embedding); "decoder" fine-tunes the AR decoder to
follow soft prompts made from the true continuation's embedding, noised at random levels.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from ..data.cache import staged_entry
from ..errors import CheckpointError, ConfigError
from ..schedules import build_schedule
from ..training.checkpoint import load_weights, read_tensors
from ..training.distributed import resolve_device
from ..training.progress import MetricsLog, TrainingProgress
from .config import DglmConfig
from .data import PairTokenizer, load_split_texts
from .decoder_loading import load_decoder
from .embeddings import Standardizer, encode_cached
from .encoder import load_sentence_encoder
from .latent_diffusion import LatentDenoiser, LatentDiffusion, save_latent_stage
from .pairs import cut_pairs
from .soft_prompt import SoftPrompt, SoftPromptedDecoder, load_decoder_stage, noise_embedding, save_decoder_stage
from .stage_loop import train_stage
from .stages import read_stage_meta, read_training_state, write_stage_meta

STAGES = ("embed", "diffusion", "decoder")
RUN_CONFIG = "dglm_config.yaml"  # the resolved config, in the run folder
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
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"embed stage '{folder}' is damaged ({exc}); delete it and run the embed stage again") from None
    return EmbeddedPairs(meta["encoder"], Standardizer.load(folder / "standardizer.safetensors"),
                         [tuple(p) for p in pairs["train"]], [tuple(p) for p in pairs["val"]], **arrays)


class DglmTrainer:
    """Trains the stages of the DGLM pipeline described by a `DglmConfig` into `cfg.out_dir`."""

    def __init__(self, cfg: DglmConfig, log=print, progress: bool = True):
        self.cfg = cfg
        self.out = Path(cfg.out_dir)
        self.device = resolve_device(cfg.device)
        self.log = log
        self.show_progress = progress
        self.metrics = MetricsLog(self.out / "metrics.jsonl", True)

    def run(self, stages: tuple[str, ...] = STAGES) -> Path:
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ConfigError(f"unknown stage '{unknown[0]}'; choose from {', '.join(STAGES)}")
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / RUN_CONFIG).write_text(yaml.safe_dump(asdict(self.cfg), sort_keys=False), encoding="utf-8")
        for stage in STAGES:
            if stage in stages:
                getattr(self, f"train_{stage}")()
        return self.out

    def _bar(self, steps: int, start: int, name: str, unit: str) -> TrainingProgress:
        return TrainingProgress(steps, start, enabled=self.show_progress, description=name, unit=unit)

    # ---------------------------------------------------------------- embed
    def train_embed(self) -> Path:
        folder = self.out / EMBED
        if (folder / "pairs.json").is_file():
            self.log(f"embed: already done ({folder}); delete it to embed again")
            return folder
        d = self.cfg.data
        texts = load_split_texts(d)
        pairs = {"train": cut_pairs(texts.train, d.seed, d.min_words), "val": cut_pairs(texts.val, d.seed + 1, d.min_words)}
        for split, chosen in pairs.items():
            if not chosen:
                raise ConfigError(f"no {split} text has {2 * d.min_words} words to cut into a prefix and a continuation; "
                                  "lower data.min_words or use longer texts")
        encoder = load_sentence_encoder(self.cfg.sentence_encoder_model_name, self.device)
        self.log(f"embed: encoding {len(pairs['train'])} training and {len(pairs['val'])} held-out pairs "
                 f"with {self.cfg.sentence_encoder_model_name}")
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
        return folder

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
        denoiser = LatentDenoiser(std.dim, self.cfg.latent)
        if resume[0]:
            load_weights(denoiser, read_tensors(folder / "model.safetensors"), folder / "model.safetensors")
        denoiser.to(self.device)
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
                 f"batch {cfg.batch_size}")
        train_stage(name="diffusion", cfg=cfg, model=denoiser, param_groups=[{"params": list(denoiser.parameters())}],
                    loss_fn=loss_fn, save=save, val_fn=val_fn, device=self.device, seed=self.cfg.seed,
                    metrics=self.metrics, progress=self._bar(cfg.steps, int(resume[0].get("step", 0)), "diffusion", "pairs/s"),
                    units_per_step=cfg.batch_size, resume=resume, log=self.log)
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
            base = load_decoder(self.cfg.auto_regressive_model_name, self.device,
                                positions=cfg.max_prefix_tokens + cfg.num_soft_tokens + cfg.max_continuation_tokens)
            model = SoftPromptedDecoder(base.model, SoftPrompt(std.dim, base.hidden_size, cfg.num_soft_tokens,
                                                               cfg.soft_prompt_width)).to(self.device)
            tokenizer = base.tokenizer
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

        groups = [{"params": list(model.soft_prompt.parameters()), "lr": cfg.learning_rate}]
        if cfg.decoder_learning_rate > 0:
            groups.append({"params": list(model.decoder.parameters()), "lr": cfg.decoder_learning_rate})
        else:
            model.decoder.requires_grad_(False)
        self.log(f"decoder: soft prompt ({sum(p.numel() for p in model.soft_prompt.parameters()):,} parameters, "
                 f"{cfg.num_soft_tokens} tokens) on {self.cfg.auto_regressive_model_name}, {cfg.steps} steps, "
                 f"batch {cfg.batch_size}")
        train_stage(name="decoder", cfg=cfg, model=model, param_groups=groups, loss_fn=loss_fn, save=save, val_fn=val_fn,
                    device=self.device, seed=self.cfg.seed, metrics=self.metrics,
                    progress=self._bar(cfg.steps, int(resume[0].get("step", 0)), "decoder", "pairs/s"),
                    units_per_step=cfg.batch_size, resume=resume, log=self.log)
        return folder
