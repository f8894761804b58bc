"""Judges of attribute success for DGLM's evaluation, independent of the guiding classifiers.

- `BuiltinJudge`: the built-in corpus's exact grammar checker reads the sentiment of the whole
  text (prefix + continuation) and whether it is grammatical at all.
- `TfidfJudge`: a TF-IDF (word 1-2 grams) logistic regression fitted on the training split of
  a labelled file. It shares nothing with the sentence encoder the guidance uses; its accuracy
  on the held-out split is reported beside the results. It judges the continuation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import DataError


class BuiltinJudge:
    name = "exact grammar checker"

    def judge(self, prefixes: list[str], continuations: list[str], targets: list[str]) -> dict[str, list[bool]]:
        from ..data.corpus import check_text

        results = [check_text(f"{p} {c}".strip()) for p, c in zip(prefixes, continuations)]
        return {"success": [r.grammatical and r.sentiment == t for r, t in zip(results, targets)],
                "grammatical": [r.grammatical for r in results]}


@dataclass
class TfidfJudge:
    attribute: str
    held_out_accuracy: float = 0.0
    pipeline: object = field(default=None, repr=False)
    name: str = "TF-IDF logistic regression"

    @classmethod
    def fit(cls, attribute: str, train: tuple[list[str], list], held_out: tuple[list[str], list]) -> "TfidfJudge":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        texts, labels = [t for t, v in zip(*train) if v is not None], [v for v in train[1] if v is not None]
        if len(set(labels)) < 2:
            raise DataError(f"the judge needs texts of at least two '{attribute}' values, found {sorted(set(labels))}")
        model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                              LogisticRegression(C=4.0, max_iter=2000)).fit(texts, labels)
        pairs = [(t, v) for t, v in zip(*held_out) if v is not None]
        accuracy = float((model.predict([t for t, _ in pairs]) == [v for _, v in pairs]).mean()) if pairs else float("nan")
        return cls(attribute, accuracy, model)

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.pipeline.classes_]

    def judge(self, prefixes: list[str], continuations: list[str], targets: list[str]) -> dict[str, list[bool]]:
        predicted = self.pipeline.predict([c if c.strip() else "." for c in continuations])
        return {"success": [str(p) == t for p, t in zip(predicted, targets)]}
