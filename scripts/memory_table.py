"""Per-device training memory of a Hugging Face causal LM under DDP and FSDP2 (`fully_shard`).

    PYTHONPATH=src python scripts/memory_table.py                      # Qwen2.5-0.5B and Qwen2.5-7B
    PYTHONPATH=src python scripts/memory_table.py --config path/to/model_or_config.json --world_sizes 1,8

For each model, world size N, precision (fp32, bf16) and activation checkpointing (off, on) it prints
the bytes one device holds for a training step with AdamW, in GiB, and which of a 24, 80 and 141 GiB
device the total fits. The architecture comes from the model's config: the model is built with
`AutoModelForCausalLM.from_config` on the meta device (no memory, no download) and the parameters are
counted from the module. The two Qwen2.5 configs are embedded below (the published config.json
fields), since the Hub cannot be reached here.

What is counted (bytes per parameter P; FSDP divides the sharded state by N):

| | DDP (the trainer: `DistributedDataParallel(model)`, one plain model at N=1) | FSDP (`fully_shard` on each decoder layer, then the root) |
|---|---|---|
| params fp32 | 4P | 4P/N |
| params bf16 | 4P fp32 + 2 per parameter of the nn.Linear layers: `torch.autocast`'s bf16 copies, kept from forward to backward | 4P/N fp32 master shards (MixedPrecisionPolicy param_dtype=bf16) |
| grads | 4P fp32, twice at N >= 2: DDP's default buckets (gradient_as_bucket_view=False) copy them | 4P/N fp32 (reduce_dtype=fp32) |
| optimizer | 8P: AdamW's two fp32 moments | 8P/N |
| gather | none | the root unit (embeddings, final norm, output head: FSDP2 keeps the root unsharded from forward to the end of backward) plus the largest decoder layer, unsharded in the compute dtype, each with its unsharded gradient in that dtype before the reduce-scatter |

Activations (the saved tensors of one forward + loss, per device, for `batch_size` rows of `seq_len`
tokens; T = batch_size x seq_len tokens). A Llama/Qwen-style block (RMSNorm, SDPA attention with
grouped KV heads, SiLU-gated MLP) saves per token, with h = hidden size, q = heads x head_dim,
kv = KV heads x head_dim, i = intermediate size, a = bytes of the matmul activations (4 in fp32,
2 in bf16), r = bytes of the residual stream (4 in fp32 and under autocast, whose residual adds stay
fp32; 2 with bf16 parameters):

    block = 2 x (4h + 4 + r h)            two RMSNorms: the fp32 input, 1/rms, the normalised input
          + c x a h                        the norms' outputs as the linears' inputs: c = 2 (one per norm), but 5
                                           under autocast, where q, k, v, gate and up each save their own cast
          + a x (2q + 2kv)                 SDPA's q, k, v and output (the o_proj input shares the output's storage)
          + 4 x heads                      SDPA's fp32 log-sum-exp
          + a x 4i                         MLP: gate (SiLU's input), SiLU's output, up, their product (down_proj's input)

A fused SDPA kernel (flash / memory-efficient / CPU flash) is assumed: the math fallback would also
store heads x seq_len^2 scores per row. Outside the blocks: the final norm and lm_head's input
(4h + 4 + (r + a) h per token), the token ids (8 per token) and the rotary cos/sin tables
(2 x seq_len x head_dim x r). With per-block activation checkpointing only each block's input
(r h per token per block) is saved, plus one block's full activations while it is recomputed.

Logits: the loss takes log_softmax of fp32 logits [T, vocab]; the fp32 log-probabilities are saved
(4 x vocab bytes per scored token), and at the start of backward their gradient and the logits'
gradient are two more fp32 [T, vocab] buffers, so the logits column counts 3 x 4 x vocab bytes per
scored token (the measurement below checks the saved one; the two gradients follow from
log_softmax's backward, not from a measurement). With a 150k vocabulary that is 1.8 MB per token: 27.8 GiB at batch 8 x 2048, more
than the 7B model's sharded state on 8 devices. The masked method scores only the masked positions
(half on average): pass --scored_fraction 0.5 for it.

The total is the sum of the columns: an upper bound on the peak (with gradients set to None between
steps, the start of backward, where the activations peak, holds few gradients). Not counted: the CUDA
context and NCCL buffers (about 0.5-1 GiB), allocator fragmentation, FSDP's prefetch of a second
layer, the optimizer's scalar step counters. The activation formula is checked against a measurement
on a tiny Qwen2 (hidden 64, 2 layers, vocab 1000) on every run: the sum of the unique storages that
`torch.autograd.graph.saved_tensors_hooks` sees in one forward + loss; the ratio measured/formula is
printed under the table.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

# The published config.json fields of the two models (huggingface.co/Qwen/Qwen2.5-0.5B and
# Qwen/Qwen2.5-7B); the Hub cannot be reached here, so they travel with the script.
QWEN25_0_5B = {
    "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 896, "intermediate_size": 4864,
    "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
    "tie_word_embeddings": True, "max_position_embeddings": 32768, "max_window_layers": 24, "hidden_act": "silu",
    "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "use_sliding_window": False,
    "bos_token_id": 151643, "eos_token_id": 151643, "torch_dtype": "bfloat16",
}
QWEN25_7B = {
    "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 3584, "intermediate_size": 18944,
    "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
    "tie_word_embeddings": False, "max_position_embeddings": 131072, "max_window_layers": 28, "hidden_act": "silu",
    "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 131072, "use_sliding_window": False,
    "bos_token_id": 151643, "eos_token_id": 151643, "torch_dtype": "bfloat16",
}
MODELS = {"Qwen/Qwen2.5-0.5B": QWEN25_0_5B, "Qwen/Qwen2.5-7B": QWEN25_7B}
# A config of the same family small enough to run on a CPU in a second: the formula's check.
TINY = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": True,
        "max_position_embeddings": 512}

DEVICES_GIB = (24, 80, 141)
GIB = 2 ** 30
PRECISIONS = ("fp32", "bf16")
SETUPS = ("DDP", "FSDP")


@dataclass(frozen=True)
class Architecture:
    """What the memory depends on, read from a model built on the meta device."""
    name: str
    hidden: int          # h
    q_dim: int           # heads x head_dim (q_proj's output)
    kv_dim: int          # KV heads x head_dim (k_proj's output)
    intermediate: int    # i (gate_proj's output)
    heads: int
    head_dim: int
    layers: int
    vocab: int
    params: int          # unique parameters (a tied embedding counted once)
    layer_params: int    # the largest decoder layer
    root_params: int     # everything outside the decoder layers: FSDP's root unit
    linear_params: int   # weights and biases of nn.Linear modules: what autocast copies to bf16


def load_config(source: str | dict):
    """A transformers config from a dict of config.json fields, a config.json file or a model folder."""
    from transformers import AutoConfig

    if not isinstance(source, dict):
        path = Path(source) / "config.json" if Path(source).is_dir() else Path(source)
        try:
            source = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"'{path}' is not valid JSON ({exc})") from None
        if not isinstance(source, dict) or "model_type" not in source:
            raise ValueError(f"'{path}' has no model_type; pass a Hugging Face config.json")
    fields = {k: v for k, v in source.items() if k not in ("model_type", "architectures")}
    return AutoConfig.for_model(source["model_type"], **fields)


def decoder_layers(model):
    """The ModuleList of decoder layers: the longest ModuleList whose entries have `self_attn` and `mlp`."""
    import torch

    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m)
             and all(hasattr(b, "self_attn") and hasattr(b, "mlp") for b in m)]
    return max(lists, key=len) if lists else None


def architecture(config, name: str) -> Architecture:
    """Build the model on the meta device (no memory is allocated) and read its sizes from the modules.
    ValueError when the blocks are not Llama/Qwen-style (q/k/v/o projections and a gated MLP), the
    only kind the activation formula describes."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    layers = decoder_layers(model)
    needed = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
              "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    names = {n for n, _ in layers[0].named_modules()} if layers is not None else set()
    if layers is None or not set(needed) <= names:
        raise ValueError(f"model_type '{config.model_type}' has no Llama/Qwen-style decoder layers (q/k/v/o "
                         "projections and a gated MLP); the activation formula covers only those")
    block = layers[0]
    attn, mlp = block.self_attn, block.mlp
    params = {id(p): p.numel() for p in model.parameters()}  # parameters() already skips a tied duplicate
    in_layers = {id(p) for p in layers.parameters()}
    linear = {id(p): p.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) for p in m.parameters()}
    heads = config.num_attention_heads
    return Architecture(
        name=name, hidden=attn.q_proj.in_features, q_dim=attn.q_proj.out_features, kv_dim=attn.k_proj.out_features,
        intermediate=mlp.gate_proj.out_features, heads=heads, head_dim=attn.q_proj.out_features // heads,
        layers=len(layers), vocab=model.get_output_embeddings().weight.shape[0], params=sum(params.values()),
        layer_params=max(sum(p.numel() for p in layer.parameters()) for layer in layers),
        root_params=sum(n for i, n in params.items() if i not in in_layers), linear_params=sum(linear.values()))


def dtype_bytes(precision: str, setup: str) -> tuple[int, int]:
    """(a, r, c): bytes of the matmul activations and of the residual stream, and how many copies of
    the norms' outputs a block saves. Under DDP bf16 means `torch.autocast` (the trainer's way): the
    residual adds of fp32 and bf16 stay fp32, and each linear saves its own bf16 cast of its fp32
    input (q, k, v and gate, up: 5 per block). FSDP's MixedPrecisionPolicy casts the parameters, so
    the whole stream is bf16 and each norm's output is saved once."""
    if precision == "fp32":
        return 4, 4, 2
    return (2, 4, 5) if setup == "DDP" else (2, 2, 2)


def block_bytes_per_token(arch: Architecture, a: int, r: int, c: int) -> int:
    """Saved bytes per token of one decoder block (the formula in the module docstring)."""
    h = arch.hidden
    norms = 2 * (4 * h + 4 + r * h) + c * a * h
    return norms + a * (2 * arch.q_dim + 2 * arch.kv_dim) + 4 * arch.heads + a * 4 * arch.intermediate


def outside_blocks_bytes(arch: Architecture, batch: int, seq_len: int, a: int, r: int) -> int:
    """Saved bytes outside the blocks, logits aside: final norm, lm_head's input, token ids, rotary tables."""
    h = arch.hidden
    return batch * seq_len * (4 * h + 4 + (r + a) * h + 8) + 2 * seq_len * arch.head_dim * r


def activation_bytes(arch: Architecture, batch: int, seq_len: int, a: int, r: int, c: int,
                     checkpointing: bool) -> int:
    """Saved activations of the network (logits apart), per device."""
    tokens = batch * seq_len
    block = block_bytes_per_token(arch, a, r, c) * tokens
    blocks = (arch.layers * r * arch.hidden * tokens + block) if checkpointing else arch.layers * block
    return blocks + outside_blocks_bytes(arch, batch, seq_len, a, r)


def logits_bytes(arch: Architecture, batch: int, seq_len: int, scored_fraction: float, buffers: int = 3) -> int:
    """fp32 [scored tokens, vocab] buffers of the loss: the saved log-probabilities (buffers=1), plus their
    gradient and the logits' gradient at the start of backward (buffers=3, what the table counts)."""
    return buffers * 4 * arch.vocab * round(batch * seq_len * scored_fraction)


def row(arch: Architecture, setup: str, world: int, precision: str, checkpointing: bool, batch: int, seq_len: int,
        scored_fraction: float) -> dict:
    """One line of the table: bytes per device of each part, the total and the devices it fits."""
    a, r, c = dtype_bytes(precision, setup)
    p = arch.params
    if setup == "DDP":
        params = 4 * p + (2 * arch.linear_params if precision == "bf16" else 0)
        grads = 4 * p * (2 if world > 1 else 1)
        optimizer, gather = 8 * p, 0
    else:
        params, grads, optimizer = 4 * p / world, 4 * p / world, 8 * p / world
        gather = 2 * a * (arch.root_params + arch.layer_params)
    acts = activation_bytes(arch, batch, seq_len, a, r, c, checkpointing)
    logits = logits_bytes(arch, batch, seq_len, scored_fraction)
    total = params + grads + optimizer + gather + acts + logits
    fits = [f"{d}" for d in DEVICES_GIB if total <= d * GIB]
    gib = {k: round(v / GIB, 2) for k, v in dict(params=params, grads=grads, optimizer=optimizer, gather=gather,
                                                  activations=acts, logits=logits, total=total).items()}
    return {"model": arch.name, "setup": setup, "world_size": world, "precision": precision,
            "checkpointing": checkpointing, **gib, "fits": ", ".join(fits) if fits else "none"}


def table(arch: Architecture, worlds: list[int], batch: int, seq_len: int, scored_fraction: float) -> list[dict]:
    return [row(arch, setup, world, precision, ckpt, batch, seq_len, scored_fraction)
            for precision in PRECISIONS for ckpt in (False, True) for setup in SETUPS for world in worlds]


def measure_saved_bytes(config, batch: int, seq_len: int, mode: str) -> tuple[int, int]:
    """(activation bytes, autocast weight-copy bytes) saved for backward by one forward + loss on CPU.

    mode: 'fp32', 'bf16' (bf16 parameters, as FSDP's MixedPrecisionPolicy computes) or 'autocast'
    (fp32 parameters under torch.autocast bf16, as the DDP trainer does). Each saved tensor's storage
    is counted once; parameters are left out (counted as parameters), and so are autocast's bf16
    copies of them (a cast whose input is a leaf), which are returned apart."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    model.train()
    if mode == "bf16":
        model.to(torch.bfloat16)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    ids = torch.randint(0, config.vocab_size, (batch, seq_len))
    seen: dict[int, int] = {}
    copies: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        key = storage.data_ptr()
        # Linear layers save a transposed view of autocast's cast: look at the view's base.
        fn = (t._base if t._base is not None else t).grad_fn
        is_copy = (fn is not None and type(fn).__name__ == "ToCopyBackward0"
                   and type(fn.next_functions[0][0]).__name__ == "AccumulateGrad")
        if key not in params:
            (copies if is_copy else seen)[key] = storage.nbytes()
        return t

    ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "autocast")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx:
        logits = model(ids, use_cache=False).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids.reshape(-1))
    del loss
    return sum(seen.values()), sum(copies.values())


def check_formula(batch: int = 2, seq_len: int = 64) -> list[dict]:
    """measured / formula of the saved activations (logits' saved log-probabilities included) on TINY,
    for each way of computing: fp32, bf16 parameters (FSDP) and autocast (DDP)."""
    config = load_config(TINY)
    arch = architecture(config, "tiny-qwen2")
    results = []
    for mode, setup, precision in (("fp32", "FSDP", "fp32"), ("bf16", "FSDP", "bf16"), ("autocast", "DDP", "bf16")):
        a, r, c = dtype_bytes(precision, setup)
        formula = activation_bytes(arch, batch, seq_len, a, r, c, False) + logits_bytes(arch, batch, seq_len, 1.0, 1)
        measured, copies = measure_saved_bytes(config, batch, seq_len, mode)
        results.append({"mode": mode, "measured_bytes": measured, "formula_bytes": formula,
                        "ratio": measured / formula, "autocast_copy_bytes": copies,
                        "autocast_copy_formula": 2 * arch.linear_params if mode == "autocast" else 0})
    return results


def markdown(rows: list[dict], header: str) -> str:
    cols = ["setup", "world_size", "precision", "checkpointing", "params", "grads", "optimizer", "gather",
            "activations", "logits", "total", "fits"]
    titles = ["setup", "N", "precision", "ckpt", "params", "grads", "optimizer", "gather", "activations",
              "logits", "total", "fits (GiB device)"]
    lines = [header, "", "| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for r in rows:
        cells = [("yes" if r[c] else "no") if c == "checkpointing" else
                 (f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c])) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block) and exit code 2."""

    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def world_sizes(text: str) -> list[int]:
    values = [positive_int(v) for v in text.split(",") if v.strip()] if text.strip() else []
    if not values:
        raise argparse.ArgumentTypeError("give one or more device counts, e.g. 1,2,8")
    return sorted(set(values))


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{value} must be in (0, 1]")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="a local model folder or config.json of a Hugging Face causal LM "
                        "(Llama/Qwen-style blocks); default: the embedded Qwen2.5-0.5B and Qwen2.5-7B configs")
    parser.add_argument("--batch_size", type=positive_int, default=8, help="rows per device (micro-batch)")
    parser.add_argument("--seq_len", type=positive_int, default=2048, help="tokens per row")
    parser.add_argument("--world_sizes", type=world_sizes, default=[1, 2, 8, 16, 64],
                        help="comma-separated device counts (default 1,2,8,16,64)")
    parser.add_argument("--scored_fraction", type=fraction, default=1.0,
                        help="share of positions whose logits the loss scores (1 for AR; ~0.5 for masked)")
    parser.add_argument("--format", choices=("markdown", "json"), default="markdown")
    args = parser.parse_args(argv)
    if args.config is not None:
        path = Path(args.config)
        if not (path / "config.json").is_file() and not (path.is_file() and path.suffix == ".json"):
            parser.error(f"--config '{args.config}' is neither a config.json file nor a folder holding one")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.config is not None:
        try:
            sources = {Path(args.config).resolve().name if Path(args.config).is_dir()
                       else Path(args.config).resolve().parent.name: load_config(args.config)}
            archs = [architecture(config, name) for name, config in sources.items()]
        except (ValueError, OSError) as exc:
            print(f"error: --config: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 2
    else:
        archs = [architecture(load_config(fields), name) for name, fields in MODELS.items()]
    checks = check_formula()
    scored = "every position" if args.scored_fraction == 1 else f"{args.scored_fraction:.0%} of the positions"
    for arch in archs:
        rows = table(arch, args.world_sizes, args.batch_size, args.seq_len, args.scored_fraction)
        if args.format == "json":
            for r in rows:
                print(json.dumps(r))
            continue
        header = (f"**{arch.name}**: {arch.params / 1e9:.3f}B parameters ({arch.root_params / 1e6:.1f}M outside "
                  f"the {arch.layers} decoder layers, {arch.layer_params / 1e6:.1f}M per layer), vocabulary "
                  f"{arch.vocab}; GiB per device for a micro-batch of {args.batch_size} x {args.seq_len} tokens "
                  f"per device, AdamW, logits of {scored} scored in fp32. "
                  "bf16 = autocast under DDP, MixedPrecisionPolicy(bf16, reduce fp32) under FSDP; ckpt = "
                  "per-block activation checkpointing; gather = FSDP's unsharded root and largest layer with "
                  "their gradients; total = the sum, an upper bound on the peak.")
        print(markdown(rows, header) + "\n")
    out = sys.stderr if args.format == "json" else sys.stdout
    print("Activation formula against a measurement (saved tensors of one forward + loss, tiny Qwen2, hidden 64, "
          "2 layers, vocab 1000, batch 2 x 64): " + "; ".join(
              f"{c['mode']} measured/formula {c['ratio']:.3f}" for c in checks)
          + (f"; autocast's bf16 weight copies measured/formula "
             f"{checks[2]['autocast_copy_bytes'] / checks[2]['autocast_copy_formula']:.3f}"), file=out)
    if args.format == "json":
        print(json.dumps({"check": checks, "architectures": [asdict(a) for a in archs]}), file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
