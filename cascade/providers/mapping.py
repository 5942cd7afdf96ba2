"""SDK errors in cascade's words, at the edge: :func:`map_error` for an SDK (or unwrapped HTTP)
exception, :func:`invalid` for a 200 whose body is not a usable answer, and :func:`mapped`, the one
context manager that applies them to sync and async calls alike."""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import time
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any, TypeVar

import httpcore2
import httpx2

from cascade.errors import (
    InvalidResponseError,
    PermanentProviderError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    TransientProviderError,
)
from cascade.types import Usage

E = TypeVar("E", bound=BaseException)


class ResponseTooLarge(httpx2.HTTPError):
    """A response body passed the size limit while being read."""


UNPARSEABLE: tuple[type[Exception], ...] = (json.JSONDecodeError, UnicodeDecodeError)
"""What an SDK raises for a body that is not JSON (or not UTF-8) although it says it is."""


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


def _cause(exc: BaseException, kind: type[E]) -> E | None:
    """``exc`` or the first of its causes that is a ``kind``."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None or isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
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


WIRE_ERRORS: tuple[type[Exception], ...] = (httpx2.HTTPError,)
"""HTTP errors an SDK lets through unwrapped (raised while a streamed body is read)."""

STREAM_GARBAGE: tuple[type[Exception], ...] = (
    AssertionError,
    AttributeError,
    TypeError,
    ValueError,
    KeyError,
    IndexError,
    RuntimeError,
)
"""What an SDK's stream accumulator raises on events that are not what it expects (JSON instead of
server-sent events, events out of order): the stream does not parse."""


def map_error(exc: BaseException, *, provider: str, sdk: ModuleType) -> ProviderError:
    """The cascade error for an SDK (or unwrapped HTTP) exception (the caller raises it ``from exc``)."""
    name = type(exc).__name__
    too_large = _cause(exc, ResponseTooLarge)
    if too_large is not None:  # refused unread: the server had generated it whole, so it may be billed
        refused = PermanentProviderError(f"{provider}: {too_large} (max_response_bytes)", provider=provider)
        refused.cut_off = True
        return refused
    if _is_cassette_miss(exc):
        return PermanentProviderError(
            f"{provider}: request not found in the cassette (re-record it; see cassettes/README.md)",
            provider=provider,
        )
    if isinstance(exc, httpx2.TimeoutException | sdk.APITimeoutError):
        return _timed_out(exc, provider)
    if isinstance(exc, httpx2.HTTPError):
        return TransientProviderError(f"{provider}: connection error ({name})", provider=provider)
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
        if 200 <= status < 300:  # an error event inside a streamed 200
            return invalid(provider, "error event in the stream", _message(exc), request_id=rid)
        should = (headers.get("x-should-retry") or "").lower()
        if status == 429 and _error_code(exc) != "insufficient_quota" and should != "false":
            return RateLimitError(message, **kw)
        if should == "true" or (should != "false" and (status in (408, 409) or status >= 500)):
            return TransientProviderError(message, **kw)
        return PermanentProviderError(message, **kw)
    if isinstance(exc, sdk.APIError):  # an error the server sent inside a 200 (a stream's error event)
        return invalid(provider, "error event in the stream", _message(exc))
    return PermanentProviderError(f"{provider}: {name}: {str(exc)[:300]}", provider=provider)


def _timed_out(exc: BaseException, provider: str) -> ProviderTimeoutError:
    """A timeout; ``cut_off`` unless it happened before the request went out (connect, pool).

    A call abandoned while the server may be generating can be billed: the engine charges it at
    the call's worst case. One that never connected cannot be.
    """
    err = ProviderTimeoutError(f"{provider}: request timed out", provider=provider)
    cause: BaseException | None = exc
    before_sending = False
    for _ in range(4):  # the SDK's timeout wraps httpx's, which may wrap httpcore's
        if cause is None:
            break
        if isinstance(cause, httpx2.ConnectTimeout | httpx2.PoolTimeout | httpcore2.ConnectTimeout):
            before_sending = True
            break
        cause = cause.__cause__ or cause.__context__
    err.cut_off = not before_sending
    return err


def invalid(
    provider: str,
    reason: str,
    detail: str = "",
    *,
    request_id: str | None = None,
    usage: Usage | None = None,
) -> InvalidResponseError:
    """The error for a 200 whose body is not a usable answer (``reason``: a few words).

    ``usage``: what the body reported it used (billed although unusable); negative counts are ignored.
    """
    text = f"{provider}: invalid response: {reason}" + (f" ({detail[:200]})" if detail else "")
    err = InvalidResponseError(text, reason=reason, provider=provider, status_code=200, request_id=request_id)
    counts = () if usage is None else (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens)
    if usage is not None and min(*counts, usage.cache_creation_tokens) >= 0 and usage != Usage():
        err.usage = usage
    return err


def error_object(body_extra: Mapping[str, Any] | None) -> str | None:
    """The message of an ``error`` object found in a 200 body, if there is one."""
    err = (body_extra or {}).get("error")
    if err is None:
        return None
    if isinstance(err, Mapping):
        kind, message = err.get("type") or err.get("code"), err.get("message")
        text = f"{kind}: {message}" if isinstance(kind, str) and kind else str(message)
        return text[:200]
    return str(err)[:200]


@contextlib.contextmanager
def mapped(
    provider: str, sdk: ModuleType, errors: tuple[type[Exception], ...], *, streaming: bool
) -> Iterator[None]:
    """The one mapping of an SDK's failures, for sync and async calls alike (as httpx maps transport
    errors): its ``errors`` made :class:`ProviderError` subclasses (:func:`map_error`), a stream
    (``streaming``) or a body that does not parse an :class:`InvalidResponseError`; cascade's own
    errors pass through, anything else is a bug and propagates."""
    try:
        yield
    except ProviderError:
        raise
    except Exception as exc:
        if isinstance(exc, errors):
            raise map_error(exc, provider=provider, sdk=sdk) from exc
        if streaming and isinstance(exc, STREAM_GARBAGE):
            raise invalid(provider, "stream does not parse", f"{type(exc).__name__}: {exc}") from exc
        if isinstance(exc, UNPARSEABLE):
            raise invalid(provider, "body does not parse", f"{type(exc).__name__}: {exc}") from exc
        raise
