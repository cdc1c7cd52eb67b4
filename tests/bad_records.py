"""Bad records and what their rejection must say: shared by the validation tests.

Each row is ``(record, param, expected)``: the :class:`InvalidRequest` must
name ``param`` and its message must contain ``expected`` (a fragment or a
pattern).
"""

from __future__ import annotations

import collections
import datetime
import re
import types
from typing import Any

ID_RE = re.compile(r"^cs_[A-Za-z0-9]{24}$")
EXPECTED = "use None, bool, int, float, str, bytes, list or a dict with str keys"
#: what a message about a non-str key must say (the key, and that keys must be str)
STR_KEYS = re.compile(r"must be a str|with str keys")

# (record, param, what the message must say: a fragment or a pattern)
BAD_RECORDS: list[tuple[Any, str, str | re.Pattern[str]]] = [
    ([("id", "x")], "record", "expected a dict"),
    (None, "record", "expected a dict"),
    ("cs_1", "record", "expected a dict"),
    ({"id": 5}, "id", "expected an object id (a str)"),
    ({"id": None}, "id", "expected an object id (a str)"),
    ({"id": ""}, "id", "1 to 255 characters"),
    ({"id": "x" * 256}, "id", "1 to 255 characters"),
    ({"created": True}, "created", "expected an int"),
    ({"created": 1.0}, "created", "expected an int"),
    ({"created": "1700000000"}, "created", "expected an int"),
    ({"created": None}, "created", "expected an int"),
    ({"created": 2**64}, "created", "expected an int"),
    ({"metadata": {"x": object()}}, "metadata.x", EXPECTED),
    ({"line_items": [{}, {}, {"price": {1, 2}}]}, "line_items[2].price", EXPECTED),
    ({"metadata": {"x": datetime.datetime(2024, 1, 1)}}, "metadata.x", EXPECTED),
    ({"metadata": {"x": 2**64}}, "metadata.x", "outside msgpack's range"),
    ({"metadata": {"x": -(2**63) - 1}}, "metadata.x", "outside msgpack's range"),
    ({"metadata": {"x": 1 + 2j}}, "metadata.x", EXPECTED),
    ({"a": {"b": [1, [2, {"c": frozenset()}]]}}, "a.b[1][1].c", EXPECTED),
    ({"metadata": {1: "a"}}, "metadata", STR_KEYS),
    ({7: "x"}, "record", STR_KEYS),
    ({"a": {"b": [{"c": {(1, 2): "x"}}]}}, "a.b[0].c", STR_KEYS),
    # mappings other than dict, nested: their keys are checked too
    ({"metadata": collections.OrderedDict({1: "a"})}, "metadata", STR_KEYS),
    (
        {"line_items": [collections.OrderedDict({"x": {2: 3}})]},
        "line_items[0].x",
        STR_KEYS,
    ),
    ({"a": (collections.defaultdict(int, {3: 1}),)}, "a[0]", STR_KEYS),
    # values msgpack cannot carry, found where they are
    ({"metadata": types.MappingProxyType({"a": "b"})}, "metadata", EXPECTED),
    ({"metadata": {"x": "\ud800"}}, "metadata.x", "surrogate"),
]


Expected = str | re.Pattern[str]


def says(message: str, expected: Expected) -> bool:
    if isinstance(expected, str):
        return expected in message
    return expected.search(message) is not None


BAD_IDS = [f"{i}-{param}" for i, (_, param, _) in enumerate(BAD_RECORDS)]
