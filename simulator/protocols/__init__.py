"""Board-side protocols of the simulator, by the same names firmware_bridge uses."""

from simulator.errors import SpecError
from simulator.protocols.base import BoardProtocol, Request
from simulator.protocols.bcc8a import Bcc8a
from simulator.protocols.kerong import KerongCu16, KerongCu48, KerongCu48b
from simulator.protocols.modbus_relay import ModbusRelay

_PROTOCOLS: dict[str, type[BoardProtocol]] = {
    cls.name: cls for cls in (KerongCu16, KerongCu48, KerongCu48b, Bcc8a, ModbusRelay)
}


def get_board_protocol(name: str) -> BoardProtocol:
    try:
        return _PROTOCOLS[name]()
    except KeyError:
        raise SpecError(
            f"unknown protocol {name!r}; choose one of {', '.join(_PROTOCOLS)}"
        ) from None


__all__ = ["BoardProtocol", "Request", "get_board_protocol"]
