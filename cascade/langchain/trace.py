"""The decision trace put in ``response_metadata["cascade"]``, and :func:`explain`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from decimal import Decimal
from typing import Any

from langchain_core.messages import (
    BaseMessage,
)

from cascade.types import (
    CascadeResult,
    show,
)

_NAMES: dict[type, tuple[str, ...]] = {}
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _names(cls: type) -> tuple[str, ...]:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def _plain(v: Any) -> Any:
    """``_jsonable(asdict(v))`` of :mod:`cascade.types`, without asdict's deep copies (hot path)."""
    t = type(v)
    if t in _SCALARS:
        return v
    if t is Decimal:
        return str(v)
    if t is tuple or t is list:
        return [_plain(x) for x in v]
    if t is dict:
        return {k: _plain(x) for k, x in v.items()}
    names = _NAMES.get(t)
    if names is not None:  # a dataclass seen before (Usage, ToolCall...): no ABC checks
        return {n: _plain(getattr(v, n)) for n in names}
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if is_dataclass(v) and not isinstance(v, type):
        return {n: _plain(getattr(v, n)) for n in _names(type(v))}
    return v


def _flat(obj: Any) -> dict[str, Any]:
    """A dataclass's fields as a dict, values made JSON-ready (scalars untouched: the hot path)."""
    scalars = _SCALARS
    d = {}
    for n in _names(type(obj)):
        v = getattr(obj, n)
        d[n] = v if type(v) in scalars else _plain(v)
    return d


def trace(result: CascadeResult) -> dict[str, Any]:
    """The decision trace put in ``response_metadata["cascade"]``: :meth:`CascadeResult.to_dict`."""
    attempts = []
    for a in result.attempts:
        ad = _flat(a)
        ad["total_cost"] = str(a.total_cost)
        attempts.append(ad)
    d: dict[str, Any] = {}
    for name in _names(CascadeResult):
        if name == "attempts":
            d[name] = attempts
        elif name != "sample":
            v = getattr(result, name)
            d[name] = v if type(v) in _SCALARS else _plain(v)
    d["cost"] = str(result.cost)
    d["usage"] = _flat(result.usage)
    return d


def explain(message: BaseMessage) -> str:
    """A readable account of the decisions behind a cascade answer (from its trace): the text of
    :meth:`CascadeResult.explain` (skips, reused samples, tokens, costs, latency), each tier
    shown with its model only (``[model]``, not ``[provider:model]``)."""
    t = message.response_metadata.get("cascade")
    if not isinstance(t, dict):
        return "not a cascade answer (no response_metadata['cascade'])"
    lines = [f"policy {t['policy']!r}: {t['reason']} at tier {t['tier']!r} ({t['model']})"]
    for i, a in enumerate(t["attempts"], 1):
        parts = [f"  {i}. {a['tier']} [{a['model']}] {a['decision']}: {a['reason']}"]
        if a.get("score") is not None and not str(a["reason"]).startswith("score"):
            parts.append(f"score {a['score']:.3f}")
        if a["decision"] not in ("stopped", "skipped"):
            reused = f" ({a['reused_samples']} reused)" if a.get("reused_samples") else ""
            parts.append(f"samples {a['samples']}{reused}")
            usage = a.get("usage") or {}
            tokens = f"tokens {usage.get('input_tokens', 0)}+{usage.get('output_tokens', 0)}"
            source = a.get("usage_source", "reported")
            parts.append(tokens + (f" ({source})" if source != "reported" else ""))
            scorer_cost = Decimal(str(a.get("scorer_cost") or 0))
            cost = f"cost ${show(Decimal(str(a['cost'])))}"
            parts.append(cost + (f" + scorer ${show(scorer_cost)}" if scorer_cost else ""))
            parts.append(f"{float(a.get('latency_s') or 0.0) * 1000:.0f} ms")
        if a.get("retries"):
            parts.append(f"retries {a['retries']}")
        if a.get("error"):
            parts.append(f"error: {a['error']}")
        lines.append(" | ".join(parts))
    lines.append(f"  total: ${show(Decimal(t['cost']))}, {float(t.get('latency_s') or 0.0) * 1000:.0f} ms")
    return "\n".join(lines)
