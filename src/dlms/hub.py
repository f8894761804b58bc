"""Finding a pretrained model by name: a local folder, or a Hugging Face Hub id read from the
local cache first and online only when the Hub can be reached.

One policy for everything pretrained that dlms loads (backbones, tokenizers, DGLM's sentence
encoder and decoder, evaluators, attribute classifiers):

- a name that looks like a path (`paths.looks_like_path`) must be an existing folder;
- a Hub id is loaded from the local cache first (`local_files_only=True`: no network round
  trips when it is already there), then online, unless HF_HUB_OFFLINE is set or one quick
  request shows the Hub cannot be reached (its client would retry for ~25 s, with warnings);
- when neither works, one error line names the model, says it could not be reached, and how to
  make a local copy and point at it.

A caller describes its kind of model once (`Pretrained`) and passes `load(source,
local_files_only)` to `load_pretrained`, with the line to give when a folder does not load
(what a folder must hold is the caller's to say). A caller with more to check in a folder uses
the two halves, `local_folder` and `from_hub` (whose `load(local_files_only)` reads the Hub id).
`transformers` and `huggingface_hub` are imported inside the functions: `import dlms` stays light.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .errors import ConfigError, DlmsError
from .paths import first_line, looks_like_path

T = TypeVar("T")


@dataclass(frozen=True)
class Pretrained:
    """A kind of pretrained model, as its error lines name it.

    what: its name in messages ("backbone", "sentence encoder"). save: the Python that writes a
    local copy to DIR on a machine with access, `{name}` standing for the Hub id. point: how to
    use DIR then ("pass its path", or the config key and flag to set). note: said after the
    reason, e.g. what to use instead. holds: what its folder holds, said when given a file.
    error: the DlmsError subclass raised (DataError for data, ConfigError for models).
    """

    what: str
    save: str
    point: str = "pass its path"
    note: str = ""
    holds: str = ""
    error: type[DlmsError] = ConfigError

    def unreachable(self, name: str) -> str:
        """The one line for a Hub id that neither the local cache nor the Hub could give."""
        note = f" ({self.note})" if self.note else ""
        return (f"could not load {self.what} '{name}': it is not a local folder, not in the local Hugging Face "
                f"cache, and the Hub is unreachable or has no such model{note}; on a machine with access run "
                f"{self.save.format(name=name)}, copy DIR here and {self.point}")


def causal_lm_copy(model_class: str = "AutoModelForCausalLM") -> str:
    """`Pretrained.save` for a model with its tokenizer: both written to the same DIR."""
    return (f"{model_class}.from_pretrained('{{name}}').save_pretrained('DIR') and "
            "AutoTokenizer.from_pretrained('{name}').save_pretrained('DIR')")


def local_folder(name: str, kind: Pretrained) -> Path | None:
    """The folder `name` names, or None when `name` is a Hub id. A name that is a file, or that
    looks like a path but does not exist, is one `kind.error` line."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        holds = f" (with {kind.holds})" if kind.holds else ""
        raise kind.error(f"{kind.what} '{name}' is a file; pass the model's folder{holds}")
    if looks_like_path(name):
        raise kind.error(f"{kind.what} folder '{name}' does not exist; check the path")
    return None


def hub_offline() -> bool:
    """HF_HUB_OFFLINE, read now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    return bool(constants.HF_HUB_OFFLINE) or env


def hub_reachable(timeout: float = 5.0) -> bool:
    """One quick request to the Hub (its client retries for ~25 s, with warnings, when offline)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
        return True
    except Exception:  # noqa: BLE001
        return False


def from_hub(load: Callable[[bool], T], name: str, kind: Pretrained) -> T:
    """`load(local_files_only)` from the local cache first, then online unless HF_HUB_OFFLINE is
    set or the Hub cannot be reached; else one `kind.error` line (`kind.unreachable(name)`)."""
    try:
        return load(True)
    except Exception:  # noqa: BLE001  (the hub and transformers raise many types)
        pass
    if not hub_offline() and hub_reachable():
        try:
            return load(False)
        except Exception:  # noqa: BLE001
            pass
    raise kind.error(kind.unreachable(name))


def load_pretrained(name: str, load: Callable[[str, bool], T], kind: Pretrained, broken: str) -> T:
    """The whole policy: `load(source, local_files_only)` of the folder `name` names, from disk
    only, or of the Hub id `name` through `from_hub`. A folder that does not load is one
    `kind.error` line, `broken` with `{name}` and `{reason}` (the library's first line) filled in;
    a DlmsError that `load` raises itself passes unchanged."""
    folder = local_folder(name, kind)
    if folder is None:
        return from_hub(lambda local: load(name, local), name, kind)
    try:
        return load(str(folder), True)
    except DlmsError:
        raise
    except Exception as exc:  # noqa: BLE001  (transformers and sentence-transformers raise many types)
        raise kind.error(broken.format(name=name, reason=first_line(exc))) from None
