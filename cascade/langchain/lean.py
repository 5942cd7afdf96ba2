"""The pieces of ``BaseChatModel.generate`` the lean ``invoke`` path reuses, and a cheap listener check."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any


class _LangChainInternals:
    """The pieces of ``BaseChatModel.generate`` the lean ``invoke`` reuses (None if they moved)."""

    def __init__(self) -> None:
        from langchain_core.globals import get_llm_cache
        from langchain_core.language_models import chat_models as cm
        from langchain_core.utils.utils import LC_ID_PREFIX

        self.get_llm_cache = get_llm_cache
        self.format_for_tracing = cm._format_for_tracing
        self.format_ls_structured_output = cm._format_ls_structured_output
        self.filter_invocation_params_for_tracing = getattr(cm, "_filter_invocation_params_for_tracing")  # noqa: B009
        self.LC_ID_PREFIX = LC_ID_PREFIX
        self.nobody_listens: Callable[[Any, Any, bool], bool] | None = None
        with contextlib.suppress(ImportError, AttributeError):  # moved: ask CallbackManager.configure
            self.nobody_listens = _listener_check()


def _listener_check() -> Callable[[Any, Any, bool], bool]:
    """A cheap, conservative "will ``CallbackManager.configure`` attach no handler" (it costs ~20 us):
    every way it adds one (callbacks, verbose, debug, LangSmith tracing, registered hooks such as
    ``collect_runs``) is checked; anything set means "maybe", and configure decides."""
    from langchain_core.globals import get_debug
    from langchain_core.tracers.context import _configure_hooks, _tracing_v2_is_enabled
    from langchain_core.utils.env import env_var_is_set

    hooks = _configure_hooks  # a list LangChain appends to: read at call time

    def nobody_listens(callbacks: Any, own_callbacks: Any, verbose: bool) -> bool:
        if callbacks or own_callbacks or verbose or get_debug() or _tracing_v2_is_enabled():
            return False
        for var, _inheritable, handler_class, env_var in hooks:
            if var.get() is not None or (
                env_var is not None and handler_class is not None and env_var_is_set(env_var)
            ):
                return False
        return True

    return nobody_listens


try:
    _lc: _LangChainInternals | None = _LangChainInternals()
except (ImportError, AttributeError):  # pragma: no cover - a LangChain that moved them: the full path
    _lc = None
