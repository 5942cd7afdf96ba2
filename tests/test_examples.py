"""The plain-Python and tuning examples run offline and say what they claim."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    ("script", "expect"),
    [
        (
            "quickstart.py",
            ["from tier strong (strong-model)", "stopped by the cap", "another tenant is not affected"],
        ),
        ("custom_scorer.py", ["escalated: score 0.500 < 0.900", "unknown field (did you mean 'target'?)"]),
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
