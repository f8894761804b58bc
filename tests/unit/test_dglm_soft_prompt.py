"""DGLM's soft-prompted decoder: shapes for a dlms AR run and a Hugging Face GPT-2, that a
proposal changes what the decoder writes, and that training makes it follow the proposal."""
from __future__ import annotations

import torch

from dlms.dglm.decoder_loading import load_decoder
from dlms.dglm.soft_prompt import SoftPrompt, SoftPromptedDecoder


def prompted(decoder, dim: int = 8, tokens: int = 2, seed: int = 0) -> SoftPromptedDecoder:
    torch.manual_seed(seed)
    return SoftPromptedDecoder(decoder.model, SoftPrompt(dim, decoder.hidden_size, num_tokens=tokens, width=32))


def test_shapes_for_both_kinds_of_decoder(trained_runs, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    decoder = load_decoder(str(trained_runs["ar"]))
    model = prompted(decoder)
    prefix, cont = torch.randint(4, 40, (3, 5)), torch.randint(4, 40, (3, 4))
    emb, t = torch.randn(3, 8), torch.rand(3)
    assert model.inputs(prefix, emb, t, cont).shape == (3, 5 + 2 + 4, decoder.hidden_size)
    assert torch.isfinite(model.loss(prefix, cont, emb, t))
    assert model.generate(prefix, emb, t, max_tokens=3, temperature=0).shape == (3, 3)
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=24, vocab_size=50, n_positions=32))
    model = SoftPromptedDecoder(hf, SoftPrompt(8, 24, num_tokens=2, width=32))
    assert model.logits(model.inputs(torch.randint(0, 50, (2, 3)), torch.randn(2, 8), torch.rand(2))).shape == (2, 5, 50)


def test_a_proposal_changes_what_the_decoder_writes(trained_runs):
    model = prompted(load_decoder(str(trained_runs["ar"])))
    prefix = torch.randint(4, 40, (1, 4)).repeat(2, 1)
    emb = torch.randn(2, 8) * 3
    logits = model.logits(model.inputs(prefix, emb, torch.zeros(2)))[:, -1]
    assert not torch.allclose(logits[0], logits[1])


def test_training_makes_the_decoder_follow_the_proposal(trained_runs):
    """Two proposals, two continuations: after training, greedy decoding writes the one whose
    embedding it was given, whatever the (shared) prefix."""
    decoder = load_decoder(str(trained_runs["ar"]))
    model = prompted(decoder, seed=1)
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(2, 8, generator=g)
    targets = torch.tensor([[10, 11], [12, 13]])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    prefix = torch.randint(4, 40, (16, 3), generator=g)
    for _ in range(80):
        which = torch.randint(0, 2, (16,), generator=g)
        loss = model.loss(prefix, targets[which], codes[which], torch.zeros(16))
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = model.generate(prefix[:2], codes, torch.zeros(2), max_tokens=2, temperature=0)
    assert torch.equal(out, targets)


def test_the_decoder_stage_saves_and_loads(trained_runs, tmp_path):
    import pytest

    from dlms.dglm.soft_prompt import load_decoder_stage, save_decoder_stage
    from dlms.errors import CheckpointError

    model = prompted(load_decoder(str(trained_runs["ar"])), seed=2)
    with torch.no_grad():
        model.decoder.embed.weight.add_(0.01)  # "fine-tuned": differs from the run on disk
    import shutil

    base = tmp_path / "base-run"  # the stage must load without the run it started from
    shutil.copytree(trained_runs["ar"], base)
    decoder = load_decoder(str(base))
    save_decoder_stage(tmp_path / "decoder", model, str(base), decoder.tokenizer)
    shutil.rmtree(base)
    loaded, tokenizer = load_decoder_stage(tmp_path / "decoder")
    prefix, emb, t = torch.randint(4, 40, (2, 3)), torch.randn(2, 8), torch.rand(2)
    torch.testing.assert_close(loaded.logits(loaded.inputs(prefix, emb, t)), model.eval().logits(model.inputs(prefix, emb, t)))
    assert tokenizer is not None
    (tmp_path / "decoder" / "soft_prompt.safetensors").write_bytes(b"broken")
    with pytest.raises(CheckpointError, match="damaged"):
        load_decoder_stage(tmp_path / "decoder")
    with pytest.raises(CheckpointError, match="not the decoder stage"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "config.json").write_text('{"stage": "latent_diffusion"}')
        load_decoder_stage(tmp_path / "other")
