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


_SDK_REQUEST_LOGGERS = ("anthropic._base_client", "openai._base_client")


class RedactSDKDebug(logging.Filter):
    """Withholds the request options the OpenAI and Anthropic SDKs log at DEBUG.

    Those records (``Request options: {...}``) hold the whole request body, the prompt included,
    and reach the app's handlers as soon as it turns on DEBUG for the root logger. The record is
    kept (its time and logger still show the request went out) with the options withheld. Add it to
    a handler (``handler.addFilter(RedactSDKDebug())``) or call :func:`redact_sdk_debug`.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(("anthropic", "openai")) and str(record.msg).startswith("Request options"):
            record.msg = "Request options: (withheld: they hold the prompt; cascade.logging.RedactSDKDebug)"
            record.args = ()
        return True


def redact_sdk_debug() -> RedactSDKDebug:
    """Put a :class:`RedactSDKDebug` on the SDK loggers that write request bodies (once); returns it."""
    for name in _SDK_REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if _REDACTOR not in logger.filters:
            logger.addFilter(_REDACTOR)
    return _REDACTOR


_REDACTOR = RedactSDKDebug()
