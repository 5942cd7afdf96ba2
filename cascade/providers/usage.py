"""Usage from providers is untrusted: token counts read defensively, missing usage estimated,
negative counts refused and impossible ones clamped to the reserved worst case
(:func:`check_usage`, :func:`settle_usage`), and the token estimates behind them."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from cascade.providers.mapping import invalid
from cascade.request import Request
from cascade.types import Sample, ToolCall, Usage, UsageSource

# -- usage sanity -----------------------------------------------------------------------------


def _logger() -> Any:
    """The event logger when the application listens (as the engine does), else None."""
    from cascade.logging import listening

    return listening()


FAR = 2
"""Reported input tokens above ``FAR`` x the (already generous) estimate + ``SLACK`` are impossible."""
SLACK = 1024


def token_count(value: Any) -> int | None:
    """A token count from an untrusted field: an int (or integral float); None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def estimate_output_tokens(samples: Sequence[Sample]) -> int:
    """A generous output-token count for the returned samples (text and tool-call arguments)."""
    texts = [text for s in samples for text in (s.text, *_call_texts(s.tool_calls))]
    return sum(_text_tokens(text) + 1 for text in texts)


def check_usage(
    usage: Usage | None,
    *,
    samples: Sequence[Sample],
    bound: Usage,
    provider: str,
    model: str,
    request_id: str | None = None,
) -> tuple[Usage, UsageSource]:
    """Usage fit to bill: ``bound`` is the worst case reserved for this call (``max_usage``).

    Missing usage is estimated (the bound's input, the returned text's output); negative counts
    raise :class:`InvalidResponseError`; input far above the estimate, or output above the bound
    (``max_tokens`` x samples) are clamped to the bound. Anything but ``reported`` is logged.
    """
    if usage is None:
        estimated = Usage(bound.input_tokens, min(estimate_output_tokens(samples), bound.output_tokens))
        log = _logger()
        if log is not None:
            log.warning(
                "cascade.usage_estimated",
                provider=provider,
                model=model,
                request_id=request_id,
                input_tokens=estimated.input_tokens,
                output_tokens=estimated.output_tokens,
            )
        return estimated, "estimated"
    counts = (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens, usage.cache_creation_tokens)
    if min(counts) < 0:  # unusable, but the answer was produced: billed at the estimate
        estimated = Usage(bound.input_tokens, min(estimate_output_tokens(samples), bound.output_tokens))
        raise invalid(provider, "negative token counts", str(usage), request_id=request_id, usage=estimated)
    prompt_side = usage.input_tokens + usage.cached_input_tokens + usage.cache_creation_tokens
    too_much_in = prompt_side > FAR * bound.input_tokens + SLACK
    too_much_out = usage.output_tokens > bound.output_tokens
    if not (too_much_in or too_much_out):
        return usage, "reported"
    room = bound.input_tokens
    creation = min(usage.cache_creation_tokens, room) if too_much_in else usage.cache_creation_tokens
    cached = min(usage.cached_input_tokens, room - creation) if too_much_in else usage.cached_input_tokens
    inp = min(usage.input_tokens, room - creation - cached) if too_much_in else usage.input_tokens
    clamped = Usage(inp, min(usage.output_tokens, bound.output_tokens), cached, creation)
    log = _logger()
    if log is not None:
        log.warning(
            "cascade.usage_clamped",
            provider=provider,
            model=model,
            request_id=request_id,
            reported_input=prompt_side,
            reported_output=usage.output_tokens,
            bound_input=bound.input_tokens,
            bound_output=bound.output_tokens,
        )
    return clamped, "clamped"


def settle_usage(
    reported: Usage | None,
    *,
    samples: Sequence[Sample],
    request: Request | None,
    max_output: int | None,
    provider: str,
    model: str,
    request_id: str | None = None,
) -> tuple[Usage, UsageSource]:
    """A parsed body's usage: checked by :func:`check_usage` against the call's worst case (the
    prompt once, ``max_output`` out) when ``request`` and ``max_output`` are known, else as reported."""
    if request is None or max_output is None:
        return (reported, "reported") if reported is not None else (Usage(), "estimated")
    return check_usage(
        reported,
        samples=samples,
        bound=Usage(estimate_input_tokens(request), max_output),
        provider=provider,
        model=model,
        request_id=request_id,
    )


# -- token estimates --------------------------------------------------------------------------


def estimate_input_tokens(request: Request) -> int:
    """A conservative (high) input-token count without a tokenizer or network.

    ASCII text at 3 characters a token (tokenizers average about 4), any other character a
    token of its own, plus a few tokens of framing per message.
    """
    texts = [m.content for m in request.messages]
    texts += [text for m in request.messages for text in _call_texts(m.tool_calls)]
    texts += [json.dumps(t) for t in request.tools]
    return sum(_text_tokens(text) for text in texts) + 8 * len(request.messages) + 16


def _text_tokens(text: str) -> int:
    """ASCII at 3 characters a token (tokenizers average about 4), any other character a token."""
    ascii_chars = len(text) if text.isascii() else len(text.encode("ascii", "ignore"))
    return math.ceil(ascii_chars / 3) + (len(text) - ascii_chars)


def _call_texts(calls: Iterable[ToolCall]) -> list[str]:
    return [json.dumps(dict(tc.arguments)) + tc.name for tc in calls]
