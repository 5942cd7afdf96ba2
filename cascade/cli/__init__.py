"""The ``cascade`` command line.

Each subcommand is a module in this package with ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; :data:`COMMANDS` lists them in help order. Errors a user can fix print as
one line (``cascade: error: ...``) with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from cascade.errors import CascadeError, PolicyError
from cascade.files import OutputPathError

COMMANDS = ("run", "validate", "schema", "eval", "tune", "train-scorer", "label", "report", "spend", "serve")


class UsageError(Exception):
    """Bad command-line input (exit 2)."""


def build_parser() -> argparse.ArgumentParser:
    from cascade import __version__

    parser = argparse.ArgumentParser(
        prog="cascade",
        description="Run prompts through a cascade of models, cheapest first.",
    )
    parser.add_argument("--version", action="version", version=f"cascade {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"cascade.cli.{name.replace('-', '_')}")
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(handler=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except PolicyError as err:
        for problem in err.problems:
            print(f"cascade: error: {problem}", file=sys.stderr)
        return 2
    except (UsageError, OutputPathError) as err:
        print(f"cascade: error: {err}", file=sys.stderr)
        return 2
    except CascadeError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"cascade: error: {first}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cascade: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as err:  # a file that cannot be read or written
        where = f"{err.filename}: " if err.filename else ""
        print(f"cascade: error: {where}{err.strerror or err}", file=sys.stderr)
        return 1
    except UnicodeDecodeError as err:
        print(f"cascade: error: input is not UTF-8 text ({err.reason} at byte {err.start})", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
