"""``cascade spend``: what every cap of a policy has spent, holds and has left, from its ledger."""

from __future__ import annotations

import argparse
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from cascade.cli import UsageError
from cascade.protocols import HeldLedger
from cascade.types import show

NAME = "spend"
HELP = "Show spent, held and remaining money for every cap of a policy (from its SQLite or Redis ledger)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", "-p", required=True, help="policy YAML file")
    parser.add_argument("--key", help="caller key for per-key caps (without it they are skipped)")
    parser.add_argument("--window", choices=("day", "month", "total"), help="only the caps over this window")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from cascade import policy as policy_mod
    from cascade.budget import Budget, Cap
    from cascade.engine.build import BuildContext, _ledger
    from cascade.policy.schema import LedgerSpec

    path = Path(args.policy)
    pol = policy_mod.load(path)
    b = pol.budget
    spec = b.ledger or LedgerSpec()
    if not b.caps:
        raise UsageError(f"{path}: policy {pol.name!r} has no window caps (budget.caps)")
    if spec.kind == "memory":
        raise UsageError(
            f"{path}: policy {pol.name!r} keeps its caps in a memory ledger, which lives inside each"
            " running process: there is nothing to read from outside (use kind: sqlite or redis)"
        )
    caps = [c for c in b.caps if args.window is None or c.window == args.window]
    skipped = [c for c in caps if c.scope == "key" and args.key is None]
    caps = [c for c in caps if c not in skipped]
    if args.window is not None and not caps and not skipped:
        raise UsageError(f"{path}: policy {pol.name!r} has no {args.window} cap")
    ctx = BuildContext(path.parent)
    unopened = None
    if spec.kind == "sqlite":
        from cascade.budget.sqlite import default_path

        file = ctx.path(spec.path) if spec.path else default_path()
        if not file.exists():  # reading must not create a ledger: nothing is spent yet, $0
            unopened = file
    if unopened is not None:
        from cascade.budget.memory import MemoryLedger

        ledger: Any = MemoryLedger()
    else:
        ledger = _ledger(spec, pol.name, ctx)
    budget = Budget(caps=tuple(Cap(c.limit, c.window, c.scope) for c in caps), ledger=ledger)
    rows: list[dict[str, Any]] = []
    for cap, (bucket, limit) in zip(caps, budget.buckets(pol.name, args.key), strict=True):
        spent = ledger.spent(bucket)
        held = ledger.held(bucket) if isinstance(ledger, HeldLedger) else None
        remaining = max(limit - spent - (held or Decimal(0)), Decimal(0))
        rows.append(
            {
                "bucket": bucket,
                "scope": cap.scope,
                "window": cap.window,
                "limit": limit,
                "spent": spent,
                "held": held,
                "remaining": remaining,
            }
        )
    if args.json:
        out = {
            "policy": pol.name,
            "ledger": spec.kind,
            **({"note": f"no ledger at {unopened} yet: nothing spent"} if unopened else {}),
            "caps": [{k: _json(v) for k, v in r.items()} for r in rows],
            "skipped": [f"{c.scope} {c.window} cap (needs --key)" for c in skipped],
        }
        print(json.dumps(out, indent=2))
        return 0
    head = ("bucket", "limit", "spent", "held", "remaining")
    table = [head] + [
        (
            r["bucket"],
            f"${show(r['limit'])}",
            f"${show(r['spent'])}",
            "n/a" if r["held"] is None else f"${show(r['held'])}",
            f"${show(r['remaining'])}",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    print(
        f"policy {pol.name} ({spec.kind} ledger"
        + (f" {unopened}: none yet, nothing spent)" if unopened else ")")
    )
    for row in table:
        print(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    for c in skipped:
        print(f"(a per-key {c.window} cap of ${show(c.limit)}: pass --key to see one key's spend)")
    return 0


def _json(value: Any) -> Any:
    """Money as an exact decimal string without exponent ("0", "0.0001375")."""
    return format(value.normalize(), "f") if isinstance(value, Decimal) else value
