"""The paper broker: a simulated TWS paper account that the unmodified ib_insync / ib_async trade against over TCP.

See docs/sim.md ("The paper broker") for what it models and how to drive it.
"""

from sim.broker.server import BadControlArgument, PaperBroker

__all__ = ["BadControlArgument", "PaperBroker"]
