"""A policy's parts: tiers (providers, scorers, prices), budget and observer, ready for a Cascade.

:meth:`Cascade.from_policy <cascade.engine.cascade.Cascade.from_policy>` and
:func:`cascade.engine.build.build` both go through :func:`assemble`; this module does not know the
:class:`~cascade.engine.cascade.Cascade` class (no import circle), and ``import cascade`` stays
light: policy parsing (pydantic, YAML) is only loaded when a policy is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cascade import observe, registry
from cascade.budget import Budget, Cap
from cascade.engine.actions import Tier
from cascade.engine.latency import HedgeAfter
from cascade.engine.loop import OnExhausted, OnUnverified
from cascade.engine.reuse import ReusingProvider, call_key
from cascade.errors import ConfigurationError
from cascade.money import FREE, Price
from cascade.policy import loader
from cascade.policy.schema import LedgerSpec, Policy, ScorerSpec, TierSpec
from cascade.protocols import Ledger, Provider, Scorer, SkipEstimator
from cascade.retry import RetryPolicy

if TYPE_CHECKING:
    from cascade.observe import Observer


@dataclass
class BuildContext:
    """What provider and scorer factories may use while a policy is built.

    ``base_dir`` resolves relative paths in options (recorded-outcomes files, classifier
    artifacts). ``tier`` is the tier being built (a judge or classifier may need its model).
    ``overrides`` maps tier names to ready provider objects (a LangChain model passed in Python).
    """

    base_dir: Path
    tier: TierSpec | None = None
    overrides: dict[str, Provider] = field(default_factory=dict)

    def path(self, value: str) -> Path:
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else self.base_dir / p

    def build_provider(self, spec: TierSpec) -> Provider:
        """The provider ``spec`` names, for a scorer (a mixture source, a judge): within a run it
        reuses samples already bought from the same call (:mod:`cascade.engine.reuse`).

        A scorer asking for more samples of its own tier's call (a mixture source identical to the
        tier) wants other votes than the tier's: those stay a call of their own.
        """
        key = self.call_key(spec)
        if self.tier is not None and spec.name != self.tier.name and key == self.call_key(self.tier):
            key += f"|votes:{spec.name}"
        return ReusingProvider(self.make_provider(spec), key)

    def make_provider(self, spec: TierSpec) -> Provider:
        """The provider ``spec`` names, as is (a tier's: the engine reuses tier calls itself)."""
        if spec.name in self.overrides:
            return self.overrides[spec.name]
        cls = registry.PROVIDERS.get(spec.provider)
        options = cls.Options.model_validate(spec.options)
        provider: Provider = cls.from_config(spec, options, self)
        return provider

    def call_key(self, spec: TierSpec) -> str:
        """What makes a call of ``spec`` the same call as another's (provider, model, options, params)."""
        kind = spec.provider
        if spec.name in self.overrides:  # a provider object passed in Python is its own kind
            kind = f"object:{id(self.overrides[spec.name])}"
        return call_key(kind, spec.model, spec.options, spec.params.model_dump(mode="json"))

    def skip_estimator(self, spec: TierSpec) -> SkipEstimator | None:
        """The prompt-only estimator of the tier's ``skip:`` (loaded from its artifact), if any."""
        if spec.skip is None:
            return None
        from cascade.learn.classifier import check_trained_for  # numpy: only when a tier skips
        from cascade.learn.estimator import load_prompt_estimator

        path = self.path(spec.skip.artifact)
        estimator = load_prompt_estimator(path)
        check_trained_for(estimator.classifier, str(path), model=spec.model)
        return estimator

    def build_scorer(self, spec: ScorerSpec) -> Scorer:
        cls = registry.SCORERS.get(spec.kind)
        options = cls.Options.model_validate(spec.options)
        scorer: Scorer = cls.from_config(options, self)
        return scorer

    def price(self, spec: TierSpec, provider: Provider) -> Price:
        """Tier price > the provider's own (e.g. a recorded file's card) > built-in table > free."""
        if spec.price is not None:
            p = spec.price
            cached, write = p.cached_input, p.cache_write
            # a provider that bills cache tokens at set multiples of input fills in what is unset
            read_x, write_x = getattr(provider, "cache_multipliers", (None, None))
            if cached is None and read_x is not None:
                cached = p.input * read_x
            if write is None and write_x is not None:
                write = p.input * write_x
            return Price(p.input, p.output, cached, write)
        own = getattr(provider, "default_price", None)
        if isinstance(own, Price):
            return own
        from cascade.price_table import lookup

        known = lookup(spec.provider, spec.model)
        if known is not None:
            return known
        if spec.free or getattr(provider, "free", False):
            return FREE
        raise ConfigurationError(
            f"tier {spec.name!r}: no price known for model {spec.model!r}; "
            "set `price: {input: ..., output: ...}` (USD per million tokens) or `free: true`"
        )


@dataclass(frozen=True)
class Parts:
    """What :class:`~cascade.engine.cascade.Cascade` is made of, built from a policy."""

    tiers: list[Tier]
    name: str
    budget: Budget
    on_exhausted: OnExhausted
    include_text: bool
    observer: Observer | None
    on_unverified: OnUnverified = "answer"


def assemble(
    policy: Policy | str | os.PathLike[str],
    *,
    ledger: Ledger | None = None,
    providers: dict[str, Any] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> Parts:
    """Build a cascade's parts from a policy object or file.

    ``ledger`` replaces the policy's ledger; ``providers`` maps tier names to provider objects
    (or LangChain chat models) to use instead of building them from the policy.
    """
    if not isinstance(policy, Policy):
        path = Path(policy)
        base = Path(base_dir) if base_dir is not None else path.parent
        policy = loader.load(path)
    else:
        base = Path(base_dir) if base_dir is not None else Path.cwd()
    specs = {t.name: t for t in policy.tiers}
    capped = policy.budget.per_request is not None or bool(policy.budget.caps)
    overrides = {k: _as_provider(v, specs.get(k)) for k, v in (providers or {}).items()}
    ctx = BuildContext(base, overrides=overrides)
    tiers = []
    for spec in policy.tiers:
        ctx.tier = spec
        provider = ctx.make_provider(spec)
        if capped and not spec.free and getattr(provider, "bounded", True) is False:  # LangChain tiers
            raise ConfigurationError(f"tier {spec.name!r}: {getattr(provider, 'unbounded', '')}")
        scorer = ctx.build_scorer(spec.scorer) if spec.scorer is not None else None
        r = spec.retry
        tiers.append(
            Tier(
                name=spec.name,
                provider=provider,
                price=ctx.price(spec, provider),
                scorer=scorer,
                threshold=spec.threshold,
                retry=RetryPolicy(r.attempts, r.initial, r.max_wait, r.jitter, r.max_retry_after),
                provider_kind=spec.provider,
                max_tokens=_max_tokens(provider, spec, ctx),
                reserve_output_tokens=spec.reserve.output_tokens if spec.reserve else None,
                call_key=ctx.call_key(spec),
                skip=ctx.skip_estimator(spec),
                skip_threshold=spec.skip.threshold if spec.skip is not None else 0.0,
                hedge=HedgeAfter.parse(spec.hedge.after) if spec.hedge is not None else None,
            )
        )
    ctx.tier = None
    b = policy.budget
    caps = tuple(Cap(c.limit, c.window, c.scope) for c in b.caps)
    if ledger is None and caps:
        ledger = _ledger(b.ledger or LedgerSpec(), policy.name, ctx)
    budget = Budget(
        b.per_request,
        caps,
        b.on_exceeded,
        ledger,
        b.hold_ttl,
        max_wait=b.max_wait,
        on_ledger_error=b.on_ledger_error,
    )
    return Parts(
        tiers,
        name=policy.name,
        budget=budget,
        on_exhausted=policy.on_exhausted,
        include_text=policy.logging.include_text,
        observer=observe.from_policy(policy, tiers, base, ledger=ledger),
        on_unverified=policy.on_unverified,
    )


def _ledger(spec: LedgerSpec, policy: str, ctx: BuildContext) -> Ledger:
    """The policy's ledger; nothing is opened or created until the first reservation."""
    cls = registry.LEDGERS.get(spec.kind)
    if spec.kind == "sqlite":
        ledger: Ledger = cls(ctx.path(spec.path) if spec.path else None, lock_timeout=spec.lock_timeout)
    elif spec.kind == "redis":
        ledger = cls(
            spec.url,
            prefix=spec.prefix or "cascade:" + policy.replace("{", "").replace("}", ""),
            on_expired_hold=spec.on_expired_hold or "charge",
        )
    else:
        ledger = cls()
    return ledger


def _max_tokens(provider: Provider, spec: TierSpec, ctx: BuildContext) -> int:
    """The tier's output-token bound: a chat model passed in may bring its own (see _as_provider)."""
    own = getattr(provider, "max_tokens", None) if spec.name in ctx.overrides else None
    return own if isinstance(own, int) and not isinstance(own, bool) else spec.params.max_tokens


def _as_provider(obj: Any, spec: TierSpec | None = None) -> Provider:
    if isinstance(obj, Provider):
        return obj
    try:
        from langchain_core.language_models import BaseChatModel
    except ImportError:  # pragma: no cover - langchain-core is a dependency
        BaseChatModel = ()  # type: ignore[assignment,misc]  # noqa: N806
    if isinstance(obj, BaseChatModel):
        from cascade.providers.langchain import LangChainProvider

        if spec is None:
            return LangChainProvider(obj)
        # the policy's max_tokens bounds budget reservations when set, else the model's own setting
        set_here = "max_tokens" in spec.params.model_fields_set
        return LangChainProvider(
            obj,
            max_tokens=spec.params.max_tokens if set_here else None,
            stop=spec.params.stop,
            timeout=spec.timeout,  # the tier's deadline bounds a passed-in model's whole call too
        )
    raise TypeError(f"not a provider or LangChain chat model: {obj!r}")


__all__ = ["BuildContext", "Parts", "assemble"]
