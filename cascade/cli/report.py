"""``cascade report``: live figures from an outcome log next to the tuned policy's predictions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cascade.cli import UsageError
from cascade.errors import ConfigurationError

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
    if not args.policy:
        _one_policy(rows)
    else:
        from cascade.policy import loader

        policy = loader.load(args.policy)  # a clear error for a policy that is not one
        rows = _rows_of(rows, policy, args.policy)
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


def _listing(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} ({n} rows)" for name, n in counts.items())


def _one_policy(rows: list[dict[str, Any]]) -> None:
    """Refuse a log that mixes policies: its figures would describe none of them."""
    from cascade.observe.logfile import policies

    found = policies(rows)
    if len(found) > 1:
        raise ConfigurationError(
            f"the log mixes {len(found)} policies: {_listing(found)}; report one of them with --policy FILE"
        )


def _rows_of(rows: list[dict[str, Any]], policy: Any, path: str) -> list[dict[str, Any]]:
    """The rows ``policy`` logged (its :meth:`identity`): predictions compare with their own runs only."""
    from cascade.observe.logfile import meta, policies

    pid = policy.identity()
    mine = [r for r in rows if meta(r).get("policy_id") == pid]
    others = policies(r for r in rows if meta(r).get("policy_id") != pid)
    if mine:
        if others:
            print(f"note: left out the rows of other policies: {_listing(others)}", file=sys.stderr)
        return mine
    if any(meta(r).get("policy_id") for r in rows):
        raise ConfigurationError(
            f"{path}: no row of the log was written by this policy ({policy.name}@{pid}); the log holds"
            f" {_listing(others)}: run this policy, then report its rows"
        )
    names = {str(meta(r).get("policy")) for r in rows}
    if rows and names != {policy.name}:
        print(
            f"warning: the log's rows are of policy {', '.join(sorted(names))}, not {policy.name!r}"
            f" ({path}): its predictions describe another policy",
            file=sys.stderr,
        )
    return rows


def read_rows(paths: list[str], since_arg: str | None) -> tuple[Any, list[dict[str, Any]]]:
    """The outcome log at ``paths`` and its rows (within ``--since``), or a one-line usage error."""
    from cascade.observe.logfile import read_log, since, undated

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
        if n := undated(log.rows):
            print(f"note: --since left out {n} row(s) without a readable `ts`", file=sys.stderr)
    if log.bad_lines:
        print(f"note: skipped {log.bad_lines} line(s) that are not log rows", file=sys.stderr)
    return log, rows
