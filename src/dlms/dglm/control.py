"""Plug-and-play attribute control: linear classifiers on the sentence-embedding space.

`fit_attribute_classifier` fits a logistic regression (scikit-learn) on embeddings [N, D] and
their labels; the result is a `LinearClassifier` (weights [C, D], bias [C], class names) that
runs in torch, so its log-probabilities have gradients. `guidance_gradient` averages the
gradient of the log-probability of each row's target class over Monte Carlo samples around
the current clean estimate; several classifiers add up. Nothing else is retrained for a new
attribute. Classifiers are saved as safetensors plus a JSON file of their class names.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError, ConfigError, DataError


@dataclass
class LinearClassifier:
    """log p(class | x) = log_softmax(x W^T + b) for x [B, D] in the space it was fitted in."""

    weight: torch.Tensor  # [C, D]
    bias: torch.Tensor  # [C]
    classes: list[str]
    attribute: str = ""

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    def class_index(self, name: str) -> int:
        if name not in self.classes:
            raise ConfigError(f"attribute '{self.attribute}' has no value '{name}'; "
                              f"choose one of: {', '.join(self.classes)}")
        return self.classes.index(name)

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, D] -> [B, C]."""
        if x.shape[-1] != self.dim:
            raise ConfigError(f"classifier '{self.attribute}' was fitted on embeddings of width {self.dim}, "
                              f"got {x.shape[-1]}; fit it with the pipeline's sentence encoder")
        logits = x @ self.weight.to(x).t() + self.bias.to(x)
        if len(self.classes) == 2 and self.weight.shape[0] == 1:  # scikit-learn's binary form
            logits = torch.cat([-logits, logits], dim=-1) / 2
        return torch.log_softmax(logits, dim=-1)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        save_file({"weight": self.weight.contiguous(), "bias": self.bias.contiguous()}, str(path.with_suffix(".safetensors")))
        path.with_suffix(".json").write_text(json.dumps({"attribute": self.attribute, "classes": self.classes}),
                                             encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "LinearClassifier":
        path = Path(path)
        try:
            tensors = load_file(str(path.with_suffix(".safetensors")))
            meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
            return cls(tensors["weight"], tensors["bias"], list(meta["classes"]), meta.get("attribute", ""))
        except Exception as exc:  # noqa: BLE001  (safetensors and json raise several types)
            raise CheckpointError(f"classifier '{path}' is missing or damaged ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                                  "fit it again with dlms dglm train-classifier") from None


def fit_attribute_classifier(embeddings: np.ndarray, labels: list[str], attribute: str = "",
                             c: float = 1.0, seed: int = 0) -> LinearClassifier:
    """A logistic regression on embeddings [N, D] with string labels [N]."""
    from sklearn.linear_model import LogisticRegression

    labels = [str(v) for v in labels]
    if len(labels) != len(embeddings):
        raise DataError(f"{len(embeddings)} embeddings but {len(labels)} labels")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise DataError(f"attribute '{attribute}' needs at least two values to classify, found {classes}")
    y = np.array([classes.index(v) for v in labels])
    model = LogisticRegression(C=c, max_iter=1000, random_state=seed).fit(np.asarray(embeddings), y)
    return LinearClassifier(torch.tensor(model.coef_, dtype=torch.float32),
                            torch.tensor(model.intercept_, dtype=torch.float32), classes, attribute)


def guidance_gradient(x_hat: torch.Tensor, controls: list[tuple[LinearClassifier, int | torch.Tensor]],
                      num_samples: int = 8, noise_scale: float = 0.1, generator: torch.Generator | None = None,
                      to_embedding=None) -> torch.Tensor:
    """The sum over (classifier, target class) of E_eps[grad_x log p(target | x_hat + noise_scale eps)],
    averaged over `num_samples` draws: [B, D] for x_hat [B, D]. A target is one class index for
    every row or a LongTensor [B] of them. `to_embedding` maps x_hat's space to the classifier's
    (e.g. `Standardizer.inverse`); the gradient is taken through it."""
    total = torch.zeros_like(x_hat)
    batch = x_hat.shape[0]
    for classifier, target in controls:
        eps = torch.randn((num_samples, *x_hat.shape), generator=generator, device=x_hat.device, dtype=x_hat.dtype)
        x = (x_hat[None] + noise_scale * eps).detach().requires_grad_(True)
        flat = x.reshape(-1, x.shape[-1])
        logp = classifier.log_probs(to_embedding(flat) if to_embedding else flat).view(num_samples, batch, -1)
        index = torch.as_tensor(target, device=x_hat.device).expand(batch)
        chosen = logp.gather(-1, index.expand(num_samples, batch)[..., None])
        total = total + torch.autograd.grad(chosen.sum() / num_samples, x)[0].sum(0)
    return total
