"""Local, free scorers: non-empty, regex, valid JSON, fixed. Each scores sample ``chosen=0``."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cascade.request import Request
from cascade.types import ZERO, Completion, Score


class _Local:
    """A free, synchronous scorer: subclasses implement :meth:`rate` on the first sample."""

    samples = 1

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

    @classmethod
    def from_config(cls, options: Any, ctx: Any) -> _Local:
        return cls(**options.model_dump())

    def rate(self, text: str, completion: Completion) -> float:
        raise NotImplementedError

    def score(self, request: Request, completion: Completion) -> Score:
        text = completion.samples[0].text if completion.samples else ""
        return Score(self.rate(text, completion))

    async def ascore(self, request: Request, completion: Completion) -> Score:
        return self.score(request, completion)

    def max_cost(self, request: Request, max_output_tokens: int) -> Decimal:
        return ZERO


class NonEmptyScorer(_Local):
    """1 if the answer has at least ``min_chars`` non-space characters (or a tool call), else 0."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        min_chars: int = Field(1, ge=1)

    def __init__(self, min_chars: int = 1) -> None:
        self.min_chars = min_chars

    def rate(self, text: str, completion: Completion) -> float:
        if completion.samples and completion.samples[0].tool_calls:
            return 1.0
        return 1.0 if len(text.strip()) >= self.min_chars else 0.0


class RegexScorer(_Local):
    """1 if ``pattern`` is found in the answer (0 with ``invert``: found means bad)."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        pattern: str
        invert: bool = False
        ignore_case: bool = False

        @field_validator("pattern")
        @classmethod
        def _compiles(cls, v: str) -> str:
            try:
                re.compile(v)
            except re.error as err:
                raise ValueError(f"invalid regular expression: {err}") from None
            return v

    def __init__(self, pattern: str, invert: bool = False, ignore_case: bool = False) -> None:
        self.pattern = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
        self.invert = invert

    def rate(self, text: str, completion: Completion) -> float:
        found = self.pattern.search(text) is not None
        return 1.0 if found != self.invert else 0.0


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


class JsonScorer(_Local):
    """1 if the answer is valid JSON (a fenced ```json block counts) with every ``required`` key."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        required: list[str] = Field(default_factory=list)

    def __init__(self, required: list[str] | None = None) -> None:
        self.required = list(required or [])

    def rate(self, text: str, completion: Completion) -> float:
        m = _FENCE.search(text)
        body = m.group(1) if m else text
        try:
            value = json.loads(body)
        except ValueError:
            return 0.0
        if self.required and (not isinstance(value, dict) or any(k not in value for k in self.required)):
            return 0.0
        return 1.0


class FixedScorer(_Local):
    """Always ``value`` (for demos, and to force a tier to accept or escalate)."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        value: float = Field(ge=0, le=1)

    def __init__(self, value: float) -> None:
        self.value = value

    def rate(self, text: str, completion: Completion) -> float:
        return self.value
