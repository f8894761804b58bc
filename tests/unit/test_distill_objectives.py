"""Distillation objectives on toys that can be checked by hand: the SDTT targets and KL, the
progressive-distillation target, and the round plan."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dlms.method_options import GaussianOptions, MaskedOptions
from dlms.distill import SDTTObjective, ddim_target, plan_rounds, sdtt_targets
from dlms.distill.common import kl_to_target
from dlms.distill.progressive import ddim_step
from dlms.errors import ArgumentError
from dlms.methods import SpecialTokens, build_method

SPECIAL = SpecialTokens(pad=0, bos=1, eos=2, mask=3, vocab_size=8)


class Toy(torch.nn.Module):
    """A 'backbone' for masked_log_probs: logits [M, V] at the selected positions. With
    `count_dependent`, each position's logits depend on how many positions of its row are masked,
    so the teacher's second step (fewer masked) predicts differently from its first."""

    def __init__(self, count_dependent: bool):
        super().__init__()
        self.spec = SimpleNamespace(time_conditioning=False)
        self.bias = torch.nn.Parameter(torch.linspace(-1.0, 1.0, SPECIAL.vocab_size))
        self.count_dependent = count_dependent

    def forward(self, xt, select, time=None, labels=None):
        logits = self.bias.expand(*xt.shape, -1)
        if self.count_dependent:
            count = (xt == SPECIAL.mask).sum(-1, keepdim=True).float()[..., None]  # [B, 1, 1]
            logits = logits * (1.0 + count)
        return logits[select]


def _method():
    return build_method(MaskedOptions(), SPECIAL)


def _batch(b=4, length=16):
    return {"input_ids": torch.randint(4, SPECIAL.vocab_size, (b, length))}


def test_kl_is_zero_for_equal_distributions_and_positive_otherwise():
    torch.manual_seed(0)
    no_mask = torch.zeros(8).index_fill(0, torch.tensor([3]), float("-inf"))  # the mask token: no mass anywhere
    logp = torch.log_softmax(torch.randn(5, 8) + no_mask, -1)
    assert torch.allclose(kl_to_target(logp, logp), torch.zeros(5))
    other = torch.log_softmax(torch.randn(5, 8) + no_mask, -1)
    assert bool((kl_to_target(logp, other) > 0).all())


def test_loss_is_zero_when_one_teacher_step_is_the_student_step():
    """substeps=1: the teacher's one step is exactly the student's, so student == teacher has
    zero loss, and every masked position's target is the teacher's p(x0 | x_t)."""
    torch.manual_seed(0)
    m, model = _method(), Toy(count_dependent=True)
    loss = SDTTObjective(m, model, student_steps=4, substeps=1)(model, _batch()).loss
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    xt = torch.full((2, 6), SPECIAL.mask)
    target, targeted = sdtt_targets(m, model, xt, torch.ones(2), 0.5, substeps=1)
    assert bool(targeted.all())
    assert torch.allclose(target, m.masked_log_probs(model, xt, xt == SPECIAL.mask, torch.ones(2), None))


def test_loss_is_zero_for_a_teacher_whose_prediction_does_not_depend_on_the_state():
    """Two teacher steps equal one when revealing tokens changes no prediction (the limit where
    positions are independent): then student == teacher has zero loss."""
    torch.manual_seed(0)
    m, model = _method(), Toy(count_dependent=False)
    assert SDTTObjective(m, model, student_steps=2, substeps=2)(model, _batch()).loss.item() == \
        pytest.approx(0.0, abs=1e-6)


def test_two_step_targets_by_hand_and_a_positive_loss():
    """All masked at t = 1, one student step (dt = 1), loglinear: the teacher's first step reveals
    each token with probability 1/2; those get the first step's log-probs (row count 16), the rest
    the second step's (the count of tokens still masked in the row)."""
    torch.manual_seed(0)
    m, model = _method(), Toy(count_dependent=True)
    xt = torch.full((3, 16), SPECIAL.mask)
    target, targeted = sdtt_targets(m, model, xt, torch.ones(3), 1.0, substeps=2)
    assert bool(targeted.all())  # "last": every masked position has a target
    keep = [i for i in range(8) if i != SPECIAL.mask]
    first = torch.log_softmax(model.bias.detach()[keep] * 17.0, -1)  # 1 + 16 masked
    step = (model.bias[7] - model.bias[6]).item()
    seen_first, seen_second = 0, 0
    for row in target:
        if torch.allclose(row[keep], first):
            seen_first += 1
        else:  # the second step: logits scaled by 1 + c, c = tokens still masked in the row, 0 < c < 16
            seen_second += 1
            c = float(row[7] - row[6]) / step - 1.0
            assert abs(c - round(c)) < 1e-3 and 0 < round(c) < 16
    assert seen_first > 10 and seen_second > 10  # about half of 48 each
    loss = SDTTObjective(m, model, student_steps=1, substeps=2)(model, {"input_ids": torch.randint(4, 8, (3, 16))})
    assert loss.loss.item() > 1e-4


def test_exclude_drops_positions_the_teacher_leaves_masked():
    torch.manual_seed(0)
    m, model = _method(), Toy(count_dependent=True)
    xt = torch.full((4, 32), SPECIAL.mask)
    t = torch.ones(4)  # N = 2 student steps: the teacher goes 1 -> 0.75 -> 0.5, about half stay masked
    _, last = sdtt_targets(m, model, xt, t, 0.5, substeps=2, still_masked="last")
    torch.manual_seed(0)
    _, excluded = sdtt_targets(m, model, xt, t, 0.5, substeps=2, still_masked="exclude")
    assert bool(last.all()) and 0.3 < excluded.float().mean().item() < 0.7
    torch.manual_seed(0)  # the final student step (t = dt) ends at s = 0, where everything is revealed
    _, final = sdtt_targets(m, model, xt, torch.full((4,), 0.5), 0.5, substeps=2, still_masked="exclude")
    assert bool(final.all())


def test_gradient_reaches_the_student_only():
    torch.manual_seed(0)
    m, teacher, student = _method(), Toy(True), Toy(True)
    with torch.no_grad():
        student.bias.add_(0.5 * torch.randn(8))
    out = SDTTObjective(m, teacher, student_steps=2)(student, _batch())
    out.loss.backward()
    assert out.loss.item() > 0 and student.bias.grad is not None and teacher.bias.grad is None


def test_ddim_target_makes_one_step_land_where_the_teacher_landed():
    m = build_method(GaussianOptions(), SPECIAL)
    torch.manual_seed(0)
    z_t, z_s = torch.randn(3, 5, 4), torch.randn(3, 5, 4)
    t, s = torch.tensor([1.0, 0.5, 0.25]), torch.tensor([0.5, 0.25, 0.0])
    x = ddim_target(m, z_t, z_s, t, s)
    assert torch.allclose(ddim_step(m, z_t, x, t, s), z_s, atol=1e-4)
    # Two DDIM steps with the same x0 estimate are one step: then the target is that estimate.
    x0 = torch.randn(3, 5, 4)
    mid = (t + s) / 2
    two = ddim_step(m, ddim_step(m, z_t, x0, t, mid), x0, mid, s)
    assert torch.allclose(ddim_target(m, z_t, two, t, s), x0, atol=1e-3)


@pytest.mark.parametrize("teacher, steps, rounds, expected", [
    (8, 4, None, (1, 2)), (8, 1, None, (3, 2)), (12, 3, None, (2, 2)), (12, 4, 1, (1, 3)), (16, 1, 2, (2, 4)),
])
def test_plan_rounds(teacher, steps, rounds, expected):
    assert plan_rounds(teacher, steps, rounds) == expected


@pytest.mark.parametrize("teacher, steps, rounds, said", [
    (8, 8, None, "must be smaller than the teacher's 8"),
    (8, 3, None, "does not divide the teacher's 8 sampling steps; halving 8 reaches 4, 2, 1"),
    (12, 4, None, "not reached from the teacher's 12 sampling steps by halving (halving reaches 6, 3)"),
    (16, 2, 2, "each round divides the steps by the same whole factor"),
    (8, 0, None, "steps must be an integer of at least 1"),
])
def test_plan_rounds_refuses(teacher, steps, rounds, said):
    with pytest.raises(ArgumentError) as err:
        plan_rounds(teacher, steps, rounds)
    assert said in str(err.value)
