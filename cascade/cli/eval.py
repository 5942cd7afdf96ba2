"""``cascade eval``: simulate a policy over a recorded-outcomes file and report the field's metrics."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cascade.cli import UsageError

if TYPE_CHECKING:
    from cascade.evaluate.evaluate import Evaluation

NAME = "eval"
HELP = "Simulate a policy on recorded outcomes (nothing is called) and report quality, cost and metrics."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policy", help="policy YAML file")
    add_data_arguments(parser)
    parser.add_argument(
        "--split",
        choices=["none", "auto", "file", "seed"],
        default="none",
        help="evaluate every record (none, default) or only the held-out part of a split",
    )
    parser.add_argument(
        "--pair",
        metavar="WEAK,STRONG",
        help="weak/strong models for PGR/APGR/CPT (default: first and last tier)",
    )
    add_report_arguments(parser)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", metavar="FILE", help="recorded outcomes (default: the policy's replay file)"
    )
    parser.add_argument("--seed", type=int, default=0, help="split and bootstrap seed (default 0)")
    parser.add_argument("--test-fraction", type=float, default=0.5, help="held-out share with a seeded split")
    parser.add_argument(
        "--billing",
        choices=["auto", "recorded", "prompt_once"],
        default="auto",
        help="how samples are billed (auto: by provider; replay tiers by their own option)",
    )


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="FILE", help="write every figure as JSON (- for stdout)")
    parser.add_argument("--plot", metavar="FILE.png", help="write a quality-vs-cost plot")
    parser.add_argument(
        "--bootstrap", type=int, default=500, metavar="N", help="bootstrap resamples (default 500)"
    )


def data_path(policy_path: str, explicit: str | None) -> Path:
    """``--data``, else the file the policy's first replay tier reads."""
    if explicit:
        p = Path(explicit)
        if not p.exists():
            raise UsageError(f"{p}: no such recorded-outcomes file")
        return p
    from cascade.policy import loader

    pol = loader.load(policy_path)
    for t in pol.tiers:
        if t.provider == "replay" and "path" in t.options:
            p = Path(str(t.options["path"])).expanduser()
            return p if p.is_absolute() else Path(policy_path).resolve().parent / p
    raise UsageError("the policy has no replay tier: give the recorded outcomes with --data FILE")


def write_plot(ev: Evaluation, path: str) -> None:
    """The quality-vs-cost plot of an evaluation (matplotlib is the optional ``plot`` extra)."""
    from cascade.evaluate.report import plot

    try:
        plot(ev, path)
    except ImportError:
        raise UsageError(
            "--plot needs matplotlib: pip install 'cascade-llm[plot]'"
            " (pip install -e '.[plot]' in a checkout)"
        ) from None
    print(f"plot -> {path}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from cascade import outcomes
    from cascade.cli.progress import Progress
    from cascade.evaluate.data import EvalSet
    from cascade.evaluate.evaluate import evaluate, score_policy
    from cascade.evaluate.report import table, to_json
    from cascade.policy import loader

    policy = loader.load(args.policy)
    path = data_path(args.policy, args.data)
    data = outcomes.load(path)
    es = EvalSet.build(data, [t.model for t in policy.tiers])
    bar = Progress(len(es) * len(policy.tiers), label="scoring")
    tiers = score_policy(
        policy, data, es, Path(args.policy).resolve().parent, billing=args.billing, progress=bar.advance
    )
    bar.close()
    rows = es.split(args.split, seed=args.seed, test_fraction=args.test_fraction)
    pair = None
    if args.pair:
        parts = [p.strip() for p in args.pair.split(",")]
        if len(parts) != 2 or any(p not in es.models for p in parts):
            raise UsageError(f"--pair needs two models of the file, WEAK,STRONG (got {args.pair!r})")
        pair = (parts[0], parts[1])
    ev = evaluate(policy, es, tiers, rows, reps=args.bootstrap, seed=args.seed, pair=pair)
    if args.json == "-":
        print(to_json(ev))
    else:
        print(table(ev))
        if args.json:
            Path(args.json).write_text(to_json(ev) + "\n", encoding="utf-8")
            print(f"\nfigures -> {args.json}", file=sys.stderr)
    if args.plot:
        write_plot(ev, args.plot)
    return 0
