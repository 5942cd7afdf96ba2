"""Issue 20, item 4: every report shows the best two-model cascade and a prompt-only router beside
the policy or family, with their AIQ, their cost share at the best single model's quality, and
which one wins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cascade import outcomes
from cascade.evaluate.baselines import Frame, router_curve, verdict
from cascade.evaluate.data import EvalSet
from cascade.evaluate.evaluate import evaluate, score_policy
from cascade.policy import loader
from tests.evaluate.synth import write_outcomes, write_policy
from tests.evaluate.test_routing import routing_data, skeleton


def _evaluated(policy_path: Path, data_path: Path, folder: Path, split: str = "none") -> dict:  # type: ignore[type-arg]
    policy = loader.load(policy_path)
    data = outcomes.load(data_path)
    es = EvalSet.build(data, [t.model for t in policy.tiers])
    tiers = score_policy(policy, data, es, folder)
    rows = es.split(split, seed=0)  # type: ignore[arg-type]
    return evaluate(policy, es, tiers, rows, reps=20, pool=tiers).figures


def test_router_curve_runs_from_all_weak_to_all_strong() -> None:
    est = np.array([0.9, 0.1, 0.5, 0.7])
    wq, wc = np.array([1.0, 0.0, 0.0, 1.0]), np.full(4, 1.0)
    sq, sc = np.array([1.0, 1.0, 1.0, 1.0]), np.full(4, 10.0)
    c, q = router_curve(est, (wq, wc), (sq, sc))
    assert c[0] == pytest.approx(1.0) and q[0] == pytest.approx(0.5)  # every prompt to the weak model
    assert c[-1] == pytest.approx(10.0) and q[-1] == pytest.approx(1.0)  # every prompt to the strong one
    # the estimate orders the prompts: the weak model keeps its best two first
    assert any(ci == pytest.approx(5.5) and qi == pytest.approx(1.0) for ci, qi in zip(c, q, strict=True))


def test_frame_gives_the_cost_share_at_the_best_single_quality() -> None:
    fr = Frame(lo=1.0, hi=10.0, best_quality=0.9, best_cost=10.0)
    value, share = fr.figures(np.array([1.0, 4.0, 10.0]), np.array([0.5, 0.9, 0.9]))
    assert share == pytest.approx(0.4)
    assert 0.5 < value <= 0.9
    assert fr.figures(np.array([1.0]), np.array([0.5]))[1] is None  # never reaches it


def test_verdict_names_the_winner() -> None:
    both = {"two_model_cascade": {"aiq": 0.6}, "prompt_router": {"aiq": 0.7}}
    assert (
        verdict(0.8, both) == "the policy beats the best two-model cascade and the prompt-only router on AIQ"
    )
    assert verdict(0.65, both).startswith("the prompt-only router wins: AIQ 0.7000 against 0.6500")
    assert verdict(0.65, {"two_model_cascade": {"aiq": 0.66}, "prompt_router": None}).startswith(
        "the best two-model cascade wins"
    )
    assert verdict(0.5, {"two_model_cascade": None, "prompt_router": None}) == "no baseline could be measured"


def test_eval_reports_both_baselines(tmp_path: Path) -> None:
    data = write_outcomes(tmp_path, 160)
    f = _evaluated(write_policy(tmp_path, data), data, tmp_path)
    b = f["baselines"]
    cas = b["two_model_cascade"]
    assert cas is not None and cas["models"][0] in ("tiny", "small") and cas["models"][1] != cas["models"][0]
    assert 0 < cas["aiq"] <= 1
    # the router pairs the cascade's first model with the best single model
    assert b["prompt_router"] is not None and b["prompt_router"]["models"] == [cas["models"][0], "big"]
    assert b["chosen_on"] == "the measured records"
    assert b["verdict"] == verdict(f["aiq"]["policy_curve"]["value"], b)


def test_the_router_wins_where_only_the_prompt_tells(tmp_path: Path) -> None:
    """A weak model whose answer carries no signal: the cascade cannot beat a random mix, the
    prompt-only router can, and the report says the router wins (chosen on the other half)."""
    data = routing_data(tmp_path)
    f = _evaluated(skeleton(tmp_path, data), data, tmp_path, split="seed")
    b = f["baselines"]
    assert b["chosen_on"] == "the other records"
    router, cas = b["prompt_router"], b["two_model_cascade"]
    assert router["models"] == ["weak", "strong"]
    assert router["aiq"] > cas["aiq"] + 0.05
    assert router["matched_cost_share"] is not None and router["matched_cost_share"] < 0.8
    assert b["verdict"].startswith("the prompt-only router wins")


def test_cli_eval_and_tune_print_the_baselines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cascade.cli import main

    data = write_outcomes(tmp_path, 160)
    pol = write_policy(tmp_path, data)
    assert main(["eval", str(pol), "--bootstrap", "20"]) == 0
    out = capsys.readouterr().out
    assert "2-model cascade" in out and "prompt router" in out and "baselines " in out
    sk = skeleton(tmp_path, data_path := routing_data(tmp_path))
    code = main(
        [
            "tune",
            str(sk),
            "--data",
            str(data_path),
            "--target-quality",
            "best",
            "--out",
            str(tmp_path / "t.yaml"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "prompt router       weak | strong" in out
    assert (
        "the prompt-only router wins" in out and "for the tuned family (chosen on the training part)" in out
    )


def test_a_family_is_compared_as_a_family(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`cascade tune --frontier` and `cascade eval FAMILY` put the family's AIQ, not a member's,
    against the baselines (computed once, with the first member)."""
    import json

    from cascade.cli import main

    data = write_outcomes(tmp_path, 160)
    pol = write_policy(tmp_path, data)
    fam = tmp_path / "fam.family.yaml"
    assert main(["tune", str(pol), "--frontier", "3", "--out", str(fam), "--bootstrap", "20"]) == 0
    assert "baselines " in capsys.readouterr().out
    assert main(["eval", str(fam), "--bootstrap", "20", "--json", "-"]) == 0
    f = json.loads(capsys.readouterr().out)
    b = f["baselines"]
    assert b["verdict"] == verdict(f["aiq"]["family"], b, "the family")
    assert "the family" in b["verdict"]


def test_the_routers_fallback_weak_model_is_chosen_on_the_choosing_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no two-model cascade found, the router's weak model is the policy's cheapest on the
    records the baselines are chosen on, never on the measured (held-out) ones."""
    from cascade.evaluate import baselines

    data_path = write_outcomes(tmp_path, 160)
    policy = loader.load(write_policy(tmp_path, data_path))
    data = outcomes.load(data_path)
    es = EvalSet.build(data, [t.model for t in policy.tiers])
    tiers = score_policy(policy, data, es, tmp_path)
    rows = es.split("seed", seed=0)
    tiny, small = es.models.index("tiny"), es.models.index("small")
    assert es.cost[~rows, tiny].mean() < es.cost[~rows, small].mean()
    es.cost[rows, small] = 0.0  # the cheapest on the measured records only
    seen: list[str] = []

    def router(es: EvalSet, rows: object, choose: object, weak: str, seed: int = 0) -> None:
        seen.append(weak)

    monkeypatch.setattr(baselines, "best_cascade", lambda *a, **k: None)
    monkeypatch.setattr(baselines, "prompt_router", router)
    f = evaluate(policy, es, tiers, rows, reps=5, pool=tiers).figures
    assert f["baselines"]["chosen_on"] == "the other records"
    assert seen == ["tiny"]
