"""What every command prints the same way: errors on stderr, JSON on stdout."""

from __future__ import annotations

import json
import sys

__all__ = ["dump", "fail"]


def fail(message: str, code: int = 1) -> int:
    """Print ``papertiger: message`` on stderr; return the exit status ``code``."""
    print(f"papertiger: {message}", file=sys.stderr)
    return code


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dump(value: object) -> str:
    """``value`` as indented JSON (bytes as hex)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=_json_default)
