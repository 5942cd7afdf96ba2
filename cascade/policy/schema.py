"""The policy model: what a YAML policy file may say, validated by pydantic.

Provider and scorer *options* are validated in a second step against the options model the
registered provider or scorer declares (see :mod:`cascade.policy.loader`), so third-party
plugins get the same strict checking and file:line errors as built-ins.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from cascade.durations import parse_hedge_after
from cascade.registry import PROVIDERS, SCORERS, suggest


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GenerationParams(Strict):
    """Generation parameters sent with every call of the tier."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int = Field(1024, ge=1, description="Maximum output tokens per sample.")
    stop: list[str] | None = None
    seed: int | None = None
    extra: dict[str, Any] = Field(
        default_factory=dict, description="Provider-specific parameters passed through as-is."
    )


class PriceSpec(Strict):
    """USD per million tokens."""

    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cached_input: Decimal | None = Field(None, ge=0)
    cache_write: Decimal | None = Field(None, ge=0)


class RetrySpec(Strict):
    """Retries of transient errors (rate limits, overload, 5xx, timeouts)."""

    attempts: int = Field(3, ge=1, le=20, description="Total tries including the first.")
    initial: float = Field(0.5, ge=0, description="First backoff in seconds.")
    max_wait: float = Field(8.0, ge=0, allow_inf_nan=False, description="Backoff cap in seconds.")
    jitter: float = Field(0.5, ge=0)
    max_retry_after: float = Field(
        30.0, ge=0, allow_inf_nan=False, description="Cap on a server's retry-after."
    )

    def longest(self, timeout: float) -> float:
        """The longest a call with these retries can take (:meth:`RetryPolicy.longest`)."""
        from cascade.retry import RetryPolicy

        policy = RetryPolicy(self.attempts, self.initial, self.max_wait, self.jitter, self.max_retry_after)
        return policy.longest(timeout)


class ScorerSpec(BaseModel):
    """A scorer: ``kind`` names it; the other keys are that scorer's options."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: str

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        if v not in SCORERS.names():
            raise PydanticCustomError(
                "unknown_scorer",
                f"unknown scorer {v!r}{suggest(v, SCORERS.names())}",
            )
        return v

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ReserveSpec(Strict):
    """What a tier reserves per call when that is less than its worst case."""

    output_tokens: int = Field(
        ge=1,
        description="Output tokens reserved per sample (e.g. the p99 of observed usage) instead of"
        " max_tokens; a longer answer is still charged in full, so a cap can be overshot by the difference.",
    )


class SkipSpec(Strict):
    """Ex-ante skip: a prompt-only estimator decides, before the call, whether to call the tier."""

    artifact: str = Field(
        min_length=1,
        description="Prompt-only estimator (JSON) written by `cascade train-scorer --prompt-only`.",
    )
    threshold: float = Field(
        ge=0, le=1, description="Skip the tier when the estimate that its answer would be good is below this."
    )


class HedgeSpec(Strict):
    """Hedged escalation: start the next tier in parallel when this tier has no verdict in time."""

    after: str | float = Field(
        description="Seconds (`1.5s`, `800ms`, `1.5`) or a quantile of the tier's observed call latency"
        " (`p90`: kept in memory per Cascade over its last 128 calls; no hedge before 20 calls)."
    )

    @field_validator("after")
    @classmethod
    def _after(cls, v: str | float) -> str | float:
        parse_hedge_after(v)  # raises ValueError with a one-line reason
        return v


class TierSpec(Strict):
    """One rung of the cascade."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    provider: str
    model: str = Field(min_length=1)
    params: GenerationParams = GenerationParams()
    price: PriceSpec | None = Field(None, description="Overrides the built-in price table for this model.")
    free: bool = Field(False, description="Mark a model without a price as costing nothing.")
    timeout: float = Field(
        60.0,
        gt=0,
        allow_inf_nan=False,
        description="Seconds per call: a deadline for the whole call (connect to last byte, all samples).",
    )
    retry: RetrySpec = RetrySpec()
    reserve: ReserveSpec | None = Field(
        None, description="Reserve less than the worst case per call (max_tokens is still sent as the bound)."
    )
    scorer: ScorerSpec | None = None
    threshold: float | None = Field(None, ge=0, le=1)
    skip: SkipSpec | None = Field(None, description="Skip this tier when a prompt-only estimate is low.")
    hedge: HedgeSpec | None = Field(
        None, description="Start the next tier in parallel when this tier has no verdict by `after` (arun)."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Provider options (base_url, api_key_env, path, ...)."
    )

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, v: str) -> str:
        if v not in PROVIDERS.names():
            raise PydanticCustomError(
                "unknown_provider",
                f"unknown provider {v!r}{suggest(v, PROVIDERS.names())}",
            )
        return v

    @model_validator(mode="after")
    def _threshold_needs_scorer(self) -> TierSpec:
        if self.threshold is not None and self.scorer is None:
            raise PydanticCustomError("threshold_without_scorer", "a threshold needs a scorer")
        if self.scorer is not None and self.threshold is None:
            raise PydanticCustomError("scorer_without_threshold", "a scorer needs a threshold")
        return self


class CapSpec(Strict):
    """A spend cap over a time window, on the whole policy or per caller key."""

    limit: Decimal = Field(gt=0, description="USD.")
    window: Literal["day", "month", "total"]
    scope: Literal["policy", "key"] = Field(
        "policy", description="'key' caps each caller key (tenant, user) separately."
    )


class LedgerSpec(Strict):
    kind: Literal["memory", "sqlite", "redis"] = "sqlite"
    path: str | None = Field(
        None, description="SQLite file; default $CASCADE_LEDGER or ~/.cascade/ledger.sqlite3."
    )
    lock_timeout: float = Field(
        5.0, gt=0, le=3600, description="SQLite: seconds to wait for another process's write lock."
    )
    url: str | None = Field(None, description="Redis: redis:// or rediss:// URL, e.g. ${CASCADE_REDIS_URL}.")
    prefix: str | None = Field(
        None,
        pattern=r"^[^{}]+$",
        description="Redis: key prefix and Cluster hash tag; default cascade:<policy name> (policies of one"
        " name share their buckets).",
    )
    on_expired_hold: Literal["charge", "release"] | None = Field(
        None,
        description="Redis: a hold that expires unsettled (a worker killed mid-call): charge (default) its"
        " amount, replaced by the real cost if it settles late; release returns its room, charging nothing.",
    )

    @field_validator("url")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        """redis-py reads a database that is not a number (``/abc``, ``?db=x``) as db 0, silently."""
        if v is None:
            return v
        from urllib.parse import parse_qs, unquote, urlparse

        url = urlparse(v)
        if url.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"a redis url starts with redis://, rediss:// or unix:// (got {url.scheme or v!r})"
            )
        dbs = parse_qs(url.query).get("db", [])
        if url.scheme != "unix" and url.path not in ("", "/"):
            dbs.append(unquote(url.path).removeprefix("/"))
        for db in dbs:
            if not db.isdigit():
                raise ValueError(
                    f"the redis database must be a number, e.g. redis://host:6379/0 (got {db!r})"
                )
        return v

    @model_validator(mode="after")
    def _options_fit_kind(self) -> LedgerSpec:
        if self.kind == "redis" and not self.url:
            raise PydanticCustomError(
                "redis_url", "a redis ledger needs a url (e.g. url: ${CASCADE_REDIS_URL})"
            )
        if self.kind != "redis" and (
            self.url is not None or self.prefix is not None or self.on_expired_hold is not None
        ):
            raise PydanticCustomError(
                "ledger_option", "url, prefix and on_expired_hold are options of kind: redis"
            )
        if self.kind != "sqlite" and self.path is not None:
            raise PydanticCustomError("ledger_option", "path is an option of kind: sqlite")
        return self


class BudgetSpec(Strict):
    per_request: Decimal | None = Field(None, gt=0, description="USD cap on one run.")
    caps: list[CapSpec] = Field(default_factory=list)
    on_exceeded: Literal["stop", "raise", "wait"] = Field(
        "stop",
        description="stop: return the best answer so far with reason 'budget'; raise: raise;"
        " wait: queue the reservation up to max_wait seconds for in-flight holds to settle, then stop.",
    )
    max_wait: float = Field(
        30.0, gt=0, le=3600, description="on_exceeded: wait: seconds a reservation may wait."
    )
    on_ledger_error: Literal["fail_closed", "fail_open"] = Field(
        "fail_closed",
        description="When the ledger is unreachable: fail_closed makes no call; fail_open lets calls go on"
        " and journals their spend until the ledger is back.",
    )
    ledger: LedgerSpec | None = None
    hold_ttl: float = Field(
        600.0,
        gt=0,
        allow_inf_nan=False,
        description="Seconds before an unsettled hold expires; must outlive every tier's longest call"
        " (its timeout, which ends every try and every wait between tries).",
    )


class OutcomeLogSpec(Strict):
    """Append every run to an outcome log (recorded-outcomes rows, rotated daily)."""

    path: str = Field(description="Base file, e.g. logs/outcomes.jsonl (written as outcomes-DATE.jsonl).")
    include_text: bool = Field(False, description="Store prompt and answer texts (off: a hash and lengths).")
    queue_size: int = Field(10_000, ge=1, description="Rows queued for the writer before new ones drop.")


class LoggingSpec(Strict):
    include_text: bool = Field(False, description="Log prompt and answer text in events (off: never logged).")
    outcomes: OutcomeLogSpec | None = None
    prometheus: bool = Field(False, description="Record Prometheus metrics (needs the prometheus extra).")
    otel: bool = Field(
        False,
        description="OpenTelemetry spans of every run, tier call and scorer call (needs the otel extra);"
        " texts only with include_text.",
    )


class ShadowCapSpec(Strict):
    limit: Decimal = Field(gt=0, description="USD of shadow calls per window.")
    window: Literal["day", "month", "total"] = "day"


class ShadowSpec(Strict):
    """Call the tiers a sampled request did not call, in the background, for complete log rows."""

    rate: float = Field(ge=0, le=1, description="Share of requests shadowed (e.g. 0.02).")
    cap: ShadowCapSpec | None = Field(None, description="Shadow spend cap, apart from the policy budget.")


class SessionSpec(Strict):
    """Session pinning: a session that escalated starts at that tier until ``ttl`` ends."""

    pin: Literal["escalated"] = "escalated"
    ttl: str | float = Field("30m", description="Seconds, or a duration like 30m, 2h, 1d.")

    @field_validator("ttl")
    @classmethod
    def _duration(cls, v: str | float) -> str | float:
        from cascade.durations import parse_duration

        parse_duration(v)
        return v


class TunedSpec(Strict):
    """Written by ``cascade tune``: the recorded outcomes and split it tuned on, so ``cascade eval``
    measures the held-out part by default. The live engine ignores it."""

    data: str = Field(description="The recorded-outcomes file (relative to the policy file, or absolute).")
    split: Literal["auto", "file", "seed"] = Field("auto", description="The train/test split rule.")
    seed: int = Field(0, description="Seed of the split (and of any randomised boundary).")
    test_fraction: float = Field(0.5, gt=0, lt=1, description="Held-out share with a seeded split.")


class Policy(Strict):
    """A cascade policy: tiers cheapest first, budget, and what to do when nothing is accepted."""

    name: str = Field(min_length=1)
    description: str = ""
    tiers: list[TierSpec] = Field(min_length=1)
    budget: BudgetSpec = BudgetSpec()
    on_exhausted: Literal["return_last", "return_best", "raise"] = Field(
        "return_best",
        description="When no tier is accepted: return the last answer, the best-scored one, or raise.",
    )
    on_unverified: Literal["answer", "abstain"] = Field(
        "answer",
        description="When no tier is accepted: `answer` (per on_exhausted) or `abstain`: return no"
        " answer, with its reason and cost. Needs a scorer and threshold on the last tier.",
    )
    logging: LoggingSpec = LoggingSpec()
    shadow: ShadowSpec | None = None
    session: SessionSpec | None = None
    tuned: TunedSpec | None = Field(None, description="Set by cascade tune: its data and split.")

    def identity(self) -> str:
        """A short hash of what decides this policy's runs (all but ``description`` and
        ``logging``): outcome-log rows carry it, so ``cascade report`` compares like with like."""
        import hashlib
        import json

        doc = self.model_dump(mode="json", exclude={"description", "logging"})
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]

    @model_validator(mode="after")
    def _check_tiers(self) -> Policy:
        seen: set[str] = set()
        for i, tier in enumerate(self.tiers):
            if tier.name in seen:  # ctx "loc": where the loader points (a model error has no field)
                raise PydanticCustomError(
                    "duplicate_tier", f"duplicate tier name {tier.name!r}", {"loc": ("tiers", i, "name")}
                )
            seen.add(tier.name)
        for tier in self.tiers[:-1]:
            if tier.scorer is None:
                raise PydanticCustomError(
                    "missing_scorer",
                    f"tier {tier.name!r} is not the last tier, so it needs a scorer and a threshold",
                )
        last = self.tiers[-1]
        if self.on_unverified == "abstain" and last.scorer is None:
            raise PydanticCustomError(
                "abstain_without_scorer",
                f"abstain needs a scorer and a threshold on the last tier {last.name!r}"
                " (its answer is scored, and below the threshold the run abstains)",
                {"loc": ("on_unverified",)},
            )
        if self.on_unverified == "abstain" and self.on_exhausted == "raise":
            raise PydanticCustomError(
                "abstain_and_raise",
                "abstain and on_exhausted: raise disagree: choose one",
                {"loc": ("on_unverified",)},
            )
        if self.tiers[-1].hedge is not None:
            raise PydanticCustomError(
                "hedge_on_last_tier",
                f"tier {self.tiers[-1].name!r} is the last tier: it has no next tier to hedge with",
                {"loc": ("tiers", len(self.tiers) - 1, "hedge")},
            )
        if self.tiers[-1].skip is not None:
            raise PydanticCustomError(
                "skip_on_last_tier",
                f"tier {self.tiers[-1].name!r} is the last tier: it cannot be skipped",
                {"loc": ("tiers", len(self.tiers) - 1, "skip")},
            )
        return self

    @model_validator(mode="after")
    def _shadow_is_logged(self) -> Policy:
        """Shadow calls are paid for so that the outcome log holds complete rows: without a log
        they would buy answers nobody keeps."""
        if self.shadow is not None and self.shadow.rate > 0 and self.logging.outcomes is None:
            raise PydanticCustomError(
                "shadow_without_log",
                "shadow sampling needs logging.outcomes: its calls are paid for and their answers are"
                " only kept in the outcome log",
                {"loc": ("shadow",)},
            )
        return self

    @model_validator(mode="after")
    def _holds_outlive_calls(self) -> Policy:
        """A hold that expires mid-call frees its money while the call may still be billed."""
        if not self.budget.caps:
            return self
        from cascade.budget import hold_ttl_problem

        problem = hold_ttl_problem(
            self.budget.hold_ttl, [(t.name, t.retry.longest(t.timeout)) for t in self.tiers]
        )
        if problem is not None:
            raise PydanticCustomError("hold_ttl_too_short", problem, {"loc": ("budget", "hold_ttl")})
        return self
