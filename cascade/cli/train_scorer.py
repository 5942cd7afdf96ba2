"""``cascade train-scorer``: train a confidence classifier from labelled outcomes, report, save."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "train-scorer"
HELP = (
    "Train a confidence classifier for one model from a recorded-outcomes file (or your labelled "
    "logs in that format); report held-out AUROC and calibration error; write the artifact."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="OUTCOMES", help="recorded-outcomes file (.jsonl or .jsonl.gz)")
    parser.add_argument("--model", required=True, help="the model whose answers to score")
    parser.add_argument(
        "-o", "--output", required=True, metavar="ARTIFACT", help="where to write the JSON artifact"
    )
    parser.add_argument(
        "--calibration",
        choices=("auto", "platt", "isotonic"),
        default="auto",
        help="calibration map (default auto: the better of the two by cross-validation)",
    )
    parser.add_argument(
        "--samples", type=int, default=1, help="samples per answer the scorer will draw (agreement features)"
    )
    parser.add_argument("--positive-at", type=float, default=0.5, help="quality at or above this is correct")
    parser.add_argument(
        "--test-share", type=float, default=0.3, help="held-out share when the file has no split"
    )
    parser.add_argument("--bits", type=int, default=16, help="hashed feature space is 2**bits (default 16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from cascade import outcomes
    from cascade.cli import UsageError
    from cascade.scorers.classifier import examples_from_outcomes, split_examples, train_and_report
    from cascade.scorers.features import FeatureConfig

    if not 8 <= args.bits <= 22:
        raise UsageError("--bits must be between 8 and 22")
    if args.samples < 1:
        raise UsageError("--samples must be at least 1")
    if not 0 < args.test_share < 1:
        raise UsageError("--test-share must be between 0 and 1")
    data = outcomes.load(args.data)
    examples = examples_from_outcomes(data, args.model, samples=args.samples, positive_at=args.positive_at)
    if len(examples) < 40:
        raise UsageError(
            f"{args.model}: only {len(examples)} labelled answers in {args.data}; need at least 40"
        )
    train_set, test_set = split_examples(examples, args.test_share, args.seed)
    clf, report = train_and_report(
        train_set,
        test_set,
        config=FeatureConfig(bits=args.bits),
        calibration=args.calibration,
        seed=args.seed,
        meta={"model": args.model, "source": Path(args.data).name, "positive_at": args.positive_at},
    )
    out = Path(args.output)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True)
    clf.save(out)
    split = (
        "the file's train/test split"
        if {e.split for e in examples} >= {"train", "test"}
        else (f"a seeded {1 - args.test_share:.0%}/{args.test_share:.0%} split")
    )
    if args.json:
        print(json.dumps({"artifact": str(out), "split": split, **report.as_dict()}, indent=2))
        return 0
    name = Path(args.data).name
    print(f"{args.model} on {name}: trained on {report.n_train}, tested on {report.n_test} ({split})")
    print(f"  held-out AUROC {report.auroc:.3f}  ECE {report.ece:.3f}  Brier {report.brier:.3f}")
    print(
        f"  base rate {report.base_rate:.3f}  L2 {report.lam:g}  calibration {clf.calibration.method}"
        f"  {report.seconds:.1f}s"
    )
    print(f"  wrote {out}")
    return 0
