"""The Python API works as the README and the design notes write it."""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import dlms


def test_documented_imports():
    from dlms.model import DiffusionLM
    from dlms.trainer import Trainer
    from dlms.training.trainer import Trainer as LoopTrainer

    assert Trainer is LoopTrainer is dlms.Trainer
    assert DiffusionLM is dlms.DiffusionLM
    module = importlib.import_module("dlms.trainer")
    assert module.__all__ == ["Trainer"] and "re-export" in module.__doc__


def test_dataset_builder_build_from_raw_works_on_the_class(tmp_path):
    from dlms.data import DatasetBuilder

    f = tmp_path / "tiny.txt"
    f.write_text("".join(f"line {i} of a small text file\n" for i in range(40)), encoding="utf-8")
    ds = DatasetBuilder.build_from_raw(str(f), 280, 8)  # the documented call, on the class
    assert ds.seq_len == 8 and len(ds.train) > 0 and ds.layout == DatasetBuilder().layout
    assert dlms.DatasetBuilder is DatasetBuilder


def _error_messages(module: Path) -> list[str]:
    """The text of every string in a `raise ...` statement of `module` (f-string parts joined)."""
    out = []
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Raise) and node.exc is not None:
            parts = [n.value for n in ast.walk(node.exc) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
            out.append("".join(parts))
    return out


def test_data_layer_errors_name_api_arguments_not_command_line_flags():
    import dlms.data

    root = Path(dlms.data.__file__).parent
    messages = [m for f in sorted(root.rglob("*.py")) for m in _error_messages(f)]
    assert len(messages) > 30  # the scan sees the messages
    flagged = [m for m in messages if re.search(r"(^|[\s(`'\"])--[a-z]", m)]
    assert not flagged, flagged
