"""On the real recorded sets (skipped where ../shared/data is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade import outcomes
from cascade.evaluate import evaluate_file, held_out
from cascade.evaluate.tune import Objective, tune
from cascade.evaluate.write import render, tuned_raw
from cascade.policy import loader

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.data


def test_eval_the_example_policy(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASCADE_DATA", str(data_dir))
    policy = loader.load(ROOT / "policies" / "gsm8k-replay.yaml")
    ev = evaluate_file(
        policy, outcomes.load(data_dir / "gsm8k-zeroeval.jsonl.gz"), ROOT / "policies", reps=50
    )
    f = ev.figures
    assert f["records"] == 1319
    assert len(f["single_models"]) == 34
    assert f["oracle"]["quality"] > f["best_single"]["quality"]["value"]


def test_date_mot_self_consistency_beats_gpt4_at_half_its_cost(data_dir: Path, tmp_path: Path) -> None:
    path = data_dir / "date-mot-3tier.jsonl.gz"
    tiers = []
    for model, k in (("llama-2-13b-chat", 20), ("gpt-3.5-turbo-0613", 20), ("gpt-4-0613", 3)):
        tiers.append(
            f"""  - name: {model}
    provider: replay
    model: {model}
    options: {{path: "{path}", variant: cot, billing: prompt_once}}
    scorer:
      kind: self_consistency
      k: {k}
      answer: text
      mixture: [{{samples: {k}, options: {{variant: pot}}}}]
    threshold: 0.5
"""
        )
    skeleton = tmp_path / "date.yaml"
    skeleton.write_text("name: date\ntiers:\n" + "".join(tiers))
    t = tune(skeleton, outcomes.load(path), Objective(target="best"))
    assert t.choice is not None
    policy = loader.loads(render(tuned_raw(skeleton, t, t.choice), [], {}))
    f = held_out(t, t.choice, policy, reps=100).figures
    assert f["best_single"]["model"] == "gpt-4-0613"
    assert f["quality"]["value"] >= f["best_single"]["quality"]["value"]
    assert f["vs_best"]["cost_share"]["value"] <= 0.5
