"""structlog loggers for a library: never configures logging, silent unless the app opts in.

If the application configured structlog, events go through its configuration. Otherwise they go
to the standard ``logging`` logger named ``cascade`` (silent by default), as keyword data.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

_stdlib = logging.getLogger("cascade")
_stdlib.addHandler(logging.NullHandler())  # no "last resort" printing of warnings when the app set up nothing


def listening(level: int = logging.INFO) -> Any:
    """The event logger when someone listens at ``level``, else None (then events cost nothing to build)."""
    if structlog.is_configured() or _stdlib.isEnabledFor(level):
        return get_logger()
    return None


def get_logger() -> Any:
    """The logger for cascade events (looked up per run, so late configuration is honoured)."""
    if structlog.is_configured():
        return structlog.get_logger("cascade")
    return structlog.wrap_logger(
        _stdlib,
        processors=[structlog.stdlib.filter_by_level, structlog.stdlib.render_to_log_kwargs],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
