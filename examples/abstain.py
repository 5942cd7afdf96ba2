"""Abstention: "I am not sure" rather than a wrong answer (``on_unverified: abstain``).

Runs offline (scripted tiers). The last tier's answer is scored too; below its threshold the run
returns no answer, with its reason and everything it cost. Then the abstain threshold is tuned on
recorded scores for an error rate among answered requests of at most 5%.

    python examples/abstain.py
"""

from __future__ import annotations

import numpy as np

from cascade import Cascade
from cascade.evaluate.abstain import selective, tune_abstain
from cascade.policy.loader import loads

POLICY = """\
name: careful
on_unverified: abstain
tiers:
  - name: cheap
    provider: scripted
    model: cheap-model
    price: {input: 0.15, output: 0.6}
    options: {answers: ["I think it is Lyon"]}
    scorer: {kind: regex, pattern: Paris}
    threshold: 1.0
  - name: strong
    provider: scripted
    model: strong-model
    price: {input: 2.5, output: 10}
    options: {answers: ["Maybe Marseille"]}
    scorer: {kind: regex, pattern: Paris}
    threshold: 1.0
"""


def main() -> None:
    with Cascade.from_policy(loads(POLICY)) as careful:
        result = careful.run("What is the capital of France?")
        assert result.abstained
        assert result.answer == ""
        print(f"abstained: {result.abstention}; spent ${result.cost}")
        print(result.explain())

    # tuning: the last tier's scores and 0/1 correctness on training records (here synthetic)
    rng = np.random.default_rng(0)
    scores = rng.random(4000)
    correct = (rng.random(4000) < scores**0.25).astype(float)
    train, test = slice(0, 2000), slice(2000, None)
    tuned = tune_abstain(scores[train], correct[train], target=0.05, delta=0.05)
    print(f"\nabstain threshold {tuned.threshold} (error <= 5% among answered, at risk 0.05)")
    if tuned.threshold is not None:
        held = selective(scores[test], correct[test], tuned.threshold)
        print(f"held out: coverage {held.coverage:.1%}, error among answered {held.risk:.2%}")


if __name__ == "__main__":
    main()
