"""Hot reload: the served policies are loaded again when their files change or on ``SIGHUP``.

A reload loads and builds every policy first; only if all of them load does the gateway switch to
the new set. A broken edit keeps the old policies and logs one error (``cascade.serve.reload_failed``,
once per change of the files). Requests in flight finish on the cascade they started with; a
replaced cascade is closed once its last request is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

from cascade.engine import Cascade
from cascade.errors import CascadeError
from cascade.logging import get_logger
from cascade.serve import models

Signature = tuple[tuple[str, int, int], ...]


def signature(source: str | os.PathLike[str]) -> Signature:
    """What changes when a policy file is edited, added or removed: (path, mtime, size) of each."""
    try:
        files = models.policy_files(source)
        return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
    except (CascadeError, OSError):
        return ()


class Reloader:
    """Watches ``source`` (a policy file or directory) and hands new models to ``swap``."""

    def __init__(
        self,
        source: str | os.PathLike[str],
        swap: Callable[[Mapping[str, Cascade], Mapping[str, str]], None],
        interval: float | None = 2.0,
    ) -> None:
        self.source = Path(source)
        self.swap = swap
        self.interval = interval
        self.seen = signature(source)
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[bool]] = set()

    async def reload(self, why: str) -> bool:
        """Load the policies again; True when the gateway now serves them."""
        async with self._lock:
            self.seen = signature(self.source)
            try:
                loaded, versions = await asyncio.to_thread(models.load_versions, self.source)
            except (CascadeError, OSError) as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                get_logger().error(
                    "cascade.serve.reload_failed", source=str(self.source), why=why, error=first
                )
                return False
            self.swap(loaded, versions)
            get_logger().info("cascade.serve.reloaded", source=str(self.source), why=why, versions=versions)
            return True

    async def watch(self) -> None:
        """Reload whenever the files' :func:`signature` changes (polled every ``interval`` seconds)."""
        if self.interval is None:
            return
        while True:
            await asyncio.sleep(self.interval)
            if signature(self.source) != self.seen:
                await self.reload("changed")

    def on_sighup(self) -> None:
        task = asyncio.ensure_future(self.reload("SIGHUP"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Reloader]:
        """Watch the files and listen for ``SIGHUP`` (where this thread may) while the app runs."""
        loop = asyncio.get_running_loop()
        hup = False
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError, AttributeError):
            loop.add_signal_handler(signal.SIGHUP, self.on_sighup)
            hup = True
        watcher = asyncio.ensure_future(self.watch())
        try:
            yield self
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if hup:
                loop.remove_signal_handler(signal.SIGHUP)


__all__ = ["Reloader", "signature"]
