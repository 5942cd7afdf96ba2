"""``cascade eval``: simulate a policy over a recorded-outcomes file and report the field's metrics."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cascade.cli import UsageError
from cascade.files import Output, check_plot

if TYPE_CHECKING:
    from cascade.evaluate.evaluate import Evaluation

NAME = "eval"
HELP = "Simulate a policy on recorded outcomes (nothing is called) and report quality, cost and metrics."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policy", help="policy YAML file, or a family file from `cascade tune --frontier`")
    add_data_arguments(parser)
    parser.add_argument(
        "--split",
        choices=["none", "auto", "file", "seed"],
        default=None,
        help="evaluate every record (none) or only the held-out part of a split; default: the split a"
        " tuned policy records (its held-out part), else none",
    )
    parser.add_argument(
        "--pair",
        metavar="WEAK,STRONG",
        help="weak/strong models for PGR/APGR/CPT (default: the policy's cheapest and strongest models)",
    )
    add_report_arguments(parser)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", metavar="FILE", help="recorded outcomes (default: the policy's replay file)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="split and bootstrap seed (default: a tuned policy's, else 0)"
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=None,
        help="held-out share with a seeded split (default: a tuned policy's, else 0.5)",
    )
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


def report_outputs(args: argparse.Namespace) -> list[Output]:
    """The files ``--json`` (unless ``-``) and ``--plot`` name; ``--plot`` checked before any work."""
    if args.plot:
        check_plot(args.plot)
    return [
        Output(flag, Path(v)) for flag, v in (("--json", args.json), ("--plot", args.plot)) if v and v != "-"
    ]


def data_path(policy_path: str, explicit: str | None) -> Path:
    """``--data``, else the file a tuned policy records (``tuned.data``), else the file the policy's
    first replay tier reads, else ``$CASCADE_DATA`` when it names a file."""
    import os

    if explicit:
        p = Path(explicit)
        if not p.exists():
            raise UsageError(f"{p}: no such recorded-outcomes file")
        return p
    from cascade.policy import loader

    pol = loader.load(policy_path)
    base = Path(policy_path).resolve().parent
    if pol.tuned is not None:
        p = Path(pol.tuned.data).expanduser()
        p = p if p.is_absolute() else base / p
        if p.exists():
            return p
    for t in pol.tiers:
        if t.provider == "replay" and "path" in t.options:
            p = Path(str(t.options["path"])).expanduser()
            return p if p.is_absolute() else base / p
    env = os.environ.get("CASCADE_DATA")
    if env and Path(env).is_file():
        return Path(env)
    raise UsageError(
        "the policy has no replay tier and records no tuning data: give the recorded outcomes with"
        " --data FILE (a folder of them, e.g. ../shared/data, can be set as $CASCADE_DATA for the"
        " benchmarks)"
    )


def write_plot(ev: Evaluation, path: str) -> None:
    """The quality-vs-cost plot of an evaluation (its path checked by :func:`report_outputs`)."""
    from cascade.evaluate.report import plot

    plot(ev, path)
    print(f"plot -> {path}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from cascade.evaluate import family
    from cascade.evaluate.report import table, to_json
    from cascade.files import Input, check_outputs, data_inputs, policy_inputs, write_text

    if args.bootstrap < 1:
        raise UsageError(f"--bootstrap: at least 1 (got {args.bootstrap})")
    if args.test_fraction is not None and not 0 < args.test_fraction < 1:
        raise UsageError(f"--test-fraction: between 0 and 1 (got {args.test_fraction})")
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise UsageError(f"--seed: between 0 and 2**32 - 1 (got {args.seed})")
    is_family = family.is_family(args.policy)
    members = family.read_family(args.policy) if is_family else [Path(args.policy)]
    inputs = [Input("the family file", Path(args.policy))] if is_family else []
    for p in members:
        inputs += [*data_inputs(data_path(str(p), args.data)), *policy_inputs(p)]
    check_outputs(report_outputs(args), inputs)
    if is_family:
        import json

        # the baselines once, with the first member (every member is measured on the same records)
        evals = [
            (p.name, evaluate_one(str(p), args, baselines=k == 0))
            for k, p in enumerate(family.read_family(args.policy))
        ]
        figures = family.family_figures(evals)
        if args.json == "-":
            print(json.dumps(figures, indent=2))
        else:
            print(family.table(figures))
            if args.json:
                write_text(args.json, json.dumps(figures, indent=2) + "\n")
        if args.plot:
            _family_plot(figures, args.plot)
        return 0
    ev = evaluate_one(args.policy, args)
    if args.json == "-":
        print(to_json(ev))
    else:
        print(table(ev))
        if args.json:
            write_text(args.json, to_json(ev) + "\n")
            print(f"\nfigures -> {args.json}", file=sys.stderr)
    if args.plot:
        write_plot(ev, args.plot)
    return 0


def _family_plot(figures: dict[str, Any], path: str) -> None:
    from cascade.evaluate import family

    family.plot(figures, path)  # its path checked by report_outputs
    print(f"plot -> {path}", file=sys.stderr)


def evaluate_one(policy_path: str, args: argparse.Namespace, *, baselines: bool = True) -> Evaluation:
    """Score one policy file and evaluate it on the part ``args`` (or its ``tuned:`` block) says;
    ``baselines``: with the two-model cascade and prompt-router baselines of its tiers."""
    from cascade import outcomes
    from cascade.cli.progress import Progress
    from cascade.evaluate.data import EvalSet
    from cascade.evaluate.evaluate import evaluate, score_policy
    from cascade.evaluate.tune import check_choices, raw_tiers
    from cascade.policy import loader

    policy = loader.load(policy_path)
    path = data_path(policy_path, args.data)
    data = outcomes.load(path)
    for note in check_choices(raw_tiers(policy_path), data, fill=False):
        print(f"warning: {note}", file=sys.stderr)
    tuned = policy.tuned
    same_data = tuned is not None and (
        args.data is None or Path(args.data).resolve() == data_path(policy_path, None).resolve()
    )
    split = args.split or (tuned.split if tuned is not None and same_data else "none")
    seed = args.seed if args.seed is not None else (tuned.seed if tuned is not None else 0)
    fraction = args.test_fraction or (tuned.test_fraction if tuned is not None else 0.5)
    es = EvalSet.build(data, [t.model for t in policy.tiers])
    bar = Progress(len(es) * len(policy.tiers), label="scoring")
    tiers = score_policy(
        policy, data, es, Path(policy_path).resolve().parent, billing=args.billing, progress=bar.advance
    )
    bar.close()
    rows = es.split(split, seed=seed, test_fraction=fraction)  # type: ignore[arg-type]
    if split == "none":
        part = f"every record of {path.name}" + (
            " (including the part the policy was tuned on)" if tuned is not None and same_data else ""
        )
    else:
        rule = (
            "the file's own split"
            if split == "file" or (split == "auto" and not _seeded(es, rows))
            else (f"seed {seed}, held-out share {fraction:g}")
        )
        part = f"the held-out part of {path.name} ({int(rows.sum())} of {len(es)} records; {rule})"
    pair = None
    if args.pair:
        parts = [p.strip() for p in args.pair.split(",")]
        if len(parts) != 2 or any(p not in es.models for p in parts):
            raise UsageError(f"--pair needs two models of the file, WEAK,STRONG (got {args.pair!r})")
        pair = (parts[0], parts[1])
    return evaluate(
        policy,
        es,
        tiers,
        rows,
        reps=args.bootstrap,
        seed=seed,
        pair=pair,
        part=part,
        pool=tiers if baselines else None,
    )


def _seeded(es: object, rows: object) -> bool:
    """Whether an ``auto`` split fell back to the seed (the file carries no split of its own)."""
    records = getattr(es, "records", [])
    own = [(r.split or "").lower() in ("test", "validation", "dev", "val") for r in records]
    return not (any(own) and not all(own))
