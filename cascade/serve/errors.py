"""The gateway's errors, in OpenAI's shape (``{"error": {message, type, param, code}}``) and codes.

:func:`from_cascade` is the one place a :class:`~cascade.errors.CascadeError` becomes an HTTP status:

=====================================  ======  ==========================================
error                                  status  note
=====================================  ======  ==========================================
InvalidRequestError                    400
BudgetExceededError                    429     ``Retry-After``: seconds until the cap's window ends
LedgerUnavailableError                 503     ``Retry-After: 1``
AllTiersFailedError / Exhausted        502     every tier failed, or none was accepted
an abstention (``abstain_as: error``)  422     ``x-should-retry: false``; the cascade's facts
the gateway's deadline passed          504
anything else                          500
=====================================  ======  ==========================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cascade.errors import (
    AllTiersFailedError,
    BudgetExceededError,
    CascadeError,
    CascadeExhaustedError,
    InvalidRequestError,
    LedgerUnavailableError,
)

_NO_RETRY_AFTER_S = 60  # the OpenAI SDKs retry a 429 by themselves; past this wait they should not


@dataclass(frozen=True)
class ApiError(Exception):
    """An error response: status, OpenAI's error object and extra headers."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def __str__(self) -> str:
        return f"{self.status} {self.code or self.type}: {self.message}"


def retry_after(err: BudgetExceededError, now: datetime | None = None) -> int | None:
    """Seconds until the refusing cap's window ends (None: a per-request or all-time cap)."""
    from cascade.budget import window_end

    end = window_end(err.cap) if "|" in err.cap else None
    if end is None:
        return None
    return max(1, math.ceil((end - (now or datetime.now(UTC))).total_seconds()))


def from_cascade(err: CascadeError) -> ApiError:
    """The error response for a cascade error (see the module docstring)."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if isinstance(err, InvalidRequestError):
        return ApiError(400, text, "invalid_request_error", "messages", "invalid_value")
    if isinstance(err, BudgetExceededError):
        wait = retry_after(err)
        headers = {"retry-after": str(wait)} if wait is not None else {}
        if wait is None or wait > _NO_RETRY_AFTER_S:
            headers["x-should-retry"] = "false"
        return ApiError(429, text, "insufficient_quota", None, "budget_exceeded", headers)
    if isinstance(err, LedgerUnavailableError):
        return ApiError(503, text, "server_error", None, "ledger_unavailable", {"retry-after": "1"})
    if isinstance(err, AllTiersFailedError):
        return ApiError(502, text, "server_error", None, "all_tiers_failed")
    if isinstance(err, CascadeExhaustedError):
        return ApiError(502, text, "server_error", None, "cascade_exhausted")
    return ApiError(500, f"{type(err).__name__}: {text}", "server_error", None, "internal_error")


def abstained(why: str, headers: dict[str, str]) -> ApiError:
    """An abstention sent as an error (the gateway's ``abstain_as="error"``): 422, never retried
    (a retry pays again for the same unverified answers); ``headers``: the cascade's facts."""
    return ApiError(
        422,
        f"the cascade abstained: {why}",
        "invalid_request_error",
        None,
        "abstained",
        {**headers, "x-should-retry": "false"},
    )


def deadline(seconds: float) -> ApiError:
    return ApiError(
        504, f"no answer within the gateway's deadline ({seconds:g}s)", "server_error", None, "timeout"
    )


__all__ = ["ApiError", "abstained", "deadline", "from_cascade", "retry_after"]
