"""`train.activation_checkpointing`: the same loss and gradients, fewer tensors kept for backward,
on the built-in transformer and on a Hugging Face backbone."""
from __future__ import annotations

import pytest
import torch

from dlms.backbones import build_backbone
from dlms.config import ModelConfig


def _hf_folder(tmp_path) -> str:
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=50, max_position_embeddings=32)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(str(tmp_path / "qwen"))
    return str(tmp_path / "qwen")


def _build(backbone: str):
    torch.manual_seed(0)
    sizes = dict(d_model=32, n_layers=3, n_heads=2, mlp_hidden=64) if backbone == "transformer" else {}
    cfg = ModelConfig(backbone=backbone, preset="tiny", max_seq_len=16, causal=False, **sizes)
    return build_backbone(cfg, 50)


def _loss_grads_and_kept(model) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """The loss of one forward, its gradients, and how many tensors autograd kept for backward."""
    ids = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(1))
    kept = 0

    def pack(t):
        nonlocal kept
        kept += 1
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(ids)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, kept


@pytest.mark.parametrize("kind", ["transformer", "qwen2"])
def test_checkpointing_keeps_fewer_tensors_and_the_same_gradients(kind, tmp_path):
    backbone = "transformer" if kind == "transformer" else _hf_folder(tmp_path)
    plain, checkpointed = _build(backbone), _build(backbone)
    checkpointed.enable_activation_checkpointing()
    loss, grads, kept = _loss_grads_and_kept(plain)
    loss_c, grads_c, kept_c = _loss_grads_and_kept(checkpointed)
    assert torch.allclose(loss, loss_c)
    assert grads.keys() == grads_c.keys() and grads
    for name in grads:
        assert torch.allclose(grads[name], grads_c[name], atol=1e-6), name
    assert kept_c < kept / 2, (kept_c, kept)  # only each block's inputs, not its insides


@pytest.mark.parametrize("kind", ["transformer", "qwen2"])
def test_every_block_is_a_shard_unit(kind, tmp_path):
    model = _build("transformer" if kind == "transformer" else _hf_folder(tmp_path))
    units = model.shard_units()
    assert len(units) == 3 and all(sum(p.numel() for p in u.parameters()) > 0 for u in units)
