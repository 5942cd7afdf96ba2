"""Time per score of the scorers that run in the request path (no model call): self-consistency
over 10 samples and a trained confidence classifier on a long answer.

    python benchmarks/scorer_speed.py [--repeats 5] [--n 200]

Prints the median time per score over ``--repeats`` rounds of ``--n`` scores each. The goal is a
few microseconds to a millisecond: well under one provider round trip (5 ms is the budget the
docs state). Needs no data.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from cascade.learn.features import FeatureConfig
from cascade.request import Request
from cascade.scorers.classifier import ClassifierScorer, Example, train
from cascade.scorers.self_consistency import SelfConsistencyScorer
from cascade.types import Completion, Sample, Usage


def synthetic(n: int, seed: int = 0) -> list[Example]:
    """Sums: right answers are plain, wrong ones hedge more often (the classifier's test data)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        right = rng.random() < 0.6
        value = a + b if right else a + b + rng.choice([-2, -1, 1, 3])
        hedge = rng.random() < (0.15 if right else 0.8)
        text = f"{'Maybe, I am not sure, but ' if hedge else ''}the sum is {value}."
        out.append(Example(f"What is {a} + {b}?", (Sample(text),), 1.0 if right else 0.0, f"q{i}"))
    return out


def per_score(score: object, request: Request, completion: Completion, n: int, repeats: int) -> float:
    """Median seconds per ``score(request, completion)`` call."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            score(request, completion)  # type: ignore[operator]
        times.append((time.perf_counter() - start) / n)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n", type=int, default=200, help="scores per round")
    args = parser.parse_args()
    sc = SelfConsistencyScorer("number", k=10)
    votes = Completion(tuple(Sample(f"The answer is {i % 3}") for i in range(10)), Usage(), "m")
    clf = ClassifierScorer(train(synthetic(200), config=FeatureConfig(bits=12)))
    long_answer = Completion((Sample("The sum is 42. " * 40),), Usage(), "m")
    rows = [
        (
            "self-consistency, 10 samples",
            per_score(sc.score, Request.of("What is 2+2?"), votes, args.n, args.repeats),
        ),
        (
            "classifier, 600-character answer",
            per_score(clf.score, Request.of("What is 20 + 22? " * 20), long_answer, args.n, args.repeats),
        ),
    ]
    print(f"## Time per score (median of {args.repeats} rounds of {args.n})\n")
    print("| scorer | per score |")
    print("|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds * 1e6:.0f} µs |")


if __name__ == "__main__":
    main()
