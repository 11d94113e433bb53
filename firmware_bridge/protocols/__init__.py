"""Lock-board codecs, one module per family, and the registry that names them."""

from __future__ import annotations

from firmware_bridge.errors import ConfigError
from firmware_bridge.protocols.base import Command, Frame, LockProtocol, Request
from firmware_bridge.protocols.bcc8a import Bcc8a
from firmware_bridge.protocols.kerong import KerongCu16, KerongCu48, KerongCu48b
from firmware_bridge.protocols.modbus_relay import ModbusRelay

_REGISTRY: dict[str, LockProtocol] = {
    protocol.name: protocol
    for protocol in (KerongCu16(), KerongCu48(), KerongCu48b(), Bcc8a(), ModbusRelay())
}
PROTOCOLS: tuple[str, ...] = tuple(_REGISTRY)


def get_protocol(name: str) -> LockProtocol:
    """The codec for a protocol name; ConfigError listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown lock-board protocol {name!r}; choose one of {', '.join(PROTOCOLS)}"
        ) from None


__all__ = ["PROTOCOLS", "Command", "Frame", "LockProtocol", "Request", "get_protocol"]
