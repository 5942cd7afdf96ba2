"""Policy limits that keep the money safe: finite timeouts, holds that outlive the longest call."""

from __future__ import annotations

import pytest

from cascade.errors import PolicyError
from cascade.policy.loader import loads

POLICY = """\
name: limits
tiers:
  - name: only
    provider: openai
    model: gpt-4o-mini
    timeout: {timeout}
    retry: {{attempts: 3, max_wait: 8, max_retry_after: 30}}
budget:
  caps: [{{limit: 5, window: day}}]
  hold_ttl: {ttl}
"""


@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf"])
def test_a_timeout_is_finite(value: str) -> None:
    with pytest.raises(PolicyError, match=r"<string>:6:\d+: tiers\[0\]\.timeout: "):
        loads(POLICY.format(timeout=value, ttl=600))


def test_holds_must_outlive_the_longest_call() -> None:
    # the tier's timeout ends every try and every wait between tries: the longest call is 360 s
    with pytest.raises(PolicyError) as info:
        loads(POLICY.format(timeout=360, ttl=300))
    (problem,) = info.value.problems
    assert problem.startswith("<string>:10:")
    assert "hold_ttl 300 s must exceed the longest call, 360 s (tier 'only'" in problem
    assert loads(POLICY.format(timeout=360, ttl=361)).budget.hold_ttl == 361


def test_the_hold_check_applies_only_with_window_caps() -> None:
    text = POLICY.format(timeout=700, ttl=600).replace("  caps: [{limit: 5, window: day}]\n", "")
    assert loads(text).tiers[0].timeout == 700
    with pytest.raises(PolicyError, match="hold_ttl 600 s must exceed the longest call, 700 s"):
        loads(POLICY.format(timeout=700, ttl=600))  # the default hold_ttl is checked too
