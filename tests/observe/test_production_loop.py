"""The production-loop example end to end on recorded data (skipped without ../shared/data)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "production_loop.py"


@pytest.mark.data
@pytest.mark.slow
def test_production_loop_runs_the_whole_loop(data_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "CASCADE_DATA": str(data_dir)},
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    logged = re.search(r"'logged': 2000, 'log_dropped': 0", out)
    assert logged is not None
    shadow = int(re.search(r"2000 rows \((\d+) shadow\)", out).group(1))  # type: ignore[union-attr]
    assert 140 <= shadow <= 260  # 10% of 2,000
    assert "strongest vs recorded:" in out and "# predicted quality" in out
    assert re.search(r"^gpt4 +\d+", out, re.M) and "drift:" in out
