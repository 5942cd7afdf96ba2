"""What the cascade is asked: :class:`Request` (messages plus call-level options), checked at
construction so that nothing unsendable reaches a reservation, and :data:`Prompt`, what the entry
points take."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cascade.errors import InvalidRequestError
from cascade.types import Message, ToolCall


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


Prompt = str | Request | Sequence[Message | Mapping[str, Any]]
"""What ``run``, ``arun``, ``batch`` and the drivers take: a string, a :class:`Request`, or messages."""
