"""The ``classifier`` scorer: a thin adapter that loads a trained classifier artifact
(:mod:`cascade.learn.classifier`) and scores with it."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cascade.learn.classifier import (
    FEATURE_VERSION,
    FORMAT,
    Calibration,
    Classifier,
    Example,
    Report,
    check_trained_for,
    evaluate,
    examples_from_outcomes,
    fit_isotonic,
    fit_logistic,
    fit_platt,
    require_model,
    split_examples,
    train,
    train_and_report,
    trained_for,
)
from cascade.request import Request
from cascade.types import ZERO, Completion, Sample, Score

# -- the scorer -------------------------------------------------------------------------------


class ClassifierScorer:
    """Scores a completion with a trained classifier artifact (free, local, fast)."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        path: str = Field(description="Classifier artifact (JSON) written by `cascade train-scorer`.")
        samples: int | None = Field(
            None, ge=1, le=100, description="Samples to draw (default: what the classifier was trained with)."
        )

    def __init__(self, classifier: Classifier, samples: int | None = None) -> None:
        self.classifier = classifier
        self.samples = samples or classifier.samples

    @classmethod
    def from_config(cls, options: ClassifierScorer.Options, ctx: Any) -> ClassifierScorer:
        path = ctx.path(options.path)
        clf = Classifier.load(path, kind="classifier")
        check_trained_for(clf, str(path), model=ctx.tier.model if ctx.tier is not None else None)
        return cls(clf, options.samples)

    @classmethod
    def load(cls, path: str | Path, samples: int | None = None) -> ClassifierScorer:
        return cls(Classifier.load(path, kind="classifier"), samples)

    def score(self, request: Request, completion: Completion) -> Score:
        samples = completion.samples or (Sample(""),)
        p, logit = self.classifier.predict(request.prompt, samples)
        return Score(p, chosen=0, detail={"logit": round(logit, 4)})

    async def ascore(self, request: Request, completion: Completion) -> Score:
        return self.score(request, completion)

    def max_cost(self, request: Request, max_output_tokens: int) -> Decimal:
        return ZERO


__all__ = [
    "FEATURE_VERSION",
    "FORMAT",
    "Calibration",
    "Classifier",
    "ClassifierScorer",
    "Example",
    "Report",
    "check_trained_for",
    "evaluate",
    "examples_from_outcomes",
    "fit_isotonic",
    "fit_logistic",
    "fit_platt",
    "require_model",
    "split_examples",
    "train",
    "train_and_report",
    "trained_for",
]
