"""The cascade engine: one loop (:mod:`.loop`), its drivers (:mod:`.cascade`) and :mod:`.build`."""

from cascade.engine.actions import Tier
from cascade.engine.cascade import Cascade

__all__ = ["Cascade", "Tier"]
