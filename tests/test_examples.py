"""Every example runs offline and says what it claims (CI also runs each one as a script)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.slow  # each example is a fresh interpreter (1-5 s); CI also runs them as scripts
@pytest.mark.parametrize(
    ("script", "expect"),
    [
        (
            "quickstart.py",
            ["from tier strong (strong-model)", "stopped by the cap", "another tenant is not affected"],
        ),
        (
            "langchain_chain.py",
            ["Australia  -> Canberra.  answered by large", "small [small-model] escalated"],
        ),
        ("langchain_agent.py", ["cheap:escalated -> strong:accepted", "tenant acme stopped", "daily cap"]),
        ("custom_scorer.py", ["escalated: score 0.500 < 0.900", "unknown field (did you mean 'target'?)"]),
        ("production_loop.py", ["production loop: live traffic"]),
        (
            "abstain.py",
            ["abstained: tier 'strong': score 0.000 < 1.000", "held out: coverage"],
        ),  # figures: tests/observe (data)
        (
            "tune_your_logs.py",
            ["== cascade eval", "# predicted quality", "name: arithmetic"],
        ),
    ],
)
def test_example_runs(script: str, expect: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    for text in expect:
        assert text in done.stdout


def test_every_example_is_tested() -> None:
    tested = {p[0] for p in test_example_runs.pytestmark[0].args[1]}  # type: ignore[attr-defined]
    assert tested == {p.name for p in EXAMPLES.glob("*.py")}
