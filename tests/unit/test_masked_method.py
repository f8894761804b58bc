"""Masked (absorbing-state) diffusion: corruption, SUBS, time sampling, and the ELBO on a toy
distribution whose exact likelihood is known."""

from __future__ import annotations

import itertools
import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlms.backbones import build_backbone, resolve_model_config
from dlms.config import ModelConfig
from dlms.method_options import MaskedOptions
from dlms.errors import ConfigError
from dlms.likelihood import evaluate_likelihood
from dlms.methods import SpecialTokens, build_method
from dlms.schedules import schedule_names

# pad=0, bos=1, eos=2, mask=3; the real tokens are 4..7.
SPECIAL = SpecialTokens(pad=0, bos=1, eos=2, mask=3, vocab_size=8)
REAL = (4, 5, 6, 7)
TOY_LEN = 3
SEQS = torch.tensor(list(itertools.product(REAL, repeat=TOY_LEN)))  # [64, 3]: every sequence


def method_for(schedule: str = "loglinear", **kwargs):
    return build_method(MaskedOptions(schedule=schedule, **kwargs), SPECIAL)


def toy_table(seed: int = 0) -> torch.Tensor:
    """A random joint distribution over the 64 sequences (float64, sums to 1)."""
    g = torch.Generator().manual_seed(seed)
    p = torch._standard_gamma(torch.ones(len(SEQS), dtype=torch.float64), generator=g)
    return p / p.sum()


class OracleDenoiser(nn.Module):
    """p(x0_l | unmasked tokens of x_t), exact under a table over all sequences of length 3,
    optionally mixed with the uniform distribution over the real tokens (a worse model).

    Logits for each of the 5**3 possible x_t are precomputed; forward is a table lookup.
    """

    def __init__(self, probs: torch.Tensor, mix: float = 0.0):
        super().__init__()
        self.spec = types.SimpleNamespace(time_conditioning=False, num_classes=0)
        self.anchor = nn.Parameter(torch.zeros(()))  # evaluate_likelihood reads the device from it
        states = torch.tensor(list(itertools.product((SPECIAL.mask, *REAL), repeat=TOY_LEN)))  # [125, 3]
        consistent = ((states[:, None] == SPECIAL.mask) | (states[:, None] == SEQS[None])).all(-1)  # [125, 64]
        joint = consistent.double() * probs  # p(x0) restricted to the sequences x_t is consistent with
        onehot = F.one_hot(SEQS, SPECIAL.vocab_size).double()  # [64, 3, V]
        cond = torch.einsum("bs,slv->blv", joint, onehot)
        cond = cond / cond.sum(-1, keepdim=True)  # [125, 3, V]: zero on the special ids
        uniform = torch.zeros(SPECIAL.vocab_size, dtype=torch.float64)
        uniform[list(REAL)] = 1.0 / len(REAL)
        cond = (1 - mix) * cond + mix * uniform
        self.register_buffer("table", cond.log().float())
        self.register_buffer("place", 5 ** torch.arange(TOY_LEN - 1, -1, -1))
        self.calls = 0

    def forward(self, xt, select=None, time=None, labels=None):
        assert time is None and labels is None
        self.calls += 1
        digit = torch.where(xt == SPECIAL.mask, 0, xt - (SPECIAL.mask))
        logits = self.table[(digit * self.place).sum(-1)]  # [B, 3, V]
        return logits if select is None else logits[select]


def tiny_model(vocab: int, seq_len: int, seed: int = 0, causal: bool = False, **kwargs):
    torch.manual_seed(seed)
    cfg = resolve_model_config(ModelConfig(preset="tiny", **kwargs), seq_len=seq_len, causal=causal)
    return build_backbone(cfg, vocab).eval()


class FakeSplit:
    def __init__(self, ids: np.ndarray):
        self.ids = ids.astype(np.int32)
        self.labels = None
        self.label_columns: list[str] = []

    def __len__(self) -> int:
        return len(self.ids)


def real_tokens(shape, seed=0, low=4, high=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, shape, generator=g)


# ---------------------------------------------------------------- forward corruption


def test_corrupt_endpoints():
    m = method_for()
    x0 = real_tokens((64, 64))
    xt, masked = m.corrupt(x0, torch.full((64,), 1e-4))
    assert masked.float().mean() < 0.002
    xt, masked = m.corrupt(x0, torch.ones(64))
    assert masked.all() and (xt == SPECIAL.mask).all()


@pytest.mark.parametrize("schedule", schedule_names("masking"))
def test_corrupt_masked_fraction_matches_mask_prob(schedule):
    m = method_for(schedule)
    torch.manual_seed(0)
    x0 = real_tokens((200, 100))
    t = torch.cat([torch.full((100,), 0.5), torch.full((100,), 0.2)])
    xt, masked = m.corrupt(x0, t)
    for rows, tt in ((slice(0, 100), 0.5), (slice(100, 200), 0.2)):
        expected = m.schedule.mask_prob(torch.tensor([tt])).item()
        # 10,000 tokens: the standard error is at most 0.005.
        assert masked[rows].float().mean().item() == pytest.approx(expected, abs=0.02)
    # Unmasked positions carry x0; masked ones hold the mask token, and `masked` says which.
    assert torch.equal(xt[~masked], x0[~masked])
    assert (xt[masked] == SPECIAL.mask).all()
    assert torch.equal(masked, xt == SPECIAL.mask)


def test_corrupt_uses_given_uniforms():
    m = method_for()
    x0 = real_tokens((2, 4))
    u = torch.tensor([[0.1, 0.6, 0.3, 0.9], [0.5, 0.5, 0.49, 0.51]])
    xt, masked = m.corrupt(x0, torch.tensor([0.5, 0.5]), u)
    assert masked.tolist() == [[True, False, True, False], [False, False, True, False]]


# ---------------------------------------------------------------- SUBS parameterisation


def test_masked_log_probs_exclude_the_mask_token():
    m = method_for()
    model = tiny_model(12, 8)
    x0 = real_tokens((3, 8), high=12)
    xt, masked = m.corrupt(x0, torch.full((3,), 0.6), torch.rand(3, 8, generator=torch.Generator().manual_seed(1)))
    logp = m.masked_log_probs(model, xt, masked, torch.full((3,), 0.6), None)
    assert logp.shape == (int(masked.sum()), 12) and logp.dtype == torch.float32
    assert torch.isneginf(logp[:, SPECIAL.mask]).all()
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(len(logp)))


def test_sequence_nll_is_zero_when_nothing_is_masked():
    m = method_for()
    model = tiny_model(12, 8)
    x0 = real_tokens((4, 8), high=12)
    for t in (1e-3, 0.5, 0.99):
        nll = m.sequence_nll(model, x0, t=torch.full((4,), t), u=torch.ones(4, 8))
        assert torch.equal(nll, torch.zeros(4))


def test_sequence_nll_matches_hand_computation():
    m = method_for()
    model = tiny_model(12, 8)
    x0 = real_tokens((3, 8), high=12)
    t = torch.tensor([0.3, 0.6, 0.9])
    u = torch.rand(3, 8, generator=torch.Generator().manual_seed(2))
    u[0, 0] = 0.0  # at least one masked token per row
    nll = m.sequence_nll(model, x0, t=t, u=u)
    xt, masked = m.corrupt(x0, t, u)
    with torch.no_grad():
        logits = model(xt).float()
    logits[..., SPECIAL.mask] = float("-inf")
    ce = -logits.log_softmax(-1).gather(-1, x0[..., None]).squeeze(-1)  # [B, L]
    expected = (1 - m.t_min) * (ce * masked).sum(-1) / t  # loglinear: w(t) = 1/t, t uniform on [t_min, 1]
    torch.testing.assert_close(nll.detach(), expected, rtol=1e-5, atol=1e-5)


class NoisyAtUnmasked(nn.Module):
    """Wraps a model and adds large noise to its logits at the positions that are NOT masked."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.spec = inner.spec

    def forward(self, xt, select=None, **kwargs):
        logits = self.inner(xt, **kwargs)
        noise = 50 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(9))
        logits = torch.where((xt != SPECIAL.mask)[..., None], logits + noise, logits)
        return logits if select is None else logits[select]


def test_carry_over_loss_ignores_outputs_at_unmasked_positions():
    m = method_for()
    inner = tiny_model(12, 8)
    x0 = real_tokens((4, 8), high=12)
    t = torch.full((4,), 0.5)
    u = torch.rand(4, 8, generator=torch.Generator().manual_seed(3))
    a = m.sequence_nll(inner, x0, t=t, u=u)
    b = m.sequence_nll(NoisyAtUnmasked(inner), x0, t=t, u=u)
    assert a.abs().min() > 0
    torch.testing.assert_close(a, b)


def test_loss_is_mean_bound_per_token_and_differentiable():
    m = method_for()
    model = tiny_model(12, 8)
    model.train()
    x0 = real_tokens((4, 8), high=12)
    torch.manual_seed(4)
    out = m.loss(model, {"input_ids": x0})
    torch.manual_seed(4)
    nll = m.sequence_nll(model, x0)
    torch.testing.assert_close(out.loss.detach(), nll.sum().detach() / x0.numel())
    assert out.metrics["nll_bound"] == pytest.approx(nll.sum().item() / x0.numel(), rel=1e-5)  # no pad/bos here
    out.loss.backward()
    assert model.embed.weight.grad is not None and model.embed.weight.grad.abs().sum() > 0


def test_scored_tokens_skip_pad_and_bos():
    m = method_for()
    x0 = torch.tensor([[1, 5, 6, 2, 0, 0], [1, 4, 4, 4, 4, 2]])
    assert m.scored_tokens(x0).tolist() == [3, 5]


def test_time_conditioned_model_receives_t():
    m = method_for()
    model = tiny_model(12, 8, time_conditioning=True)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "modulation" in name:
                p.normal_(0, 0.2, generator=torch.Generator().manual_seed(5))
    x0 = real_tokens((2, 8), high=12)
    u = torch.full((2, 8), 0.25)  # masked whenever mask_prob > 0.25: the same pattern at both t
    a = m.sequence_nll(model, x0, t=torch.full((2,), 0.5), u=u) * 0.5  # undo w(t) = 1/t
    b = m.sequence_nll(model, x0, t=torch.full((2,), 0.9), u=u) * 0.9
    assert (a - b).abs().max() > 1e-4


def test_non_masking_schedule_is_rejected():
    with pytest.raises(ConfigError, match="schedule"):
        method_for("nope")


# ---------------------------------------------------------------- time sampling


def test_antithetic_times_are_stratified():
    m = method_for(antithetic=True, eps=1e-3)
    batch = 16
    t = m.sample_times(batch, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert t.shape == (batch,) and (t >= 1e-3).all() and (t <= 1).all()
    gaps = t.sort().values.diff()
    torch.testing.assert_close(gaps, torch.full((batch - 1,), (1 - 1e-3) / batch), rtol=1e-4, atol=1e-5)
    # One stratum per batch element: each of the B intervals holds exactly one t.
    strata = ((t - 1e-3) / (1 - 1e-3) * batch).floor().long()
    assert sorted(strata.tolist()) == list(range(batch))
    again = m.sample_times(batch, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert torch.equal(t, again)


def test_plain_times_are_not_stratified():
    m = method_for(antithetic=False, eps=1e-3)
    t = m.sample_times(4096, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert (t >= 1e-3).all() and (t <= 1).all()
    assert t.mean().item() == pytest.approx(0.5, abs=0.03)
    assert t.sort().values.diff().std() > 1e-4  # iid, not evenly spaced


# ---------------------------------------------------------------- ELBO vs exact NLL on a toy distribution

MASK_PATTERNS = torch.tensor(list(itertools.product([False, True], repeat=TOY_LEN)))  # [8, 3]


def pattern_cross_entropies(method, model) -> torch.Tensor:
    """[64, 8]: the summed cross-entropy of the masked tokens for every (sequence, mask pattern);
    every pattern is forced through `u` (0 = masked, 1 = kept) and the weight at t = 0.5 divided out."""
    n, k = len(SEQS), len(MASK_PATTERNS)
    x0 = SEQS.repeat_interleave(k, 0)
    u = torch.where(MASK_PATTERNS.repeat(n, 1), 0.0, 1.0)
    t_half = torch.full((n * k,), 0.5)
    with torch.no_grad():
        ce = method.sequence_nll(model, x0, t=t_half, u=u).double() / method.schedule.elbo_weight(t_half).double()
    return ce.view(n, k)


def expected_elbo(method, model) -> torch.Tensor:
    """The exact expectation of `sequence_nll` over t ~ U[eps, 1] and the masks, per sequence [64].

    Every mask pattern is forced through `u` (0 = masked, 1 = kept); the t integral is done by
    Gauss-Legendre quadrature on geometrically spaced pieces.
    """
    eps = method.t_min
    n = len(SEQS)
    ce = pattern_cross_entropies(method, model)
    nodes, weights = np.polynomial.legendre.leggauss(48)
    edges = np.geomspace(eps, 1.0, 25)
    n_masked = MASK_PATTERNS.sum(-1).double()
    total = torch.zeros(n, dtype=torch.float64)
    for a, b in zip(edges[:-1], edges[1:]):
        t = torch.tensor(0.5 * (b - a) * nodes + 0.5 * (b + a))
        dt = torch.tensor(0.5 * (b - a) * weights)
        mp = method.schedule.mask_prob(t)[:, None]
        prob = mp ** n_masked * (1 - mp) ** (TOY_LEN - n_masked)  # [Q, 8]
        total += ((dt * method.schedule.elbo_weight(t))[:, None, None] * prob[:, None, :] * ce[None]).sum((0, 2))
    return total / (1 - eps)  # t is uniform on [t_min, 1]


# Every schedule truncates the integral where its mask probability reaches eps (method.t_min),
# so the dropped sliver is the same for all of them; a fixed t = eps dropped 2% for `linear`.
@pytest.mark.parametrize("schedule", schedule_names("masking"))
def test_expected_elbo_of_exact_denoiser_is_the_exact_nll(schedule):
    """With the exact denoiser the continuous-time ELBO is tight: E[sequence_nll] = -log p(x)
    up to the eps truncation. A wrong weight w(t), SUBS slip or mask/selection mix-up breaks it."""
    p = toy_table()
    method = method_for(schedule)
    elbo = expected_elbo(method, OracleDenoiser(p))
    exact = -p.log()
    rel = ((elbo - exact) / exact).abs()
    assert rel.max() < 3e-3, f"{schedule}: worst relative gap {rel.max():.2e}"
    # A bound: not below the exact NLL (tolerance for the float32 network outputs).
    assert (elbo - exact).min() > -2e-3 * exact.max()


@pytest.mark.parametrize("schedule", schedule_names("masking"))
def test_expected_elbo_of_worse_model_exceeds_entropy(schedule):
    p = toy_table()
    method = method_for(schedule)
    entropy = float(-(p * p.log()).sum())
    oracle = float((p * expected_elbo(method, OracleDenoiser(p))).sum())
    worse = float((p * expected_elbo(method, OracleDenoiser(p, mix=0.3))).sum())
    assert worse > oracle + 0.02
    assert worse > entropy + 0.02


def _mc_elbo(method, model, x0: torch.Tensor, passes: int, seed: int) -> torch.Tensor:
    """`passes` estimates per sequence, t stratified per sequence: [passes, N]."""
    g = torch.Generator().manual_seed(seed)
    n, length = x0.shape
    offset = torch.rand(n, generator=g)
    u_t = (offset[None] + torch.arange(passes)[:, None] / passes) % 1.0
    t = method.t_min + (1 - method.t_min) * u_t
    u = torch.rand(passes, n, length, generator=g)
    with torch.no_grad():
        est = method.sequence_nll(model, x0.repeat(passes, 1), t=t.reshape(-1), u=u.reshape(-1, length))
    return est.double().view(passes, n)


def test_monte_carlo_elbo_of_exact_denoiser_matches_exact_nll():
    p = toy_table()
    method = method_for("loglinear")
    passes = 1024
    est = _mc_elbo(method, OracleDenoiser(p), SEQS, passes, seed=0)
    mean, se = est.mean(0), est.std(0) / math.sqrt(passes)
    exact = -p.log()
    z = (mean - exact) / se
    # 64 sequences: a per-sequence bound that a correct estimator passes with near certainty...
    assert z.abs().max() < 4.5, f"worst z {z.abs().max():.2f}"
    # ...and the average over all 64 within 3 standard errors.
    gap = (mean - exact).mean()
    gap_se = se.pow(2).sum().sqrt() / len(SEQS)
    assert gap.abs() < 3 * gap_se, f"gap {gap:.4f} se {gap_se:.4f}"
    assert gap_se < 0.05  # the test has power (~1% of the entropy)


def test_monte_carlo_elbo_over_sampled_data_is_at_least_the_entropy():
    p = toy_table()
    entropy = float(-(p * p.log()).sum())
    method = method_for("loglinear")
    g = torch.Generator().manual_seed(1)
    data = SEQS[torch.multinomial(p.float(), 2048, replacement=True, generator=g)]
    for model, margin in ((OracleDenoiser(p, mix=0.3), 0.0), (tiny_model(SPECIAL.vocab_size, TOY_LEN), 1.0)):
        est = _mc_elbo(method, model, data, passes=4, seed=2)
        per_seq = est.mean(0)
        mean, se = per_seq.mean().item(), per_seq.std().item() / math.sqrt(len(per_seq))
        assert mean >= entropy + margin - 3 * se, f"{type(model).__name__}: {mean:.3f} +- {se:.3f} < H {entropy:.3f}"


# ---------------------------------------------------------------- evaluate_likelihood


def test_evaluate_likelihood_matches_exact_nll_for_exact_denoiser():
    p = toy_table()
    method = method_for("loglinear")
    split = FakeSplit(SEQS.numpy())
    res = evaluate_likelihood(method, OracleDenoiser(p), split, batch_size=64, passes=64, seed=0)
    exact_per_token = float((-p.log()).sum()) / SEQS.numel()
    assert res["tokens"] == SEQS.numel() and res["sequences"] == len(SEQS) and res["passes"] == 64
    assert res["bound"] is True
    assert abs(res["nll"] - exact_per_token) < 3 * res["se"] + 1e-3
    assert res["ppl"] == pytest.approx(math.exp(res["nll"]))


def test_evaluate_likelihood_independent_of_batch_size_and_reproducible():
    method = method_for("loglinear")
    model = tiny_model(12, 6)
    ids = real_tokens((7, 6), seed=3, high=12).numpy()
    ids[:, 0] = SPECIAL.bos
    ids[2, 4:] = [SPECIAL.eos, SPECIAL.pad]
    split = FakeSplit(ids)
    a = evaluate_likelihood(method, model, split, batch_size=2, passes=4, seed=0)
    b = evaluate_likelihood(method, model, split, batch_size=5, passes=4, seed=0)
    c = evaluate_likelihood(method, model, split, batch_size=2, passes=4, seed=0)
    d = evaluate_likelihood(method, model, split, batch_size=2, passes=4, seed=1)
    assert a["tokens"] == b["tokens"] == 7 * 5 - 1
    for key in ("nll", "se"):
        assert a[key] == pytest.approx(b[key], rel=1e-5)
        assert a[key] == c[key]
    assert a["nll"] != d["nll"]
    assert a["se"] > 0


def test_evaluate_likelihood_max_sequences():
    method = method_for("loglinear")
    p = toy_table()
    split = FakeSplit(SEQS.numpy())
    part = evaluate_likelihood(method, OracleDenoiser(p), split, batch_size=5, passes=2, max_sequences=12)
    assert part["sequences"] == 12 and part["tokens"] == 12 * TOY_LEN


def test_evaluate_likelihood_se_shrinks_with_passes():
    p = toy_table()
    method = method_for("loglinear")
    split = FakeSplit(SEQS.numpy())
    few = evaluate_likelihood(method, OracleDenoiser(p, mix=0.1), split, batch_size=64, passes=4, seed=0)
    many = evaluate_likelihood(method, OracleDenoiser(p, mix=0.1), split, batch_size=64, passes=64, seed=0)
    # Standard error ~ 1/sqrt(passes): a factor 4 from 4 to 64 passes.
    assert many["se"] < few["se"] / 2
    assert abs(many["nll"] - few["nll"]) < 4 * few["se"]


# ---------------------------------------------------------------- discrete-time bound, conditional scores


def expected_discrete_elbo(method, model, steps: int) -> torch.Tensor:
    """The exact expectation of the `steps`-step discrete-time ELBO per sequence [64]: t = i / steps."""
    ce = pattern_cross_entropies(method, model)
    n_masked = MASK_PATTERNS.sum(-1).double()
    t = torch.arange(1, steps + 1, dtype=torch.float64) / steps
    mp = method.schedule.mask_prob(t)[:, None]
    prob = mp ** n_masked * (1 - mp) ** (TOY_LEN - n_masked)  # [T, 8]
    weight = method.schedule.discrete_elbo_weight(t, steps) / steps  # t uniform on the grid
    return (weight[:, None, None] * prob[:, None, :] * ce[None]).sum((0, 2))


def test_discrete_time_bound_is_above_the_exact_nll_and_tightens_with_steps():
    p = toy_table()
    method = method_for("loglinear")
    oracle = OracleDenoiser(p)
    exact = -p.log()
    entropy = float((p * exact).sum())
    bounds = {steps: expected_discrete_elbo(method, oracle, steps) for steps in (1, 4, 32, 2000)}
    # over data from p every bound is at least the entropy (up to the eps sliver the schedule
    # leaves unmasked at t = 1, as for the continuous bound), and more steps give a tighter one
    means = [float((p * bounds[s]).sum()) for s in (1, 4, 32, 2000)]
    assert means[0] > means[1] > means[2] > means[3] > entropy * (1 - 2e-3)
    # one step: every token masked at once, i.e. the product of the marginals
    marginals = [torch.stack([(p * (SEQS[:, l] == v)).sum() for v in REAL]) for l in range(TOY_LEN)]
    product = -sum(marginals[l][SEQS[:, l] - REAL[0]].log() for l in range(TOY_LEN))
    assert torch.allclose(bounds[1], product, rtol=2e-3)  # eps: a few tokens stay unmasked at t = 1
    # many steps: the continuous-time bound (exact for the exact denoiser)
    assert ((bounds[2000] - exact) / exact).abs().max() < 5e-3


def test_evaluate_likelihood_discrete_steps_estimates_the_discrete_bound():
    p = toy_table()
    method = method_for("loglinear")
    split = FakeSplit(SEQS.numpy())
    res = evaluate_likelihood(method, OracleDenoiser(p), split, batch_size=64, passes=256, seed=0, discrete_steps=4)
    expected = float(expected_discrete_elbo(method, OracleDenoiser(p), 4).sum()) / SEQS.numel()
    assert abs(res["nll"] - expected) < 3 * res["se"] + 1e-3
    one_step = float(expected_discrete_elbo(method, OracleDenoiser(p), 1).sum()) / SEQS.numel()
    assert abs(one_step - expected) > 10 * res["se"]  # the test can tell the step counts apart


def test_conditional_elbo_of_exact_denoiser_matches_the_exact_conditional_nll():
    """Scoring the last two tokens given the clean first one: with the exact denoiser the
    Monte Carlo conditional ELBO is -log p(x2, x3 | x1) (batch-size independent, seeded)."""
    from dlms.scoring import score_sequences

    p = toy_table()
    method = method_for("loglinear")
    rows = [(seq.tolist(), 2) for seq in SEQS]
    a = score_sequences(method, OracleDenoiser(p), rows, passes=512, seed=0, batch_size=64)
    b = score_sequences(method, OracleDenoiser(p), rows, passes=512, seed=0, batch_size=7)
    assert [r["logprob"] for r in a] == pytest.approx([r["logprob"] for r in b], rel=1e-6)
    first = torch.stack([(p * (SEQS[:, 0] == v)).sum() for v in REAL])
    exact = p.log() - first[SEQS[:, 0] - REAL[0]].log()  # log p(x2, x3 | x1)
    got = torch.tensor([r["logprob"] for r in a], dtype=torch.float64)
    se = torch.tensor([r["se"] for r in a], dtype=torch.float64)
    assert ((got - exact) / se).abs().max() < 4.5
    assert all(r["tokens"] == 2 and r["greedy"] is False for r in a)
