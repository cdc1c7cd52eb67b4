"""The wire protocol between clients and the manager: frames built and read by name.

Frames are msgpack through ``Connection.send_bytes`` / ``recv_bytes`` (never
``send``/``recv``, which pickle).  A request is ``[op, *fields]``; a reply is
``[OK, seq, result]`` or ``[ERR, kind, message, param]``.  Nobody builds or
reads a frame by position outside this module: clients call the builders
below, the manager :func:`decode_request` and, for writes,
:func:`papertiger.core.resolve.write_request`.

Operations:

=====================  ======================================================
write ops              the typed requests of :mod:`papertiger.core.resolve`
                       (``put``, ``put_many``, ``patch``, ``delete``,
                       ``clear_namespace``, ``clear``); a ``patch`` ends with
                       its packed ``expect`` (or nil)
``hello``              ``{"address", "control", "pid", "protocol", "version"}``
``ping``               ``None``
``stats``              tables, namespaces, counts, log and checkpoint sizes
``once``               ``["done", packed]`` or ``["run"]`` (reply may wait)
``once_done``          store a ``once`` result: ``["once_done", key, packed]``
``once_abandon``       the caller's factory failed: hand the claim on
``stage``              part of a large ``insert_many``:
                       ``["stage", txid, table, object_name, ns, records]``;
                       never replied to (errors surface at ``commit``)
``commit``             apply the staged batch as one effect: ``["commit", txid]``
``abort``              forget a staged batch; never replied to
``checkpoint``         write a checkpoint now
``shutdown``           stop the manager after replying
=====================  ======================================================
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import msgpack
import ormsgpack

from ..core.resolve import WRITE_REQUESTS, WriteRequest
from ..errors import InvalidRequest, StoreError, error_from_wire, error_to_wire

__all__ = [
    "ERR",
    "OK",
    "PROTOCOL_VERSION",
    "Stage",
    "decode_reply",
    "decode_request",
    "encode_error",
    "encode_ok",
    "encode_request",
    "request",
    "write",
    "write_frame",
]

#: 2: ``patch`` carries ``expect`` (a manager and a client of version 1 would each refuse
#: the other's patch frames; ``hello`` refuses the pair up front instead).
PROTOCOL_VERSION = 2
OK, ERR = 0, 1

#: Requests that are never replied to.
NO_REPLY = frozenset({"stage", "abort"})

_OP_OF: dict[type[Any], str] = {kind: op for op, kind in WRITE_REQUESTS.items()}


def _packb(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


# -- requests ------------------------------------------------------------------------


class Stage(NamedTuple):
    """One chunk of a streamed ``insert_many``."""

    txid: str
    table: str
    object_name: str
    ns: Any
    records: list[Any]


def write(req: WriteRequest) -> list[Any]:
    """The frame of a typed write request: ``[op, *fields]``.

    >>> from papertiger.core.resolve import Clear
    >>> write(Clear("customers"))
    ['clear', 'customers']
    """
    return [_OP_OF[type(req)], *req]


def request(op: str, *fields: Any) -> list[Any]:
    """The frame of a non-write request (``hello``, ``once``, ``commit``...)."""
    return [op, *fields]


def stage(chunk: Stage) -> list[Any]:
    return ["stage", *chunk]


def encode_request(frame: list[Any]) -> bytes:
    return _packb(frame)


def decode_request(frame: bytes | memoryview) -> tuple[str, list[Any]]:
    """``(op, fields)`` of a request frame; :class:`InvalidRequest` when it is not one."""
    req = msgpack.unpackb(frame)
    if not isinstance(req, list) or not req or not isinstance(req[0], str):
        raise InvalidRequest(
            "Malformed request: expected a msgpack list starting with the operation name.",
            param="request",
        )
    return req[0], req[1:]


def read_stage(fields: list[Any]) -> Stage:
    if len(fields) != len(Stage._fields):
        raise InvalidRequest(
            f"Malformed stage request: expected {len(Stage._fields) + 1} items, "
            f"got {len(fields) + 1}.",
            param="request",
        )
    return Stage(*fields)


# -- transport -------------------------------------------------------------------------


def write_frame(fd: int, frame: bytes) -> None:
    """Send one frame as ``Connection.send_bytes`` would (4-byte length, then the bytes).

    One ``write`` in the common case (``send_bytes`` adds checks, a struct and
    a second write or a copy); loops over partial writes.  O(len(frame)).
    """
    size = len(frame)
    if size > 0x7FFFFFFF:
        data = b"\xff\xff\xff\xff" + size.to_bytes(8, "big") + frame
    else:
        data = size.to_bytes(4, "big") + frame
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# -- replies ---------------------------------------------------------------------------


def encode_ok(seq: int, result: Any = None) -> bytes:
    """``[OK, seq, result]``; ormsgpack's packer first (the same bytes, about 1 µs less
    than making a msgpack packer for each reply)."""
    try:
        return ormsgpack.packb([OK, seq, result])  # type: ignore[no-any-return]
    except TypeError:  # what only msgpack packs (a namedtuple, a non-str key...)
        return _packb([OK, seq, result])


def encode_error(error: StoreError) -> bytes:
    return _packb([ERR, *error_to_wire(error)])


def decode_reply(frame: bytes) -> tuple[int, Any]:
    """``(seq, result)`` of an OK reply; raises the :class:`StoreError` of an ERR reply."""
    reply = msgpack.unpackb(frame)
    if reply[0] == OK:
        return reply[1], reply[2]
    raise error_from_wire(reply[1:])
