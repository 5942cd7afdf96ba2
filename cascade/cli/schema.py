"""``cascade schema``: print the policy JSON Schema."""

from __future__ import annotations

import argparse
import json

NAME = "schema"
HELP = "Print the JSON Schema of policy files (for editors: yaml-language-server)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="write to this file instead of stdout")


def run(args: argparse.Namespace) -> int:
    from cascade.policy.jsonschema import policy_json_schema

    text = json.dumps(policy_json_schema(), indent=2, sort_keys=True) + "\n"
    if args.out:
        from cascade.files import write_text

        write_text(args.out, text)
    else:
        print(text, end="")
    return 0
