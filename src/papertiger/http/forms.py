"""Stripe's bracket encoding of form bodies and query strings, decoded. Pure.

Theory of operation
-------------------
stripe-python (and every Stripe SDK) sends parameters as
``application/x-www-form-urlencoded`` pairs whose keys carry the nesting in
brackets::

    metadata[order]=42                       {"metadata": {"order": "42"}}
    line_items[0][price]=price_1             {"line_items": [{"price": "price_1"}]}
    expand[0]=line_items  or  expand[]=...   {"expand": ["line_items"]}
    created[gte]=1700000000                  {"created": {"gte": "1700000000"}}
    metadata=                                {"metadata": ""}   (Stripe: clear it)

:func:`decode_form` turns such a text into nested dicts, lists and strings;
it never converts a value (every leaf stays a ``str``: the endpoint's
declared parameters say what each must be, see :mod:`.params`).

The well-known query-string libraries do not decode this exactly (one
silently turns a list of more than 20 items into a dict and compacts
``a[3]=x`` to ``["x"]``; another never makes lists), so this is a small
function of our own, checked against stripe-python's own encoder by a
property test.  The rules:

* a key is ``name`` followed by any number of ``[segment]``; a segment of
  digits is a list index, an empty segment (``[]``) appends, anything else
  is a dict key;
* a list's indices must be exactly ``0..n-1`` (in any order);
* a name may not be both a value and a container (``a=1&a[b]=2``), nor a
  list and a dict, nor given twice (``a=1&a=2``);
* the text must be UTF-8 after percent-decoding, keys may not be empty, and
  nesting is bounded (:data:`MAX_DEPTH`), as is the number of pairs
  (:data:`MAX_PAIRS`).

Every violation raises :class:`FormError` naming the parameter at fault, so
the server answers 400 with ``param`` set, and nothing is executed.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_plus

__all__ = ["MAX_DEPTH", "MAX_PAIRS", "FormError", "decode_form"]

#: Deepest nesting accepted (``a[b][c]`` is depth 3); Stripe's own parameters stay under 6.
MAX_DEPTH = 10
#: Most ``key=value`` pairs in one body or query string.
MAX_PAIRS = 10_000

_SEGMENT = re.compile(r"\[([^\[\]]*)\]")
_APPEND = object()  # the key of an empty segment: "append to the list"


class FormError(ValueError):
    """A body or query string that is not Stripe's encoding; ``param`` names the key."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _split_key(key: str) -> list[Any]:
    """``"a[b][0][]"`` -> ``["a", "b", 0, _APPEND]``; :class:`FormError` when malformed."""
    bracket = key.find("[")
    name = key if bracket < 0 else key[:bracket]
    if not name:
        raise FormError(
            f"Invalid parameter name {key!r}: a parameter name may not be empty.",
            param=key or None,
        )
    if "]" in name:
        raise FormError(f"Invalid parameter name {key!r}: an unmatched ']'.", param=key)
    parts: list[Any] = [name]
    if bracket < 0:
        return parts
    rest = key[bracket:]
    pos = 0
    for match in _SEGMENT.finditer(rest):
        if match.start() != pos:
            break
        segment = match.group(1)
        if segment == "":
            parts.append(_APPEND)
        elif segment.isdigit() and segment.isascii():
            if len(segment) > 1 and segment[0] == "0":
                raise FormError(
                    f"Invalid parameter name {key!r}: list index {segment!r} has a leading zero.",
                    param=key,
                )
            parts.append(int(segment))
        else:
            parts.append(segment)
        pos = match.end()
    if pos != len(rest):
        raise FormError(
            f"Invalid parameter name {key!r}: brackets must come in pairs, as in "
            "'metadata[key]' or 'line_items[0][price]'.",
            param=key,
        )
    if len(parts) > MAX_DEPTH:
        raise FormError(
            f"Invalid parameter name {key!r}: nested {len(parts)} deep; the most is {MAX_DEPTH}.",
            param=key,
        )
    return parts


def _path(parts: list[Any]) -> str:
    """The parameter's name as Stripe writes it in errors: ``line_items[0][price]``."""
    out = str(parts[0])
    for part in parts[1:]:
        out += "[]" if part is _APPEND else f"[{part}]"
    return out


class _Node:
    """A container being built: its children by key (str or int), and whether it appends."""

    __slots__ = ("appended", "children")

    def __init__(self) -> None:
        self.children: dict[Any, Any] = {}
        self.appended = 0  # children added by "[]"


def _insert(root: _Node, parts: list[Any], value: str) -> None:
    node = root
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if part is _APPEND:
            if node.children and not node.appended:
                raise FormError(
                    f"Invalid {_path(parts[:depth])}: '[]' mixed with indexed or named items.",
                    param=_path(parts[:depth]),
                )
            part = node.appended
            node.appended += 1
        elif node.appended:
            raise FormError(
                f"Invalid {_path(parts[:depth])}: '[]' mixed with indexed or named items.",
                param=_path(parts[:depth]),
            )
        if node.children and depth > 0:
            first = next(iter(node.children))
            if isinstance(first, int) != isinstance(part, int):
                here = _path(parts[:depth])
                raise FormError(
                    f"Invalid {here}: it is given both as a list (numbered items) and as a "
                    "hash (named keys).",
                    param=here,
                )
        existing = node.children.get(part)
        if last:
            if existing is not None:
                here = _path(parts[: depth + 1])
                raise FormError(
                    f"Invalid {here}: the parameter is given more than once"
                    + (
                        " (as a value and as a hash or list)."
                        if isinstance(existing, _Node)
                        else "."
                    )
                    + " Give it once.",
                    param=here,
                )
            node.children[part] = value
            return
        if existing is None:
            existing = node.children[part] = _Node()
        elif not isinstance(existing, _Node):
            here = _path(parts[: depth + 1])
            raise FormError(
                f"Invalid {here}: the parameter is given both as a value and as a hash or list.",
                param=here,
            )
        node = existing


def _build(node: _Node, path: str) -> Any:
    children = node.children
    keys = list(children)
    if keys and isinstance(keys[0], int):
        n = len(keys)
        if set(keys) != set(range(n)):
            missing = min(set(range(n)) - set(keys))
            raise FormError(
                f"Invalid {path}: list indices must run from 0 without gaps; "
                f"{path}[{missing}] is missing.",
                param=path,
            )
        return [
            _build(children[i], f"{path}[{i}]") if isinstance(children[i], _Node) else children[i]
            for i in range(n)
        ]
    return {
        key: _build(value, f"{path}[{key}]") if isinstance(value, _Node) else value
        for key, value in children.items()
    }


def _unquote(text: str, what: str) -> str:
    try:
        return unquote_plus(text, errors="strict")
    except UnicodeDecodeError:
        raise FormError(
            f"Invalid request: {what} {text[:80]!r} is not UTF-8 once percent-decoded.",
            param=None if what == "value" else text[:200],
        ) from None


def decode_form(text: str | bytes) -> dict[str, Any]:
    """Decode a body or query string in Stripe's bracket encoding. O(length).

    >>> decode_form("metadata[a]=1&line_items[0][price]=p&line_items[0][quantity]=2&expand[]=x")
    {'metadata': {'a': '1'}, 'line_items': [{'price': 'p', 'quantity': '2'}], 'expand': ['x']}
    >>> decode_form("a[1]=x")
    Traceback (most recent call last):
    ...
    papertiger.http.forms.FormError: Invalid a: list indices must run from 0 without gaps; \
a[0] is missing.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise FormError(
                "Invalid request: a form-encoded body must be ASCII (percent-encode other "
                "bytes, as application/x-www-form-urlencoded requires)."
            ) from None
    root = _Node()
    if not text:
        return {}
    pairs = text.split("&")
    if len(pairs) > MAX_PAIRS:
        raise FormError(
            f"Invalid request: {len(pairs)} parameters; the most accepted is {MAX_PAIRS}."
        )
    for pair in pairs:
        if not pair:
            continue  # "a=1&&b=2": an empty pair carries nothing
        raw_key, sep, raw_value = pair.partition("=")
        key = _unquote(raw_key, "parameter name")
        value = _unquote(raw_value, "value")
        if not sep and not key:
            continue
        _insert(root, _split_key(key), value)
    return {
        name: _build(value, name) if isinstance(value, _Node) else value
        for name, value in root.children.items()
    }
