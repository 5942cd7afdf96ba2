"""Test doubles for users' tests and ours: a scripted provider, a fixed scorer and a scripted
LangChain chat model.

>>> from cascade.testing import ScriptedProvider, FixedScorer, ScriptedChatModel
>>> cheap = ScriptedProvider(["4", "5"], model="cheap")   # answers "4" then "5", then "5" again
>>> small = ScriptedChatModel(model="small", script=["4", "5"])   # the same, as a LangChain model
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from cascade.errors import ProviderTimeoutError, TransientProviderError
from cascade.money import usd
from cascade.request import Request
from cascade.types import ZERO, Completion, Sample, Score, Usage

if TYPE_CHECKING:
    from cascade._testing_langchain import ScriptedChatModel

Step = str | Sequence[str] | BaseException
Script = Step | Sequence[Step] | Callable[[Request, int], Step]


class ScriptedProvider:
    """Answers from a script, in order; the last step repeats once the script runs out.

    A step is a string (every sample gets it), a list of strings (the samples), or an exception
    instance (raised). ``script`` may also be a callable ``(request, n) -> step``. ``latency`` is
    simulated with ``sleep``; a latency above ``timeout`` raises :class:`ProviderTimeoutError`.
    Every call is recorded in ``calls`` as ``(request, n)``.
    """

    class Options(BaseModel):
        """Policy options for ``provider: scripted`` (demos and tests)."""

        model_config = ConfigDict(extra="forbid")
        answers: list[str | list[str]] = Field(min_length=1)
        latency: float = Field(0.0, ge=0)
        input_tokens: int = Field(10, ge=0)
        output_tokens: int = Field(10, ge=0)
        fail_first: int = Field(0, ge=0, description="Transient errors before the first answer.")

    def __init__(
        self,
        script: Script,
        *,
        model: str = "scripted",
        latency: float = 0.0,
        usage: Usage = Usage(10, 10),
        cost: Decimal | float | None = None,
        timeout: float | None = None,
    ) -> None:
        self.model = model
        self.latency = latency
        self.usage = usage
        self.cost = None if cost is None else usd(cost)
        self.timeout = timeout
        self.free = True
        self.calls: list[tuple[Request, int]] = []
        self._lock = threading.Lock()
        if callable(script) and not isinstance(script, BaseException):
            self._fn: Callable[[Request, int], Step] | None = script
            self._steps: list[Step] = []
        else:
            self._fn = None
            if isinstance(script, (str, BaseException)):
                self._steps = [script]
            else:
                self._steps = list(script)  # type: ignore[arg-type]
            if not self._steps:
                raise ValueError("a script needs at least one step")

    @classmethod
    def from_config(cls, tier: Any, options: ScriptedProvider.Options, ctx: Any) -> ScriptedProvider:
        steps: list[Step] = [
            TransientProviderError("scripted transient error", provider="scripted")
        ] * options.fail_first
        steps += [a if isinstance(a, str) else list(a) for a in options.answers]
        return cls(
            steps,
            model=tier.model,
            latency=options.latency,
            usage=Usage(options.input_tokens, options.output_tokens),
            timeout=tier.timeout,
        )

    def _next(self, request: Request, n: int) -> Completion:
        with self._lock:
            self.calls.append((request, n))
            if self._fn is not None:
                step = self._fn(request, n)
            else:
                step = self._steps.pop(0) if len(self._steps) > 1 else self._steps[0]
        if isinstance(step, BaseException):
            raise step
        texts = [step] * n if isinstance(step, str) else list(step)
        usage = Usage(self.usage.input_tokens, self.usage.output_tokens * len(texts))
        return Completion(
            samples=tuple(Sample(t) for t in texts),
            usage=usage,
            model=self.model,
            cost=self.cost,
            latency_s=self.latency,
        )

    def _timed_out(self) -> bool:
        return self.timeout is not None and self.latency > self.timeout

    def complete(self, request: Request, n: int = 1) -> Completion:
        if self.latency:
            time.sleep(min(self.latency, self.timeout or self.latency))
        if self._timed_out():
            raise ProviderTimeoutError(f"timed out after {self.timeout}s", provider="scripted")
        return self._next(request, n)

    async def acomplete(self, request: Request, n: int = 1) -> Completion:
        if self.latency:
            await asyncio.sleep(min(self.latency, self.timeout or self.latency))
        if self._timed_out():
            raise ProviderTimeoutError(f"timed out after {self.timeout}s", provider="scripted")
        return self._next(request, n)

    def max_usage(self, request: Request, n: int = 1) -> Usage:
        return Usage(self.usage.input_tokens, self.usage.output_tokens * n)


class FixedScorer:
    """Scores every completion with ``value`` (or ``fn(request, completion)``); costs ``cost``."""

    def __init__(
        self,
        value: float | Callable[[Request, Completion], float] = 1.0,
        *,
        samples: int = 1,
        cost: Decimal | float = ZERO,
    ) -> None:
        self.value = value
        self.samples = samples
        self.cost = usd(cost)
        self.calls = 0

    def score(self, request: Request, completion: Completion) -> Score:
        self.calls += 1
        v = self.value(request, completion) if callable(self.value) else self.value
        return Score(float(v), cost=self.cost)

    async def ascore(self, request: Request, completion: Completion) -> Score:
        return self.score(request, completion)

    def max_cost(self, request: Request, max_output_tokens: int) -> Decimal:
        return self.cost


def __getattr__(name: str) -> Any:
    """``ScriptedChatModel`` on first use: only LangChain users pay for importing LangChain."""
    if name == "ScriptedChatModel":
        from cascade._testing_langchain import ScriptedChatModel

        return ScriptedChatModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FixedScorer", "ScriptedChatModel", "ScriptedProvider"]
