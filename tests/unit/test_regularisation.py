"""Regularisation for training on repeated data: dropout in the built-in backbone (residual,
attention, embedding) for every method, and ar's input token masking (`method.input_mask_prob`).

Dropout acts in training only: in eval mode a backbone with dropout computes exactly what the
same weights compute without it, so evaluation and sampling are unchanged. Options that do not
apply (dropout on a pretrained backbone, input masking for a diffusion method) are one error.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from dlms.assembly import resolve_run_config
from dlms.backbones import build_backbone, resolve_model_config
from dlms.cli import main
from dlms.config import ModelConfig, config_from_dict
from dlms.errors import ConfigError
from dlms.method_options import methods_with
from dlms.methods import METHODS, build_method
from dlms.methods.base import SpecialTokens
from tests.conftest import tiny_overrides

SPECIAL = SpecialTokens(pad=0, bos=1, eos=2, mask=3, vocab_size=32)
DROPOUTS = ["dropout", "attention_dropout", "embedding_dropout"]


def tiny_backbone(causal: bool, seed: int = 0, **dropout: float):
    cfg = resolve_model_config(replace(ModelConfig(preset="tiny"), **dropout), 16, causal)
    torch.manual_seed(seed)
    return build_backbone(cfg, SPECIAL.vocab_size)


@pytest.mark.parametrize("kind", DROPOUTS)
def test_dropout_acts_in_training_only(kind):
    plain, dropped = tiny_backbone(False), tiny_backbone(False, **{kind: 0.5})
    dropped.load_state_dict(plain.state_dict())  # dropout adds no weights
    x = torch.randint(4, SPECIAL.vocab_size, (2, 16))
    plain.eval(), dropped.eval()
    with torch.no_grad():
        torch.testing.assert_close(dropped(x), plain(x))  # eval: exactly the model without dropout
        dropped.train()
        torch.manual_seed(1)
        a = dropped(x)
        torch.manual_seed(2)
        b = dropped(x)
        torch.manual_seed(1)
        again = dropped(x)
    assert not torch.allclose(a, b) and torch.equal(a, again)  # random in training, seeded by torch's generator


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_trains_a_step_with_every_dropout(name):
    """One loss and backward per method with all three dropouts: finite, with gradients."""
    cfg = config_from_dict({"method": {"name": name}, "model": {"preset": "tiny", "dropout": 0.1,
                                                                 "attention_dropout": 0.1, "embedding_dropout": 0.1},
                            "data": {"seq_len": 16}})
    method = build_method(cfg.method, SPECIAL)
    cfg = resolve_run_config(cfg, method)
    torch.manual_seed(0)
    model = build_backbone(cfg.model, SPECIAL.vocab_size).train()
    assert model.spec.dropout == model.spec.attention_dropout == model.spec.embedding_dropout == 0.1
    x = torch.randint(4, SPECIAL.vocab_size, (4, 16))
    x[:, 0] = SPECIAL.bos
    out = method.loss(model, {"input_ids": x, "labels": None})
    out.loss.backward()
    assert torch.isfinite(out.loss) and any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("kind", DROPOUTS)
@pytest.mark.parametrize("value", [1.0, -0.1])
def test_dropout_out_of_range_is_a_config_error(kind, value):
    with pytest.raises(ConfigError, match=rf"'model.{kind}' must be in \[0, 1\)"):
        config_from_dict({"model": {kind: value}})


def test_dropout_on_a_pretrained_backbone_is_one_error(tmp_path):
    from tests.backbone_helpers import plain_tokenizer, save_tiny_qwen

    folder = save_tiny_qwen(tmp_path / "qwen", plain_tokenizer(["the cat sat on the mat ."] * 20))
    for kind in DROPOUTS:
        cfg = replace(ModelConfig(), backbone=str(folder), **{kind: 0.1})
        with pytest.raises(ConfigError, match=f"model.{kind} is an option of the built-in backbone"):
            resolve_model_config(cfg, 16, False)


class Inputs(torch.nn.Module):
    """A causal tiny backbone that keeps the input ids of each call."""

    def __init__(self):
        super().__init__()
        self.inner = tiny_backbone(True)
        self.seen: list[torch.Tensor] = []

    def forward(self, x, **kwargs):
        self.seen.append(x.clone())
        return self.inner(x, **kwargs)


def test_ar_input_masking_hides_inputs_in_training_only_and_keeps_the_targets():
    method = build_method(config_from_dict({"method": {"name": "ar", "input_mask_prob": 0.3}}).method, SPECIAL)
    model = Inputs()
    x = torch.randint(4, SPECIAL.vocab_size, (64, 16))
    x[:, 0] = SPECIAL.bos
    model.train()
    torch.manual_seed(0)
    masked_loss = method.loss(model, {"input_ids": x, "labels": None}).loss
    shown = model.seen[-1]
    hidden = shown == SPECIAL.mask
    assert not hidden[:, 0].any()  # the start token stays
    assert 0.25 < hidden[:, 1:].float().mean() < 0.35  # about the asked share
    assert torch.equal(shown[~hidden], x[:, :-1][~hidden])  # the rest as it is
    model.eval()
    plain_loss = method.loss(model, {"input_ids": x, "labels": None}).loss
    assert not (model.seen[-1] == SPECIAL.mask).any()  # eval: nothing hidden
    # The targets are the clean tokens either way: the masked loss is the NLL of x given the shown inputs.
    with torch.no_grad():
        given_shown = method.sequence_nll(model, x, hidden=torch.nn.functional.pad(hidden, (0, 1))).sum()
        plain = method.sequence_nll(model, x).sum()
    tokens = method.scored_tokens(x).sum()
    torch.testing.assert_close(masked_loss, given_shown / tokens)
    torch.testing.assert_close(plain_loss, plain / tokens)
    assert not torch.isclose(masked_loss, plain_loss)


@pytest.mark.parametrize("name", [m for m in METHODS.names() if m not in methods_with("input_mask_prob")])
def test_input_masking_for_a_diffusion_method_is_one_error(name):
    """input_mask_prob is an option of ar alone (AROptions): on another method it is an unknown key."""
    with pytest.raises(ConfigError, match=f"'method.input_mask_prob' does not apply to method '{name}' "
                                          r"\(it is an option of ar\); drop method.input_mask_prob or set method.name=ar"):
        config_from_dict({"method": {"name": name, "input_mask_prob": 0.1}})


def test_a_run_with_dropout_and_input_masking_trains_and_saves_them(tmp_path, capsys):
    out = tmp_path / "run"
    args = tiny_overrides(out, "ar", 4, **{"model.dropout": 0.1, "model.attention_dropout": 0.1,
                                           "model.embedding_dropout": 0.05, "method.input_mask_prob": 0.1})
    assert main(["train", "--samples", "0", *args]) == 0
    saved = (out / "config.yaml").read_text()
    assert "dropout: 0.1" in saved and "embedding_dropout: 0.05" in saved and "input_mask_prob: 0.1" in saved
    capsys.readouterr()
    code = main(["train", "--samples", "0", *tiny_overrides(tmp_path / "bad", "masked", 4,
                                                             **{"method.input_mask_prob": 0.1})])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "drop method.input_mask_prob" in err
    assert not (tmp_path / "bad").exists()
