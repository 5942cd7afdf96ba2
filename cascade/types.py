"""Plain value types shared by every part of cascade.

Everything here is a frozen dataclass with no behaviour beyond small conveniences, so that
providers, scorers, ledgers and the engine can exchange data without depending on each other.
Money is always a :class:`decimal.Decimal` amount of US dollars (exact, never a float).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from decimal import Decimal
from typing import Any, Literal

from cascade.errors import InvalidRequestError
from cascade.money import ZERO as ZERO
from cascade.money import show as show

Role = Literal["system", "user", "assistant", "tool"]
UsageSource = Literal["reported", "estimated", "clamped"]
"""Where a completion's usage came from: ``reported`` by the provider; ``estimated`` from the request
and the returned text (the provider reported none, or nonsense); ``clamped`` to the reserved worst
case (the provider reported more than the request could produce)."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call requested by a model."""

    name: str
    arguments: Mapping[str, Any]
    id: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """What the cascade is asked: the messages plus call-level options.

    ``tools`` are JSON-schema tool definitions (OpenAI function format) passed through to every
    tier; ``tool_choice`` (OpenAI style: ``"auto"``, ``"none"``, ``"required"``/``"any"``, a tool
    name, or ``{"type": "function", "function": {"name": ...}}``) says whether a tool call is
    required. ``metadata`` is free-form caller data (for example ``{"id": "q-17"}``, used by the replay
    provider to find a recorded query). ``budget_key`` scopes window caps to a tenant or user.
    """

    messages: tuple[Message, ...]
    tools: tuple[Mapping[str, Any], ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    budget_key: str | None = None
    tool_choice: str | Mapping[str, Any] | None = None
    response_format: Mapping[str, Any] | None = None
    """OpenAI's ``response_format`` (``json_object``, ``json_schema``), sent by ``openai`` and
    ``openai_compatible`` tiers (None: the tier's own settings)."""

    @classmethod
    def of(
        cls,
        prompt: str | Request | Sequence[Message | Mapping[str, Any]],
        *,
        budget_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Request:
        """Build a request from a string, a list of messages (objects or dicts) or a request."""
        if isinstance(prompt, Request):
            return prompt
        if isinstance(prompt, str):
            messages: tuple[Message, ...] = (Message("user", prompt),)
        elif isinstance(prompt, Mapping):
            raise InvalidRequestError(
                "a prompt is a string or a list of messages; wrap one message in a list"
            )
        elif not isinstance(prompt, Sequence) or isinstance(prompt, bytes):
            raise InvalidRequestError(
                f"a prompt is a string or a list of messages, not {type(prompt).__name__}"
            )
        else:
            messages = tuple(m if isinstance(m, Message) else _message(m) for m in prompt)
        if not messages or not any(m.content.strip() or m.tool_calls for m in messages):
            raise InvalidRequestError("empty prompt: give at least one non-empty message")
        return cls(messages, metadata=dict(metadata or {}), budget_key=budget_key)

    def __post_init__(self) -> None:
        """Refuse what cannot be sent, however the request was built (before any reservation)."""
        if self.budget_key is not None and not isinstance(self.budget_key, str):
            raise InvalidRequestError(f"budget_key must be a string, not {type(self.budget_key).__name__}")
        for m in self.messages:
            _check_text(m.content)
            for call in m.tool_calls:
                _check_json(call.arguments, f"tool call {call.name!r}")
        if self.budget_key:
            _check_text(self.budget_key)
        for tool in self.tools:
            _check_json(tool, "a tool schema")
        if self.tool_choice is not None:
            _check_json(self.tool_choice, "tool_choice")

    @property
    def prompt(self) -> str:
        """The text of the last user message (what a recorded-outcomes file is keyed by)."""
        for m in reversed(self.messages):
            if m.role == "user":
                return m.content
        return self.messages[-1].content

    @property
    def chars(self) -> int:
        return sum(len(m.content) for m in self.messages) + sum(len(json.dumps(t)) for t in self.tools)


_ROLES = ("system", "user", "assistant", "tool")


def _check_text(text: str) -> None:
    """Refuse text that cannot be sent: lone surrogates (bytes that were not UTF-8, decoded with
    ``surrogateescape``, as Python does for argv and, in some locales, stdin)."""
    if not isinstance(text, str):
        raise InvalidRequestError(f"message content must be a string, not {type(text).__name__}")
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            f"the prompt is not valid Unicode (a lone surrogate at character {exc.start}: input that"
            " was not UTF-8); decode it as UTF-8 first"
        ) from None


def _check_json(value: Any, what: str) -> None:
    """Refuse a JSON value (a tool schema, tool-call arguments) holding text that cannot be sent."""
    try:
        json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequestError(
            f"{what} is not valid Unicode (a lone surrogate: input that was not UTF-8); decode it as"
            " UTF-8 first"
        ) from None
    except (TypeError, ValueError) as exc:  # keys that are not strings, a circular reference
        raise InvalidRequestError(f"{what} is not JSON: {exc}") from None


def _message(m: Any) -> Message:
    """A message from a dict in OpenAI chat format (content may be a list of text parts)."""
    if not isinstance(m, Mapping):
        raise InvalidRequestError(f"a message must be a dict or a Message, not {type(m).__name__}")
    role = m.get("role")
    if role not in _ROLES:
        raise InvalidRequestError(f"message role must be one of {', '.join(_ROLES)}; got {role!r}")
    content = m.get("content") or ""
    if not isinstance(content, str):  # [{"type": "text", "text": ...}, ...]
        try:
            content = "".join(p["text"] for p in content if p.get("type") == "text")
        except (TypeError, KeyError, AttributeError):
            raise InvalidRequestError("message content must be a string or a list of text parts") from None
    calls = []
    for c in m.get("tool_calls") or ():
        fn = c.get("function", c) if isinstance(c, Mapping) else None  # OpenAI nests under "function"
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise InvalidRequestError("a tool call needs a name (and arguments: an object or JSON text)")
        args = fn.get("arguments") or {}
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                raise InvalidRequestError(f"tool call {fn.get('name')!r}: arguments are not JSON") from None
        if not isinstance(args, Mapping):
            raise InvalidRequestError(f"tool call {fn['name']!r}: arguments must be an object")
        calls.append(ToolCall(fn["name"], args, str(c.get("id") or "")))
    return Message(role, content, tuple(calls), m.get("tool_call_id"), m.get("name"))


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts. ``input_tokens`` excludes cached-read and cache-creation tokens."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_creation_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.cache_creation_tokens + other.cache_creation_tokens,
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cached_input_tokens + self.cache_creation_tokens


@dataclass(frozen=True, slots=True)
class Sample:
    """One sampled answer from a model.

    ``answer`` is a final answer already extracted by the source (recorded outcomes carry one);
    ``quality`` is a recorded correctness label (replay only, used by offline evaluation and never
    by scorers). ``logprobs`` are per-token log probabilities when the provider returns them;
    ``top_logprobs`` the alternatives at each position (token -> logprob), when asked for.
    """

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    logprobs: tuple[float, ...] | None = None
    top_logprobs: tuple[Mapping[str, float], ...] | None = None
    finish_reason: str | None = None
    answer: str | None = None
    quality: float | None = None
    variant: str | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """What a provider returns for one call (possibly with several samples).

    ``cost`` is set when the provider knows the billed amount (a recorded cost); otherwise the
    engine prices ``usage`` with the tier's price. ``usage_source`` says whether ``usage`` is what
    the provider reported, an estimate (it reported none) or clamped to the worst case.
    """

    samples: tuple[Sample, ...]
    usage: Usage
    model: str
    cost: Decimal | None = None
    request_id: str | None = None
    latency_s: float = 0.0
    raw: Mapping[str, Any] = field(default_factory=dict)
    usage_source: UsageSource = "reported"
    failed_calls: int = 0
    """Calls merged into this completion that failed (their samples are missing)."""
    cut_off_calls: int = 0
    """Of the failed calls, those cut off in flight: maybe billed, so charged at their worst case."""


@dataclass(frozen=True, slots=True)
class Score:
    """A scorer's verdict on a completion.

    ``value`` is in [0, 1]; higher means more confident the answer is good. ``chosen`` is the index
    of the sample the cascade should return (self-consistency picks a majority sample). ``cost`` and
    ``usage`` are what the scorer itself spent (a judge call, extra samples).
    """

    value: float
    chosen: int = 0
    cost: Decimal = ZERO
    usage: Usage = Usage()
    detail: Mapping[str, Any] = field(default_factory=dict)


Decision = Literal["accepted", "escalated", "rejected", "stopped", "failed", "skipped", "cancelled"]
"""accepted: answer returned; escalated: passed to the next tier (low score or error);
rejected: the last tier scored below its threshold; stopped: the budget refused the call;
failed: the last tier errored; skipped: the tier's prompt-only estimate was below its skip
threshold, so it was not called; cancelled: a hedge's backup call, not needed (the tier before
was accepted), cancelled and charged what it may have cost."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One tier's part in a run: what was called, how it scored and what was decided."""

    tier: str
    model: str
    provider: str
    decision: Decision
    reason: str
    samples: int = 0
    score: float | None = None
    threshold: float | None = None
    usage: Usage = Usage()
    cost: Decimal = ZERO
    scorer_cost: Decimal = ZERO
    latency_s: float = 0.0
    retries: int = 0
    error: str | None = None
    answer: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    score_detail: Mapping[str, Any] = field(default_factory=dict)
    usage_source: UsageSource = "reported"
    reused_samples: int = 0  # samples (the tier's and its scorer's) bought earlier in the run, not paid again
    charged: str | None = None  # why failed calls were charged (billed usage, or cut off in flight)
    hedge: str | None = None  # what the tier's hedge did, or (a backup's call) when it started

    @property
    def total_cost(self) -> Decimal:
        return self.cost + self.scorer_cost

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (money as decimal strings), with ``total_cost``."""
        d = _flat(self)
        d["total_cost"] = str(self.total_cost)
        return d


_NAMES: dict[type, tuple[str, ...]] = {}  # a dataclass's field names (fields() is slow)
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _names(cls: type) -> tuple[str, ...]:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def _jsonable(v: Any) -> Any:
    """``v`` JSON-ready: dataclasses as dicts, tuples as lists, Decimals as strings. Like
    ``asdict`` and recursion, without its deep copies (a result is reported on every call)."""
    t = type(v)
    if t in _SCALARS:
        return v
    if t is Decimal:
        return str(v)
    if t is tuple or t is list:
        return [_jsonable(x) for x in v]
    if t is dict:
        return {k: _jsonable(x) for k, x in v.items()}
    if t in _NAMES:  # a dataclass seen before (Usage, ToolCall...): no ABC checks
        return _flat(v)
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _jsonable(x) for k, x in v.items()}
    if is_dataclass(v) and not isinstance(v, type):
        return _flat(v)
    return v


def _flat(obj: Any) -> dict[str, Any]:
    """A dataclass's fields as a JSON-ready dict (scalar values taken as they are)."""
    scalars = _SCALARS
    d = {}
    for n in _names(type(obj)):
        v = getattr(obj, n)
        d[n] = v if type(v) in scalars else _jsonable(v)
    return d


@dataclass(frozen=True, slots=True)
class CascadeResult:
    """The outcome of one cascade run.

    ``accepted`` is true when a tier's answer cleared its threshold (or the last tier answered with
    no scorer); ``reason`` says why the run ended: ``accepted``, ``budget`` (the next tier could not be
    afforded), ``exhausted`` (every tier ran, none was accepted).
    """

    answer: str
    tier: str
    model: str
    accepted: bool
    reason: str
    attempts: tuple[Attempt, ...]
    tool_calls: tuple[ToolCall, ...] = ()
    policy: str = ""
    latency_s: float = 0.0
    sample: Sample | None = field(default=None, compare=False)

    @property
    def cost(self) -> Decimal:
        return sum((a.total_cost for a in self.attempts), ZERO)

    @property
    def usage(self) -> Usage:
        return sum((a.usage for a in self.attempts), Usage())

    @property
    def hedge_cost(self) -> Decimal:
        """What hedging added: the cancelled backup calls (a backup that answered was needed anyway)."""
        return sum((a.total_cost for a in self.attempts if a.decision == "cancelled"), ZERO)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (money as decimal strings)."""
        d: dict[str, Any] = {}
        for name in _names(CascadeResult):
            if name == "attempts":
                d[name] = [a.to_dict() for a in self.attempts]
            elif name != "sample":
                d[name] = _jsonable(getattr(self, name))
        d["cost"] = str(self.cost)
        d["usage"] = _flat(self.usage)
        return d

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def explain(self) -> str:
        """A human-readable account of every decision (money exact, in USD)."""
        lines = [f"policy {self.policy!r}: {self.reason} at tier {self.tier!r} ({self.model})"]
        for i, a in enumerate(self.attempts, 1):
            parts = [f"  {i}. {a.tier} [{a.provider}:{a.model}] {a.decision}: {a.reason}"]
            if a.score is not None and not a.reason.startswith("score"):
                parts.append(f"score {a.score:.3f}")
            if a.decision not in ("stopped", "skipped"):
                reused = f" ({a.reused_samples} reused)" if a.reused_samples else ""
                parts.append(f"samples {a.samples}{reused}")
                tokens = f"tokens {a.usage.input_tokens}+{a.usage.output_tokens}"
                parts.append(tokens + (f" ({a.usage_source})" if a.usage_source != "reported" else ""))
                cost = f"cost ${show(a.cost)}" + (f" ({a.charged})" if a.charged else "")
                parts.append(cost + (f" + scorer ${show(a.scorer_cost)}" if a.scorer_cost else ""))
                parts.append(f"{a.latency_s * 1000:.0f} ms")
            if a.retries:
                parts.append(f"retries {a.retries}")
            if a.error:
                parts.append(f"error: {a.error}")
            if a.hedge:
                parts.append(f"hedge: {a.hedge}")
            lines.append(" | ".join(parts))
        hedge = f" (hedge ${show(self.hedge_cost)})" if self.hedge_cost else ""
        lines.append(f"  total: ${show(self.cost)}{hedge}, {self.latency_s * 1000:.0f} ms")
        return "\n".join(lines)


Prompt = str | Request | Sequence[Message | Mapping[str, Any]]
"""What ``run``, ``arun``, ``batch`` and the drivers take: a string, a :class:`Request`, or messages."""
