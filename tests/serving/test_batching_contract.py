"""Contract over the sampler registry: requests batched into one sampler call get exactly the
texts each gets alone (per-row generators, dlms/samplers/randomness.py), for every registered
sampler on every family that takes it; watching the steps changes nothing either."""
from __future__ import annotations

import pytest
import torch

from dlms.samplers import SAMPLERS
from dlms.samplers.randomness import RowGenerators, at, normal, rows_of, uniform

FAMILIES = ("masked", "block", "gaussian", "ar")
PAIRS = [(family, name) for family in FAMILIES for name in SAMPLERS.names() if family in SAMPLERS.get(name).method_names]


def test_the_grid_covers_every_registered_sampler():
    assert {name for _, name in PAIRS} == set(SAMPLERS.names())


@pytest.mark.parametrize("family,sampler", PAIRS)
def test_batched_requests_get_the_texts_they_get_alone(engines, family, sampler):
    lm = engines[family].lm
    requests = [("the cat", 2, 4), ("the dog", 1, 9), ("the cat", 3, 4)]  # prompt, samples, seed
    alone = [lm.sample_ids(p, 24, num_samples=n, seed=s, sampler=sampler) for p, n, s in requests]
    drafts = [lm.prepare_sample(p, 24, num_samples=n, seed=s, sampler=sampler) for p, n, s in requests]
    assert len({d.batch_key() for d in drafts}) == 1  # the same settings and canvas layout: one batch
    together = lm.run_drafts(drafts)
    assert lm.last_sampler.stats.network_calls >= 1
    for a, b in zip(alone, together):
        assert torch.equal(a, b)
    watched: list = []
    lm.run_drafts(drafts, callback=lambda i, n, ids: watched.append(ids.clone()))
    assert watched and torch.equal(watched[-1], torch.cat(together))  # the last frame is the result
    confidence = lm.last_sampler.confidence
    assert confidence is not None and confidence.shape[0] == sum(d.rows for d in drafts)


def test_drafts_that_differ_in_settings_are_not_batched(engines):
    lm = engines["masked"].lm
    a, b = lm.prepare_sample("the cat", 24, seed=1), lm.prepare_sample("the cat", 24, seed=1, temperature=0.5)
    c = lm.prepare_sample("the big cat", 24, seed=1)  # another prompt length: another canvas layout
    assert a.batch_key() != b.batch_key() and a.batch_key() != c.batch_key()
    with pytest.raises(ValueError, match="cannot share a batch"):
        lm.run_drafts([a, b])


def test_row_generators_draw_what_each_group_draws_alone():
    gens = lambda: [torch.Generator().manual_seed(s) for s in (3, 7)]  # noqa: E731
    rows = RowGenerators.for_groups(gens(), [2, 3])
    together = uniform((5, 4), rows)
    first, second = gens()
    assert torch.equal(together[:2], torch.rand((2, 4), generator=first))
    assert torch.equal(together[2:], torch.rand((3, 4), generator=second))
    noise = normal((5, 2, 3), RowGenerators.for_groups(gens(), [2, 3]))
    assert torch.equal(noise[2:], torch.randn((3, 2, 3), generator=gens()[1]))
    # A draw over masked positions, row-major: each group's positions from its own generator.
    mask = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 1], [0, 0, 0], [1, 0, 0]], dtype=torch.bool)
    flat = uniform((int(mask.sum()),), at(RowGenerators.for_groups(gens(), [2, 3]), mask))
    assert torch.equal(flat[:3], torch.rand(3, generator=gens()[0]))
    assert torch.equal(flat[3:], torch.rand(4, generator=gens()[1]))
    # Rows still decoding: the generators of the rows kept.
    kept = rows_of(RowGenerators.for_groups(gens(), [2, 3]), torch.tensor([1, 4]))
    assert kept.owner.tolist() == [0, 1]
    plain = torch.Generator().manual_seed(5)
    assert rows_of(plain, torch.tensor([0])) is plain and at(plain, mask) is plain
    with pytest.raises(ValueError, match="needs 5 rows"):
        uniform((4, 2), RowGenerators.for_groups(gens(), [2, 3]))
