"""The canvas cache of the built-in transformer: window-at-a-time decoding of a bidirectional
model gives the full forward's output when nothing outside the window changed, and a
block-causal cache gives what an explicit block-causal attention mask gives."""
import pytest
import torch

from dlms.backbones import Transformer, TransformerSpec


def _model(causal=False, time_conditioning=False):
    torch.manual_seed(0)
    spec = TransformerSpec(vocab_size=50, max_seq_len=16, d_model=32, n_layers=2, n_heads=4, mlp_hidden=64,
                           causal=causal, time_conditioning=time_conditioning)
    return Transformer(spec).eval()


@pytest.mark.parametrize("window", [(0, 16), (4, 8), (12, 16), (0, 3)])
def test_window_matches_full_forward(window):
    model = _model()
    x = torch.randint(0, 50, (3, 16))
    full = model(x)
    cache = model.new_canvas_cache(3, 16, x.device, torch.float32)
    filled = model(x, cache=cache)
    torch.testing.assert_close(filled, full)
    start, end = window
    cache.window = window
    out = model(x[:, start:end], cache=cache)
    torch.testing.assert_close(out, full[:, start:end], rtol=1e-5, atol=1e-5)


def test_window_sees_new_tokens_only_inside_the_window():
    """Dual cache: tokens changed outside the window are not seen until the next full forward."""
    model = _model()
    x = torch.randint(0, 50, (2, 16))
    cache = model.new_canvas_cache(2, 16, x.device, torch.float32)
    model(x, cache=cache)
    changed = x.clone()
    changed[:, 12:] = (changed[:, 12:] + 1) % 50
    cache.window = (4, 8)
    stale = model(changed[:, 4:8], cache=cache)
    torch.testing.assert_close(stale, model(x)[:, 4:8], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(stale, model(changed)[:, 4:8], atol=1e-4)


def test_block_causal_cache_matches_block_causal_mask():
    """see_ahead=False: a window attends to itself and everything before it, which is the
    block-causal attention pattern (blocks of 4) a block-diffusion model is trained with."""
    model = _model()
    x = torch.randint(0, 50, (2, 16))
    block = torch.arange(16) // 4
    mask = block[:, None] >= block[None, :]
    reference = model(x, attn_mask=mask)
    cache = model.new_canvas_cache(2, 16, x.device, torch.float32, see_ahead=False)
    for start in range(0, 16, 4):
        cache.window = (start, start + 4)
        out = model(x[:, start:start + 4], cache=cache)
        torch.testing.assert_close(out, reference[:, start:start + 4], rtol=1e-5, atol=1e-5)


def test_positions_override_matches_default_positions():
    model = _model()
    x = torch.randint(0, 50, (2, 8))
    torch.testing.assert_close(model(x, positions=torch.arange(8)), model(x))
    two_copies = model(torch.cat([x, x], 1), positions=torch.arange(8).repeat(2),
                       attn_mask=torch.block_diag(torch.ones(8, 8), torch.ones(8, 8)).bool())
    torch.testing.assert_close(two_copies[:, :8], model(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(two_copies[:, 8:], model(x), rtol=1e-5, atol=1e-5)


def test_keep_rows_and_wrong_window_width():
    model = _model()
    x = torch.randint(0, 50, (3, 16))
    cache = model.new_canvas_cache(3, 16, x.device, torch.float32)
    full = model(x, cache=cache)
    cache.keep_rows(torch.tensor([0, 2]))
    cache.window = (8, 12)
    torch.testing.assert_close(model(x[[0, 2], 8:12], cache=cache), full[[0, 2], 8:12], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="cache window"):
        model(x[[0, 2], 8:10], cache=cache)


def test_canvas_cache_refuses_causal_models():
    model = _model(causal=True)
    cache = model.new_canvas_cache(1, 16, torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match="bidirectional"):
        model(torch.randint(0, 50, (1, 16)), cache=cache)
