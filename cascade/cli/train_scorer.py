"""``cascade train-scorer``: train a confidence classifier, a combined verifier (``--verifier``) or
a prompt-only skip estimator (``--prompt-only``) from labelled outcomes; report held out; save."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cascade.files import Output, check_outputs, data_inputs, replacing

NAME = "train-scorer"
HELP = (
    "Train a confidence classifier for one model from a recorded-outcomes file (or your labelled "
    "logs in that format), or a combined verifier (--verifier) or a prompt-only skip estimator "
    "(--prompt-only); report held-out AUROC and calibration error; write the artifact."
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
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument(
        "--verifier",
        action="store_true",
        help="train a `kind: verifier` artifact (partner agreement, own-sample agreement, text features)",
    )
    kind.add_argument(
        "--prompt-only",
        action="store_true",
        help="train a prompt-only estimator for a tier's `skip:` (P(right) before the call)",
    )
    parser.add_argument(
        "--partner",
        action="append",
        default=[],
        metavar="MODEL",
        help="--verifier: a partner model in the file whose answer is compared (repeatable, in order)",
    )
    parser.add_argument(
        "--answer", default="text", help="--verifier: how answers are extracted (number, choice, text...)"
    )
    parser.add_argument(
        "--features",
        help="--verifier: comma-separated feature groups (prompt,answer,logprobs,agreement; default all)",
    )
    parser.add_argument(
        "--check",
        action="append",
        default=[],
        choices=("arithmetic",),
        help="--verifier: a built-in check of the answer text as an input (repeatable)",
    )
    parser.add_argument(
        "--versus",
        metavar="MODEL",
        help="--prompt-only: label 'as good as MODEL's answer' (right, or both wrong) instead of 'right'",
    )
    parser.add_argument(
        "--embeddings",
        metavar="MODEL",
        help="--prompt-only: add embeddings from this OpenAI(-compatible) embeddings model",
    )
    parser.add_argument("--embeddings-base-url", metavar="URL", help="--embeddings: another endpoint")


def run(args: argparse.Namespace) -> int:
    from cascade import outcomes
    from cascade.cli import UsageError
    from cascade.learn.classifier import (
        examples_from_outcomes,
        split_examples,
        train_and_report,
        trained_for,
    )
    from cascade.learn.features import FeatureConfig

    if not 8 <= args.bits <= 22:
        raise UsageError("--bits must be between 8 and 22")
    if args.samples < 1:
        raise UsageError("--samples must be at least 1")
    if not 0 < args.test_share < 1:
        raise UsageError("--test-share must be between 0 and 1")
    if args.seed < 0:
        raise UsageError(f"--seed must be a non-negative integer (got {args.seed})")
    if not 0 < args.positive_at <= 1:
        raise UsageError(f"--positive-at must be in (0, 1]: qualities are 0..1 (got {args.positive_at})")
    if (args.partner or args.features or args.check or args.answer != "text") and not args.verifier:
        raise UsageError("--partner, --answer, --check and --features need --verifier")
    if (args.embeddings or args.embeddings_base_url or args.versus) and not args.prompt_only:
        raise UsageError("--embeddings and --versus need --prompt-only")
    check_outputs([Output("-o", Path(args.output))], data_inputs(args.data))
    if args.verifier or args.prompt_only:
        return _learned(args)
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
        meta={
            **trained_for(args.model, data),
            "source": Path(args.data).name,
            "positive_at": args.positive_at,
        },
    )
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out) as tmp:
        clf.save(tmp)
    split = (
        "the file's train/test split"
        if {e.split for e in examples} >= {"train", "test"}
        else (f"a seeded {1 - args.test_share:.0%}/{args.test_share:.0%} split")
    )
    if args.json:
        print(
            json.dumps(
                {"artifact": str(out), "kind": "classifier", "split": split, **report.as_dict()}, indent=2
            )
        )
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


def _learned(args: argparse.Namespace) -> int:
    """--verifier and --prompt-only: the same training code, other inputs."""
    import time

    import numpy as np

    from cascade import outcomes
    from cascade.cli import UsageError
    from cascade.learn import metrics
    from cascade.learn.classifier import evaluate, split_examples, trained_for
    from cascade.learn.estimator import OpenAIEmbedder, prompt_examples, train_prompt_estimator
    from cascade.learn.features import GROUPS
    from cascade.learn.verifier import train_verifier, verifier_examples
    from cascade.scorers.verifier import VerifierOptions

    data = outcomes.load(args.data)
    out = Path(args.output)
    answer = args.answer if args.verifier else None
    meta = {
        **trained_for(args.model, data, answer),
        "source": Path(args.data).name,
        "positive_at": args.positive_at,
    }
    started = time.perf_counter()
    if args.verifier:
        groups = [g.strip() for g in args.features.split(",")] if args.features else list(GROUPS)
        try:
            options = VerifierOptions(
                path=str(out),
                k=args.samples,
                answer=args.answer,
                features=groups,
                partners=[{"samples": 1, "model": m} for m in args.partner],
                checks=args.check,
            )
        except ValueError as err:
            raise UsageError(str(err).splitlines()[-1].strip()) from None
        examples, names = verifier_examples(options, data, args.model, positive_at=args.positive_at)
        kind = "verifier"
    else:
        examples = prompt_examples(data, args.model, positive_at=args.positive_at, versus=args.versus)
        names = ()
        if args.versus:
            meta["versus"] = args.versus
        kind = "prompt"
    if len(examples) < 40:
        raise UsageError(
            f"{args.model}: only {len(examples)} labelled answers in {args.data}; need at least 40"
        )
    train_set, test_set = split_examples(examples, args.test_share, args.seed)
    if args.verifier:
        clf = train_verifier(
            train_set,
            names,
            groups=groups,
            bits=args.bits,
            calibration=args.calibration,
            seed=args.seed,
            meta=meta,
        )
        p, _ = evaluate(clf, test_set)
        method = clf.calibration.method
        save = clf.save
    else:
        embedder = None
        spec = None
        if args.embeddings:
            spec = {"source": "openai", "model": args.embeddings, "base_url": args.embeddings_base_url}
            embedder = OpenAIEmbedder(args.embeddings, base_url=args.embeddings_base_url)
        est = train_prompt_estimator(
            train_set,
            embedder=embedder,
            embedding=spec,
            bits=args.bits,
            calibration=args.calibration,
            seed=args.seed,
            meta=meta,
        )
        p = est.predict_many([e.prompt for e in test_set])
        method = est.classifier.calibration.method
        save = est.save
    seconds = time.perf_counter() - started
    y = np.array([e.label for e in test_set])
    report = {
        "artifact": str(out),
        "kind": kind,
        "inputs": list(names),
        "n_train": len(train_set),
        "n_test": len(test_set),
        "base_rate": float(y.mean()),
        "auroc": metrics.auroc(p, y),
        "ece": metrics.ece(p, y),
        "brier": metrics.brier(p, y),
        "calibration": method,
        "seconds": round(seconds, 2),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out) as tmp:
        save(tmp)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    what = "verifier" if args.verifier else "prompt-only estimator"
    print(
        f"{args.model} {what} on {Path(args.data).name}: "
        f"trained on {len(train_set)}, tested on {len(test_set)}"
    )
    print(f"  held-out AUROC {report['auroc']:.3f}  ECE {report['ece']:.3f}  Brier {report['brier']:.3f}")
    if names:
        print(f"  inputs: {', '.join(names)}")
    print(f"  base rate {report['base_rate']:.3f}  calibration {method}  {seconds:.1f}s")
    print(f"  wrote {out}")
    return 0
