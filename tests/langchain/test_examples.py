"""The LangChain examples run offline and exit 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    ("script", "expect"),
    [
        (
            "langchain_chain.py",
            ["Australia  -> Canberra.  answered by large", "small [small-model] escalated"],
        ),
        ("langchain_agent.py", ["cheap:escalated -> strong:accepted", "tenant acme stopped", "daily cap"]),
    ],
)
def test_example_runs(script: str, expect: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    for text in expect:
        assert text in done.stdout
