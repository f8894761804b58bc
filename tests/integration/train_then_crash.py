"""`dlms train` that dies after a given optimizer step (every process), for resume tests under torchrun.

    python -m torch.distributed.run ... tests/integration/train_then_crash.py STEP <dlms train arguments>
"""
from __future__ import annotations

import sys

from dlms.cli import main
from dlms.training.trainer import Trainer


def crash_after(step: int) -> None:
    original = Trainer._optimizer_step

    def stepped(self):
        if self.step == step:
            raise SystemExit(3)  # as if the job were killed after `step`, past its last save
        return original(self)

    Trainer._optimizer_step = stepped


if __name__ == "__main__":
    crash_after(int(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
