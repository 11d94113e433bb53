"""Everything the lock-board bridge raises, drawn once:

    BridgeError                  anything from firmware_bridge
    ├── LinkError                the port or adapter: missing device, unplugged USB, refused socket
    ├── BoardTimeout             the board stayed silent (absent, unpowered, wrong address/baud)
    ├── ProtocolError            bytes came back but not a usable answer: bad checksum,
    │   │                        garbled frame, a reply from someone else
    │   └── BoardRefusal         a well-formed "no" (a Modbus exception reply)
    └── ConfigError              a request we will not send: unknown protocol, board address
                                 or channel out of range, a command this board lacks

Callers react differently to each: a LinkError means the whole cabinet is cut off, a
BoardTimeout one board, a ProtocolError points at wiring (duplicate DIP addresses, noise,
wrong protocol) and a ConfigError at the caller. Messages name the board and channel.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every firmware_bridge error; ``board``/``channel`` say where, when known.

    ``reason`` is the message without its "board N: " prefix, so a caller that knows more
    (the channel, that an unlock was sent) can restate it without naming the board twice.
    """

    def __init__(
        self,
        message: str,
        *,
        board: int | None = None,
        channel: int | None = None,
        reason: str | None = None,
    ):
        super().__init__(message)
        self.board = board
        self.channel = channel
        self.reason = message if reason is None else reason


class LinkError(BridgeError):
    """The serial link itself failed (open, read or write). ``unsent``: it failed before
    anything of the request was written (the port could not be opened or flushed)."""

    def __init__(
        self,
        message: str,
        *,
        board: int | None = None,
        channel: int | None = None,
        reason: str | None = None,
        unsent: bool = False,
    ):
        super().__init__(message, board=board, channel=channel, reason=reason)
        self.unsent = unsent


class BoardTimeout(BridgeError):
    """No reply from the board within the response timeout, after every retry.

    ``sent_at`` (time.monotonic()) is when the first attempt went on the wire: an unlock
    that met silence may still have pulsed the lock.
    """

    def __init__(
        self,
        message: str,
        *,
        board: int | None = None,
        channel: int | None = None,
        reason: str | None = None,
        sent_at: float | None = None,
    ):
        super().__init__(message, board=board, channel=channel, reason=reason)
        self.sent_at = sent_at


class ProtocolError(BridgeError):
    """The board (or the line) answered with something we cannot use."""


class BoardRefusal(ProtocolError):
    """The board understood the request and refused it."""


class ConfigError(BridgeError):
    """A bad protocol name, board address, channel or board setting."""


def restated(err: BridgeError, message: str, *, channel: int | None) -> BridgeError:
    """``err`` again, of the same kind, saying ``message`` and naming ``channel``."""
    if isinstance(err, BoardTimeout):
        return BoardTimeout(
            message, board=err.board, channel=channel, reason=err.reason, sent_at=err.sent_at
        )
    if isinstance(err, LinkError):
        return LinkError(
            message, board=err.board, channel=channel, reason=err.reason, unsent=err.unsent
        )
    return type(err)(message, board=err.board, channel=channel, reason=err.reason)
