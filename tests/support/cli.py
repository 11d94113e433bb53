"""``xinbao ...`` as a technician or a script runs it: a real subprocess, output captured.

- ``xinbao(*args)``: the command's CompletedProcess (text, never raises on a failing exit).
- ``one_line_error(result)``: nothing on stdout and exactly one ``error: ...`` line on
  stderr; that line.
"""

import subprocess
import sys
from pathlib import Path

_SCRIPT = Path(sys.executable).parent / "xinbao"
# The installed console script when there is one, so its entry point is exercised too.
XINBAO = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "xinbao.cli"]


def xinbao(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*XINBAO, *args], capture_output=True, text=True, timeout=60, check=False)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]
