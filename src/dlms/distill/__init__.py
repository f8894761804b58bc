"""Few-step students: `distill` trains a run that samples in far fewer steps than its teacher.

Masked runs: self-distillation through time (sdtt.py); gaussian runs: progressive distillation
(progressive.py); the rounds, their folders and resume: rounds.py. Each round is an ordinary
run trained by the one Trainer with the method's loss replaced by the distillation objective.
"""
from .progressive import ProgressiveObjective, ddim_target, teacher_rollout
from .rounds import distill, plan_rounds
from .sdtt import SDTTObjective, sdtt_targets

__all__ = ["ProgressiveObjective", "SDTTObjective", "ddim_target", "distill", "plan_rounds", "sdtt_targets",
           "teacher_rollout"]
