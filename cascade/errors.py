"""Every error cascade raises.

::

    CascadeError
    ├── PolicyError                 a policy file or object is invalid (file:line:col: path: message)
    ├── InvalidRequestError         an empty or malformed prompt
    ├── ConfigurationError          a tier cannot be built (missing credentials, unknown model price)
    ├── ProviderError               a model call failed; carries status_code, request_id, transient
    │   ├── TransientProviderError  worth retrying: rate limit, overload, 5xx, timeout, connection
    │   │   ├── RateLimitError      429, with retry_after
    │   │   ├── ProviderTimeoutError    the tier's timeout passed (connect to last byte, all samples)
    │   │   └── InvalidResponseError    a reply that is not a usable answer (unparseable, HTML,
    │   │                               no choices, an error object in a 200, negative usage)
    │   └── PermanentProviderError  not worth retrying: 400, 401, 403, 404, unknown replay prompt
    ├── ScorerError                 a scorer failed (for example the judge's call or its verdict)
    ├── BudgetExceededError         a cap cannot cover the next call (on_budget_exceeded: raise)
    ├── LedgerError                 the spend ledger cannot be used (corrupt, locked, read-only file)
    │   └── LedgerUnavailableError  the ledger cannot be reached now (Redis down, lock timeout)
    ├── CascadeExhaustedError       no tier was accepted (on_exhausted: raise); carries the attempts
    ├── AbstainedError              the run abstained (on_unverified: abstain), raised by the LangChain
    │                               front only (the Python API returns a result); carries the attempts
    └── AllTiersFailedError         every tier failed; carries the attempts
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # types.py imports this module at run time; this one needs these only for typing
    from cascade.types import Attempt, Usage


class CascadeError(Exception):
    """Base class of every cascade error.

    ``attempts`` holds the tiers tried before the error where the run got that far (budget,
    exhaustion and all-failed errors), so nothing spent goes unreported.
    """

    attempts: tuple[Attempt, ...] = ()

    @property
    def spent(self) -> Decimal:
        """What the attempts before the error cost (tier calls and scorers)."""
        return sum((a.total_cost for a in self.attempts), Decimal(0))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready account: the error, the attempts made and what they cost."""
        return {
            "error": f"{type(self).__name__}: {self}",
            "attempts": [a.to_dict() for a in self.attempts],
            "cost": str(self.spent),
        }


class PolicyError(CascadeError):
    """A policy is invalid. ``problems`` lists each one as ``file:line:col: path: message``."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class InvalidRequestError(CascadeError, ValueError):
    """The request cannot be sent (empty prompt, bad messages)."""


class ConfigurationError(CascadeError):
    """A tier cannot be built or called as configured (missing key, no price for a model)."""


class ProviderError(CascadeError):
    """A provider call failed.

    A failed call may still have been billed; two attributes say so, and the engine settles it:
    ``usage`` is what the provider reported for it (a 200 without a usable answer but with a usage
    block: charged at that usage, never above the call's worst case); ``cut_off`` marks a call
    abandoned after the request went out (a timeout while waiting for the answer: charged at the
    call's worst case, so caps never undercount). Neither (a refused connection, a 4xx): $0.
    """

    transient = False
    usage: Usage | None = None
    cut_off: bool = False
    own_words: bool = False  # the message is cascade's own (no provider text, no prompt): never withheld

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status_code: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.provider = provider
        self.status_code = status_code
        self.request_id = request_id
        self.retry_after = retry_after
        self.retries = 0
        super().__init__(message)

    def __str__(self) -> str:
        parts = [super().__str__()]
        if self.status_code is not None:
            parts.append(f"status {self.status_code}")
        if self.request_id:
            parts.append(f"request {self.request_id}")
        return " | ".join(parts) if len(parts) > 1 else parts[0]

    def redacted(self) -> str:
        """This error without its message, which may quote the prompt (a provider's 400 often does):
        the provider, the class, the status, the provider's error type and code, the request id.
        Traces, ``explain()`` and outcome logs show this unless they include texts. An error in
        cascade's own words (``own_words``, e.g. the replay provider's) is shown whole."""
        if self.own_words:
            return str(self)
        reason = getattr(self, "reason", "")  # InvalidResponseError: cascade's own few words
        what = f"invalid response: {reason}" if reason else type(self).__name__
        parts = [f"{self.provider or 'provider'}: {what} (message withheld: include_text is off)"]
        if self.status_code is not None:
            parts.append(f"status {self.status_code}")
        for field in ("type", "code"):
            value = _body_error(self).get(field)
            if isinstance(value, str | int) and str(value):
                parts.append(f"{field} {str(value)[:64]}")
        if self.request_id:
            parts.append(f"request {self.request_id}")
        return " | ".join(parts)


def _body_error(err: BaseException) -> Mapping[str, Any]:
    """The ``error`` object of the provider body behind ``err`` (the SDK exception it was raised from)."""
    cause: BaseException | None = err
    for _ in range(4):
        cause = cause.__cause__ if cause is not None else None
        body = getattr(cause, "body", None)
        if isinstance(body, Mapping):
            inner = body.get("error", body)
            return inner if isinstance(inner, Mapping) else {}
    return {}


def error_text(err: BaseException, include_text: bool) -> str:
    """``err`` for an outcome log row: ``Class: message``, with provider messages withheld (they
    may quote the prompt) unless ``include_text``."""
    if include_text:
        return f"{type(err).__name__}: {err}"
    if isinstance(err, ProviderError):
        return f"{type(err).__name__}: {err.redacted()}"
    attempts = getattr(err, "attempts", None)
    if isinstance(err, AllTiersFailedError) and attempts:
        tiers = "; ".join(f"{a.tier}: {a.reason}" for a in attempts)
        return f"{type(err).__name__}: every tier failed: {tiers}"
    return f"{type(err).__name__}: {err}"


class TransientProviderError(ProviderError):
    """A failure worth retrying (rate limit, overload, server error, timeout, connection)."""

    transient = True


class RateLimitError(TransientProviderError):
    """HTTP 429; ``retry_after`` (seconds) when the server said."""


class ProviderTimeoutError(TransientProviderError):
    """The call exceeded the tier's timeout."""


class InvalidResponseError(TransientProviderError):
    """The provider answered, but not with a usable answer: a body that does not parse, an HTML
    page, no (or empty) choices or content blocks, an error object with status 200, negative token
    counts. ``reason`` says which, in a few words. Retried (a bad gateway or a glitch may pass), then
    the cascade escalates with ``error: InvalidResponseError`` as the reason.
    """

    def __init__(self, message: str, *, reason: str = "", **kw: Any) -> None:
        self.reason = reason
        super().__init__(message, **kw)


class PermanentProviderError(ProviderError):
    """A failure that retrying will not fix (bad request, auth, unknown model, unknown prompt)."""


class ScorerError(CascadeError):
    """A scorer could not score (its own call failed, or its verdict could not be parsed).

    ``cost`` is what the scorer spent before failing (a judge whose verdict did not parse was
    still billed); the engine adds it to the attempt's cost and settles it against the caps.
    """

    def __init__(self, message: str, *, cost: Decimal = Decimal(0)) -> None:
        super().__init__(message)
        self.cost = cost


class BudgetExceededError(CascadeError):
    """A spend cap cannot cover the next call."""

    def __init__(
        self,
        message: str,
        *,
        cap: str = "",
        needed: Decimal | None = None,
        available: Decimal | None = None,
        attempts: Sequence[Attempt] = (),
    ) -> None:
        self.cap = cap
        self.needed = needed
        self.available = available
        self.attempts = tuple(attempts)
        super().__init__(message)


class LedgerError(CascadeError):
    """The spend ledger cannot be used; the message names it and what to do. ``ledger`` names it."""

    def __init__(self, message: str, *, ledger: str = "") -> None:
        self.ledger = ledger
        super().__init__(message)


class LedgerUnavailableError(LedgerError):
    """The ledger cannot be reached right now (a server down, a lock held too long): worth a retry."""


class CascadeExhaustedError(CascadeError):
    """No tier's answer was accepted and the policy says to raise."""

    def __init__(self, message: str, attempts: Sequence[Attempt]) -> None:
        self.attempts = tuple(attempts)
        super().__init__(message)


class AbstainedError(CascadeError):
    """The run abstained (``on_unverified: abstain``): no tier's answer was accepted, so none is
    given. Raised by the LangChain front (unless it has an ``abstain_message``); ``reason`` says why,
    ``attempts`` (and :attr:`spent`) what was spent. The Python API returns the abstention as a
    result (``result.abstained``) instead."""

    def __init__(self, message: str, attempts: Sequence[Attempt], reason: str = "") -> None:
        self.attempts = tuple(attempts)
        self.reason = reason
        super().__init__(message)


class AllTiersFailedError(CascadeError):
    """Every tier failed with an error; ``attempts`` holds each failure."""

    def __init__(self, message: str, attempts: Sequence[Attempt]) -> None:
        self.attempts = tuple(attempts)
        super().__init__(message)
