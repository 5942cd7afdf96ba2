"""Answer from a recorded-outcomes file: what a named model said to this prompt, samples in order.

This runs the whole engine offline, for tests, demos and policy evaluation. The prompt is matched
exactly (or by ``metadata["id"]``); an unknown prompt is a :class:`PermanentProviderError`.

Billing: ``recorded`` uses each sample's recorded ``cost_usd`` (as separate calls);
``prompt_once`` prices the tokens with the tier's price, counting the prompt once for ``n``
samples (how OpenAI ``n=`` and vLLM bill).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cascade import outcomes
from cascade.errors import ConfigurationError, PermanentProviderError
from cascade.money import Price
from cascade.request import Request
from cascade.types import Completion, Sample, Usage


class ReplayProvider:
    """Replays ``model``'s recorded answers from ``path``."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        path: str = Field(description="Recorded-outcomes file (.jsonl or .jsonl.gz).")
        variant: str | None = Field(None, description="Only samples of this variant (e.g. cot, pot).")
        billing: Literal["recorded", "prompt_once"] = "recorded"

    def __init__(
        self,
        data: outcomes.Outcomes | str,
        model: str,
        *,
        variant: str | None = None,
        billing: Literal["recorded", "prompt_once"] = "recorded",
    ) -> None:
        self.data = outcomes.load(data) if isinstance(data, str) else data
        if model not in self.data.models:
            from cascade.registry import suggest

            raise ConfigurationError(
                f"{self.data.path}: model {model!r} is not in the file{suggest(model, self.data.models)}"
            )
        self.model = model
        self.variant = variant
        self.billing = billing
        self.default_price: Price | None = self.data.price(model)
        self.free = self.default_price is None and billing == "recorded"

    @classmethod
    def from_config(cls, tier: Any, options: ReplayProvider.Options, ctx: Any) -> ReplayProvider:
        return cls(str(ctx.path(options.path)), tier.model, variant=options.variant, billing=options.billing)

    def _samples(self, request: Request) -> tuple[outcomes.RecordedSample, ...]:
        record = self.data.find(request.prompt, request.metadata.get("id"))
        if record is None:
            raise _error(f"prompt not found in {self.data.path.name} (replay answers only recorded prompts)")
        samples = record.responses.get(self.model)
        if samples and self.variant is not None:
            samples = tuple(s for s in samples if s.variant == self.variant)
        if not samples:
            raise _error(f"{self.model} has no recorded answer for record {record.id!r}")
        return samples

    def _completion(self, request: Request, n: int) -> Completion:
        recorded = self._samples(request)[:n]
        for s in recorded:  # a data file is untrusted input too: never settle a negative amount
            if s.input_tokens < 0 or s.output_tokens < 0 or (s.cost_usd is not None and s.cost_usd < 0):
                raise _error(f"{self.data.path.name}: {self.model} has negative tokens or cost here")
        out = sum(s.output_tokens for s in recorded)
        if self.billing == "prompt_once":
            usage = Usage(recorded[0].input_tokens, out)
            cost = None
        else:
            usage = Usage(sum(s.input_tokens for s in recorded), out)
            costs = [s.cost_usd for s in recorded if s.cost_usd is not None]
            cost = sum(costs, Decimal(0)) if len(costs) == len(recorded) else None
        return Completion(
            samples=tuple(
                Sample(s.text or "", answer=s.answer, quality=s.quality, variant=s.variant) for s in recorded
            ),
            usage=usage,
            model=self.model,
            cost=cost,
        )

    def complete(self, request: Request, n: int = 1) -> Completion:
        return self._completion(request, n)

    async def acomplete(self, request: Request, n: int = 1) -> Completion:
        return self._completion(request, n)

    def max_cost(self, request: Request, n: int = 1) -> Decimal | None:
        """The recorded cost of ``n`` samples (what a call bills), when the file records it: it may
        exceed the tier price applied to the recorded tokens, and a reservation must cover it."""
        try:
            return self._completion(request, n).cost
        except PermanentProviderError:
            return None

    def max_usage(self, request: Request, n: int = 1) -> Usage:
        try:
            return self._completion(request, n).usage
        except PermanentProviderError:
            return Usage()  # complete() will raise the clear error


def _error(message: str) -> PermanentProviderError:
    """A replay failure: in cascade's own words (the data file's name, a model, a record id; never
    the prompt), so it is shown even where provider messages are withheld."""
    err = PermanentProviderError(message, provider="replay")
    err.own_words = True
    return err
