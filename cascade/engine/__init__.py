"""The cascade engine: one loop (:mod:`.loop`), its drivers (:mod:`.cascade`) and :mod:`.build`."""

from cascade.engine.cascade import Cascade
from cascade.engine.loop import Tier

__all__ = ["Cascade", "Tier"]
