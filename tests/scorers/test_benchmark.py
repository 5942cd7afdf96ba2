"""benchmarks/scorers.py exits with a message where the recorded outcomes are absent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_without_data_says_so(tmp_path: Path) -> None:
    env = {**os.environ, "CASCADE_DATA": str(tmp_path / "absent")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "scorers.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "recorded outcomes not found" in done.stderr
