"""``cascade tune``: choose tiers, order and thresholds from recorded outcomes; write the policy."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cascade.cli import UsageError
from cascade.cli.eval import (
    _family_plot,
    add_data_arguments,
    add_report_arguments,
    data_path,
    report_outputs,
    write_plot,
)
from cascade.files import Output, check_outputs, data_inputs, policy_inputs, write_text

if TYPE_CHECKING:
    from cascade.evaluate.tune import Tuning

MIN_RECORDS = 30  # per part: a 95% interval on fewer is too wide (or, bootstrapped, degenerate) to act on
NAME = "tune"
HELP = "Tune a policy skeleton on recorded outcomes (train/test split) and write the tuned YAML policy."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("skeleton", help="policy YAML whose tiers are the candidates")
    add_data_arguments(parser)
    goal = parser.add_mutually_exclusive_group(required=True)
    goal.add_argument(
        "--cost-cap", type=float, metavar="USD", help="maximise quality at most this cost per query"
    )
    goal.add_argument(
        "--target-quality",
        metavar="Q|best",
        help="minimise cost reaching this quality (a number, or 'best': the best single model's)",
    )
    goal.add_argument(
        "--max-drop",
        type=float,
        metavar="EPS",
        help="cheapest setting whose expected quality drop against the best single model is at most EPS,"
        " with probability at least 1 - RISK (Learn-then-Test on a calibration part)",
    )
    goal.add_argument(
        "--frontier",
        type=int,
        metavar="N",
        help="write a family of up to N tuned policies along the cost/quality frontier (budgets from the"
        " cheapest to the best single model's cost) and a family file listing them",
    )
    goal.add_argument(
        "--abstain-error",
        type=float,
        metavar="EPS",
        help="keep the skeleton's tiers and earlier thresholds; tune the last tier's abstain threshold"
        " (on_unverified: abstain) so the error among answered requests is at most EPS with probability"
        " at least 1 - RISK (Learn-then-Test on the training part)",
    )
    parser.add_argument(
        "--risk",
        type=float,
        default=0.05,
        metavar="DELTA",
        help="with --max-drop or --abstain-error: the risk (default 0.05)",
    )
    parser.add_argument(
        "--calibration",
        type=float,
        metavar="SHARE",
        help="with --max-drop: share of the training part kept for the risk test (default: enough"
        " records to prove half the drop, 50%%-85%%)",
    )
    parser.add_argument(
        "--models",
        metavar="all|M1,M2",
        help="also try these models of the file (with the skeleton's first scorer)",
    )
    parser.add_argument(
        "--partners",
        type=int,
        default=0,
        metavar="N",
        help="self_consistency candidates also vote with up to N other cheap models (agreement); default 0",
    )
    parser.add_argument(
        "--classifiers",
        type=int,
        default=0,
        metavar="N",
        help="also train a confidence classifier (training part only) for up to N cheap models (default 0)",
    )
    parser.add_argument(  # issue 9: ex-ante skip
        "--skip",
        type=int,
        default=0,
        metavar="N",
        help="also train prompt-only skip estimators for up to N cheap models and search skip thresholds"
        " with the accept thresholds (default 0)",
    )
    parser.add_argument(
        "--samples",
        metavar="K1,K2",
        help="self_consistency candidates also tried with these (smaller) sample counts",
    )
    parser.add_argument(
        "--pool", type=int, default=6, help="how many cheap models may be partners (default 6)"
    )
    parser.add_argument("--depth", type=int, default=3, help="most tiers in the cascade (default 3)")
    parser.add_argument(
        "--split",
        choices=["auto", "file", "seed"],
        default="auto",
        help="the file's own train/test split if it has one (auto), or a seeded one",
    )
    parser.add_argument(
        "--confidence",
        type=float,
        default=1.0,
        help="margin, in standard errors on the training part, the objective must hold by (default 1)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        metavar="Q",
        help="with --target-quality: a quality this much under the target still reaches it (default 0)",
    )
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="with --cost-cap: never write a randomised boundary (kind: boundary) to spend unused budget",
    )
    parser.add_argument(
        "--min-records",
        type=int,
        default=MIN_RECORDS,
        metavar="N",
        help=f"fewest records in the training and in the held-out part (default {MIN_RECORDS}): fewer give"
        " no meaningful interval; 1 to tune on whatever there is",
    )
    parser.add_argument("--out", metavar="FILE", help="tuned policy (default: SKELETON.tuned.yaml)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="with --frontier: replace existing member files (--out x.yaml writes x-1.yaml, x-2.yaml...)",
    )
    add_report_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from cascade import outcomes
    from cascade.cli.progress import Progress
    from cascade.errors import ConfigurationError
    from cascade.evaluate import held_out
    from cascade.evaluate.report import table, to_json
    from cascade.evaluate.tune import Objective, tune
    from cascade.evaluate.write import diff, header_lines, rebase, render, tier_notes, tuned_block, tuned_raw
    from cascade.policy import loader

    args.seed = 0 if args.seed is None else args.seed
    args.test_fraction = 0.5 if args.test_fraction is None else args.test_fraction
    if args.depth < 1:
        raise UsageError("--depth must be at least 1")
    for flag, value, ok in (
        ("--partners", args.partners, args.partners >= 0),
        ("--classifiers", args.classifiers, args.classifiers >= 0),
        ("--skip", args.skip, args.skip >= 0),
        ("--pool", args.pool, args.pool >= 1),
        ("--min-records", args.min_records, args.min_records >= 1),
        ("--bootstrap", args.bootstrap, args.bootstrap >= 1),
        ("--test-fraction", args.test_fraction, 0 < args.test_fraction < 1),
        ("--seed", args.seed, 0 <= args.seed < 2**32),
    ):
        if not ok:
            raise UsageError(f"{flag}: out of range (got {value})")
    if args.abstain_error is not None:
        return _abstain(args)
    if loader.load(args.skeleton).on_unverified == "abstain":
        raise UsageError(
            "the skeleton says on_unverified: abstain: tune its abstain threshold with --abstain-error"
            " (the other goals write a last tier without a scorer)"
        )
    target: float | str | None = None
    if args.target_quality is not None:
        if args.target_quality == "best":
            target = "best"
        else:
            try:
                target = float(args.target_quality)
            except ValueError:
                raise UsageError(
                    f"--target-quality: a number or 'best' (got {args.target_quality!r})"
                ) from None
    if args.frontier is not None:
        if args.frontier < 1:
            raise UsageError(f"--frontier: at least 1 member (got {args.frontier})")
        target = "best"
    try:
        objective = Objective(
            args.cost_cap,
            target,  # type: ignore[arg-type]
            args.confidence,
            max_drop=args.max_drop,
            risk=args.risk,
            calibration=args.calibration,
            tolerance=args.tolerance,
        )
    except ConfigurationError as err:
        raise UsageError(str(err)) from None
    models = None
    if args.models:
        models = "all" if args.models == "all" else [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        samples = [int(k) for k in args.samples.split(",")] if args.samples else []
    except ValueError:
        raise UsageError(f"--samples: comma-separated counts (got {args.samples!r})") from None
    if any(k < 1 for k in samples):
        raise UsageError(f"--samples: every count at least 1 (got {args.samples!r})")
    suffix = ".family.yaml" if args.frontier is not None else ".tuned.yaml"
    out = Path(args.out) if args.out else Path(args.skeleton).with_suffix(suffix)
    data_file = data_path(args.skeleton, args.data)
    learned = [Output("the learned scorers' folder", _artifacts(out), folder=True)]
    check_outputs(
        [
            Output("--out", out),
            *_members(out, args.frontier or 0),
            *report_outputs(args),
            *(learned if args.classifiers or args.skip else []),
        ],
        [*data_inputs(data_file), *policy_inputs(args.skeleton, "the skeleton")],
        force=args.force,
    )
    data = outcomes.load(data_file)
    bar = Progress(1, label="scoring candidates")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.advance(done - bar.done)

    tuning = tune(
        args.skeleton,
        data,
        objective,
        models=models,
        partners=args.partners,
        samples=samples,
        classifiers=args.classifiers,
        skip=args.skip,
        artifacts=_artifacts(out),
        pool=args.pool,
        depth=args.depth,
        split=args.split,
        seed=args.seed,
        test_fraction=args.test_fraction,
        billing=args.billing,
        progress=progress,
        randomise=not args.deterministic,
        min_records=args.min_records,
    )
    bar.close()
    for note in tuning.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.frontier is not None:
        return _family(args, tuning, out, data_file)
    if tuning.guarantee is not None and tuning.guarantee.infeasible:
        print(f"cascade: {tuning.guarantee.sentence()}", file=sys.stderr)
        return 1
    if tuning.choice is None:
        print(
            "cascade: no setting meets the objective on the training part; relax it (or --confidence 0)",
            file=sys.stderr,
        )
        return 1
    from cascade.evaluate.report import usd

    goal = (
        f"highest quality at most {usd(args.cost_cap)} per query"
        if args.cost_cap is not None
        else f"cheapest setting with expected quality drop <= {args.max_drop:g} vs {tuning.reference}"
        f" with probability >= {1 - args.risk:g}"
        if args.max_drop is not None
        else f"lowest cost reaching quality {target}"
        + (
            f" (the best single model on the training part, {tuning.reference}: {tuning.target_quality:.4f})"
            if target == "best"
            else ""
        )
    )
    raw = rebase(
        tuned_raw(args.skeleton, tuning, tuning.choice, tuned_block(tuning, data_file, out)),
        args.skeleton,
        out,
    )
    draft = render(raw, [], {})
    policy = loader.loads(draft, source="<tuned>")
    ev = held_out(tuning, tuning.choice, policy, reps=args.bootstrap, seed=args.seed, baselines=True)
    header = header_lines(ev.figures, tuning, goal)
    text = render(
        raw,
        [*header, f"{tuning.settings_tried} settings tried", ""],
        tier_notes(ev.figures),
    )
    write_text(out, text)
    if args.json == "-":
        print(to_json(ev))
    else:
        print(f"tuned on {int(tuning.train.sum())} records; held-out figures on {int(tuning.test.sum())}:\n")
        if tuning.guarantee is not None:
            print("\n".join(line for line in header if line.startswith(("guarantee", "  settings"))) + "\n")
        print(table(ev, models=0))
        print()
        old = Path(args.skeleton).read_text(encoding="utf-8")
        print(diff(old, text, str(args.skeleton), str(out)) or "(no change)")
        if args.json:
            write_text(args.json, to_json(ev) + "\n")
    quality = " ".join(next(line for line in header if line.startswith("predicted quality")).split())
    held = ev.figures.get("records")
    print(f"tuned policy -> {out} ({quality} on {held} held-out records)", file=sys.stderr)
    if args.plot:
        write_plot(ev, args.plot)
    return 0


def _family(args: argparse.Namespace, tuning: Tuning, out: Path, data_file: Path) -> int:
    """``--frontier N``: one policy per member, a family file, the family's held-out figures."""
    import json

    from cascade.evaluate import family, held_out
    from cascade.evaluate.report import usd
    from cascade.evaluate.write import header_lines, rebase, render, tier_notes, tuned_block, tuned_raw
    from cascade.policy import loader

    chosen = family.members(tuning, args.frontier)
    if not chosen:
        print("cascade: the training part has no frontier setting to write", file=sys.stderr)
        return 1
    files: list[Path] = []
    evals = []
    for k, (member, s) in enumerate(zip(_members(out, len(chosen)), chosen, strict=True), 1):
        path = member.path
        raw = rebase(
            tuned_raw(args.skeleton, tuning, s, tuned_block(tuning, data_file, path)), args.skeleton, path
        )
        raw["name"] = f"{raw.get('name', 'policy')}-{k}"
        policy = loader.loads(render(raw, [], {}), source=str(path))
        ev = held_out(tuning, s, policy, reps=args.bootstrap, seed=args.seed, baselines=k == 1)
        goal = f"frontier member {k} of {len(chosen)}: best on the training part at {usd(s.cost)}/query"
        text = render(raw, [*header_lines(ev.figures, tuning, goal), ""], tier_notes(ev.figures))
        write_text(path, text)
        files.append(path)
        evals.append((path.name, ev))
    figures = family.family_figures(evals)
    family.write_family(out, files, figures)
    if args.json == "-":
        print(json.dumps(figures, indent=2))
    else:
        print(family.table(figures))
        if args.json:
            write_text(args.json, json.dumps(figures, indent=2) + "\n")
    print(f"family of {len(files)} policies -> {out}", file=sys.stderr)
    if args.plot:
        _family_plot(figures, args.plot)
    return 0


def _abstain(args: argparse.Namespace) -> int:
    """``--abstain-error EPS``: the skeleton as it is, with ``on_unverified: abstain`` and its last
    tier's threshold tuned by :func:`cascade.evaluate.abstain.tune_abstain` on the training part;
    the held-out part only measures (coverage, error among answered, cost)."""
    from dataclasses import replace

    import yaml

    from cascade import outcomes
    from cascade.cli.progress import Progress
    from cascade.evaluate.abstain import cascade_scores, tune_abstain
    from cascade.evaluate.data import EvalSet
    from cascade.evaluate.evaluate import evaluate, score_policy
    from cascade.evaluate.report import table, to_json, usd
    from cascade.evaluate.write import diff, rebase, relative_data, render
    from cascade.policy import loader

    if not 0 < args.abstain_error < 1 or not 0 < args.risk < 1:
        raise UsageError(
            f"--abstain-error and --risk: between 0 and 1 (got {args.abstain_error:g}, {args.risk:g})"
        )
    policy = loader.load(args.skeleton)
    last = policy.tiers[-1]
    if last.scorer is None:
        raise UsageError(
            f"--abstain-error needs a scorer on the last tier {last.name!r} (its score is abstained on)"
        )
    if policy.on_exhausted == "raise":
        raise UsageError("--abstain-error: the skeleton says on_exhausted: raise; abstain and raise disagree")
    out = Path(args.out) if args.out else Path(args.skeleton).with_suffix(".tuned.yaml")
    data_file = data_path(args.skeleton, args.data)
    check_outputs(
        [Output("--out", out), *report_outputs(args)],
        [*data_inputs(data_file), *policy_inputs(args.skeleton, "the skeleton")],
    )
    data = outcomes.load(data_file)
    es = EvalSet.build(data, [t.model for t in policy.tiers])
    bar = Progress(len(es) * len(policy.tiers), label="scoring")
    base = Path(args.skeleton).resolve().parent
    tiers = score_policy(policy, data, es, base, billing=args.billing, progress=bar.advance)
    bar.close()
    test = es.split(args.split, seed=args.seed, test_fraction=args.test_fraction)
    train = ~test
    if min(int(train.sum()), int(test.sum())) < args.min_records:
        print(
            f"cascade: the training part has {int(train.sum())} records and the held-out part"
            f" {int(test.sum())}: fewer than --min-records {args.min_records}",
            file=sys.stderr,
        )
        return 1
    scores, correct = cascade_scores(tiers)
    tuned = tune_abstain(scores[train], correct[train], args.abstain_error, args.risk, seed=args.seed)
    if tuned.threshold is None:
        print(f"cascade: {tuned.sentence()}", file=sys.stderr)
        return 1
    raw = yaml.safe_load(Path(args.skeleton).read_text(encoding="utf-8"))
    raw["on_unverified"] = "abstain"
    raw["tiers"][-1]["threshold"] = tuned.threshold
    raw["tuned"] = {
        "data": relative_data(data_file, out),
        "split": args.split,
        "seed": args.seed,
        "test_fraction": args.test_fraction,
    }
    raw = rebase(raw, args.skeleton, out)
    written = loader.loads(render(raw, [], {}), source="<tuned>")
    arrays = [*tiers[:-1], replace(tiers[-1], threshold=tuned.threshold)]
    part = f"the held-out part of {data_file.name} ({int(test.sum())} of {len(es)} records)"
    ev = evaluate(written, es, arrays, test, reps=args.bootstrap, seed=args.seed, part=part)
    ab = ev.figures["abstention"]
    header = [
        f"Tuned by `cascade tune --abstain-error {args.abstain_error:g} --risk {args.risk:g}`"
        f" on {int(train.sum())} training records of {data_file.name}",
        f"guarantee: {tuned.sentence()}",
        f"held-out ({int(test.sum())} records): coverage {ab['coverage']['value']:.1%},"
        f" error among answered {ab['error_among_answered']['value']:.2%},"
        f" cost/query {usd(ev.figures['cost_per_query_usd']['value'])}",
        "",
    ]
    text = render(raw, header, {})
    write_text(out, text)
    if args.json == "-":
        print(to_json(ev))
    else:
        print("\n".join(header[1:3]) + "\n")
        print(table(ev, models=0))
        print()
        print(diff(Path(args.skeleton).read_text(encoding="utf-8"), text, str(args.skeleton), str(out)))
        if args.json:
            write_text(args.json, to_json(ev) + "\n")
    print(f"tuned policy -> {out} (abstain threshold {tuned.threshold:g})", file=sys.stderr)
    if args.plot:
        write_plot(ev, args.plot)
    return 0


def _artifacts(out: Path) -> Path:
    """Where ``--classifiers`` and ``--skip`` write their artifacts, next to ``--out``."""
    return out.with_suffix(".classifiers")


def _members(out: Path, n: int) -> list[Output]:
    """The member files ``--frontier N --out x.yaml`` writes: ``x-1.yaml`` .. ``x-N.yaml``."""
    stem = out.name.removesuffix(".yaml").removesuffix(".family")
    return [
        Output(f"--out {out}'s frontier member", out.with_name(f"{stem}-{k}.yaml"), False)
        for k in range(1, n + 1)
    ]
