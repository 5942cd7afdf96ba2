"""``cascade serve``: the OpenAI-compatible gateway (:mod:`cascade.serve`) on uvicorn.

Policies are loaded (and checked) before the port is bound: a broken policy is a one-line error.
They reload when their files change (or on ``SIGHUP``): see :mod:`cascade.serve.reload`. Events are
JSON lines on stderr (one ``cascade.serve.request`` per request: uvicorn's access log is off).
With ``--workers N`` uvicorn starts N processes; each loads the same settings from the
environment (``CASCADE_SERVE``), so caps shared across them need a shared ledger (SQLite, Redis).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
from typing import Any

from cascade.cli import UsageError

NAME = "serve"
HELP = "Serve policies over an OpenAI-compatible HTTP API (needs the serve extra)."
_ENV = "CASCADE_SERVE"
_WORKER_START_S = 30
"""Seconds a replacement worker has to come up in a ``SIGHUP`` rolling restart (uvicorn's default: 5)."""
KEYS_ENV = "CASCADE_SERVE_KEYS"
"""The keys file's text, when ``--keys`` is not given (for hosts that pass secrets as environment)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "policy", nargs="?", metavar="POLICY_OR_DIR", help="a policy file, or a directory of them"
    )
    parser.add_argument(
        "--demo", action="store_true", help="serve the packaged demo policy (offline, no key)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--keys",
        metavar="FILE",
        help="API keys -> tenants (YAML; else $CASCADE_SERVE_KEYS); none: no key asked",
    )
    parser.add_argument(
        "--max-body-bytes", type=int, default=None, help="largest request body (default 4 MiB)"
    )
    parser.add_argument("--deadline", type=float, default=None, help="seconds per request before a 504")
    parser.add_argument(
        "--reload-interval",
        type=float,
        default=2.0,
        help="seconds between checks of the policy files for changes (0: only on SIGHUP; default 2)",
    )
    parser.add_argument(
        "--abstain-as",
        choices=("answer", "error"),
        default="answer",
        help="an abstention (on_unverified: abstain) as a 200 with empty content and the cascade"
        " marker (answer, default), or as a 422 error",
    )
    parser.add_argument("--log-level", default="info", help="log level (default info)")


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The gateway's settings from the command line (checked), as JSON-ready data."""
    from cascade.serve.models import DEMO

    if args.demo == bool(args.policy):
        raise UsageError("give a policy file or directory, or --demo (not both)")
    if args.workers < 1:
        raise UsageError(f"--workers: at least 1 (got {args.workers})")
    if args.max_body_bytes is not None and args.max_body_bytes < 1:
        raise UsageError(f"--max-body-bytes: at least 1 (got {args.max_body_bytes})")
    if args.deadline is not None and args.deadline <= 0:
        raise UsageError(f"--deadline: a positive number of seconds (got {args.deadline})")
    if args.reload_interval < 0:
        raise UsageError(f"--reload-interval: 0 or more seconds (got {args.reload_interval})")
    return {
        "policy": str(DEMO if args.demo else args.policy),
        "keys": args.keys,
        "max_body": args.max_body_bytes,
        "deadline": args.deadline,
        "reload_interval": args.reload_interval or None,
        "log_level": args.log_level,
        "abstain_as": args.abstain_as,
    }


def gateway(config: dict[str, Any]) -> Any:
    """A :class:`~cascade.serve.Gateway` for ``config`` (see :func:`settings`)."""
    from cascade.serve import MAX_BODY_BYTES, Gateway, Keys
    from cascade.serve import models as served

    keys = None
    if config.get("keys"):
        keys = Keys.load(config["keys"])
    elif os.environ.get(KEYS_ENV):
        keys = Keys.parse(os.environ[KEYS_ENV], f"${KEYS_ENV}")
    loaded, versions = served.load_versions(config["policy"])
    return Gateway(
        loaded,
        versions=versions,
        keys=keys,
        max_body=config.get("max_body") or MAX_BODY_BYTES,
        deadline=config.get("deadline"),
        source=config["policy"],
        reload_interval=config.get("reload_interval"),
        abstain_as=config.get("abstain_as", "answer"),
    )


def log_events(level: str) -> None:
    """cascade's events as JSON lines on stderr, from ``level`` up (a server is an application: it
    configures logging; the library never does). Keys and prompt text are never in them."""
    import logging
    import sys

    import structlog

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def app_from_env() -> Any:
    """uvicorn's app factory for ``--workers`` > 1: the settings come in ``$CASCADE_SERVE``."""
    config = json.loads(os.environ[_ENV])
    log_events(config["log_level"])
    return gateway(config).app()


def run(args: argparse.Namespace) -> int:
    config = settings(args)
    try:
        import uvicorn
    except ImportError:
        raise UsageError("cascade serve needs the serve extra: pip install 'cascade-llm[serve]'") from None
    log_events(args.log_level)
    gw = gateway(config)  # policies and keys are checked here, before the port is bound
    print(f"cascade: serving {', '.join(sorted(gw.models))} on http://{args.host}:{args.port}/v1", flush=True)
    if args.workers == 1:
        uvicorn.run(gw.app(), host=args.host, port=args.port, log_level=args.log_level, access_log=False)
        return 0
    gw.models.clear()  # the workers load their own
    os.environ[_ENV] = json.dumps(config)
    extra: dict[str, Any] = {}
    if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:
        # uvicorn gives a replacement worker 5 s to come up, else it abandons the restart; importing the
        # SDKs on a loaded host takes longer. A worker that cannot load the policies exits at once anyway.
        extra["timeout_worker_healthcheck"] = _WORKER_START_S
    uvicorn.run(
        "cascade.cli.serve:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=False,
        **extra,
    )
    return 0
