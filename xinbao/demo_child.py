"""``python -m xinbao.demo_child <xinbao subcommand ...>``: a demo child that dies with the demo.

The demo stops its children itself on Ctrl-C or SIGTERM. If the demo is killed outright
(SIGKILL, a crash), Linux's parent-death signal still sends SIGTERM to each child, so no API
or controller is left holding the ports. Elsewhere this is a plain ``xinbao`` call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def _die_with_parent(expected_parent: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    # The parent may have died before prctl took effect: then nobody would signal us.
    if os.getppid() != expected_parent:
        sys.exit(1)


def main() -> None:
    parent = int(os.environ.get("XINBAO_DEMO_PARENT_PID", "0") or 0)
    if parent:
        _die_with_parent(parent)
    from xinbao.cli import app

    app(args=sys.argv[1:], prog_name="xinbao")


if __name__ == "__main__":
    main()
