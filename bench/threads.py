"""Thread setup shared by the benchmarks."""
from __future__ import annotations

import os
import sys

import torch


def set_threads(threads: int) -> None:
    """Use `threads` torch CPU threads (0: torch's default), and warn when the machine is busy:
    with several threads every op waits for a core another process holds."""
    if threads > 0:
        torch.set_num_threads(threads)
    elif hasattr(os, "getloadavg") and os.getloadavg()[0] >= 0.5 * (os.cpu_count() or 1):
        print(f"note: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; with "
              f"{torch.get_num_threads()} threads each op waits for a busy core, so steps are slow "
              "and noisy; --threads 1 is steadier", file=sys.stderr)
