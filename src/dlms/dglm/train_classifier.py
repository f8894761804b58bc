"""`dlms dglm train-classifier`: a linear attribute classifier on the pipeline's embedding space."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.sources import read_examples
from ..errors import ConfigError, DataError
from ..devices import resolve_device
from .config import DglmConfig
from .control import fit_attribute_classifier
from .embeddings import encode_cached
from .encoder import load_sentence_encoder
from ..paths import check_writable

HELD_OUT = 0.1  # share of the labelled texts kept aside to report accuracy


def train_classifier(cfg: DglmConfig, data: str, label: str, out: str | Path, max_examples: int | None = None,
                     seed: int = 0, cache_dir: str | None = None) -> dict[str, Any]:
    """Encode the labelled texts of `data` (a file, folder or "builtin"), fit a logistic
    regression on 90% of them, report its accuracy on the other 10% and save it as
    `<out>.safetensors` + `<out>.json` (`out` is used as given: `cli` builds it from the label
    with `paths.safe_stem`). Returns the figures as a dict. Sentence embeddings are computed
    in fp32, as in training (see `train.DglmTrainer.train_embed`)."""
    from .config import AT_LEAST_1, SEED, check_value

    if max_examples is not None:
        check_value("max_examples", max_examples, AT_LEAST_1)
    check_value("seed", seed, SEED)
    out = check_writable(out, "the classifier", folder=False)
    rows = [(ex["text"], ex["labels"][label]) for ex in read_examples(data, label_columns=[label],
                                                                       max_examples=max_examples, seed=seed)]
    rows = [(text, value) for text, value in rows if value is not None]
    if len(rows) < 10:
        raise DataError(f"'{data}' has {len(rows)} texts with a '{label}' value; a classifier needs at least 10")
    order = np.random.default_rng(seed).permutation(len(rows))
    texts = [rows[i][0] for i in order]
    labels = [rows[i][1] for i in order]
    encoder = load_sentence_encoder(cfg.sentence_encoder_model_name, resolve_device(cfg.device))
    vectors = np.asarray(encode_cached(encoder, texts, cache_dir))
    split = max(1, int(round(len(texts) * HELD_OUT)))
    classifier = fit_attribute_classifier(vectors[split:], labels[split:], attribute=label, seed=seed)
    known = [i for i in range(split) if labels[i] in classifier.classes]
    predicted = classifier.log_probs(torch.tensor(vectors[known])).argmax(-1).numpy()
    truth = np.array([classifier.class_index(labels[i]) for i in known])
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        classifier.save(out)
    except OSError as exc:
        said = f"cannot write the classifier '{out}' ({exc.strerror or exc}); pass another"
        raise ConfigError(f"{said} output path", cli=f"{said} --out") from None
    return {"attribute": label, "classes": classifier.classes, "train_texts": len(texts) - split,
            "held_out_texts": len(known), "held_out_accuracy": float((predicted == truth).mean()) if known else None,
            "encoder": cfg.sentence_encoder_model_name, "saved": str(out.with_suffix(".safetensors"))}
