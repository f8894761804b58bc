"""Matplotlib helpers shared by the plots of experiments/ and dglm/ (headless: the Agg backend)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def new_figure(width: float = 6.4, height: float = 4.2):
    fig, ax = plt.subplots(figsize=(width, height))
    ax.grid(True, alpha=0.3)
    return fig, ax


def new_grid(columns: int, width: float = 4.2, height: float = 3.8, rows: int = 1):
    """A figure with `rows` x `columns` axes, returned row by row in one list."""
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat:
        ax.grid(True, alpha=0.3)
    return fig, flat


def save(fig, path: Path) -> Path:
    """Write the figure to `path` (PNG) atomically and close it."""
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def as_float(value: str | float | None) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
