"""Training a verifier: labelled examples gathered through the real scorer code with every call
replayed from recorded outcomes, and the classifier fit on them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cascade import outcomes
from cascade.errors import ProviderError
from cascade.learn.classifier import Classifier, Example, require_model, train
from cascade.learn.features import GROUPS, FeatureConfig
from cascade.request import Request
from cascade.scorers.verifier import VerifierInputs, VerifierOptions


def verifier_examples(
    options: VerifierOptions,
    data: outcomes.Outcomes,
    model: str,
    *,
    ids: set[str] | None = None,
    positive_at: float = 0.5,
    base_dir: Path | None = None,
) -> tuple[list[Example], tuple[str, ...]]:
    """Labelled examples of ``model``'s answers with the verifier's inputs, gathered through the
    real scorer code with every call replayed from ``data`` (only records in ``ids`` when given)."""
    from cascade.evaluate.simulate import ReplayContext
    from cascade.policy.schema import TierSpec

    require_model(data, model)
    ctx = ReplayContext(base_dir or Path.cwd(), data, "auto")
    tier = TierSpec(name="verifier", provider="replay", model=model, options={"path": str(data.path)})
    ctx.tier = tier
    inputs = VerifierInputs.build(options, ctx)
    provider = ctx.build_provider(tier)
    ctx.tier = None
    out: list[Example] = []
    for r in data.records:
        if ids is not None and r.id not in ids:
            continue
        recorded = r.responses.get(model)
        if not recorded or recorded[0].quality is None:
            continue
        request = Request.of(r.prompt, metadata={"id": r.id})
        try:
            completion = provider.complete(request, options.k)
        except ProviderError:
            continue
        got = inputs.gather(request, completion)
        label = 1.0 if recorded[0].quality >= positive_at else 0.0
        out.append(Example(r.prompt, completion.samples, label, r.id, r.split, got.values))
    return out, inputs.names


def train_verifier(
    examples: Sequence[Example],
    names: Sequence[str],
    *,
    groups: Sequence[str] = GROUPS,
    bits: int = 16,
    **kwargs: Any,
) -> Classifier:
    """A verifier artifact from :func:`verifier_examples` (the classifier's training code)."""
    config = FeatureConfig(bits=bits, groups=tuple(groups))
    return train(examples, config=config, extra=tuple(names), kind="verifier", **kwargs)


__all__ = ["train_verifier", "verifier_examples"]
