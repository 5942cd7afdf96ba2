"""Build a :class:`~cascade.engine.cascade.Cascade` from a validated policy: :func:`build`.

The policy becomes tiers, a budget and an observer in :mod:`cascade.engine.assemble` (where
:class:`BuildContext` lives: providers, scorers, prices, the ledger); this module only puts them
together, like :meth:`Cascade.from_policy <cascade.engine.cascade.Cascade.from_policy>`.
"""

from __future__ import annotations

import os
from typing import Any

from cascade.engine.assemble import BuildContext, Parts, assemble
from cascade.engine.assemble import _ledger as _ledger  # cascade spend builds a policy's ledger
from cascade.engine.cascade import Cascade
from cascade.policy.schema import Policy
from cascade.protocols import Ledger
from cascade.registry import LEDGERS, PROVIDERS, SCORERS  # noqa: F401  (assemble looks them up at build time)


def build(
    policy: Policy | str | os.PathLike[str],
    *,
    ledger: Ledger | None = None,
    providers: dict[str, Any] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> Cascade:
    """Build a cascade from a policy object or file.

    ``ledger`` replaces the policy's ledger; ``providers`` maps tier names to provider objects
    (or LangChain chat models) to use instead of building them from the policy.
    """
    return Cascade.from_parts(assemble(policy, ledger=ledger, providers=providers, base_dir=base_dir))


__all__ = ["BuildContext", "Parts", "build"]
