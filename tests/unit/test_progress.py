"""Training progress when stderr is a file or a pipe: periodic plain lines, never wrapped; the
live bar stays on terminals."""
from __future__ import annotations

import io
import re

from rich.console import Console

from dlms.training.progress import PLAIN_EVERY_SECONDS, TrainingProgress

LINE = re.compile(r"^(?:(\w+) )?step (\d+)/(\d+) \((\d+)%\) loss (\S+), (\S+) (\S+), elapsed (\d+:\d\d:\d\d), "
                  r"ETA (\d+:\d\d:\d\d|-)$")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(total: int, seconds_per_step: float, start: int = 0, **kw) -> tuple[list[str], TrainingProgress]:
    """Drive a progress of `total` steps (one update per step) on a non-terminal console."""
    out, clock = io.StringIO(), FakeClock()
    console = Console(file=out, width=80)  # a StringIO is not a terminal
    progress = TrainingProgress(total, start, enabled=True, console=console, clock=clock, **kw)
    with progress:
        for step in range(start + 1, total + 1):
            clock.now += seconds_per_step
            progress.update(step, 4.0 + 1 / step, 21345.4)
    return out.getvalue().splitlines(), progress


def steps_of(lines: list[str]) -> list[int]:
    return [int(LINE.match(line).group(2)) for line in lines]


def test_plain_lines_every_5_percent_and_at_the_last_step():
    lines, progress = run(1400, 0.05)
    assert not progress.live
    assert len(lines) == 20 and all(LINE.match(line) for line in lines)
    assert steps_of(lines) == list(range(70, 1401, 70))
    # step 140 after 140 x 0.05 s = 7 s: 1260 steps to go at the same pace take 63 s
    assert lines[1] == "step 140/1400 (10%) loss 4.0071, 21,345 tok/s, elapsed 0:00:07, ETA 0:01:03"
    assert lines[-1].startswith("step 1400/1400 (100%) ") and lines[-1].endswith("ETA 0:00:00")


def test_plain_lines_at_least_every_30_seconds():
    lines, _ = run(400, 10.0)  # 10 s a step: the clock, not the 5% mark, sets the pace
    steps = steps_of(lines)
    gap = int(PLAIN_EVERY_SECONDS // 10)
    assert steps[0] == gap and steps[-1] == 400
    assert max(b - a for a, b in zip(steps, steps[1:])) <= gap
    assert set(range(20, 401, 20)) <= set(steps)  # the 5% marks are still there
    assert len(lines) < 400 // gap + 20


def test_short_run_resumed_run_and_stage_names():
    lines, _ = run(3, 0.1)
    assert steps_of(lines) == [1, 2, 3]
    lines, _ = run(1000, 0.1, start=600, description="decoder", unit="ex/s")
    assert steps_of(lines) == list(range(650, 1001, 50))
    first = LINE.match(lines[0])
    assert first.group(1) == "decoder" and first.group(7) == "ex/s"
    assert first.group(8) == "0:00:05" and first.group(9) == "0:00:35"  # 50 steps in 5 s, 350 to go


def test_a_run_that_stops_early_reports_where_it_stopped():
    out, clock = io.StringIO(), FakeClock()
    with TrainingProgress(100, 0, enabled=True, console=Console(file=out), clock=clock) as progress:
        for step in range(1, 8):
            clock.now += 1
            progress.update(step, 2.5, 0.0)
    lines = out.getvalue().splitlines()
    assert steps_of(lines) == [5, 7]
    assert ", - tok/s," in lines[0]  # no speed measured yet


def test_log_lines_are_never_wrapped_or_marked_up():
    out = io.StringIO()
    message = ("training gaussian (1,511,600 parameters) for 3 steps on cpu, precision bf16, 47,500 training rows "
               "[bold]not markup[/bold] " + "x" * 150)
    with TrainingProgress(3, 0, enabled=True, console=Console(file=out, width=80)) as progress:
        progress.log(message)
    assert out.getvalue() == message + "\n"


def test_disabled_progress_prints_nothing():
    out = io.StringIO()
    with TrainingProgress(10, 0, enabled=False, console=Console(file=out)) as progress:
        progress.log("hidden")
        for step in range(1, 11):
            progress.update(step, 1.0, 1.0)
    assert out.getvalue() == ""


def test_terminal_keeps_the_live_bar_and_prints_no_plain_lines():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200)
    with TrainingProgress(20, 0, enabled=True, console=console) as progress:
        assert progress.live
        for step in range(1, 21):
            progress.update(step, 1.5, 100.0)
        progress.log("a message " + "y" * 250)
    text = out.getvalue()
    assert not any(LINE.match(line) for line in text.splitlines())
    assert "20/20" in text  # the bar's own counter
    assert "a message " + "y" * 250 in text  # soft-wrapped: one line, whatever the width
