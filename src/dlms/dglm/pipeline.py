"""The trained DGLM pipeline, for generation from Python and the command line.

    from dlms.dglm import DglmPipeline
    pipe = DglmPipeline.load("runs/dglm")
    pipe.generate("the steak", num_samples=5, control={"sentiment": "negative"}, guidance=10)

For each prefix: encode it, let the latent diffusion model propose the continuation's
embedding (classifier-free guidance on the prefix with `cfg_scale`, attribute guidance from
linear classifiers with `guidance`), re-noise the proposal to `renoise_level`, and let the
soft-prompted decoder write the continuation.

The latent sampler, the soft prompt and the decoder run under the run's precision (bf16
autocast or fp32; saved resolved by training). The sentence encoder and the classifiers'
guidance gradients stay in fp32: the prefix is encoded as the training embeddings were.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..assembly import autocast_context, resolve_precision
from ..checks import check_number
from ..errors import CheckpointError, ConfigError
from ..paths import safe_stem
from ..devices import resolve_device
from .config import DglmConfig, GenerationConfig, check_generation, dglm_config_from_dict, read_dglm_yaml
from .control import LinearClassifier, guidance_gradient
from .data import PairTokenizer
from .encoder import load_sentence_encoder
from .latent_diffusion import load_latent_stage
from .soft_prompt import CausalLM, load_decoder_stage, noise_embedding
from .train import DECODER, LATENT, RUN_CONFIG

BATCH = 128  # rows generated at once


def parse_controls(specs: list[str] | None) -> dict[str, str]:
    """["sentiment=positive", ...] -> {"sentiment": "positive"}."""
    out = {}
    for spec in specs or []:
        name, sep, value = (part.strip() for part in spec.partition("="))
        if not sep or not name or not value:
            raise ConfigError(f"control '{spec}' must look like attribute=value, e.g. sentiment=positive",
                              cli=f"--control '{spec}' must look like attribute=value, e.g. sentiment=positive")
        out[name] = value
    return out


class DglmPipeline:
    """Encoder, latent diffusion model and soft-prompted decoder of one trained run."""

    def __init__(self, cfg: DglmConfig, run_dir: Path, device: torch.device, precision: str | None = None):
        """`precision`: "bf16", "fp32" or "auto" for generation (None: the run's own, saved resolved)."""
        self.cfg, self.run_dir, self.device = cfg, run_dir, device
        self.precision = resolve_precision(device, precision or cfg.precision)
        self.diffusion, self.standardizer = load_latent_stage(run_dir / LATENT)
        self.diffusion.denoiser.to(device)
        self.decoder, tokenizer = load_decoder_stage(run_dir / DECODER, device)
        if hasattr(self.decoder.decoder, "extend_positions"):  # generation.max_tokens may exceed the trained length
            self.decoder.decoder.extend_positions(self.positions())
        d = cfg.decoder
        self.tokens = PairTokenizer(tokenizer, d.max_prefix_tokens, d.max_continuation_tokens)
        self.encoder = load_sentence_encoder(cfg.sentence_encoder_model_name, device)
        if self.encoder.dim != self.standardizer.dim:
            raise CheckpointError(f"the encoder '{cfg.sentence_encoder_model_name}' gives {self.encoder.dim}-wide "
                                  f"embeddings but '{run_dir}' was trained on {self.standardizer.dim}")
        self._plain: CausalLM | None = None
        self._classifiers: dict[str, LinearClassifier] = {}

    @classmethod
    def load(cls, run_dir: str | Path, device: str | None = None, precision: str | None = None) -> "DglmPipeline":
        """The pipeline trained into `run_dir` by `dlms dglm train`; `precision` None: the run's own."""
        run_dir = Path(run_dir)
        if not (run_dir / RUN_CONFIG).is_file():
            what = "does not exist" if not run_dir.exists() else f"holds no DGLM run (no {RUN_CONFIG})"
            said = f"'{run_dir}' {what}; train one with `dlms dglm train --config configs/dglm/builtin.yaml` or pass"
            raise CheckpointError(f"{said} the folder of a DGLM run", cli=f"{said} --run <DGLM run folder>")
        cfg = dglm_config_from_dict(read_dglm_yaml(run_dir / RUN_CONFIG))
        return cls(cfg, run_dir, resolve_device(device or cfg.device), precision)

    def autocast(self):
        """The autocast context of this pipeline's precision (bf16 autocast, or nothing for fp32)."""
        return autocast_context(self.device, self.precision)

    # ------------------------------------------------------------------ control
    def classifier(self, attribute: str) -> LinearClassifier:
        """The linear classifier for `attribute`: `<run>/classifiers/<attribute>` (written by
        `dlms dglm train-classifier`), or a file stem given as the attribute."""
        if attribute not in self._classifiers:
            stem = self.run_dir / "classifiers" / safe_stem(attribute)  # as train-classifier names it
            if not stem.with_suffix(".json").is_file() and Path(attribute).name.strip("."):
                given = Path(attribute).expanduser()
                stem = given if given.with_suffix(".json").is_file() else stem
            if not stem.with_suffix(".json").is_file():
                raise ConfigError(f"no classifier for '{attribute}' in {self.run_dir / 'classifiers'}; fit one with "
                                  f"`dlms dglm train-classifier --run {self.run_dir} --data <labelled file> --label {attribute}`")
            clf = LinearClassifier.load(stem)
            if clf.dim != self.standardizer.dim:
                raise ConfigError(f"classifier '{stem}' was fitted on {clf.dim}-wide embeddings, this pipeline's encoder "
                                  f"gives {self.standardizer.dim}; fit it with the pipeline's encoder")
            self._classifiers[attribute] = clf
        return self._classifiers[attribute]

    def _controls(self, control: dict[str, str | list[str]] | None, rows: int) -> list[tuple[LinearClassifier, torch.Tensor]]:
        """Per attribute: (classifier, target class per row [rows]); a value may be one name or one per row."""
        out = []
        for attribute, value in (control or {}).items():
            clf = self.classifier(attribute)
            values = [value] * rows if isinstance(value, str) else list(value)
            if len(values) != rows:
                raise ConfigError(f"control '{attribute}' has {len(values)} values for {rows} rows")
            out.append((clf, torch.tensor([clf.class_index(v) for v in values], device=self.device)))
        return out

    # ------------------------------------------------------------------ generation
    def settings(self, **overrides: Any) -> GenerationConfig:
        unknown = [k for k in overrides if not hasattr(self.cfg.generation, k)]
        if unknown:
            raise ConfigError(f"unknown generation setting '{unknown[0]}'; known: "
                              f"{', '.join(self.cfg.generation.__dataclass_fields__)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        return check_generation(replace(self.cfg.generation, **given),
                                lambda key: key if key in given else f"the run's generation.{key}")

    @torch.no_grad()
    def propose(self, prefixes: list[str], control: dict | None = None, guidance: float | None = None,
                generator: torch.Generator | None = None, **overrides: Any) -> torch.Tensor:
        """Standardised proposals [B, D] of the continuations' embeddings, one per prefix
        (`guidance` None: the run's `generation.guidance`)."""
        g = self.settings(**overrides)
        check_number("guidance", guidance, 0.0, note="0: off")
        guidance = g.guidance if guidance is None else float(guidance)
        prefix = self.standardizer.transform(torch.from_numpy(self.encoder.encode(prefixes)).to(self.device))
        controls = self._controls(control, len(prefixes))

        def steer(x_hat: torch.Tensor) -> torch.Tensor:  # linear classifiers: cheap, kept in fp32
            with torch.autocast(self.device.type, enabled=False):
                return guidance_gradient(x_hat.float(), controls, g.control_samples, g.control_noise, generator,
                                         to_embedding=self.standardizer.inverse)

        with self.autocast():
            x = self.diffusion.sample(prefix, num_steps=g.num_steps, sampler=g.sampler, eta=g.eta,
                                      guidance_scale=g.cfg_scale, generator=generator,
                                      control=steer if controls and guidance else None, control_scale=guidance)
        return x.float()

    @torch.no_grad()
    def write(self, prefixes: list[str], proposals: torch.Tensor, generator: torch.Generator | None = None,
              **overrides: Any) -> list[str]:
        """Continuations written by the decoder from standardised proposals [B, D]."""
        g = self.settings(**overrides)
        t = torch.full((len(prefixes),), g.renoise_level, device=self.device)
        z = noise_embedding(self.diffusion.schedule, proposals, t, generator)
        with self.autocast():
            ids = self.decoder.generate(self.tokens.prefixes(prefixes, self.device), z, t, g.max_tokens,
                                        g.temperature, self.tokens.eos_id, generator)
        return self.tokens.decode(ids)

    def generate(self, prefix: str | list[str], num_samples: int = 1, control: dict | None = None,
                 guidance: float | None = None, seed: int = 0, **overrides: Any) -> list[str]:
        """Continuations: `num_samples` per prefix, in prefix order. `control`: {attribute:
        value} (a value may also be a list with one entry per row: prefix x sample), `guidance`:
        its strength (0: unguided; None: the run's `generation.guidance`). Other keywords
        override the run's `generation` settings."""
        rows = self._rows(prefix, num_samples)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        out: list[str] = []
        for start in range(0, len(rows), BATCH):
            chunk = rows[start:start + BATCH]
            part = {k: (v if isinstance(v, str) else list(v)[start:start + BATCH]) for k, v in (control or {}).items()}
            proposals = self.propose(chunk, part, guidance, generator, **overrides)
            out += self.write(chunk, proposals, generator, **overrides)
        return out

    def generate_plain(self, prefix: str | list[str], num_samples: int = 1, seed: int = 0, **overrides: Any) -> list[str]:
        """Continuations by the base AR decoder alone (no proposal, not fine-tuned): the baseline."""
        if self._plain is None:
            from .decoder_loading import load_decoder_for

            base = load_decoder_for("auto_regressive_model_name", self.cfg.auto_regressive_model_name, self.device,
                                    positions=self.positions())
            self._plain = CausalLM(base.model).eval()
        g = self.settings(**overrides)
        rows = self._rows(prefix, num_samples)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        # The base model never saw padding: rows are batched by prefix length, so none is needed.
        lengths = [len(self.tokens.tokenizer.encode(r, add_special_tokens=False)) for r in rows]
        out: dict[int, str] = {}
        for length in sorted(set(lengths)):
            same = [i for i, n in enumerate(lengths) if n == length]
            for start in range(0, len(same), BATCH):
                chunk = same[start:start + BATCH]
                ids = self.tokens.prefixes([rows[i] for i in chunk], self.device)
                with self.autocast():
                    ids = self._plain.continue_from(self._plain.token_embeddings(ids), g.max_tokens, g.temperature,
                                                    self.tokens.eos_id, generator)
                texts = self.tokens.decode(ids)
                out.update(zip(chunk, texts))
        return [out[i] for i in range(len(rows))]

    def positions(self) -> int:
        """The longest input any decoder here is given: prefix, soft tokens and continuation."""
        d = self.cfg.decoder
        return d.max_prefix_tokens + d.num_soft_tokens + max(d.max_continuation_tokens, self.cfg.generation.max_tokens)

    def fits(self, prefix: str) -> bool:
        """Whether the prefix is no longer than the prefixes the decoder was trained on."""
        return len(self.tokens.tokenizer.encode(prefix, add_special_tokens=False)) < self.cfg.decoder.max_prefix_tokens

    def _rows(self, prefix: str | list[str], num_samples: int) -> list[str]:
        prefixes = [prefix] if isinstance(prefix, str) else list(prefix)
        if not prefixes:
            raise ConfigError("give at least one prefix (an empty string '' lets the model start on its own)")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ConfigError(f"num_samples must be at least 1, got {num_samples!r}")
        for p in prefixes:
            if not self.fits(p):
                raise ConfigError(f"prefix '{p[:40]}...' is longer than {self.cfg.decoder.max_prefix_tokens - 1} tokens, "
                                  "the longest this run was trained on (decoder.max_prefix_tokens); shorten it")
        return [p for p in prefixes for _ in range(num_samples)]
