"""What the SDK-backed providers share: keys, error mapping, token estimates, parallel sampling.

Every SDK error is mapped here, at the edge, to the cascade error tree (``raise ... from exc``)::

    SDK error                               cascade error                 retried by cascade.retry
    APITimeoutError                         ProviderTimeoutError          yes
    APIConnectionError                      TransientProviderError        yes
    429 (but OpenAI ``insufficient_quota``)  RateLimitError (retry_after)  yes
    408, 409, 5xx, 529 overloaded           TransientProviderError        yes
    ``x-should-retry: true`` / ``false``     transient / permanent         as the server says
    any other status (400, 401, 403, 404)   PermanentProviderError        no
    request missing from a vcrpy cassette   PermanentProviderError        no

This module imports no SDK: the provider modules pass theirs in.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import urlsplit
from weakref import WeakKeyDictionary

from cascade.errors import (
    ConfigurationError,
    PermanentProviderError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    TransientProviderError,
)
from cascade.types import Completion, Request, Usage

T = TypeVar("T")


# -- credentials ------------------------------------------------------------------------------


def api_key(env: str, *, tier: str, provider: str) -> str:
    """The key in environment variable ``env``; a :class:`ConfigurationError` naming it if unset."""
    value = os.environ.get(env, "").strip()
    if not value:
        raise ConfigurationError(
            f"tier {tier!r}: environment variable {env} is not set ({provider} API key); "
            f"export {env}=... or name another variable with `options: {{api_key_env: ...}}`"
        )
    return value


def is_local_url(url: str | None) -> bool:
    """True for a server on this machine or the local network (priced 0 unless configured)."""
    if not url:
        return False
    host = (urlsplit(url).hostname or "").lower()
    if host in ("localhost", "::1", "0.0.0.0") or host.endswith((".local", ".localhost", ".internal")):  # noqa: S104
        return True
    if "." not in host:  # a single-label name: a container or LAN host (http://vllm:8000/v1)
        return True
    parts = host.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        a, b = int(parts[0]), int(parts[1])
        return a in (10, 127) or (a == 192 and b == 168) or (a == 172 and 16 <= b <= 31)
    return False


# -- errors -----------------------------------------------------------------------------------


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000
        except ValueError:
            value = -1.0
        if 0 <= value < math.inf:
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is None:
            return None
        seconds = email.utils.mktime_tz(parsed) - time.time()
    return max(0.0, seconds) if seconds < math.inf else None


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        err = body.get("error", body)
        if isinstance(err, Mapping) and isinstance(err.get("message"), str):
            kind = err.get("type") or err.get("code")
            text = str(err["message"])
            return f"{kind}: {text}"[:300] if isinstance(kind, str) and kind else text[:300]
    return str(getattr(exc, "message", "") or exc)[:300]


def _error_code(exc: Any) -> str | None:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        err = body.get("error", body)
        if isinstance(err, Mapping):
            code = err.get("code") or err.get("type")
            return code if isinstance(code, str) else None
    return None


def _is_cassette_miss(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if type(seen).__name__ == "CannotOverwriteExistingCassetteException":
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def map_error(exc: BaseException, *, provider: str, sdk: ModuleType) -> ProviderError:
    """The cascade error for an SDK exception (the caller raises it ``from exc``)."""
    name = type(exc).__name__
    if _is_cassette_miss(exc):
        return PermanentProviderError(
            f"{provider}: request not found in the cassette (re-record it; see cassettes/README.md)",
            provider=provider,
        )
    if isinstance(exc, sdk.APITimeoutError):
        return ProviderTimeoutError(f"{provider}: request timed out", provider=provider)
    if isinstance(exc, sdk.APIConnectionError):
        return TransientProviderError(f"{provider}: connection error ({name})", provider=provider)
    if isinstance(exc, sdk.APIStatusError):
        status = int(exc.status_code)
        headers = exc.response.headers
        rid = getattr(exc, "request_id", None) or headers.get("x-request-id") or headers.get("request-id")
        kw: dict[str, Any] = {
            "provider": provider,
            "status_code": status,
            "request_id": rid,
            "retry_after": retry_after(headers),
        }
        message = f"{provider}: {name}: {_message(exc)}"
        should = (headers.get("x-should-retry") or "").lower()
        if status == 429 and _error_code(exc) != "insufficient_quota" and should != "false":
            return RateLimitError(message, **kw)
        if should == "true" or (should != "false" and (status in (408, 409) or status >= 500)):
            return TransientProviderError(message, **kw)
        return PermanentProviderError(message, **kw)
    return PermanentProviderError(f"{provider}: {name}: {str(exc)[:300]}", provider=provider)


# -- token estimates --------------------------------------------------------------------------


def estimate_input_tokens(request: Request) -> int:
    """A conservative (high) input-token count without a tokenizer or network.

    ASCII text at 3 characters a token (tokenizers average about 4), any other character a
    token of its own, plus a few tokens of framing per message.
    """
    import json

    texts = [m.content for m in request.messages]
    texts += [json.dumps(dict(tc.arguments)) + tc.name for m in request.messages for tc in m.tool_calls]
    texts += [json.dumps(t) for t in request.tools]
    total = 0
    for text in texts:
        ascii_chars = sum(1 for ch in text if ch < "\x80")
        total += math.ceil(ascii_chars / 3) + (len(text) - ascii_chars)
    return total + 8 * len(request.messages) + 16


# -- several calls for several samples ---------------------------------------------------------


def merge(parts: Sequence[Completion], errors: Sequence[ProviderError] = ()) -> Completion:
    """One completion from several calls' completions (samples in order, usage summed)."""
    first = parts[0]
    usage = Usage()
    for p in parts:
        usage = usage + p.usage
    raw: dict[str, Any] = {"calls": len(parts), "request_ids": [p.request_id for p in parts]}
    # failures inside a part (itself merged from several calls) still count
    failed = len(errors) + sum(int(p.raw.get("failed_calls", 0)) for p in parts)
    messages = [str(e) for e in errors] + [m for p in parts for m in p.raw.get("errors", ())]
    if failed:
        raw["failed_calls"] = failed
        raw["errors"] = messages
    return Completion(
        samples=tuple(s for p in parts for s in p.samples),
        usage=usage,
        model=first.model,
        cost=None,
        request_id=first.request_id,
        latency_s=max(p.latency_s for p in parts),
        raw=raw,
    )


def _gathered(results: Sequence[Completion | ProviderError]) -> Completion:
    ok = [r for r in results if isinstance(r, Completion)]
    errors = [r for r in results if isinstance(r, ProviderError)]
    if not ok:
        raise errors[0]
    # Calls that succeeded were billed: return their samples (fewer than asked) rather than
    # throw away paid answers and retry them all.
    return merge(ok, errors)


def call_many(fn: Callable[[], Completion], k: int, parallel: int) -> Completion:
    """``k`` calls of ``fn`` on at most ``parallel`` threads, merged."""
    if k == 1:
        return fn()

    def one(_: int) -> Completion | ProviderError:
        try:
            return fn()
        except ProviderError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, min(k, parallel))) as pool:
        return _gathered(list(pool.map(one, range(k))))


async def acall_many(fn: Callable[[], Awaitable[Completion]], k: int, parallel: int) -> Completion:
    """``k`` concurrent calls of ``fn``, at most ``parallel`` at once, merged."""
    if k == 1:
        return await fn()
    gate = asyncio.Semaphore(max(1, parallel))

    async def one() -> Completion | ProviderError:
        async with gate:
            try:
                return await fn()
            except ProviderError as exc:
                return exc

    return _gathered(await asyncio.gather(*(one() for _ in range(k))))


class PerLoop:
    """One async SDK client per running event loop (an async client must not cross loops)."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._clients: WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = WeakKeyDictionary()

    def get(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            for old in [lp for lp in self._clients if lp.is_closed()]:
                del self._clients[old]  # a client can keep its dead loop alive: drop both
            client = self._clients[loop] = self._factory()
        return client

    async def aclose(self) -> None:
        """Close the running loop's client, if one was made."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()


__all__ = [
    "PerLoop",
    "acall_many",
    "api_key",
    "call_many",
    "estimate_input_tokens",
    "is_local_url",
    "map_error",
    "merge",
    "retry_after",
]
