"""The autoregressive baseline: exact next-token NLL, pads after end-of-text not counted."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dlms.backbones import build_backbone, resolve_model_config
from dlms.config import ModelConfig
from dlms.method_options import AROptions
from dlms.errors import ConfigError
from dlms.likelihood import evaluate_likelihood
from dlms.methods import METHODS, SpecialTokens, build_method

SPECIAL = SpecialTokens(pad=0, bos=1, eos=2, mask=3, vocab_size=16)
L = 7


def ar():
    return build_method(AROptions(), SPECIAL)


def causal_model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = resolve_model_config(ModelConfig(preset="tiny"), seq_len=L, causal=ar().causal)
    return build_backbone(cfg, SPECIAL.vocab_size).eval()


# bos text eos pad...: row 0 has 2 pads, row 1 none, row 2 four.
X0 = torch.tensor([
    [1, 5, 9, 4, 2, 0, 0],
    [1, 7, 7, 8, 12, 6, 2],
    [1, 15, 2, 0, 0, 0, 0],
])


def hand_nll(model, x0):
    """Per-sequence sum of -log softmax(logits[i])[x0[i+1]] over i with x0[i+1] != pad, by loops."""
    with torch.no_grad():
        logits = model(x0).float()
    out = []
    for b in range(x0.shape[0]):
        total = 0.0
        for i in range(x0.shape[1] - 1):
            target = int(x0[b, i + 1])
            if target == SPECIAL.pad:
                continue
            total -= float(logits[b, i].log_softmax(-1)[target])
        out.append(total)
    return torch.tensor(out)


def test_method_properties():
    m = ar()
    assert m.causal is True and m.default_sampler == "ar" and m.stochastic_bound is False
    assert "ar" in METHODS and "masked" in METHODS
    with pytest.raises(ConfigError):
        METHODS.get("gpt")


def test_scored_tokens_skip_pads_after_eos():
    assert ar().scored_tokens(X0).tolist() == [4, 6, 2]


def test_sequence_nll_equals_hand_computed_cross_entropy():
    model = causal_model()
    with torch.no_grad():
        nll = ar().sequence_nll(model, X0)
    torch.testing.assert_close(nll, hand_nll(model, X0), rtol=1e-5, atol=1e-5)
    assert (nll > 0).all()


def test_pad_targets_do_not_count():
    model = causal_model()
    m = ar()
    with torch.no_grad():
        base = m.sequence_nll(model, X0)
        # A row's pad targets contribute nothing: its NLL equals the NLL of its unpadded prefix.
        torch.testing.assert_close(m.sequence_nll(model, X0[2:, :3])[0], base[2])
        # Replace a pad target by a real token: now it counts, and the NLL grows.
        real = X0.clone()
        real[2, 3] = 9
        grown = m.sequence_nll(model, real)
    assert grown[2] > base[2]
    torch.testing.assert_close(grown[:2], base[:2])


def test_loss_is_nll_per_scored_token():
    model = causal_model()
    m = ar()
    model.train()
    out = m.loss(model, {"input_ids": X0})
    expected = hand_nll(model.eval(), X0).sum() / 12
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.metrics["loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert out.metrics["nll"] == out.metrics["loss"]
    out.loss.backward()
    assert model.embed.weight.grad.abs().sum() > 0


def test_sequence_nll_sums_match_loss_and_evaluation():
    model = causal_model()
    m = ar()
    with torch.no_grad():
        nll = m.sequence_nll(model, X0)
        loss = m.loss(model, {"input_ids": X0}).loss
    tokens = int(m.scored_tokens(X0).sum())
    assert loss.item() == pytest.approx(nll.sum().item() / tokens, rel=1e-6)

    class Split:
        ids = X0.numpy().astype(np.int32)
        labels = None
        label_columns: list = []

        def __len__(self):
            return len(self.ids)

    for batch_size in (1, 2, 3):
        res = evaluate_likelihood(m, model, Split(), batch_size=batch_size, passes=8)
        assert res["passes"] == 1 and res["bound"] is False and res["se"] == 0.0
        assert res["tokens"] == tokens
        assert res["nll"] == pytest.approx(nll.sum().item() / tokens, rel=1e-5)
        assert res["ppl"] == pytest.approx(math.exp(res["nll"]), rel=1e-6)


def test_sequence_nll_is_exact_chain_rule_on_a_known_model():
    """A model whose logits ignore the input: the NLL is the sum of -log p(token) of its fixed
    distribution over the scored targets."""
    m = ar()
    logp = torch.log_softmax(torch.randn(SPECIAL.vocab_size, generator=torch.Generator().manual_seed(0)), -1)

    class Unigram(torch.nn.Module):
        def forward(self, ids, labels=None):
            return logp.expand(*ids.shape, -1).clone()

    nll = m.sequence_nll(Unigram(), X0)
    expected = torch.stack([-logp[row[1:][row[1:] != SPECIAL.pad]].sum() for row in X0])
    torch.testing.assert_close(nll, expected)
