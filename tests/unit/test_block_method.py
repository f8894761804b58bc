"""Block diffusion (BD3-LM): the two limits (one block = masked diffusion, blocks of one token =
autoregressive), no leak from later blocks, the sampling mask, training and evaluation, config errors."""
from __future__ import annotations

import json
import math

import pytest
import torch

from dlms.assembly import backbone_tokenizer
from dlms.backbones import Transformer, TransformerSpec
from dlms.config import load_config
from dlms.method_options import BlockOptions, MaskedOptions
from dlms.errors import ConfigError
from dlms.methods import BlockDiffusion, SpecialTokens, build_method
from dlms.model import DiffusionLM
from dlms.training import Trainer
from tests.conftest import tiny_overrides

SPECIAL = SpecialTokens(pad=0, bos=1, eos=2, mask=3, vocab_size=24)
L = 16


def _model(time_conditioning: bool = False) -> Transformer:
    torch.manual_seed(0)
    spec = TransformerSpec(vocab_size=SPECIAL.vocab_size, max_seq_len=L, d_model=32, n_layers=2, n_heads=4,
                           mlp_hidden=64, causal=False, time_conditioning=time_conditioning)
    return Transformer(spec).eval()


def _block(block_size: int, **kwargs) -> BlockDiffusion:
    return build_method(BlockOptions(block_size=block_size, **kwargs), SPECIAL)


def _data(batch: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randint(4, SPECIAL.vocab_size, (batch, L), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_one_block_is_the_masked_method():
    """block_size = L: no x_t token sees the x0 copy, so bound and loss are the masked method's."""
    model, x0 = _model(), _data()
    masked, block = build_method(MaskedOptions(), SPECIAL), _block(L)
    t, u = torch.rand(3), torch.rand(3, L)
    torch.testing.assert_close(block.sequence_nll(model, x0, t=t, u=u), masked.sequence_nll(model, x0, t=t, u=u),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(block.sequence_nll(model, x0, t=t, u=u, discrete_steps=8),
                               masked.sequence_nll(model, x0, t=t, u=u, discrete_steps=8), rtol=1e-5, atol=1e-5)
    torch.manual_seed(5)  # the same draws of t (stratified) and u in both
    expected = masked.loss(model, {"input_ids": x0}).loss
    torch.manual_seed(5)
    torch.testing.assert_close(block.loss(model, {"input_ids": x0}).loss, expected, rtol=1e-5, atol=1e-5)


def _chain_rule_nll(method: BlockDiffusion, model, x0: torch.Tensor) -> torch.Tensor:
    """sum_i -log p(x_i | x_<i) [B]: one forward with every x_t position masked (t = 1)."""
    return method._two_copy_nll(model, torch.full_like(x0, SPECIAL.mask), x0, torch.ones_like(x0, dtype=torch.bool),
                                None, None).view(x0.shape).sum(-1)


@torch.no_grad()
def test_blocks_of_one_token_are_autoregressive():
    """Block size 1: predictions at i depend on x0[<i] only, and the Monte Carlo bound averages
    to the chain-rule NLL times (1 - t_min) (loglinear: E_t[w(t) 1{masked}] = 1 - t_min)."""
    model, method = _model(), _block(1)
    x0 = _data(1)
    exact = _chain_rule_nll(method, model, x0)  # [1]
    # The same numbers from forwards that only see the clean prefix and a mask at i (the sampling mask).
    prefix = []
    for i in range(L):
        canvas = torch.cat([x0[:, :i], torch.full((1, 1), SPECIAL.mask)], 1)
        logits = model(canvas, attn_mask=method.attention_mask(i + 1, x0.device))[:, -1].float()
        logits[:, SPECIAL.mask] = float("-inf")
        prefix.append(-torch.log_softmax(logits, -1)[0, x0[0, i]])
    torch.testing.assert_close(torch.stack(prefix).sum(), exact[0], rtol=1e-5, atol=1e-5)
    # Monte Carlo: 512 copies of the row (times stratified across them) x 16 passes. Each draw has
    # a relative spread of ~0.6 (the 1/t weight), so the mean's standard error is ~0.7%; the
    # i.i.d. formula below overstates it a little under stratification (conservative).
    torch.manual_seed(0)
    rows = x0.expand(512, L)
    draws = torch.cat([method.sequence_nll(model, rows) for _ in range(16)])  # [8192]
    target = float((1 - method.t_min) * exact[0])
    se = float(draws.std() / math.sqrt(draws.numel()))
    assert se < 0.01 * target  # the check below has teeth: 4 se < 4% of the target
    assert abs(float(draws.mean()) - target) < 4 * se


@torch.no_grad()
@pytest.mark.parametrize("block_size", [4, 5])
def test_later_blocks_do_not_leak(block_size):
    """The bound of block b (only it noised) ignores x0 of blocks > b and depends on blocks < b."""
    model, method = _model(), _block(block_size)
    x0 = _data()
    blk = torch.arange(L) // block_size
    t, u = torch.full((3,), 0.6), torch.rand(3, L)
    for b in range(int(blk.max()) + 1):
        only_b = (blk == b).expand(3, L)
        base = method.sequence_nll(model, x0, t=t, u=u, maskable=only_b)
        later, earlier = x0.clone(), x0.clone()
        later[:, blk > b] = (later[:, blk > b] + 1 - 4) % (SPECIAL.vocab_size - 4) + 4
        torch.testing.assert_close(method.sequence_nll(model, later, t=t, u=u, maskable=only_b), base)
        if b > 0:
            earlier[:, blk < b] = (earlier[:, blk < b] + 1 - 4) % (SPECIAL.vocab_size - 4) + 4
            assert not torch.allclose(method.sequence_nll(model, earlier, t=t, u=u, maskable=only_b), base)
    assert (method.sequence_nll(model, x0, maskable=torch.zeros_like(x0, dtype=torch.bool)) == 0).all()


@torch.no_grad()
def test_sampling_mask_gives_the_training_predictions():
    """A canvas with blocks < b clean, block b noisy and later blocks anything, under
    `attention_mask`, predicts block b as the two-copy training forward does."""
    model, method = _model(), _block(4)
    x0, b = _data(2), 2
    masked = torch.zeros(2, L, dtype=torch.bool)
    masked[:, 8:12] = torch.tensor([True, False, True, True])
    xt = torch.where(masked, SPECIAL.mask, x0)
    canvas = xt.clone()
    canvas[:, 12:] = SPECIAL.mask  # not yet decoded
    logits = model(canvas, select=masked, attn_mask=method.attention_mask(L, x0.device)).float()
    logits[:, SPECIAL.mask] = float("-inf")
    single = -torch.log_softmax(logits, -1).gather(-1, x0[masked][:, None]).squeeze(-1)
    torch.testing.assert_close(method._two_copy_nll(model, xt, x0, masked, None, None), single,
                               rtol=1e-5, atol=1e-5)
    mask = method.attention_mask(6, torch.device("cpu"))
    assert mask.shape == (6, 6) and mask[3, 0] and mask[0, 3] and not mask[3, 4] and mask[5, 4]
    assert method.training_mask(6, torch.device("cpu")).shape == (12, 12)


@torch.no_grad()
def test_time_conditioned_backbone_shares_one_time_per_row():
    model, method = _model(time_conditioning=True), _block(4)
    x0 = _data()
    assert torch.isfinite(method.sequence_nll(model, x0)).all()
    assert torch.isfinite(method.sequence_nll(model, x0, t=torch.rand(3))).all()
    with pytest.raises(ValueError, match="one t per row"):
        method.sequence_nll(model, x0, t=torch.rand(3, 4))


def test_training_lowers_the_loss_and_evaluates(tmp_path):
    cfg = load_config(None, tiny_overrides(tmp_path / "block", "block", steps=40, **{
        "method.block_size": 4, "train.eval_every": 40, "train.save_every": 40, "train.learning_rate": 3e-3}))
    trainer = Trainer(cfg)
    trainer.train()
    losses = [line["loss"] for line in map(json.loads, (tmp_path / "block" / "metrics.jsonl").read_text().splitlines())
              if "loss" in line]
    assert len(losses) == 40 and sum(losses[-5:]) < 0.8 * sum(losses[:5])
    lm = DiffusionLM.from_trainer(trainer)
    assert lm.method.name == "block" and lm.method.block_size == 4 and lm.cfg.model.causal is False
    result = lm.evaluate(passes=2, max_sequences=8)
    assert math.isfinite(result["nll"]) and result["nll"] > 0 and math.isfinite(result["se"]) and result["bound"]
    assert math.isfinite(lm.evaluate(passes=2, max_sequences=8, discrete_steps=8)["nll"])


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="method.block_size"):
        load_config(None, ["method.name=block", "method.block_size=0"])
    hf = load_config(None, ["method.name=block", "model.backbone=some/hf-model"])
    with pytest.raises(ConfigError, match="built-in backbone.*model.backbone=transformer"):
        backbone_tokenizer(hf)  # before any lookup of the model or data work
    too_long = load_config(None, tiny_overrides(tmp_path / "long", "block", **{"method.block_size": 64}))
    with pytest.raises(ConfigError, match="block_size 64 is longer than data.seq_len 32"):
        Trainer(too_long)
