"""Cascades with an observer, for the observe tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cascade import Cascade
from cascade.observe import Observer, OutcomeLog, SessionPins, Shadow
from cascade.testing import FixedScorer, ScriptedProvider
from tests.helpers import NO_WAIT, PRICE, tier


class KeyScorer(FixedScorer):
    """A fixed score, and answers extracted as the text upper-cased (so the log shows extraction)."""

    def key(self, sample: Any) -> str | None:
        return sample.text.upper() if sample.text else None


def observed(
    tmp_path: Path,
    scores: tuple[float, float] = (0.2, 0.9),
    *,
    rate: float = 0.0,
    pins: SessionPins | None = None,
    include_text: bool = False,
    answers: tuple[str, str, str] = ("a", "b", "c"),
    **shadow_kw: Any,
) -> tuple[Cascade, Observer]:
    from cascade import Tier

    tiers = [
        Tier(
            "small",
            ScriptedProvider(answers[0], model="small-model"),
            PRICE,
            KeyScorer(scores[0]),
            0.5,
            NO_WAIT,
            "scripted",
        ),
        Tier(
            "medium",
            ScriptedProvider(answers[1], model="medium-model"),
            PRICE,
            KeyScorer(scores[1]),
            0.5,
            NO_WAIT,
            "scripted",
        ),
        tier("large", answers[2]),
    ]
    shadow = Shadow(rate, seed=1, **shadow_kw) if rate else None
    obs = Observer(
        log=OutcomeLog(tmp_path / "out.jsonl"), include_text=include_text, shadow=shadow, pins=pins
    )
    return Cascade(tiers, name="obs", observer=obs), obs


def rows(tmp_path: Path) -> list[dict[str, Any]]:
    import json

    out: list[dict[str, Any]] = []
    for f in sorted(tmp_path.glob("out-*.jsonl")):
        out.extend(json.loads(line) for line in f.read_text().splitlines() if line.strip())
    return out
