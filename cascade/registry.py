"""Name -> implementation maps for providers, scorers and ledgers.

Built-ins are registered as import paths (nothing is imported until used, so ``import cascade``
stays light). Third parties register through entry points in the groups ``cascade.providers``,
``cascade.scorers`` and ``cascade.ledgers`` (value ``package.module:Class``), or at run time with
``PROVIDERS.register("name", MyProvider)``.

A provider class has an ``Options`` pydantic model and a classmethod
``from_config(tier: TierSpec, options, ctx: BuildContext) -> Provider``; a scorer class has an
``Options`` model and ``from_config(options, ctx: BuildContext) -> Scorer``.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any


def suggest(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for a near miss, else a list of what is valid."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (expected one of: {', '.join(choices)})"


class Registry:
    def __init__(self, group: str, builtins: dict[str, str]) -> None:
        self.group = group
        self._paths: dict[str, str] = dict(builtins)
        self._loaded: dict[str, Any] = {}
        self._scanned = False

    def _scan(self) -> None:
        if not self._scanned:
            self._scanned = True
            for ep in entry_points(group=self.group):
                self._paths.setdefault(ep.name, ep.value)

    def names(self) -> set[str]:
        self._scan()
        return set(self._paths) | set(self._loaded)

    def register(self, name: str, obj: Any) -> None:
        self._loaded[name] = obj

    def get(self, name: str) -> Any:
        if name in self._loaded:
            return self._loaded[name]
        self._scan()
        if name not in self._paths:
            raise KeyError(f"unknown {self.group.split('.')[-1][:-1]} {name!r}{suggest(name, self.names())}")
        module, _, attr = self._paths[name].partition(":")
        obj = getattr(importlib.import_module(module), attr)
        self._loaded[name] = obj
        return obj


PROVIDERS = Registry(
    "cascade.providers",
    {
        "anthropic": "cascade.providers.anthropic:AnthropicProvider",
        "langchain": "cascade.providers.langchain:LangChainProvider",
        "openai": "cascade.providers.openai:OpenAIProvider",
        "openai_compatible": "cascade.providers.openai:OpenAICompatibleProvider",
        "replay": "cascade.providers.replay:ReplayProvider",
        "scripted": "cascade.testing:ScriptedProvider",
        "replay_judge": "cascade.scorers.judge:ReplayJudgeProvider",
    },
)
SCORERS = Registry(
    "cascade.scorers",
    {
        "non_empty": "cascade.scorers.basic:NonEmptyScorer",
        "regex": "cascade.scorers.basic:RegexScorer",
        "json": "cascade.scorers.basic:JsonScorer",
        "fixed": "cascade.scorers.basic:FixedScorer",
        "min": "cascade.scorers.combine:MinScorer",
        "max": "cascade.scorers.combine:MaxScorer",
        "mean": "cascade.scorers.combine:MeanScorer",
        "all": "cascade.scorers.combine:AllScorer",
        "tool_args": "cascade.scorers.tools:ToolArgsScorer",
        "self_consistency": "cascade.scorers.self_consistency:SelfConsistencyScorer",
        "judge": "cascade.scorers.judge:JudgeScorer",
        "classifier": "cascade.scorers.classifier:ClassifierScorer",
        "verifier": "cascade.scorers.verifier:VerifierScorer",
        "boundary": "cascade.scorers.boundary:BoundaryScorer",
    },
)
LEDGERS = Registry(
    "cascade.ledgers",
    {
        "memory": "cascade.budget.memory:MemoryLedger",
        "sqlite": "cascade.budget.sqlite:SQLiteLedger",
        "redis": "cascade.budget.redis:RedisLedger",
    },
)
