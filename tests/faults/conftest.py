"""The fault server and cascades pointed at it (a faulty cheap tier, a healthy strong one)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cascade import Cascade
from cascade.budget import Budget, Cap
from cascade.budget.memory import MemoryLedger
from cascade.budget.sqlite import SQLiteLedger
from cascade.engine.actions import Tier
from cascade.money import Price
from cascade.policy.schema import GenerationParams
from cascade.providers.anthropic import AnthropicProvider
from cascade.providers.openai import OpenAICompatibleProvider, OpenAIProvider
from cascade.retry import RetryPolicy
from cascade.testing import FixedScorer
from tests.faults.fault_server import FaultServer

RETRY = RetryPolicy(attempts=2, initial=0, max_wait=0, jitter=0, max_retry_after=0)
PRICE = Price(Decimal(2), Decimal(8))  # USD per million tokens
MAX_TOKENS = 64


_SHARED: dict[tuple[Any, ...], Any] = {}  # providers the rigs share (SDK clients are slow to build)


@pytest.fixture(scope="session")
def server() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s
        while _SHARED:
            _SHARED.popitem()[1].close()


def shared(server: FaultServer, kind: str, **kw: Any) -> Any:
    """A provider built once per session for these settings (rigs never close it)."""
    key = (server.url, kind, *sorted(kw.items()))
    if key not in _SHARED:
        _SHARED[key] = provider(server, kind, **kw)
    return _SHARED[key]


def provider(server: FaultServer, kind: str, *, clean: bool = False, timeout: float = 2.0, **kw: Any) -> Any:
    root = f"{server.url}/clean" if clean else server.url
    params = GenerationParams(max_tokens=MAX_TOKENS, temperature=0.0)
    if kind == "openai":
        return OpenAIProvider(
            "gpt-4o-mini", api_key="k", base_url=f"{root}/openai/v1", params=params, timeout=timeout, **kw
        )
    if kind == "openai_compatible":  # a local server: n samples are n calls, priced by the tier
        kw.setdefault("supports_n", False)
        return OpenAICompatibleProvider(
            "llama-3.1-8b", base_url=f"{root}/openai/v1", params=params, timeout=timeout, **kw
        )
    return AnthropicProvider(
        "claude-haiku-4-5", api_key="k", base_url=f"{root}/anthropic", params=params, timeout=timeout, **kw
    )


@dataclass
class Rig:
    """A two-tier cascade (faulty ``small``, healthy ``big``) with a day cap on a ledger."""

    cascade: Cascade
    ledger: Any
    cap: Decimal

    @property
    def bucket(self) -> str:
        return self.cascade.settings.budget.buckets(self.cascade.name, None)[0][0]

    def spent(self) -> Decimal:
        return Decimal(self.ledger.spent(self.bucket))

    def held(self) -> Decimal:
        return Decimal(self.ledger.held(self.bucket))

    def close(self) -> None:
        """The providers are shared (closed when the server fixture ends)."""

    async def aclose(self) -> None:
        """Close the async clients made on this event loop (the sync ones stay shared)."""
        for t in self.cascade.tiers:
            await t.provider.aclose()  # type: ignore[attr-defined]  # SDK providers have it


def make_ledger(kind: str, tmp_path: Path) -> Any:
    return MemoryLedger() if kind == "memory" else SQLiteLedger(tmp_path / "faults.sqlite3")


def rig(
    server: FaultServer,
    kind: str,
    ledger: Any,
    *,
    cap: Decimal = Decimal(1),
    samples: int = 1,
    timeout: float = 2.0,
    retry: RetryPolicy = RETRY,
    stream: bool = False,
) -> Rig:
    small = Tier(
        "small",
        shared(server, kind, timeout=timeout, stream=stream),
        PRICE,
        FixedScorer(1.0, samples=samples),
        0.5,
        retry,
        kind,
        MAX_TOKENS,
    )
    big = Tier(
        "big", shared(server, kind, clean=True, timeout=timeout), PRICE, None, None, retry, kind, MAX_TOKENS
    )
    budget = Budget(per_request=Decimal("0.5"), caps=(Cap(cap, "day"),), ledger=ledger, hold_ttl=60)
    return Rig(Cascade([small, big], name=f"faults-{kind}", budget=budget), ledger, cap)
