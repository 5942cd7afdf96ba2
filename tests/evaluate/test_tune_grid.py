"""Every documented `cascade tune` flag combination on the small recorded sets: a policy or a one-line
error, never a traceback (issue 10). Needs ../shared/data (skips without it)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from cascade.cli import main

SETS = {
    "date-mot-3tier": (
        "  - name: llama\n    provider: replay\n    model: llama-2-13b-chat\n"
        "    options: {{path: {path}, variant: cot, billing: prompt_once}}\n"
        "    scorer: {{kind: self_consistency, k: 5, answer: text}}\n    threshold: 0.5\n"
        "  - name: gpt4\n    provider: replay\n    model: gpt-4-0613\n"
        "    options: {{path: {path}, variant: cot}}\n"
    ),
    "routellm-gsm8k": (
        "  - name: mixtral\n    provider: replay\n    model: Mixtral-8x7B-Instruct-v0.1\n"
        "    options: {{path: {path}}}\n"
        "    scorer: {{kind: self_consistency, k: 1, answer: number}}\n    threshold: 0.5\n"
    ),
}
GOALS = [
    ["--cost-cap", "0.002"],
    ["--cost-cap", "0.0000001"],
    ["--target-quality", "best"],
    ["--target-quality", "0.99", "--confidence", "0"],
    ["--max-drop", "0.02", "--risk", "0.1"],
    ["--max-drop", "0.01", "--risk", "0.05", "--calibration", "0.5"],
    ["--frontier", "3"],
]
WIDEN = [
    [],
    ["--models", "all", "--depth", "2"],
    ["--samples", "1,3", "--split", "seed", "--seed", "3", "--test-fraction", "0.3"],
    ["--partners", "1", "--pool", "2", "--depth", "1"],
]


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SETS))
def test_tune_flag_grid_never_raises(
    name: str, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sk = tmp_path / f"{name}.yaml"
    sk.write_text(f"name: {name}\ntiers:\n" + SETS[name].format(path=data_dir / f"{name}.jsonl.gz"))
    for k, (goal, widen) in enumerate(itertools.product(GOALS, WIDEN)):
        out = tmp_path / f"out{k}.yaml"
        code = main(["tune", str(sk), *goal, *widen, "--bootstrap", "10", "--out", str(out)])
        err = capsys.readouterr().err
        assert code in (0, 1), (goal, widen, err)
        if code == 0:
            assert out.exists(), (goal, widen)
        else:
            assert err.strip().splitlines()[-1].startswith("cascade: "), (goal, widen, err)
