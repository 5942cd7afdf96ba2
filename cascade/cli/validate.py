"""``cascade validate``: check policy files (and that every tier can be built)."""

from __future__ import annotations

import argparse
import sys

from cascade.errors import CascadeError, PolicyError

NAME = "validate"
HELP = "Validate policy files; with --build also build each tier (checks credentials, prices, data files)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policies", nargs="+", metavar="POLICY")
    parser.add_argument("--build", action="store_true", help="also build the tiers")


def run(args: argparse.Namespace) -> int:
    from cascade import policy as policy_mod
    from cascade.engine.build import build

    failed = 0
    for path in args.policies:
        try:
            pol = policy_mod.load(path)
            if args.build:
                build(path)
        except PolicyError as err:
            failed += 1
            for problem in err.problems:
                print(f"cascade: error: {problem}", file=sys.stderr)
            continue
        except CascadeError as err:
            failed += 1
            print(f"cascade: error: {path}: {err}", file=sys.stderr)
            continue
        tiers = " -> ".join(f"{t.name} ({t.provider}:{t.model})" for t in pol.tiers)
        print(f"{path}: ok: {pol.name}: {tiers}")
    return 2 if failed else 0
