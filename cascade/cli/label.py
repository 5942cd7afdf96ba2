"""``cascade label``: fill the quality labels of an outcome log, and write a file to tune on."""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from cascade.cli import UsageError
from cascade.files import Input, Output, card_path, check_outputs, log_inputs, write_text, writing

NAME = "label"
HELP = "Label an outcome log (strongest tier, a judge, or human labels) and write a labelled file."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", nargs="+", help="outcome log files, directories or the policy's log path")
    parser.add_argument(
        "--reference",
        action="append",
        required=True,
        metavar="strongest|judge|file:CSV|recorded",
        help="a label source (repeat to combine: the first that labels a sample wins)",
    )
    parser.add_argument(
        "--out", required=True, metavar="LABELLED", help="labelled file (.jsonl or .jsonl.gz)"
    )
    parser.add_argument(
        "--rows",
        choices=["shadow", "labelled", "all"],
        default="shadow",
        help="rows written: shadow-sampled ones, the unbiased sample to tune on (default), every row"
        " with a label for every model, or all",
    )
    parser.add_argument("--judge", metavar="SCORER.yaml", help="--reference judge: the judge scorer's spec")
    parser.add_argument(
        "--judge-budget", default="1", metavar="USD", help="most the judge may spend (default 1)"
    )
    parser.add_argument("--since", metavar="7d", help="only rows newer than this (s, m, h, d)")


def _judge(args: argparse.Namespace) -> tuple[Any, Any]:
    import yaml
    from pydantic import ValidationError

    from cascade.engine.build import BuildContext
    from cascade.observe.label import JudgeBudget
    from cascade.policy.schema import ScorerSpec

    if not args.judge:
        raise UsageError("--reference judge needs --judge SCORER.yaml (a scorer spec: kind: judge, ...)")
    try:
        budget = Decimal(args.judge_budget)
    except InvalidOperation:
        raise UsageError(f"--judge-budget: a number of USD (got {args.judge_budget!r})") from None
    if not budget.is_finite() or budget <= 0:
        raise UsageError(f"--judge-budget: a positive number of USD (got {args.judge_budget!r})")
    path = Path(args.judge)
    shape = "a judge spec is one scorer: kind: judge, provider: ..., model: ..."
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such judge spec file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"{path}: cannot read the judge spec: {first}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: {shape}")
    try:
        spec = ScorerSpec.model_validate(data)
        scorer = BuildContext(path.parent).build_scorer(spec)
    except ValidationError as err:
        problem = err.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "spec"
        raise UsageError(f"{path}: {where}: {problem['msg']} ({shape})") from None
    return scorer, JudgeBudget(budget)


def reference_inputs(args: argparse.Namespace) -> list[Input]:
    """The label files (``--reference file:CSV``) and the judge spec read."""
    files = [Input("the labels file", Path(r[5:])) for r in args.reference if r.startswith("file:") and r[5:]]
    return files + ([Input("the judge spec", Path(args.judge))] if args.judge else [])


def _check_files(files: list[Any], log: Any, rows: list[dict[str, Any]]) -> None:
    """Human-label files must name the log's models; an id labelled twice two ways is a warning."""
    from cascade.errors import ConfigurationError
    from cascade.observe.logfile import merged_card

    models = {m for r in rows for m in r["responses"]} | set(merged_card(log.cards)["models"])
    for f in files:
        for problem in f.conflicts[:5]:
            print(f"warning: {problem}", file=sys.stderr)
        if len(f.conflicts) > 5:
            print(f"warning: {f.path}: {len(f.conflicts) - 5} more conflicting labels", file=sys.stderr)
        unknown = sorted(f.models - models)
        if unknown:
            raise ConfigurationError(
                f"{f.path}: model(s) {', '.join(unknown)} not in the log (its models:"
                f" {', '.join(sorted(models)) or 'none'}); use the log's model names"
            )


def run(args: argparse.Namespace) -> int:
    from cascade.cli.report import read_rows
    from cascade.observe import label as lab
    from cascade.observe.logfile import merged_card, meta

    sources: dict[str, Any] = {}
    judge_budget = None
    for ref in args.reference:
        if ref == "strongest":
            sources[ref] = lab.strongest
        elif ref == "recorded":
            sources[ref] = lab.recorded
        elif ref == "judge":
            scorer, judge_budget = _judge(args)
            sources[ref] = lab.from_judge(scorer, judge_budget)
        elif ref.startswith("file:") and len(ref) > 5:
            try:
                sources[ref] = lab.from_file(ref[5:])
            except UnicodeDecodeError as err:
                raise UsageError(
                    f"{ref[5:]}: not a UTF-8 CSV file ({err.reason} at byte {err.start})"
                ) from None
        else:
            raise UsageError(f"--reference: strongest, judge, recorded or file:labels.csv (got {ref!r})")
    out = Path(args.out)
    check_outputs(
        [Output("--out", out), Output("the card of --out", card_path(out))],
        [*log_inputs(args.log), *reference_inputs(args)],
    )
    log, rows = read_rows(args.log, args.since)
    _check_files([s for s in sources.values() if isinstance(s, lab.FileLabels)], log, rows)
    per_source = {name: [fn(r) for r in rows] for name, fn in sources.items()}
    kept: list[dict[str, Any]] = []
    labelled = 0
    for i, row in enumerate(rows):
        complete = lab.apply(row, [per_source[name][i] for name in sources])
        labelled += complete
        shadow = bool(meta(row).get("shadow"))
        if args.rows == "all" or (args.rows == "labelled" and complete) or (args.rows == "shadow" and shadow):
            kept.append(row)
    out.parent.mkdir(parents=True, exist_ok=True)
    with writing(out) as fh:
        for row in kept:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    card = merged_card(log.cards)
    card["quality"] = "labelled by cascade label: " + ", ".join(sources)
    write_text(card_path(out), json.dumps(card, indent=2) + "\n")

    shadow_rows = sum(bool(meta(r).get("shadow")) for r in rows)
    print(f"{len(rows)} rows ({shadow_rows} shadow) from {len(log.files)} file(s)")
    for name in sources:
        n = sum(x is not None for x in per_source[name])
        print(f"  {name}: labels {n} rows")
    print(f"  every model labelled on {labelled} rows")
    if judge_budget is not None:
        print(
            f"  judge: {judge_budget.calls} calls, ${judge_budget.spent} spent"
            + (f", {judge_budget.failed} without a verdict" if judge_budget.failed else "")
            + (f", {judge_budget.skipped} samples left unlabelled (budget)" if judge_budget.skipped else "")
        )
    if len(sources) > 1:
        print("agreement between label sources (first-sample labels, rows both label):")
        for p in lab.agreement(per_source):
            rate = "-" if p.rate is None else f"{p.rate:.1%}"
            print(f"  {p.a} vs {p.b}: {rate} of {p.compared}")
    print(f"{len(kept)} rows -> {out}", file=sys.stderr)
    if not kept:
        print(f"note: no rows kept (--rows {args.rows}); is shadow sampling on?", file=sys.stderr)
    return 0
