"""Gaussian diffusion over token embeddings: schedules, the method (loss, self-conditioning,
prompts, the variational bound on a toy distribution) and the DDPM / DDIM samplers."""

from __future__ import annotations

import itertools
import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlms.assembly import resolve_run_config
from dlms.backbones import build_backbone
from dlms.config import DataConfig, ModelConfig, RunConfig
from dlms.method_options import GaussianOptions, MaskedOptions
from dlms.errors import ConfigError, DlmsError
from dlms.likelihood import evaluate_likelihood
from dlms.methods import SpecialTokens, build_method
from dlms.methods.gaussian import embedding_table
from dlms.samplers import build_sampler
from dlms.samplers.gaussian import DDIMSampler, clamp_to_tokens
from dlms.schedules import (
    GaussianSchedule,
    MaskingSchedule,
    build_schedule,
    schedule_names,
)

SPECIAL = SpecialTokens(pad=0, bos=1, eos=2, mask=3, vocab_size=16)
GAUSSIAN = schedule_names("gaussian")
GRID = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)
INTERIOR = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)


def tiny_gaussian(seq_len: int = 12, seed: int = 0, num_classes: int = 0, special: SpecialTokens = SPECIAL,
                  **method_options):
    """(method, tiny backbone, resolved config) as `dlms train` builds them; time modulation perturbed
    so that the network's output depends on t."""
    cfg = RunConfig(method=GaussianOptions(**method_options),
                    model=ModelConfig(preset="tiny", num_classes=num_classes), data=DataConfig(seq_len=seq_len))
    method = build_method(cfg.method, special)
    cfg = resolve_run_config(cfg, method)
    torch.manual_seed(seed)
    model = build_backbone(cfg.model, special.vocab_size).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "modulation" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return method, model, cfg


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Recorder(nn.Module):
    """Wraps a backbone as DDP does (`.module`). `inputs` records the input of every call of the
    backbone, through the wrapper or not; `wrapped` counts the calls through the wrapper."""

    def __init__(self, backbone):
        super().__init__()
        self.module = backbone
        self.inputs: list[torch.Tensor] = []
        self.wrapped = 0
        backbone.register_forward_pre_hook(
            lambda mod, args, kwargs: self.inputs.append(kwargs["inputs_embeds"].detach().clone()), with_kwargs=True)

    def forward(self, input_ids=None, **kwargs):
        self.wrapped += 1
        return self.module(input_ids, **kwargs)


# ---------------------------------------------------------------- schedules


def test_gaussian_schedules_are_registered_apart_from_the_masking_ones():
    assert set(GAUSSIAN) == {"logsnr-cosine", "logsnr-linear", "logsnr-shifted-cosine"}
    for name in GAUSSIAN:
        s = build_schedule(name)
        assert isinstance(s, GaussianSchedule) and not isinstance(s, MaskingSchedule)
    assert not set(GAUSSIAN) & set(schedule_names("masking"))


@pytest.mark.parametrize("name", GAUSSIAN)
def test_schedule_endpoints_and_monotone_log_snr(name):
    s = build_schedule(name)
    lam = s.log_snr(GRID)
    assert lam[0].item() == pytest.approx(s.logsnr_max, abs=1e-9)
    assert lam[-1].item() == pytest.approx(s.logsnr_min, abs=1e-9)
    assert torch.all(lam[1:] < lam[:-1]), f"{name}: log-SNR is not strictly decreasing"
    assert s.alpha(GRID[:1]).item() > 0.9999 and s.sigma(GRID[-1:]).item() > 0.9999
    assert s.alpha(GRID[-1:]).item() < 0.01 and s.sigma(GRID[:1]).item() < 0.01


@pytest.mark.parametrize("name", GAUSSIAN)
def test_variance_preserving_and_derivative(name):
    s = build_schedule(name)
    torch.testing.assert_close(s.alpha(GRID) ** 2 + s.sigma(GRID) ** 2, torch.ones_like(GRID))
    torch.testing.assert_close(s.alpha(GRID) ** 2 / s.sigma(GRID) ** 2, s.log_snr(GRID).exp())
    h = 1e-6
    fd = (s.log_snr(INTERIOR + h) - s.log_snr(INTERIOR - h)) / (2 * h)
    torch.testing.assert_close(s.log_snr_prime(INTERIOR), fd, rtol=1e-5, atol=1e-5)
    assert torch.all(s.log_snr_prime(GRID) < 0)


def test_shifted_cosine_spends_more_time_at_low_snr():
    plain, shifted = build_schedule("logsnr-cosine"), build_schedule("logsnr-shifted-cosine")
    assert torch.all(shifted.log_snr(INTERIOR) < plain.log_snr(INTERIOR))


def test_log_snr_limits_come_from_the_config_and_are_checked():
    from dlms.config import config_from_dict

    method = build_method(GaussianOptions(logsnr_min=-8.0, logsnr_max=6.0), SPECIAL)
    ends = method.schedule.log_snr(torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(ends, torch.tensor([6.0, -8.0], dtype=torch.float64))
    with pytest.raises(ConfigError, match="logsnr_min"):
        build_method(GaussianOptions(logsnr_min=5.0, logsnr_max=5.0), SPECIAL)
    for key, value in (("embedding_norm", 0.0), ("embed_dim", -1)):
        with pytest.raises(ConfigError, match=f"method.{key}"):
            config_from_dict({"method": {"name": "gaussian", key: value}})


def test_each_method_rejects_the_other_kind_of_schedule():
    with pytest.raises(ConfigError) as info:
        build_method(GaussianOptions(schedule="loglinear"), SPECIAL)
    assert all(n in str(info.value) for n in GAUSSIAN)
    with pytest.raises(ConfigError) as info:
        build_method(MaskedOptions(schedule="logsnr-cosine"), SPECIAL)
    assert all(n in str(info.value) for n in ("loglinear", "cosine", "linear"))
    assert build_method(GaussianOptions(), SPECIAL).schedule_name == "logsnr-cosine"
    assert build_method(MaskedOptions(), SPECIAL).schedule_name == "loglinear"
    assert build_method(MaskedOptions(schedule="cosine"), SPECIAL).schedule_name == "cosine"


# ---------------------------------------------------------------- method and backbone wiring


def width(model) -> int:
    """Width D of the diffusion space (the token table's)."""
    return embedding_table(model).shape[1]


def test_run_config_switches_on_time_and_the_input_projection():
    _, model, cfg = tiny_gaussian()
    d = 16  # the built-in transformer's own token table by default
    assert cfg.method.embed_dim == d and cfg.model.token_table_dim == d and width(model) == d
    assert embedding_table(model) is model.token_table.weight
    assert cfg.model.time_conditioning and cfg.model.input_dim == 2 * d + 1
    assert cfg.method.schedule == "logsnr-cosine"  # saved resolved, not "auto"
    assert model.input_proj.weight.shape == (cfg.model.d_model, 2 * d + 1)
    assert "input_proj.weight" in model.state_dict()
    with pytest.raises(ValueError, match="width"):
        model(None, inputs_embeds=torch.zeros(1, 4, d + 3), time=torch.zeros(1))
    # embed_dim 0: the backbone's own input embeddings span the space.
    _, own, cfg0 = tiny_gaussian(embed_dim=0)
    assert own.token_table is None and embedding_table(own) is own.embed.weight
    assert cfg0.model.input_dim == 2 * cfg0.model.d_model + 1


def test_x0_is_the_normalised_embedding_with_the_configured_norm():
    method, model, _ = tiny_gaussian()
    table = method.token_embeddings(model)
    ids = torch.randint(0, SPECIAL.vocab_size, (3, 12), generator=gen(0))
    norms = table[ids].norm(dim=-1)
    torch.testing.assert_close(norms, torch.full_like(norms, method.cfg.embedding_norm))
    raw = embedding_table(model)
    cos = F.cosine_similarity(table, raw.float(), dim=-1)
    torch.testing.assert_close(cos, torch.ones_like(cos))


def test_embedding_table_of_a_hugging_face_style_backbone():
    class HFLike(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Embedding(10, 6)

        def get_input_embeddings(self):
            return self.inner

    m = HFLike()
    assert embedding_table(m) is m.inner.weight


def test_loss_logs_ce_and_mse_and_trains_every_part():
    method, model, _ = tiny_gaussian()
    model.train()
    ids = torch.randint(4, 16, (4, 12), generator=gen(1))
    torch.manual_seed(0)
    out = method.loss(model, {"input_ids": ids})
    assert {"loss", "ce", "mse"} <= set(out.metrics)
    assert out.metrics["ce"] > 0 and out.metrics["mse"] > 0
    assert out.metrics["loss"] == pytest.approx(out.metrics["ce"] + out.metrics["mse"], rel=1e-5)
    out.loss.backward()
    for name in ("embed.weight", "token_table.weight", "input_proj.weight", "blocks.0.attn.qkv.weight",
                 "conditioner.time_mlp.0.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_frozen_embeddings_get_no_gradient():
    method, model, _ = tiny_gaussian(freeze_embeddings=True)
    method.prepare_backbone(model)
    model.train()
    method.loss(model, {"input_ids": torch.randint(4, 16, (4, 12), generator=gen(1))}).loss.backward()
    table = embedding_table(model)
    assert table.grad is None and not table.requires_grad
    assert model.input_proj.weight.grad is not None


def test_self_conditioning_is_used_on_half_the_batches():
    method, model, _ = tiny_gaussian()
    rec = Recorder(model)
    d = width(model)
    torch.manual_seed(0)
    n = 120
    for _ in range(n):
        calls = len(rec.inputs)
        method.loss(rec, {"input_ids": torch.randint(4, 16, (2, 12))})
        new = rec.inputs[calls:]
        assert len(new) in (1, 2)
        # The first pass sees no estimate (zeros where noised); a second pass sees the first one's.
        assert new[0][..., d : 2 * d][new[0][..., -1] == 0].abs().sum() == 0
        if len(new) == 2:
            noised = new[1][..., -1] == 0
            assert new[1][..., d : 2 * d][noised].abs().sum() > 0
    second_passes = len(rec.inputs) - n
    assert 0.35 * n < second_passes < 0.65 * n
    # Through a DDP-like wrapper exactly once per loss: every rank makes the same collective calls.
    assert rec.wrapped == n


def test_training_prefixes_are_clean_and_flagged():
    method, model, _ = tiny_gaussian(prefix_prob=1.0)
    rec = Recorder(model)
    d = width(model)
    ids = torch.randint(4, 16, (64, 12), generator=gen(2))
    torch.manual_seed(1)
    method.loss(rec, {"input_ids": ids})
    inp = rec.inputs[0]
    flag = inp[..., -1]
    n = flag.sum(-1)
    assert ((n >= 1) & (n <= 6)).all() and len(set(n.tolist())) > 2  # lengths uniform in [1, L // 2]
    assert torch.equal(flag.bool(), torch.arange(12)[None] < n[:, None])  # a prefix
    x0 = method.token_embeddings(model)[ids]
    unit = method.input_scales(torch.zeros(1), d)[1]  # the network sees clean vectors at unit scale
    torch.testing.assert_close(inp[..., :d][flag.bool()], x0[flag.bool()] * unit)
    method0, _, _ = tiny_gaussian(prefix_prob=0.0)
    rec.inputs.clear()
    method0.loss(rec, {"input_ids": ids})
    assert rec.inputs[0][..., -1].sum() == 0


# ---------------------------------------------------------------- the variational bound

TOY = SpecialTokens(pad=0, bos=1, eos=2, mask=3, vocab_size=8)
REAL = (4, 5, 6, 7)
SEQS = torch.tensor(list(itertools.product(REAL, repeat=2)))  # [16, 2]: every sequence of length 2


class ToyOracle(nn.Module):
    """The exact denoiser of a known joint over SEQS: p(x0_l = v | z_t) from the posterior over
    whole sequences (Gaussian likelihood of z_t), optionally mixed with uniform (a worse model).
    It has its own embedding table, which the method reads as for any backbone. Like a trained
    network it undoes the input scaling and outputs the posterior minus the likelihood logits
    the method adds back."""

    def __init__(self, method, probs: torch.Tensor, mix: float = 0.0, dim: int = 4):
        super().__init__()
        self.spec = types.SimpleNamespace(time_conditioning=True, num_classes=0)
        self.embed = nn.Embedding(TOY.vocab_size, dim)
        nn.init.normal_(self.embed.weight, generator=gen(0))
        self.method, self.log_prior, self.mix = method, probs.log(), mix

    def forward(self, input_ids=None, *, inputs_embeds, time, labels=None):
        table = self.method.token_embeddings(self).double()
        c_in = self.method.input_scales(time, table.shape[1])[0]
        z = inputs_embeds[..., : table.shape[1]].double() / c_in.double()[:, None, None]
        alpha = self.method.schedule.alpha(time.double())[:, None, None, None]
        sigma = self.method.schedule.sigma(time.double())[:, None]
        dist = ((z[:, None] - alpha * table[SEQS][None]) ** 2).sum((-1, -2))  # [B, S]
        post = torch.log_softmax(self.log_prior - dist / (2 * sigma**2), -1)
        onehot = F.one_hot(SEQS, TOY.vocab_size).double().log()  # [S, L, V]
        logp = torch.logsumexp(post[:, :, None, None] + onehot[None], 1)  # [B, L, V]
        if self.mix:
            uniform = torch.full((TOY.vocab_size,), -math.inf, dtype=torch.float64)
            uniform[list(REAL)] = -math.log(len(REAL))
            logp = torch.logaddexp(logp + math.log(1 - self.mix), uniform + math.log(self.mix))
        no_prompt = torch.zeros(z.shape[:2], dtype=torch.bool)
        return (logp - self.method.likelihood_logits(z, time, no_prompt, table)).float()


def toy_joint():
    p = torch._standard_gamma(torch.ones(len(SEQS), dtype=torch.float64), generator=gen(0))
    p = p / p.sum()
    return p, float(-(p * p.log()).sum())


@pytest.mark.parametrize("schedule", GAUSSIAN)
def test_bound_of_the_exact_denoiser_is_the_entropy_and_a_worse_model_is_above(schedule):
    method = build_method(GaussianOptions(schedule=schedule), TOY)
    p, entropy = toy_joint()
    x = SEQS[torch.multinomial(p, 8000, replacement=True, generator=gen(1))]
    torch.manual_seed(0)
    with torch.no_grad():
        exact = method.sequence_nll(ToyOracle(method, p), x).double()
        worse = method.sequence_nll(ToyOracle(method, p, mix=0.3), x).double()
    for b in (exact, worse):
        assert torch.isfinite(b).all() and (b >= 0).all()
        se = float(b.std() / math.sqrt(len(b)))
        assert float(b.mean()) >= entropy - 3 * se
    se = float(exact.std() / math.sqrt(len(exact)))
    # Tight for the exact denoiser: the diffusion, reconstruction and prior terms add up to H.
    assert abs(float(exact.mean()) - entropy) < 4 * se + 0.02, (float(exact.mean()), entropy, se)
    assert float(worse.mean()) > entropy + 1.0


class _Split:
    def __init__(self, ids: np.ndarray):
        self.ids, self.labels, self.label_columns = ids.astype(np.int32), None, []

    def __len__(self) -> int:
        return len(self.ids)


def test_evaluate_likelihood_of_any_model_bounds_the_entropy_reproducibly():
    p, entropy = toy_joint()
    x = SEQS[torch.multinomial(p, 256, replacement=True, generator=gen(3))]
    method, model, _ = tiny_gaussian(seq_len=2, special=TOY)  # an untrained backbone
    split = _Split(x.numpy())
    a = evaluate_likelihood(method, model, split, batch_size=64, passes=4, seed=0)
    b = evaluate_likelihood(method, model, split, batch_size=7, passes=4, seed=0)
    assert a["nll"] == pytest.approx(b["nll"], rel=1e-5) and a["se"] == pytest.approx(b["se"], rel=1e-4)
    assert a["bound"] and a["se"] > 0 and a["tokens"] == x.numel()
    assert a["nll"] * 2 >= entropy - 3 * a["se"] * 2  # nats per sequence of 2 tokens
    c = evaluate_likelihood(method, model, split, batch_size=64, passes=4, seed=1)
    assert c["nll"] != a["nll"]  # the seed sets the noise
    exact = evaluate_likelihood(method, ToyOracle(method, p), split, batch_size=64, passes=8, seed=0)
    assert abs(exact["nll"] * 2 - entropy) < 4 * exact["se"] * 2 + 0.05


def test_no_discrete_time_bound():
    method, model, _ = tiny_gaussian()
    assert method.supports_discrete_bound is False and method.stochastic_bound is True
    assert build_method(MaskedOptions(), SPECIAL).supports_discrete_bound is True
    with pytest.raises(DlmsError, match="continuous-time"):
        method.sequence_nll(model, torch.randint(4, 16, (2, 12)), t=torch.rand(2), u=torch.rand(2, 12),
                            discrete_steps=4)


# ---------------------------------------------------------------- samplers


def prompt_canvas(batch: int = 3, length: int = 12, prefix: int = 4):
    canvas = torch.full((batch, length), SPECIAL.mask)
    canvas[:, 0] = SPECIAL.bos
    canvas[:, 1:prefix] = torch.randint(4, 16, (batch, prefix - 1), generator=gen(0))
    fixed = torch.zeros_like(canvas, dtype=torch.bool)
    fixed[:, :prefix] = True
    return canvas, fixed


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_prompt_positions_stay_fixed_and_steps_are_reported(name):
    method, model, _ = tiny_gaussian()
    canvas, fixed = prompt_canvas()
    steps = []
    out = build_sampler(name, method, model).sample(
        canvas, fixed, num_steps=6, eta=0.5, guidance_scale=3.0, generator=gen(0),
        callback=lambda i, n, x: steps.append((i, n, x.clone())))
    assert out.shape == canvas.shape and torch.equal(out[fixed], canvas[fixed])
    assert [(i, n) for i, n, _ in steps] == [(i, 6) for i in range(1, 7)]
    assert all(torch.equal(x[fixed], canvas[fixed]) for _, _, x in steps)
    assert torch.equal(steps[-1][2], out) and not (out == SPECIAL.mask).any()


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_sampling_is_seeded(name):
    method, model, _ = tiny_gaussian()
    canvas, fixed = prompt_canvas()
    sampler = build_sampler(name, method, model)
    a = sampler.sample(canvas, fixed, num_steps=5, eta=1.0, generator=gen(0))
    b = sampler.sample(canvas, fixed, num_steps=5, eta=1.0, generator=gen(0))
    c = sampler.sample(canvas, fixed, num_steps=5, eta=1.0, generator=gen(1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_ddim_at_eta_zero_is_a_deterministic_function_of_the_initial_noise():
    method, model, _ = tiny_gaussian()
    canvas, fixed = prompt_canvas()
    sampler = build_sampler("ddim", method, model)
    noise = torch.randn(3, 12, width(model), generator=gen(5))

    def run(seed, eta):
        traj = []
        out = sampler.sample(canvas, fixed, num_steps=8, eta=eta, noise=noise, generator=gen(seed),
                             callback=lambda i, n, x: traj.append(x.clone()))
        return torch.stack([*traj, out])

    assert torch.equal(run(0, 0.0), run(123, 0.0))  # no randomness after z_1
    assert not torch.equal(run(0, 1.0), run(123, 1.0))
    # With the noise drawn from the generator, eta = 0 draws nothing else from it.
    g = gen(7)
    sampler.sample(canvas, fixed, num_steps=8, eta=0.0, generator=g)
    ref = gen(7)
    torch.randn(3, 12, width(model), generator=ref)
    assert torch.equal(g.get_state(), ref.get_state())


def test_ddpm_is_ddim_at_eta_one():
    method, model, _ = tiny_gaussian()
    z = torch.randn(3, 12, width(model), generator=gen(0))
    x0 = torch.randn(3, 12, width(model), generator=gen(1))
    ddpm, ddim = build_sampler("ddpm", method, model), build_sampler("ddim", method, model)
    for t, s in ((1.0, 0.9), (0.5, 0.25), (0.1, 0.0)):
        a = ddpm.update(z, x0, t, s, 0.0, gen(2))
        b = ddim.update(z, x0, t, s, 1.0, gen(2))
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # eta = 0 keeps the implied noise: (z_s - alpha_s x0) / sigma_s = (z_t - alpha_t x0) / sigma_t
    for t, s in ((1.0, 0.9), (0.5, 0.25)):
        a_t, s_t, a_s, s_s = ddim.coefficients(t, s)
        z_s = ddim.update(z, x0, t, s, 0.0, None)
        torch.testing.assert_close((z_s - a_s * x0) / s_s, (z - a_t * x0) / s_t, rtol=1e-4, atol=1e-4)


def test_guidance_mixes_the_conditional_and_prompt_free_predictions():
    method, model, _ = tiny_gaussian()
    canvas, fixed = prompt_canvas()
    sampler = build_sampler("ddim", method, model)
    table = method.token_embeddings(model)
    x0_fixed = table[canvas]
    t = torch.full((3,), 0.6)
    z = torch.where(fixed[..., None], x0_fixed, torch.randn(3, 12, table.shape[1], generator=gen(0)))
    noise = torch.randn(3, 12, table.shape[1], generator=gen(1))
    with torch.no_grad():
        cond = method.x0_estimate(method.network_logits(model, z, t, fixed, None, None, table), table)
        a, s = method.schedule.alpha(t)[:, None, None], method.schedule.sigma(t)[:, None, None]
        z_u = torch.where(fixed[..., None], a * x0_fixed + s * noise, z)
        uncond = method.x0_estimate(method.network_logits(model, z_u, t, torch.zeros_like(fixed), None, None, table), table)
        at_one = sampler.estimate(z, t, fixed, (None, None), None, 1.0, table, x0_fixed, noise)
        at_zero = sampler.estimate(z, t, fixed, (None, None), None, 0.0, table, x0_fixed, noise)
        at_five = sampler.estimate(z, t, fixed, (None, None), None, 5.0, table, x0_fixed, noise)
    for got, want in ((at_one, cond), (at_zero, uncond)):
        torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-4)
    real = torch.arange(SPECIAL.vocab_size) != SPECIAL.mask  # log-prob -inf there
    assert (at_five[0] - cond[0])[..., real].abs().max() > 1e-3
    torch.testing.assert_close(at_one[2], uncond[1], rtol=1e-4, atol=1e-4)


def test_label_guidance_uses_the_null_class():
    method, model, _ = tiny_gaussian(num_classes=3)
    with torch.no_grad():
        model.conditioner.class_embed.weight.normal_(0, 1.0, generator=gen(4))
    canvas, fixed = prompt_canvas(prefix=1)
    table = method.token_embeddings(model)
    labels = torch.tensor([0, 1, 2])
    t = torch.full((3,), 0.5)
    z = torch.where(fixed[..., None], table[canvas], torch.randn(3, 12, table.shape[1], generator=gen(0)))
    noise = torch.randn(3, 12, table.shape[1], generator=gen(1))
    sampler = build_sampler("ddim", method, model)
    with torch.no_grad():
        at_zero = sampler.estimate(z, t, fixed, (None, None), labels, 0.0, table, table[canvas], noise)
        a, s = method.schedule.alpha(t)[:, None, None], method.schedule.sigma(t)[:, None, None]
        z_u = torch.where(fixed[..., None], a * table[canvas] + s * noise, z)
        null = torch.full_like(labels, model.null_class)
        uncond = method.network_logits(model, z_u, t, torch.zeros_like(fixed), None, null, table)
    torch.testing.assert_close(at_zero[0], method.x0_estimate(uncond, table)[0], rtol=1e-4, atol=1e-4)
    plain = sampler.sample(canvas, fixed, labels=labels, num_steps=4, generator=gen(0))
    strong = sampler.sample(canvas, fixed, labels=labels, guidance_scale=6.0, num_steps=4, generator=gen(0))
    assert plain.shape == strong.shape == canvas.shape


def test_clamping_returns_exact_token_embeddings():
    method, model, _ = tiny_gaussian()
    table = method.token_embeddings(model)
    x = torch.randn(2, 5, table.shape[1], generator=gen(0)) * 3
    snapped = clamp_to_tokens(x, table, exclude=SPECIAL.mask)
    dist = torch.cdist(x.reshape(-1, table.shape[1]), table)  # [10, V]
    dist[:, SPECIAL.mask] = float("inf")
    torch.testing.assert_close(snapped.reshape(-1, table.shape[1]), table[dist.argmin(-1)], rtol=0, atol=0)

    seen = []

    class Recording(DDIMSampler):
        def update(self, z, x0_hat, t, s, eta, generator):
            seen.append(x0_hat.clone())
            return super().update(z, x0_hat, t, s, eta, generator)

    canvas, fixed = prompt_canvas()
    Recording(method, model).sample(canvas, fixed, num_steps=4, clamp=True, generator=gen(0))
    assert len(seen) == 4
    for x0_hat in seen:
        assert (x0_hat[..., None, :] == table).all(-1).any(-1).all()  # every vector is a token embedding
    seen.clear()
    Recording(method, model).sample(canvas, fixed, num_steps=2, generator=gen(0))  # the control: no clamping
    assert not (seen[0][..., None, :] == table).all(-1).any(-1).all()


def test_sampler_self_conditions_on_the_previous_estimate():
    method, model, _ = tiny_gaussian()
    rec = Recorder(model)
    d = width(model)
    canvas, fixed = prompt_canvas()
    build_sampler("ddim", method, rec).sample(canvas, fixed, num_steps=3, generator=gen(0))
    assert len(rec.inputs) == 3
    free = ~fixed
    assert rec.inputs[0][..., d : 2 * d][free].abs().sum() == 0
    assert rec.inputs[1][..., d : 2 * d][free].abs().sum() > 0


def test_samplers_and_methods_must_match():
    method, model, _ = tiny_gaussian()
    assert method.default_sampler == "ddim"
    with pytest.raises(ConfigError) as info:
        build_sampler("confidence", method, model)
    assert "ddim" in str(info.value) and "ddpm" in str(info.value)
    with pytest.raises(ConfigError, match="ancestral"):
        build_sampler("ddim", build_method(MaskedOptions(), SPECIAL), model)


def test_score_temperature_sharpens_the_interpolation_weights():
    from dlms.samplers.gaussian import _tempered

    logits = torch.tensor([[1.0, 2.0, 0.5]])
    assert torch.equal(_tempered(logits, 1.0), logits)
    assert torch.allclose(_tempered(logits, 0.5), logits * 2)
    assert _tempered(logits, 0.0).softmax(-1).tolist() == [[0.0, 1.0, 0.0]]
    # lower temperature: more weight on the likeliest token, so the estimate moves towards its embedding
    assert _tempered(logits, 0.5).softmax(-1)[0, 1] > logits.softmax(-1)[0, 1]


def test_network_inputs_have_unit_scale_at_every_noise_level():
    """c_in brings z_t to unit variance per coordinate, at high and at low SNR alike."""
    method, model, _ = tiny_gaussian()
    table = method.token_embeddings(model)
    d = table.shape[1]
    ids = torch.randint(0, SPECIAL.vocab_size, (64, 12), generator=gen(1))
    x0 = table[ids]
    for t in (0.05, 0.5, 0.95):
        tt = torch.full((64,), t)
        z = method.corrupt(x0, tt, torch.randn(x0.shape, generator=gen(2)))
        c_in, unit = method.input_scales(tt, d)
        var = (z * c_in[:, None, None]).pow(2).mean().item()
        assert 0.8 < var < 1.2, (t, var)
        assert abs((x0 * unit).pow(2).mean().item() - 1.0) < 1e-4


def test_likelihood_logits_decide_clean_input_and_stay_out_of_the_noisy_levels():
    """At t = 0 even an untrained network returns the token under the (nearly clean) vector:
    the gated likelihood term dominates; at mid noise the term is negligible."""
    method, model, _ = tiny_gaussian()
    table = method.token_embeddings(model)
    ids = torch.randint(4, 16, (4, 12), generator=gen(3))
    x0 = table[ids]
    none = torch.zeros_like(ids, dtype=torch.bool)
    with torch.no_grad():
        t0 = torch.zeros(4)
        z0 = method.corrupt(x0, t0, torch.randn(x0.shape, generator=gen(4)))
        logits = method.network_logits(model, z0, t0, none, None, None, table)
        assert torch.equal(logits.argmax(-1), ids)
        mid = torch.full((4,), 0.5)  # log-SNR 0: the gate is sigmoid(-5)
        zm = method.corrupt(x0, mid, torch.randn(x0.shape, generator=gen(5)))
        term = method.likelihood_logits(zm, mid, none, table)
        assert term.abs().max() < 0.05
        assert method.likelihood_logits(zm, mid, torch.ones_like(none), table).abs().max() == 0  # clean: none


def test_fused_score_interpolation_matches_autograd():
    """interpolate_with_nll: the same values and gradients as log_softmax, exp, @ and gather."""
    from dlms.methods.score_interpolation import interpolate_with_nll

    g = gen(11)
    logits = (3 * torch.randn(2, 5, 9, generator=g, dtype=torch.float64)).requires_grad_()
    table = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 9, (2, 5), generator=g)
    w_x0, w_nll = torch.randn(2, 5, 4, generator=g, dtype=torch.float64), torch.randn(2, 5, generator=g, dtype=torch.float64)

    def plain(lg, tb):
        logp = torch.log_softmax(lg, -1)
        return logp.exp() @ tb, -logp.gather(-1, targets[..., None]).squeeze(-1)

    def grads(fn):
        x0, nll = fn(logits, table)
        torch.testing.assert_close(x0.detach(), plain(logits, table)[0].detach())
        torch.testing.assert_close(nll.detach(), plain(logits, table)[1].detach())
        return torch.autograd.grad((x0 * w_x0).sum() + (nll * w_nll).sum(), (logits, table))

    for fused, ref in zip(grads(lambda lg, tb: interpolate_with_nll(lg, tb, targets)), grads(plain)):
        torch.testing.assert_close(fused, ref)
    assert torch.autograd.gradcheck(lambda lg, tb: interpolate_with_nll(lg, tb, targets), (logits, table))
