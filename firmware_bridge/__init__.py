"""Lock-board protocols and the RS-485 bus: codecs (sans-IO), transport, transaction, bus.

Imports nothing else of Xinbao. See DESIGN.md §4 for the byte facts.
"""

import logging

from firmware_bridge.bus import LockBus
from firmware_bridge.config import BoardConfig
from firmware_bridge.errors import (
    BoardRefusal,
    BoardTimeout,
    BridgeError,
    ConfigError,
    LinkError,
    ProtocolError,
)
from firmware_bridge.protocols import PROTOCOLS, get_protocol
from firmware_bridge.status import (
    BoardHealth,
    BoardStatus,
    ChannelStatus,
    DoorReport,
    ScanResult,
    UnlockOutcome,
    UnlockResult,
)

__all__ = [
    "PROTOCOLS",
    "BoardConfig",
    "BoardHealth",
    "BoardRefusal",
    "BoardStatus",
    "BoardTimeout",
    "BridgeError",
    "ChannelStatus",
    "ConfigError",
    "DoorReport",
    "LinkError",
    "LockBus",
    "ProtocolError",
    "ScanResult",
    "UnlockOutcome",
    "UnlockResult",
    "get_protocol",
]

# A library logs; the application decides where it goes (no stray "lastResort" stderr lines).
logging.getLogger(__name__).addHandler(logging.NullHandler())
