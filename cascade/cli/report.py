"""``cascade report``: live figures from an outcome log next to the tuned policy's predictions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cascade.cli import UsageError

NAME = "report"
HELP = "Report live accept rates, escalations, cost and quality from an outcome log, with drift flags."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", nargs="+", help="outcome log files, directories or the policy's log path")
    parser.add_argument("--policy", metavar="P", help="tuned policy whose predicted figures to compare")
    parser.add_argument("--since", metavar="7d", help="only rows newer than this (s, m, h, d)")
    parser.add_argument("--json", metavar="OUT", help="write the figures as JSON ('-' for stdout)")
    parser.add_argument("--plot", metavar="PNG", help="plot live vs predicted accept rates")
    parser.add_argument(
        "--fail-on-drift", action="store_true", help="exit 3 when a figure drifted (for scheduled checks)"
    )


def run(args: argparse.Namespace) -> int:
    from cascade.cli.eval import report_outputs
    from cascade.files import check_outputs, log_inputs, policy_inputs, write_text
    from cascade.observe.report import plot, predictions, report, table

    check_outputs(
        report_outputs(args), [*log_inputs(args.log), *(policy_inputs(args.policy) if args.policy else [])]
    )
    log, rows = read_rows(args.log, args.since)
    tiers = log.tiers
    predicted: dict[str, object] = {"tiers": {}}
    if args.policy:
        from cascade.policy import loader

        policy = loader.load(args.policy)  # a clear error for a policy that is not one
        predicted = predictions(Path(args.policy).read_text(encoding="utf-8"))
        names = [t.name for t in policy.tiers]
        tiers = names + [t for t in tiers if t not in names]
        if len(predicted) == 1:
            print(
                f"note: {args.policy} carries no predicted figures (not written by cascade tune)",
                file=sys.stderr,
            )
    fig = report(rows, tiers, predicted)
    if args.json == "-":
        print(json.dumps(fig, indent=2))
    else:
        print(table(fig))
        if args.json:
            write_text(args.json, json.dumps(fig, indent=2) + "\n")
    if args.plot:
        plot(fig, args.plot)  # its path checked by report_outputs
        print(f"plot -> {args.plot}", file=sys.stderr)
    return 3 if args.fail_on_drift and fig["drift"] else 0


def read_rows(paths: list[str], since_arg: str | None) -> tuple[Any, list[dict[str, Any]]]:
    """The outcome log at ``paths`` and its rows (within ``--since``), or a one-line usage error."""
    from cascade.observe.logfile import read_log, since

    log = read_log(paths)
    if not log.rows and log.bad_lines:
        raise UsageError(
            f"{', '.join(paths)}: no outcome-log rows ({log.bad_lines} line(s) that are not rows);"
            " give the files or folder of the policy's logging.outcomes path"
        )
    rows = log.rows
    if since_arg:
        try:
            rows = since(rows, since_arg)
        except ValueError as err:
            raise UsageError(f"--since: {err}") from None
    if log.bad_lines:
        print(f"note: skipped {log.bad_lines} line(s) that are not log rows", file=sys.stderr)
    return log, rows
