"""Container health probe: ``python deploy/healthcheck.py URL [--expect KEY=VALUE ...]``.

Exit 0 when URL answers 2xx within the timeout and, for each ``--expect``, the JSON body has
that top-level key with that value (compared as JSON, so ``online=true`` means the boolean).
Exit 1 otherwise, with one line saying why. Standard library only, so every image can run it;
tests/e2e/test_compose_stack.py runs the same probes against the same processes.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request


def _expectation(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--expect wants KEY=VALUE, not {text!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw  # a bare word compares as a string


def probe(url: str, expect: list[tuple[str, object]], timeout: float) -> str | None:
    """None when healthy, else the reason."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read(1_000_000)
    except urllib.error.HTTPError as err:
        return f"{url} answered {err.code}"
    except (urllib.error.URLError, OSError) as err:
        return f"{url} unreachable: {getattr(err, 'reason', err)}"
    if not expect:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return f"{url} did not answer JSON"
    if not isinstance(document, dict):
        return f"{url} did not answer a JSON object"
    for key, wanted in expect:
        if document.get(key) != wanted:
            return f"{url}: {key} is {document.get(key)!r}, want {wanted!r}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--expect", type=_expectation, action="append", default=[])
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    reason = probe(args.url, args.expect, args.timeout)
    if reason is not None:
        print(f"unhealthy: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
