"""The public contract of imagebot: event envelope, event catalog and broker topology.

Pure definitions, no I/O. Every service imports these and nothing of each other.
"""

from contracts.envelope import Envelope, Event, UnknownEventError, new_envelope, open_envelope
from contracts.events import CATALOG

__all__ = [
    "CATALOG",
    "Envelope",
    "Event",
    "UnknownEventError",
    "new_envelope",
    "open_envelope",
]
