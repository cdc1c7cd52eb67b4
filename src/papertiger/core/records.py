"""Records on the client's side: validation, ids, packing, index values. Pure.

Theory of operation
-------------------
A write crosses three places; this module is the first (:mod:`.resolve` is
the second, :meth:`.state.State.apply` the third).  The client turns a
user's record into a :class:`PreparedRecord` (:func:`prepare_record`): it
checks the record is a mapping with ``str`` keys whose values msgpack can
carry, fills in ``id`` (``<prefix>_`` + 24 random alphanumerics) and
``created`` (int unix seconds) when absent, packs it once, and extracts the
few fields the indexes need (:func:`index_values`, dotted names reaching into
nested dicts).  Nobody downstream decodes the record to store it: every
backend keeps the packed bytes and the index values as they come from here.

Checking and packing are one step (:func:`pack_value`): ormsgpack's compiled
packer refuses every value the store refuses and packs the rest exactly as
``msgpack.packb`` would, so a good record costs one call into C.  Only a
refused record is walked in Python, to name the field at fault (or, for the
few values only ormsgpack refuses, to pack them with msgpack).

Every rejection is an :class:`~papertiger.errors.InvalidRequest` naming the
field at fault; nothing is sent, so the store is unchanged.  A record may nest
dicts and lists :data:`MAX_DEPTH` levels deep.
"""

from __future__ import annotations

import base64
import os
import string
import time
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import msgpack
import ormsgpack

from ..errors import InvalidRequest

__all__ = [
    "ID_ALPHABET",
    "MAX_DEPTH",
    "PreparedRecord",
    "check_created",
    "check_id",
    "generate_id",
    "index_value",
    "index_values",
    "merge_changes",
    "pack_expect",
    "pack_value",
    "prepare_record",
]

ID_ALPHABET = string.ascii_letters + string.digits
ID_RANDOM_LENGTH = 24
MAX_ID_LENGTH = 255
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1

_packb = msgpack.packb
_fast_packb = ormsgpack.packb
#: ormsgpack packs dataclasses, datetimes, enums, UUIDs and 128-bit ints by default; the store
#: carries none of them, so each is handed to ``default`` -- there is none: it raises.
_FAST_OPTIONS = (
    ormsgpack.OPT_PASSTHROUGH_BIG_INT
    | ormsgpack.OPT_PASSTHROUGH_DATACLASS
    | ormsgpack.OPT_PASSTHROUGH_DATETIME
    | ormsgpack.OPT_PASSTHROUGH_ENUM
    | ormsgpack.OPT_PASSTHROUGH_UUID
)


def generate_id(prefix: str) -> str:
    """``<prefix>_`` followed by 24 random alphanumerics. O(1).

    Base64 of random bytes with ``+`` and ``/`` dropped: each kept character
    is uniform over the 62 alphanumerics.

    >>> len(generate_id("cs")), generate_id("cs")[:3]
    (27, 'cs_')
    """
    while True:
        text = base64.b64encode(os.urandom(30)).translate(None, b"+/")
        if len(text) >= ID_RANDOM_LENGTH:
            return prefix + "_" + text[:ID_RANDOM_LENGTH].decode()


# -- values -------------------------------------------------------------------


#: How deeply dicts and lists may nest, the record itself counting as the first level.
#: It is ormsgpack's own limit, so that the fast path (below) and the slow path agree.
MAX_DEPTH = 255

_BYTES = (bytes, bytearray, memoryview)


def _fault(value: Any) -> str | None:
    """Why msgpack cannot carry the scalar ``value`` (None when it can); ``""`` for containers."""
    if value is None or isinstance(value, (bool, float, *_BYTES, msgpack.ExtType)):
        return None
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                return "a str holding a lone surrogate (not valid UTF-8)"
        return None
    if isinstance(value, int):
        if _INT_MIN <= value <= _INT_MAX:
            return None
        return f"an integer outside msgpack's range ({value})"
    if isinstance(value, Mapping):
        if not isinstance(value, dict):  # msgpack packs dicts only
            return f"a mapping of type {type(value).__name__} (not a dict)"
        return ""
    if isinstance(value, (list, tuple)):
        return ""
    return f"a value of type {type(value).__name__}"


def _children(value: Any, path: str) -> Iterator[tuple[str, Any, str | None]]:
    """``(path, item, fault)`` for each item of a dict or list; a bad key is a fault."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                yield path, None, f"a mapping with the {type(key).__name__} key {key!r}"
            elif _fault(key) is not None:
                yield path, None, f"a mapping with the key {key!r}, a str that is not valid UTF-8"
            else:
                yield (f"{path}.{key}" if path else key), item, None
    else:
        for i, item in enumerate(value):
            yield f"{path}[{i}]", item, None


def _find_unpackable(value: Any, path: str) -> tuple[str, str] | None:
    """The first field msgpack cannot carry, as ``(path, what)``; None when all can.

    Depth first, in the order msgpack would pack, with an explicit stack (so any
    depth is safe to walk).  O(size of the value).
    """
    stack: list[Iterator[tuple[str, Any, str | None]]] = []
    while True:
        fault = _fault(value)
        if fault == "":
            if len(stack) >= MAX_DEPTH:
                return path, (
                    f"a dict or list nested more than {MAX_DEPTH} levels deep (the limit, "
                    "counting the record itself)"
                )
            stack.append(_children(value, path))
        elif fault is not None:
            return path, fault
        while stack:
            step = next(stack[-1], None)
            if step is None:
                stack.pop()
                continue
            path, value, fault = step
            if fault is not None:
                return path, fault
            break
        else:
            return None


def pack_value(value: Any, param: str) -> bytes:
    """msgpack ``value``, or raise :class:`InvalidRequest` naming the field at fault.

    The fast path is one call into ormsgpack's compiled packer, which refuses
    everything the store refuses (a non-str key, an int outside 64 bits, a lone
    surrogate, a type msgpack has no form for, nesting deeper than
    :data:`MAX_DEPTH`) and packs the rest byte for byte as ``msgpack.packb``
    does.  Only when it refuses does the slow path walk the value in Python to
    name the field at fault -- or, for what only ormsgpack refuses (subclasses of
    tuple or float, enums of int or str, str subclasses as keys), pack it with
    msgpack.  Bytes-like values (``bytearray``, ``memoryview``) are stored as
    bytes, as both packers store them.  (ormsgpack's own ``Ext`` and
    ``Fragment`` values are packed as ormsgpack packs them; only a caller that
    builds them with ormsgpack meets them.)  O(size of the value).
    """
    try:
        return _fast_packb(value, option=_FAST_OPTIONS)
    except (TypeError, ValueError, OverflowError):
        pass
    base = "" if param == "record" else param
    found = _find_unpackable(value, base)
    if found is None:
        try:
            return _packb(value, use_bin_type=True)  # type: ignore[no-any-return]
        except (TypeError, ValueError, OverflowError) as exc:
            found = (base, str(exc))
    where, what = found
    where = where or param
    raise InvalidRequest(
        f"Invalid {where}: {what} cannot be stored; use None, bool, int, float, "
        "str, bytes, list or a dict with str keys.",
        param=where,
    )


def pack_expect(expect: object) -> bytes:
    """The ``expect`` of a conditional patch, checked and packed. O(size of ``expect``).

    ``expect`` maps top-level field names (str; a dotted name is a field's
    name, not a path) to the values they must hold.  Anything else raises
    :class:`InvalidRequest` with ``param="expect"``; the message names what
    is wrong.

    >>> msgpack.unpackb(pack_expect({"status": "open", "paid_at": None}))
    {'status': 'open', 'paid_at': None}
    >>> try:
    ...     pack_expect(["status"])
    ... except InvalidRequest as exc:
    ...     print(exc.param, "|", exc.message)  # doctest: +NORMALIZE_WHITESPACE
    expect | Invalid expect: expected a dict of field name to expected value, such as
    {'status': 'open'}; got list.
    """
    if not isinstance(expect, Mapping):
        raise InvalidRequest(
            "Invalid expect: expected a dict of field name to expected value, such as "
            f"{{'status': 'open'}}; got {type(expect).__name__}.",
            param="expect",
        )
    for field in expect:
        if not isinstance(field, str):
            raise InvalidRequest(
                f"Invalid expect: field names must be str, got {type(field).__name__} "
                f"{field!r}; expect names top-level fields of the record.",
                param="expect",
            )
    try:
        return pack_value(dict(expect), "expect")
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message, param="expect") from None


# -- records ------------------------------------------------------------------


class PreparedRecord(NamedTuple):
    """A record ready to travel: resolved id/created, packed bytes, index values."""

    id: str
    created: int
    packed: bytes
    index_values: dict[str, Any] | None
    record: dict[str, Any]

    def wire(self) -> list[Any]:
        """``[id, created, packed, index_values]``: the record as requests carry it."""
        return [self.id, self.created, self.packed, self.index_values]


def index_value(value: object) -> str | int | None:
    """The form a value takes in an index, or None when it cannot be indexed. O(1).

    Strings and integers are kept; booleans become ``"true"`` / ``"false"``
    (as Stripe's form encoding writes them, so ``active=True`` and
    ``active="true"`` select the same records); an expanded object stands for
    its ``id``.

    >>> index_value("cus_1"), index_value(True), index_value({"id": "cus_1"}), index_value(1.5)
    ('cus_1', 'true', 'cus_1', None)
    """
    cls = value.__class__
    if cls is str:
        return value  # type: ignore[return-value]
    if cls is bool:
        return "true" if value else "false"
    if cls is int:
        return value  # type: ignore[return-value]
    if isinstance(value, Mapping):
        return index_value(value.get("id"))
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    return None


def field_value(record: Mapping[str, Any], name: str) -> Any:
    """``record[name]``, where a dotted name reaches into nested dicts; None when absent.

    >>> field_value({"customer_details": {"email": "a@b"}}, "customer_details.email")
    'a@b'
    """
    if "." not in name:
        return record.get(name)
    value: Any = record
    for part in name.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def index_values(record: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any] | None:
    """The values of ``fields`` in their index form (:func:`index_value`); None when none.

    O(fields x depth).

    >>> index_values({"customer": {"id": "cus_1"}, "email": None}, ("customer", "email"))
    {'customer': 'cus_1'}
    >>> index_values({"customer_details": {"email": "a@b"}}, ("customer_details.email",))
    {'customer_details.email': 'a@b'}
    """
    found: dict[str, Any] | None = None
    get = record.get
    for name in fields:
        value = field_value(record, name) if "." in name else get(name)
        if value is None:
            continue
        if value.__class__ is not str:
            value = index_value(value)
            if value is None:
                continue
        if found is None:
            found = {}
        found[name] = value
    return found


def check_id(value: object, param: str = "id") -> str:
    """Return ``value`` when it is a valid object id, else raise :class:`InvalidRequest`."""
    if type(value) is not str and not isinstance(value, str):
        raise InvalidRequest(
            f"Invalid {param}: expected an object id (a str), got {type(value).__name__} "
            f"{value!r}.",
            param=param,
        )
    if not value or len(value) > MAX_ID_LENGTH:
        raise InvalidRequest(
            f"Invalid {param}: an id must be 1 to {MAX_ID_LENGTH} characters, got {len(value)}.",
            param=param,
        )
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InvalidRequest(
                f"Invalid {param}: {value!r} is not valid Unicode text (it holds a lone "
                "surrogate); use an id that can be encoded as UTF-8.",
                param=param,
            ) from None
    return str(value)


def check_created(value: object) -> int:
    if type(value) is not int or not _INT_MIN <= value <= _INT_MAX:
        raise InvalidRequest(
            f"Invalid created: expected an int (unix seconds), got "
            f"{type(value).__name__} {value!r}.",
            param="created",
        )
    return value


def prepare_record(
    record: object,
    *,
    prefix: str,
    object_name: str | None,
    index_fields: tuple[str, ...],
    require_id: bool = False,
    now: int | None = None,
) -> PreparedRecord:
    """Validate and pack ``record``; fill ``id``, ``created`` and ``object`` when absent.

    O(size of the record).  Raises :class:`InvalidRequest` naming the field at
    fault; never modifies ``record``.

    >>> p = prepare_record({"customer": "cus_1"}, prefix="cs",
    ...                    object_name="checkout.session", index_fields=("customer",), now=7)
    >>> p.id[:3], p.created, p.index_values, p.record["object"]
    ('cs_', 7, {'customer': 'cus_1'}, 'checkout.session')
    """
    if record.__class__ is not dict and not isinstance(record, Mapping):
        raise InvalidRequest(
            f"Invalid record: expected a dict, got {type(record).__name__}.", param="record"
        )
    full = dict(record)
    if "id" in full:
        record_id = check_id(full["id"])
    elif require_id:
        raise InvalidRequest(
            "Missing id: this call needs the record's 'id' (insert generates one).",
            param="id",
        )
    else:
        record_id = full["id"] = generate_id(prefix)
    if "created" in full:
        created = check_created(full["created"])
    else:
        created = full["created"] = int(time.time()) if now is None else now
    if object_name is not None and "object" not in full:
        full["object"] = object_name
    packed = pack_value(full, "record")
    return PreparedRecord(record_id, created, packed, index_values(full, index_fields), full)


def merge_changes(current: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``current`` updated by ``changes``: nested dicts merge, every other value replaces.

    >>> merge_changes({"a": 1, "metadata": {"x": "1"}}, {"metadata": {"y": "2"}, "b": None})
    {'a': 1, 'metadata': {'x': '1', 'y': '2'}, 'b': None}
    """
    merged = dict(current)
    for key, value in changes.items():
        old = merged.get(key)
        if isinstance(value, Mapping) and isinstance(old, dict):
            merged[key] = merge_changes(old, value)
        else:
            merged[key] = value
    return merged
