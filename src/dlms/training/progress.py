"""Progress of long work: a live bar with loss, tokens/s and ETA on a terminal, plain log
lines everywhere else (CI, `dlms train > log 2>&1`, nohup), and `metrics.jsonl` for machines.

When stderr is not a terminal, `TrainingProgress` prints a plain progress line

    step 140/1400 (10%) loss 4.1234, 21,345 tok/s, elapsed 0:01:02, ETA 0:09:18

every `PLAIN_EVERY_FRACTION` of the run's steps (about 20 lines a run), at least every
`PLAIN_EVERY_SECONDS` of wall time, and at the last step. Messages given to `log()` are
printed as they are, never wrapped at the console width.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

PLAIN_EVERY_FRACTION = 0.05  # not a terminal: a progress line every 5% of the steps ...
PLAIN_EVERY_SECONDS = 30.0  # ... and at least this often


class TrainingProgress:
    """Shows one training run. Use as a context manager; only the main process shows anything.

    total_steps / start_step: the run's last step and the step it starts from (resumed runs).
    enabled: False shows nothing (non-main processes, `train.progress: false`).
    description: the bar's label; plain lines start with it unless it is "train".
    unit: the unit of `update`'s speed (e.g. "tok/s", "ex/s").
    console: where to show it (default: a rich Console on stderr); a live bar when it is a
    terminal, plain lines otherwise.
    clock: seconds of a monotonic clock (a parameter so tests can drive time).
    """

    def __init__(self, total_steps: int, start_step: int, enabled: bool, description: str = "train",
                 unit: str = "tok/s", *, console: Console | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.enabled = enabled
        self.total_steps = int(total_steps)
        self.start_step = int(start_step)
        self.description = description
        self.unit = unit
        self.console = console if console is not None else Console(stderr=True)
        self.live = enabled and self.console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} " + unit),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, disable=not self.live,
        )
        self.task = self.progress.add_task(description, total=total_steps, completed=start_step, loss="-", speed="-")
        # Plain lines (not a terminal): every `plain_every_steps` steps, and every PLAIN_EVERY_SECONDS.
        self.plain_every_steps = max(1, math.ceil(self.total_steps * PLAIN_EVERY_FRACTION))
        self._clock = clock
        self._started = self._last_line_time = clock()
        self._last_line_step = self.start_step
        self._last_update: tuple[int, float, float] | None = None  # (step, loss, speed) not yet printed

    def __enter__(self) -> "TrainingProgress":
        self._started = self._last_line_time = self._clock()
        self.progress.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.progress.stop()
        if exc_type is None and self._last_update is not None:  # e.g. stopped early: say where it ended
            self._plain_line(*self._last_update)

    def update(self, step: int, loss: float, tokens_per_s: float) -> None:
        """Show that `step` steps are done, at this training loss and speed (in `unit`)."""
        if self.live:
            self.progress.update(self.task, completed=step, loss=f"{loss:.4f}", speed=f"{tokens_per_s:,.0f}")
            return
        if not self.enabled:
            return
        self._last_update = (step, loss, tokens_per_s)
        crossed = step // self.plain_every_steps > self._last_line_step // self.plain_every_steps
        if crossed or step >= self.total_steps or self._clock() - self._last_line_time >= PLAIN_EVERY_SECONDS:
            self._plain_line(step, loss, tokens_per_s)

    def log(self, message: str) -> None:
        """Print `message` as one line (no markup, never wrapped), above the bar on a terminal."""
        if not self.enabled:
            return
        if self.live:
            self.console.print(message, highlight=False, markup=False, emoji=False, soft_wrap=True)
        else:
            self._write(message)

    # ------------------------------------------------------------------ plain lines
    def _plain_line(self, step: int, loss: float, speed: float) -> None:
        now = self._clock()
        elapsed = now - self._started
        done = step - self.start_step
        eta = _clock_time(elapsed / done * (self.total_steps - step)) if done > 0 else "-"
        percent = 100 * step / self.total_steps if self.total_steps > 0 else 100.0
        prefix = "" if self.description == "train" else f"{self.description} "
        speed_text = f"{speed:,.0f}" if math.isfinite(speed) and speed > 0 else "-"
        self._write(f"{prefix}step {step}/{self.total_steps} ({percent:.0f}%) loss {loss:.4f}, "
                    f"{speed_text} {self.unit}, elapsed {_clock_time(elapsed)}, ETA {eta}")
        self._last_line_step, self._last_line_time, self._last_update = step, now, None

    def _write(self, line: str) -> None:
        file = self.console.file  # sys.stderr as it is now (pytest and redirections swap it)
        file.write(line + "\n")
        file.flush()


def _clock_time(seconds: float) -> str:
    """0:01:02 (hours:minutes:seconds; days are counted in hours)."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class MetricsLog:
    """Appends one JSON object per line to `metrics.jsonl`."""

    def __init__(self, path: Path, enabled: bool):
        self.path = path
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({**record, "time": round(time.time(), 3)}) + "\n")
