"""Shadow calls that fail after being billed are charged to shadow spend (they were $0)."""

from __future__ import annotations

from pathlib import Path

from cascade import Cascade
from cascade.errors import InvalidResponseError
from cascade.observe import Observer, OutcomeLog, Shadow
from cascade.request import Request
from cascade.types import Completion, Usage
from tests.helpers import PRICE, tier
from tests.observe.support import rows


class EmptyButBilled:
    """A provider whose every answer is unusable but reports (billed) usage."""

    model = "billed-model"

    def __init__(self) -> None:
        self.calls = 0

    def complete(self, request: Request, n: int = 1) -> Completion:
        self.calls += 1
        err = InvalidResponseError("empty choices", reason="empty choices", provider="x", status_code=200)
        err.usage = Usage(10, 10)
        raise err

    async def acomplete(self, request: Request, n: int = 1) -> Completion:
        return self.complete(request, n)

    def max_usage(self, request: Request, n: int = 1) -> Usage:
        return Usage(10, 100 * n)


def test_a_billed_shadow_failure_counts_as_shadow_spend(tmp_path: Path) -> None:
    broken = EmptyButBilled()
    large = tier("large")
    large = type(large)("large", broken, PRICE, retry=large.retry, provider_kind="x")  # type: ignore[arg-type]
    shadow = Shadow(1.0, seed=1)
    obs = Observer(log=OutcomeLog(tmp_path / "out.jsonl"), shadow=shadow)
    c = Cascade([tier("small", "a", 0.9, 0.5), large], name="obs", observer=obs)
    c.run("q")
    c.close()
    (row,) = rows(tmp_path)
    charge = PRICE.cost(Usage(10, 10))
    assert broken.calls == 1  # a billed failure under the shadow cap is not retried
    assert shadow.spent_total == charge  # was 0: the billed call went unreported
    assert row["cascade"]["shadow_cost"] == str(charge)
    assert row["cascade"]["tiers"]["large"]["error"].startswith("InvalidResponseError")
