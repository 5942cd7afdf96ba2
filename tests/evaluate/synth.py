"""Small synthetic recorded-outcomes files for the evaluation tests (written into tmp_path)."""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np

# model -> (accuracy of a sample, samples per record, input price, output price in USD per Mtok)
MODELS: dict[str, tuple[float, int, float, float]] = {
    "tiny": (0.55, 5, 0.1, 0.1),
    "small": (0.75, 5, 0.5, 0.5),
    "big": (0.92, 1, 10.0, 30.0),
}


def write_outcomes(
    folder: Path,
    n: int = 120,
    *,
    seed: int = 0,
    name: str = "synth",
    splits: bool = False,
    models: dict[str, tuple[float, int, float, float]] | None = None,
) -> Path:
    """A file where each model is right with its accuracy; wrong samples scatter over other answers,
    so agreement among samples carries signal. Costs follow the card's prices."""
    data, card = _outcomes(n, seed, name, splits, tuple((models or MODELS).items()))
    path = folder / f"{name}.jsonl.gz"
    path.write_bytes(data)
    (folder / f"{name}.card.json").write_text(card)
    return path


@functools.lru_cache(maxsize=32)
def _outcomes(
    n: int,
    seed: int,
    name: str,
    splits: bool,
    models: tuple[tuple[str, tuple[float, int, float, float]], ...],
) -> tuple[bytes, str]:
    """The gzip bytes and the card of :func:`write_outcomes`, made once per process (the tests that
    share a file's arguments each write their own copy)."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        truth = int(rng.integers(10, 99))
        easy = rng.random() < 0.6
        responses: dict[str, list[dict[str, Any]]] = {}
        for m, (acc, k, pin, pout) in models:
            p = min(0.99, acc + (0.2 if easy else -0.2))
            samples = []
            for _ in range(k):
                right = rng.random() < p
                ans = truth if right else truth + int(rng.integers(1, 6))
                tin, tout = 40, 20
                samples.append(
                    {
                        "text": f"The answer is {ans}.",
                        "answer": str(ans),
                        "quality": 1.0 if right else 0.0,
                        "input_tokens": tin,
                        "output_tokens": tout,
                        "cost_usd": (tin * pin + tout * pout) / 1e6,
                    }
                )
            responses[m] = samples
        rec: dict[str, Any] = {
            "id": f"q{i}",
            "prompt": f"Question {i}: what is it?",
            "reference": str(truth),
            "responses": responses,
        }
        if splits:
            rec["split"] = "test" if i % 3 == 0 else "train"
        lines.append(json.dumps(rec) + "\n")
    card = {
        "name": name,
        "models": {m: {"input_usd_per_mtok": v[2], "output_usd_per_mtok": v[3]} for m, v in models},
    }
    return gzip.compress("".join(lines).encode("utf-8")), json.dumps(card)


def write_policy(
    folder: Path,
    data: Path,
    *,
    k: int = 5,
    thresholds: tuple[float, float] = (0.8, 0.6),
    billing: str = "recorded",
) -> Path:
    text = f"""name: synth-policy
tiers:
  - name: t-tiny
    provider: replay
    model: tiny
    options: {{path: "{data}", billing: {billing}}}
    scorer: {{kind: self_consistency, k: {k}, answer: number}}
    threshold: {thresholds[0]}
  - name: t-small
    provider: replay
    model: small
    options: {{path: "{data}", billing: {billing}}}
    scorer: {{kind: self_consistency, k: {k}, answer: number}}
    threshold: {thresholds[1]}
  - name: t-big
    provider: replay
    model: big
    options: {{path: "{data}"}}
"""
    p = folder / "policy.yaml"
    p.write_text(text)
    return p
