"""Attribute accuracy of generated texts by a given classifier: a Hugging Face sequence
classification model (a local folder or hub id) whose `id2label` names the classes."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import DlmsError
from ..hub import Pretrained, causal_lm_copy, load_pretrained

# How a classifier is named in error lines and how a user gets a local copy of a Hub one.
CLASSIFIER = Pretrained("classifier", causal_lm_copy("AutoModelForSequenceClassification"), error=DlmsError)


class AttributeClassifier:
    """Predicts a label name per text with a Hugging Face sequence classifier."""

    def __init__(self, spec: str, device: str = "cpu"):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        def load(source: str, local: bool):
            return (AutoTokenizer.from_pretrained(source, local_files_only=local),
                    AutoModelForSequenceClassification.from_pretrained(source, local_files_only=local))

        self.tokenizer, model = load_pretrained(
            spec, load, CLASSIFIER, "classifier '{name}' could not be loaded ({reason}); pass a local folder holding "
                                    "a Hugging Face sequence-classification model")
        self.model = model.to(device).eval()
        self.device = device
        self.names = [str(self.model.config.id2label[i]) for i in range(self.model.config.num_labels)]

    @torch.no_grad()
    def predict(self, texts: Sequence[str], batch_size: int = 32) -> list[str]:
        out: list[str] = []
        for start in range(0, len(texts), batch_size):
            enc = self.tokenizer(list(texts[start : start + batch_size]), return_tensors="pt", padding=True,
                                 truncation=True).to(self.device)
            out += [self.names[i] for i in self.model(**enc).logits.argmax(-1).tolist()]
        return out

    def accuracy(self, texts: Sequence[str], labels: Sequence[str]) -> float:
        """Share of texts whose predicted class is their label (names compared case-insensitively)."""
        if len(texts) != len(labels):
            raise DlmsError(f"{len(texts)} texts but {len(labels)} labels")
        wanted = {label.lower() for label in labels}
        unknown = wanted - {n.lower() for n in self.names}
        if unknown:
            raise DlmsError(f"the classifier knows the classes {', '.join(self.names)}, not "
                            f"{', '.join(sorted(unknown))}; pass a classifier trained on the model's labels")
        predicted = self.predict(texts)
        return sum(p.lower() == l.lower() for p, l in zip(predicted, labels)) / max(len(texts), 1)
