"""Experiments: grids of training / sampling runs that write `results.csv`, per-run logs and PNG
plots into one folder, resumable (finished cells are skipped).

    dlms experiment data-scaling --config configs/experiments/data-scaling-tinystories.yaml
    dlms plot runs/experiments/data-scaling-tinystories
"""
from .base import EXPERIMENTS, Experiment, copy_report, load_experiment, redraw_plots, run_experiment
from . import data_scaling, guidance_sweep, sampler_ablation  # noqa: F401  (register themselves)

__all__ = ["EXPERIMENTS", "Experiment", "copy_report", "load_experiment", "redraw_plots", "run_experiment"]
