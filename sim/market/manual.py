"""The `manual` source: no prints of its own; every price comes from the control verb `price P [SIZE]`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sim.market.prints import Print


class ManualSource:
    """A source that never prints by itself (the driver's ``inject`` publishes the operator's prices)."""

    name = "manual"

    def __iter__(self) -> Iterator[Print]:
        return iter(())

    def resume_after(self, ts_ns: int) -> None:
        """Nothing to skip: the manual source has no prints of its own."""

    def progress(self) -> dict[str, Any]:
        return {"prices_from": "gridbot sim price P [SIZE]"}
