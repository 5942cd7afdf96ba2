"""Add your own scorer: a small class, registered under a name, used from a YAML policy.

The same works for providers (``cascade.registry.PROVIDERS``) and ledgers (``LEDGERS``), and from
a package's entry points (``[project.entry-points."cascade.scorers"]``) instead of ``register``.
Its options are validated like the built-ins', with file:line errors.

    python examples/custom_scorer.py
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cascade import PolicyError
from cascade.engine.build import build
from cascade.policy import loads
from cascade.registry import SCORERS
from cascade.request import Request
from cascade.types import Completion, Score


class LengthScorer:
    """Confidence that an answer is complete: 1 at ``target`` words or more, less when shorter."""

    samples = 1  # how many samples the tier should draw for this scorer

    class Options(BaseModel):  # what the policy may say under `scorer:`
        model_config = ConfigDict(extra="forbid")
        target: int = Field(20, ge=1, description="Words of a complete answer.")

    def __init__(self, target: int = 20) -> None:
        self.target = target

    @classmethod
    def from_config(cls, options: LengthScorer.Options, ctx: Any) -> LengthScorer:
        return cls(options.target)

    def score(self, request: Request, completion: Completion) -> Score:
        words = len(completion.samples[0].text.split()) if completion.samples else 0
        return Score(min(1.0, words / self.target), detail={"words": words})

    async def ascore(self, request: Request, completion: Completion) -> Score:
        return self.score(request, completion)

    def max_cost(self, request: Request, max_output_tokens: int) -> Decimal:
        return Decimal(0)  # a local check costs nothing; a model-based scorer reserves its worst case


SCORERS.register("length", LengthScorer)

POLICY = """
name: answers
tiers:
  - name: cheap
    provider: scripted
    model: cheap-model
    price: {input: 0.15, output: 0.60}
    options: {answers: ["Use the reset link."]}
    scorer: {kind: length, target: 8}
    threshold: 0.9
  - name: strong
    provider: scripted
    model: strong-model
    price: {input: 2.50, output: 10.00}
    options: {answers: ["Open Settings, choose Security, click 'Reset password', follow the emailed link."]}
"""


def main() -> None:
    result = build(loads(POLICY)).run("How do I reset my password?")
    print(result.explain())
    try:
        loads(POLICY.replace("target: 8", "targt: 8"), source="answers.yaml")
    except PolicyError as err:
        print(f"\na misspelled option is caught like a built-in's:\n  {err.problems[0]}")


if __name__ == "__main__":
    main()
