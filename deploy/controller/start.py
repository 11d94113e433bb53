"""Start the compose controller: render its config from the environment, then exec it.

    python deploy/controller/start.py [--template FILE] [--render-only]

The controller reads one TOML file that holds its MQTT password and locker key; compose
passes those as variables, so this writes the file (mode 0600, atomically) to
``$XINBAO_CONTROLLER_CONFIG`` and replaces itself with ``xinbao controller --config FILE``.
A missing variable or a value the controller would refuse ends here with exit status 2 and a
one-line message, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from locker_controller.config import parse_config  # noqa: E402
from locker_controller.errors import ConfigError  # noqa: E402

TEMPLATE = Path(__file__).with_name("cabinet.toml")
# Placeholders whose value is a TOML integer; every other placeholder becomes a TOML string.
INTEGERS = frozenset({"XINBAO_KIOSK_PORT"})
_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


class RenderError(ValueError):
    pass


def render(template: str, environ: Mapping[str, str]) -> str:
    """The template with every ``${NAME}`` replaced; RenderError names what is missing or bad."""
    missing = sorted({m for m in _PLACEHOLDER.findall(template) if not environ.get(m)})
    if missing:
        raise RenderError(f"not set: {', '.join(missing)}")

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        raw = environ[name]
        if name in INTEGERS:
            if not raw.isdigit():
                raise RenderError(f"{name} must be a whole number, not {raw!r}")
            return raw
        # A JSON string is a valid TOML basic string (same escapes), whatever the value holds.
        return json.dumps(raw)

    return _PLACEHOLDER.sub(value, template)


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)  # mkstemp made it 0600: the file holds the MQTT password
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", type=Path, default=TEMPLATE)
    parser.add_argument("--render-only", action="store_true", help="write the file and stop")
    args = parser.parse_args(argv)
    target = os.environ.get("XINBAO_CONTROLLER_CONFIG")
    if not target:
        print("error: XINBAO_CONTROLLER_CONFIG is not set", file=sys.stderr)
        return 2
    try:
        text = render(args.template.read_text(encoding="utf-8"), os.environ)
        parse_config(text, name=str(args.template))
        write_private(Path(target), text)
    except (RenderError, ConfigError) as err:
        print(f"error: controller config: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: controller config: {err}", file=sys.stderr)
        return 2
    if args.render_only:
        return 0
    sys.stdout.flush()
    os.execvp("xinbao", ["xinbao", "controller", "--config", target])
    return 1  # not reached: execvp replaces this process or raises


if __name__ == "__main__":
    sys.exit(main())
