"""How a model trains on several processes: replicated (DDP) or sharded (FSDP2), one interface.

`train.parallel: ddp` keeps a whole copy of the weights, gradients and optimizer state in every
process and averages the gradients (DistributedDataParallel). `train.parallel: fsdp` shards
them over the processes with `torch.distributed.fsdp.fully_shard`, one unit per network block
(the backbone's `shard_units()`) and one for the rest (embeddings, head, conditioning): a block's
weights are gathered only while it runs, so a model that does not fit one device trains on
several. Under bf16 FSDP's own policy keeps the sharded master weights in float32, gathers a
bf16 copy for compute and reduces the gradients in float32; autocast still keeps the losses
and norms in float32, as in a DDP run. One process trains the plain model either way.

`train.activation_checkpointing` keeps only each block's input and recomputes the block in the
backward pass (`backbone.enable_activation_checkpointing()`): less memory, about a third more
compute.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator, Literal

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .distributed import DistInfo

Parallel = Literal["ddp", "fsdp"]
PARALLEL_MODES: tuple[str, ...] = ("ddp", "fsdp")


class ParallelModel:
    """The model a process trains: `module` (the network itself; sharded in place under FSDP)
    and `train_model` (what the forward pass calls: a DDP wrapper, or the module itself)."""

    def __init__(self, module: nn.Module, *, mode: Parallel, dist: DistInfo, bf16: bool,
                 activation_checkpointing: bool = False, some_unused: bool = False):
        """`some_unused`: a step may leave some trainable parameters without a gradient (e.g. a
        null-condition embedding used only by the rows whose condition is dropped); DDP then
        looks for them after every backward pass, at some cost."""
        if activation_checkpointing:
            module.enable_activation_checkpointing()
        self.module, self.dist = module, dist
        self.sharded = dist.enabled and mode == "fsdp"
        if self.sharded:
            _shard(module, bf16)
            self.train_model: nn.Module = module
        elif dist.enabled:
            self.train_model = DistributedDataParallel(module, find_unused_parameters=some_unused)
        else:
            self.train_model = module

    def no_sync(self, sync: bool):
        """A context for one micro-batch: gradients are reduced across processes only when `sync`
        (the last micro-batch of an accumulated step)."""
        if sync or not self.dist.enabled:
            return nullcontext()
        if self.sharded:
            return _fsdp_no_sync(self.module)
        return self.train_model.no_sync()

    def full_state_dict(self, everywhere: bool = False) -> dict[str, torch.Tensor]:
        """A copy of the whole model's weights; unsharded, a copy of `module.state_dict()` (which
        later steps leave as it is). Under FSDP it is gathered (collective: every process calls
        it) on CPU in the main process only (empty elsewhere), or with `everywhere` in every
        process."""
        if not self.sharded:
            return {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=not everywhere)
        return {k: v.detach().cpu() for k, v in get_model_state_dict(self.module, options=options).items()}

    def full_tensors(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Sharded tensors (e.g. the EMA copy of sharded weights) gathered whole, on CPU
        (collective under FSDP); plain tensors unchanged."""
        if not self.sharded:
            return tensors
        from torch.distributed.tensor import DTensor

        return {k: (v.full_tensor() if isinstance(v, DTensor) else v).cpu() for k, v in tensors.items()}


def _shard(module: nn.Module, bf16: bool) -> None:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16
              else MixedPrecisionPolicy())
    for block in module.shard_units():
        fully_shard(block, mp_policy=policy)
    fully_shard(module, mp_policy=policy)


@contextmanager
def _fsdp_no_sync(module: nn.Module) -> Iterator[None]:
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)
