"""The evaluator: a separate language model that judges generated text.

It gives the perplexity of samples and the feature vectors MAUVE compares. It is either a dlms
autoregressive run folder (`dlms train` with method.name=ar) or any Hugging Face causal LM, by
local folder or Hub id:

    ev = load_evaluator("runs/judge-ar")          # or load_evaluator("/models/gpt2")
    ev.score(samples)     # {"nll": nats/token, "ppl": ..., "tokens": ..., "texts": ...}
    ev.features(samples)  # [N, D] float32, for MAUVE

Chunking and end-of-text policy (the same for both kinds of evaluator):

- Start token: a dlms model's start tokens (what its samples start with); for a Hugging Face
  model the tokenizer's `bos_token_id` if it has one, else its `eos_token_id` (GPT-2 style).
- Scoring: each text is scored on its own, as `[start] + tokens(text) + [eos]`, with the text
  tokenized without special tokens. Every token after the start token is scored, the eos
  included; the start token itself is not.
- Long texts: a sequence longer than the evaluator's window `max_len` is cut into consecutive
  windows. The first window holds the first `max_len` tokens; each next window starts again with
  the start token followed by the next `max_len - 1` tokens (the last one may be shorter). No
  token is scored twice and no context is carried across windows, so a text of n tokens always
  has n + 1 scored tokens (its tokens and the eos).
- `nll` is the total nats over all texts divided by the total number of scored tokens (a
  token-weighted mean); `ppl = exp(nll)`.
- Window size: a dlms model's `max_seq_len`; a Hugging Face model's
  `config.max_position_embeddings` (or `n_positions`), capped at 1024.
- Features: the final layer's hidden state (after the final norm) at the last token of
  `[start] + tokens(text)` (no eos), the sequence cut to its first `max_len` tokens. Texts are
  batched with right padding and read at each row's last real position, so features do not
  depend on the batch size.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DlmsError
from ..hub import Pretrained, causal_lm_copy, load_pretrained

HF_MAX_LEN = 1024  # cap on a Hugging Face model's window
# How an evaluator is named in error lines and how a user gets a local copy of a Hub one.
EVALUATOR = Pretrained("evaluator", causal_lm_copy(), point="pass its path as the evaluator", error=DlmsError)
BROKEN = ("evaluator '{name}' could not be loaded (not a dlms run folder, and not a Hugging Face causal LM that loads "
          "from here: {reason}); pass a dlms 'ar' run folder or a local Hugging Face model folder")


def windows(ids: Sequence[int], start: int, max_len: int) -> list[list[int]]:
    """Cut `ids` (which begins with the start token) into the scoring windows of the policy."""
    if max_len < 2:
        raise DlmsError(f"an evaluator window of {max_len} tokens is too small to score anything; use one >= 2")
    ids = list(ids)
    out = [ids[:max_len]]
    for i in range(max_len, len(ids), max_len - 1):
        out.append([start] + ids[i:i + max_len - 1])
    return out


class Evaluator:
    """A language model that scores texts and gives their feature vectors (see the module doc).

    Subclasses supply `_logits` and `_hidden` over a right-padded batch; the policy lives here.
    """

    name: str
    max_len: int

    def __init__(self, name: str, tokenizer, start: int, eos: int, pad: int, max_len: int, device: torch.device):
        self.name = name
        self.tokenizer = tokenizer
        self.start = int(start)
        self.eos = int(eos)
        self.pad = int(pad)
        self.max_len = int(max_len)
        self.device = device

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, max_len={self.max_len})"

    # ----------------------------------------------------------- model hooks
    def _logits(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """input_ids, mask [B, L] (right padded) -> logits [B, L, V]."""
        raise NotImplementedError

    def _hidden(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """input_ids, mask [B, L] (right padded) -> final-layer hidden states [B, L, D]."""
        raise NotImplementedError

    # ----------------------------------------------------------- helpers
    def encode(self, text: str) -> list[int]:
        """The text's tokens, without special tokens."""
        return list(self.tokenizer.encode(text, add_special_tokens=False, verbose=False))

    def _batch(self, rows: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, :len(r)] = 1
        return ids.to(self.device), mask.to(self.device)

    # ----------------------------------------------------------- public
    @torch.no_grad()
    def score(self, texts: Sequence[str], batch_size: int = 8) -> dict:
        """Token-weighted NLL of `texts` (nats per scored token) under the policy of the module doc.

        Returns {"nll", "ppl", "tokens" (scored tokens), "texts" (how many)}.
        """
        if isinstance(texts, str):
            raise DlmsError("score takes a list of texts, not one string; wrap it in a list")
        if len(texts) == 0:
            raise DlmsError(f"evaluator '{self.name}' was given no texts to score; pass at least one")
        rows: list[list[int]] = []
        for text in texts:
            rows.extend(windows([self.start] + self.encode(text) + [self.eos], self.start, self.max_len))
        rows.sort(key=len)  # similar lengths together: less padding
        total, tokens = 0.0, 0
        for b in range(0, len(rows), batch_size):
            ids, mask = self._batch(rows[b:b + batch_size])
            logits = self._logits(ids[:, :-1], mask[:, :-1]).float()
            targets, keep = ids[:, 1:], mask[:, 1:].bool()
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
            total += float(nll.view_as(targets)[keep].double().sum())
            tokens += int(keep.sum())
        nll = total / tokens
        return {"nll": nll, "ppl": float(math.exp(min(nll, 50.0))), "tokens": tokens, "texts": len(texts)}

    @torch.no_grad()
    def features(self, texts: Sequence[str], batch_size: int = 16) -> np.ndarray:
        """MAUVE features [N, D] float32: the final hidden state at the last token of
        `[start] + tokens(text)`, cut to the first `max_len` tokens."""
        if isinstance(texts, str):
            raise DlmsError("features takes a list of texts, not one string; wrap it in a list")
        rows = [([self.start] + self.encode(text))[:self.max_len] for text in texts]
        out: list[np.ndarray] = []
        for b in range(0, len(rows), batch_size):
            ids, mask = self._batch(rows[b:b + batch_size])
            hidden = self._hidden(ids, mask).float()
            last = mask.sum(1) - 1
            out.append(hidden[torch.arange(hidden.shape[0], device=hidden.device), last].cpu().numpy())
        if not out:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)

    @property
    def feature_dim(self) -> int:
        raise NotImplementedError


class DlmsEvaluator(Evaluator):
    """A dlms autoregressive run as the evaluator."""

    def __init__(self, name: str, lm):
        special = lm.method.special
        start = lm._start_tokens
        if len(start) != 1:
            raise DlmsError(f"evaluator '{name}' starts its sequences with {len(start)} tokens; one is needed")
        super().__init__(name, lm.tokenizer, start[0], special.eos, special.pad, lm.model.spec.max_seq_len, lm.device)
        self.lm = lm
        self.model = lm.model.eval()

    def _logits(self, input_ids, mask):
        return self.model(input_ids)  # causal: right padding leaves earlier positions unchanged

    def _hidden(self, input_ids, mask):
        return self.model.hidden(input_ids)

    @property
    def feature_dim(self) -> int:
        return self.model.spec.d_model


class HFEvaluator(Evaluator):
    """A Hugging Face causal LM (local folder or Hub id) as the evaluator."""

    def __init__(self, name: str, model, tokenizer, device: torch.device):
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if start is None or tokenizer.eos_token_id is None:
            raise DlmsError(f"evaluator '{name}' has a tokenizer without an end-of-text token (eos_token); "
                            "pass a model whose tokenizer defines one")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        config = model.config
        window = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        max_len = min(int(window), HF_MAX_LEN) if window else HF_MAX_LEN
        super().__init__(name, tokenizer, start, tokenizer.eos_token_id, pad, max_len, device)
        self.model = model

    def _logits(self, input_ids, mask):
        return self.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits

    def _hidden(self, input_ids, mask):
        out = self.model(input_ids=input_ids, attention_mask=mask, use_cache=False, output_hidden_states=True)
        return out.hidden_states[-1]

    @property
    def feature_dim(self) -> int:
        return int(self.model.config.hidden_size)


def _is_dlms_run(path: Path) -> bool:
    from ..checkpoint import CHECKPOINT

    return any((p / "trainer_state.json").is_file() for p in (path, path / CHECKPOINT, path / f".{CHECKPOINT}.old"))


def _run_folder(path: Path) -> Path:
    """The run folder `path` names (a run folder, or its checkpoint folder), resolved."""
    from ..checkpoint import CHECKPOINT

    path = path.expanduser().resolve()
    if path.name in (CHECKPOINT, f".{CHECKPOINT}.old") and (path / "trainer_state.json").is_file():
        return path.parent
    return path


def check_independent(checkpoint: str | Path, evaluator: str | Path, what: str = "evaluated") -> None:
    """DlmsError unless the evaluator is another model than the run being `what` (compared):
    a model that scores its own samples flatters them. Compares the resolved run folders (a run
    folder and its checkpoint folder are the same run)."""
    if _run_folder(Path(str(evaluator))) == _run_folder(Path(str(checkpoint))):
        raise DlmsError(
            f"the evaluator '{evaluator}' is the model being {what} ('{checkpoint}'): a model must not score its "
            "own samples; train or pick another AR run as the evaluator (a different train.seed or data.split) "
            "or pass a Hugging Face causal LM",
            cli=f"--evaluator '{evaluator}' is the model being {what} (--checkpoint '{checkpoint}'): a model must "
                "not score its own samples; train or pick another AR run as the evaluator (a different "
                "train.seed or data.split) or pass a Hugging Face causal LM")


def load_evaluator(spec: str, device: str = "auto") -> Evaluator:
    """The evaluator named by `spec`: a dlms 'ar' run folder, or a Hugging Face causal LM (a local
    folder, or a Hub id when the Hub is reachable). Any failure is a one-line `DlmsError`."""
    from ..devices import resolve_device

    spec = str(spec)
    path = Path(spec).expanduser()
    if path.is_dir() and _is_dlms_run(path):
        from ..model import DiffusionLM

        lm = DiffusionLM.load_checkpoint(path, device=device, expect_method="ar")
        return DlmsEvaluator(spec, lm)
    torch_device = resolve_device(device)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def load(source: str, local: bool):
        return (AutoTokenizer.from_pretrained(source, local_files_only=local),
                AutoModelForCausalLM.from_pretrained(source, local_files_only=local))

    tokenizer, model = load_pretrained(spec, load, EVALUATOR, BROKEN)
    model = model.float().to(torch_device).eval()
    return HFEvaluator(spec, model, tokenizer, torch_device)
