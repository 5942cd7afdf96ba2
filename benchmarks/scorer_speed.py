"""Time per score of the scorers that run in the request path (no model call): self-consistency
over 10 samples and a trained confidence classifier on a long answer.

    python benchmarks/scorer_speed.py [--repeats 5] [--n 200]

Prints the median time per score over ``--repeats`` rounds of ``--n`` scores each. The goal is a
few microseconds to a millisecond: well under one provider round trip (5 ms is the budget the
docs state). Needs no data.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from cascade.request import Request
from cascade.scorers.classifier import ClassifierScorer, train
from cascade.scorers.self_consistency import SelfConsistencyScorer
from cascade.types import Completion, Sample, Usage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.scorers.test_classifier import SMALL, synthetic  # the classifier tests' data


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
    clf = ClassifierScorer(train(synthetic(200), config=SMALL))
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
