"""How long does training a confidence classifier take on 10,000 labelled answers?

    python benchmarks/train_speed.py [--n 10000]

Two kinds of answers from ``../shared/data`` (or ``$CASCADE_DATA``; exits with a message where it
is absent): GSM8K chain-of-thought answers pooled over models in file order (long texts, the
heavy case for n-gram features) and RouteLLM's MMLU records (no answer text: prompt features
only). Prints the wall time of :func:`cascade.learn.classifier.train` (feature hashing,
regularisation search, calibration) and the held-out AUROC on the next 2,000 answers.
"""

from __future__ import annotations

import argparse
import sys
import time

from data_path import default_data

from cascade import outcomes
from cascade.learn.classifier import Example, evaluate, examples_from_outcomes, train
from cascade.scorers.metrics import auroc

DATA = default_data()


def pooled(name: str, n: int) -> list[Example]:
    data = outcomes.load(DATA / f"{name}.jsonl.gz")
    out: list[Example] = []
    for model in data.models:
        out += examples_from_outcomes(data, model)
        if len(out) >= n:
            break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    args = ap.parse_args()
    if not (DATA / "README.md").exists():
        print(f"recorded outcomes not found at {DATA} (set CASCADE_DATA); nothing to measure")
        return
    print("| answers | data | train seconds | held-out AUROC (next 2,000) |\n|---|---|---|---|")
    for name in ("gsm8k-zeroeval", "routellm-mmlu"):
        examples = pooled(name, args.n + 2000)
        if len(examples) < args.n + 2000:
            print(f"| {len(examples)} | {name} | not enough answers | |")
            continue
        fit, held = examples[: args.n], examples[args.n : args.n + 2000]
        started = time.perf_counter()
        clf = train(fit)
        took = time.perf_counter() - started
        p, y = evaluate(clf, held)
        print(f"| {args.n:,} | {name} | {took:.1f} | {auroc(p, y):.3f} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
