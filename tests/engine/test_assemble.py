"""A policy assembled with objects passed in Python: their tiers keep the policy's settings."""

from __future__ import annotations

import asyncio
import time

import pytest
from langchain_core.language_models import FakeListChatModel

from cascade import Cascade
from cascade.errors import AllTiersFailedError
from cascade.policy import loader

POLICY = """
name: passed-in
tiers:
  - name: only
    provider: openai
    model: gpt-4o-mini
    timeout: 0.2
    retry: {attempts: 1}
"""


class BoundedFake(FakeListChatModel):
    max_tokens: int | None = None  # an output-token limit cascade can set (a capped policy needs one)


@pytest.fixture
def policy_path(tmp_path: object) -> object:
    from pathlib import Path

    path = Path(str(tmp_path)) / "p.yaml"
    path.write_text(POLICY)
    return path


def test_a_passed_in_chat_model_gets_its_tier_timeout(policy_path: object) -> None:
    slow = FakeListChatModel(responses=["late"], sleep=1.0)
    c = Cascade.from_policy(loader.load(policy_path), providers={"only": slow})  # type: ignore[arg-type]
    assert getattr(c.tiers[0].provider, "timeout", None) == 0.2

    async def cut_off_after() -> float:  # async: a sync call cannot be cut off (test_tier_limits.py)
        start = time.perf_counter()
        with pytest.raises(AllTiersFailedError, match=r"(?i)timeout"):
            await c.arun("q")
        return time.perf_counter() - start

    assert asyncio.run(cut_off_after()) < 0.8  # was 1 s: the tier's 0.2 s timeout was ignored


def test_a_passed_in_chat_model_cut_off_by_its_timeout_is_charged_under_a_cap(tmp_path: object) -> None:
    """The abandoned call keeps running (and may be billed): under a cap it is charged its worst case."""
    from decimal import Decimal
    from pathlib import Path

    path = Path(str(tmp_path)) / "capped.yaml"
    path.write_text(POLICY + "    price: {input: 1, output: 1}\nbudget:\n  per_request: 1\n")
    slow = BoundedFake(responses=["late"], sleep=1.0)
    c = Cascade.from_policy(loader.load(path), providers={"only": slow})  # type: ignore[arg-type]
    with pytest.raises(AllTiersFailedError) as failed:
        asyncio.run(c.arun("q"))
    attempt = failed.value.attempts[0]
    assert attempt.cost > Decimal(0)  # was $0: the cut-off call was not charged
    assert attempt.charged
