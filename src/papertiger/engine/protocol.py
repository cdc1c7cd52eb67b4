"""The wire protocol between clients and the manager.

Frames are msgpack through ``Connection.send_bytes`` / ``recv_bytes`` (never
``send``/``recv``, which pickle).  A request is a list whose first item is
the operation name; a reply is ``[OK, seq, result]`` or
``[ERR, kind, message, param]``.

Operations:

=====================  ======================================================
write ops              see :mod:`papertiger.commands` (``put``, ``put_many``,
                       ``patch``, ``delete``, ``clear_namespace``, ``clear``)
``hello``              ``{"control", "pid", "protocol", "version"}``
``ping``               ``None``
``stats``              tables, namespaces, counts, log and checkpoint sizes
``once``               ``["done", packed]`` or ``["run"]`` (reply may wait)
``once_done``          store a ``once`` result: ``["once_done", key, packed]``
``once_abandon``       the caller's factory failed: hand the claim on
``stage``              part of a large ``insert_many``:
                       ``["stage", txid, table, resource, ns, records]``;
                       never replied to (errors surface at ``commit``)
``commit``             apply the staged batch as one effect: ``["commit", txid]``
``abort``              forget a staged batch; never replied to
``checkpoint``         write a checkpoint now
``shutdown``           stop the manager after replying
=====================  ======================================================
"""

from __future__ import annotations

from typing import Any

import msgpack

from ..errors import StoreError, error_from_wire, error_to_wire

__all__ = ["ERR", "OK", "PROTOCOL_VERSION", "decode_reply", "encode_error", "encode_ok"]

PROTOCOL_VERSION = 1
OK, ERR = 0, 1
ONCE_TABLE = "_once"
ONCE_NAMESPACE = ("_once",)


def _packb(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def encode_ok(seq: int, result: Any = None) -> bytes:
    return _packb([OK, seq, result])


def encode_error(error: StoreError) -> bytes:
    return _packb([ERR, *error_to_wire(error)])


def decode_reply(frame: bytes) -> tuple[int, Any]:
    """``(seq, result)`` of an OK reply; raises the :class:`StoreError` of an ERR reply."""
    reply = msgpack.unpackb(frame)
    if reply[0] == OK:
        return reply[1], reply[2]
    raise error_from_wire(reply[1:])
