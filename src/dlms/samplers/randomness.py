"""Random draws that belong to rows: what lets several requests share one sampling batch and
still get the very texts each would get alone.

A sampler draws through `uniform` and `normal`. Given a `torch.Generator` (or None) they are
plain `torch.rand` / `torch.randn`. Given `RowGenerators` (one generator per group of rows, as a
server batching requests builds them), each group's slice of the draw comes from its own
generator, in the same order and amount as if that group were sampled alone: draws are taken
row-major, and a group's rows are contiguous, so a group drawing [n_g, ...] alone and its slice
of a batched draw are the same numbers.

Draws over a subset of positions (the masked candidates of a canvas, flattened row-major) are
made with `at(generator, mask)`, draws over the rows still decoding with `rows_of(generator,
index)`.
"""
from __future__ import annotations

from typing import Union

import torch


class RowGenerators:
    """Generators for groups of rows: `generators[g]` draws the rows whose `owner` is g.

    `owner`: long [N], one entry per leading-dimension element of a draw, non-decreasing (a
    group's rows are contiguous)."""

    def __init__(self, generators: list[torch.Generator], owner: torch.Tensor):
        if owner.ndim != 1:
            raise ValueError(f"owner must be 1-D, got shape {tuple(owner.shape)}")
        self.generators = generators
        self.owner = owner.long()

    @classmethod
    def for_groups(cls, generators: list[torch.Generator], sizes: list[int],
                   device: torch.device | str = "cpu") -> "RowGenerators":
        """Group g holds the next `sizes[g]` rows of the batch."""
        owner = torch.repeat_interleave(torch.arange(len(sizes), device=device),
                                        torch.tensor(sizes, device=device))
        return cls(generators, owner)

    def rows(self, index: torch.Tensor) -> "RowGenerators":
        """The generators of rows `index` (ascending: the rows of the batch still decoding)."""
        return RowGenerators(self.generators, self.owner[index.to(self.owner.device)])

    def at(self, mask: torch.Tensor) -> "RowGenerators":
        """One entry per True element of `mask` (bool [B, ...], B = len(owner)), row-major: the
        generators of a draw over those positions."""
        counts = mask.reshape(mask.shape[0], -1).sum(-1).to(self.owner.device)
        return RowGenerators(self.generators, torch.repeat_interleave(self.owner, counts))

    def _draw(self, shape: tuple[int, ...], draw) -> torch.Tensor:
        if not shape or shape[0] != self.owner.numel():
            raise ValueError(f"a draw of shape {tuple(shape)} needs {self.owner.numel()} rows, one per owner entry")
        groups, counts = torch.unique_consecutive(self.owner, return_counts=True)
        parts = [draw((int(n), *shape[1:]), self.generators[int(g)]) for g, n in zip(groups.tolist(), counts.tolist())]
        return torch.cat(parts) if parts else draw(tuple(shape), None)


Generators = Union[torch.Generator, RowGenerators, None]


def uniform(shape: tuple[int, ...] | torch.Size, generator: Generators, *, dtype: torch.dtype = torch.float32,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """U[0, 1) of `shape`, drawn by `generator` (per group of rows for RowGenerators)."""
    def draw(size, gen):
        return torch.rand(size, dtype=dtype, device=device, generator=gen)

    return generator._draw(tuple(shape), draw) if isinstance(generator, RowGenerators) else draw(tuple(shape), generator)


def normal(shape: tuple[int, ...] | torch.Size, generator: Generators, *, dtype: torch.dtype = torch.float32,
           device: torch.device | str = "cpu") -> torch.Tensor:
    """N(0, 1) of `shape`, drawn by `generator` (per group of rows for RowGenerators)."""
    def draw(size, gen):
        return torch.randn(size, dtype=dtype, device=device, generator=gen)

    return generator._draw(tuple(shape), draw) if isinstance(generator, RowGenerators) else draw(tuple(shape), generator)


def rows_of(generator: Generators, index: torch.Tensor) -> Generators:
    """The generator(s) of rows `index` of the batch (a plain generator serves every row)."""
    return generator.rows(index) if isinstance(generator, RowGenerators) else generator


def at(generator: Generators, mask: torch.Tensor) -> Generators:
    """The generator(s) of a draw over the True positions of `mask` (bool [B, ...]), row-major."""
    return generator.at(mask) if isinstance(generator, RowGenerators) else generator
