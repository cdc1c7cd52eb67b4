"""The checkpoint layout: the whole store as one immutable, indexed image, read in place.

Theory of operation
-------------------
A checkpoint (:mod:`.log`) is the store as it was after one sequence number,
laid out so that a reader answers every query straight from the mapping,
through a :class:`memoryview`, without copying the image into Python
objects.  Attaching one costs the same with a hundred records or a million:
a header and a few bounds are checked, nothing is decoded.  A partition
(one table in one namespace) is opened on its first use (its block header is
checked: O(1)); a record is decoded only when a read asks for it.

The image is written once by the manager (or its forked child,
:mod:`.layout_writer`) and never changes, so readers need no locks and may
keep using an image after the manager has unlinked its segment.

Layout (little-endian; offsets are relative to the start of the image; every
area starts 8-aligned)::

    image header (96 bytes)
        0   magic       8s   b"PTGCKPT\\0"
        8   version     u32  IMAGE_VERSION
        12  crc         u32  crc32 of the header (this field zeroed) and the table list
        16  total       u64  bytes of the image, header included
        24  seq         u64  the last effect the image includes
        32  next_ord    u64  the state's insertion counter
        40  partitions  u64  P
        48  dir         u64  -> u64[P]  each partition block's offset, sorted by key
        56  dslots      u64  -> u64[dmask+1]  hash slots over the partition keys
        64  dmask       u64
        72  tables      u64  -> msgpack list of the table names
        80  tables_len  u64
        88  records     u64  records in every partition

    partition block (offsets relative to the block; header 232 bytes)
        magic "PTPB", crc u32 (crc32 of the header, crc zeroed, and the key),
        block_len, n, key_len, mask, n_post, pmask, n_listed, pkeys_len,
        ids_len, blob_len, build id, source id, runs, then the offsets of
        the areas below:
        key      msgpack ``[table, [ns...]]``
        created  i64[n]   } the order: entries are stored in ascending
        ord      u64[n]   } ``(created, ord)``, so position = list order
        meta     n x 64   id length u16, the id (zero-padded) when it fits in 34
                          bytes, index length u32, record length u32, blob offset
                          u64, id offset u32, id hash u32, crc u32
        slots    u64[mask+1]   open addressing on crc32(id):
                               ``hash << 32 | position + 1``; 0 is empty
        pkoff    u64[n_post], pklen u32[n_post], ploff u64[n_post],
        pllen    u32[n_post]   one posting per indexed ``(field, value)``:
                               its key and its slice of ``lists``
        pslots   u64[pmask+1]  open addressing on crc32(posting key)
        lists    u32[n_listed] positions, ascending (so in list order)
        pkeys    the postings' keys (:func:`posting_key`)
        ids      every id (utf-8), in list order: what a lookup compares
        runs     u64[3 x runs]  (position, source position, count): the entries
                                copied unchanged from block ``source id``
        blob     per entry: index values (msgpack), then the packed record

The ids live apart from the records so that a lookup touches only dense
index pages: a reader's first read of a record copies it with ``pread``
(:meth:`CheckpointPartition._first_read`) and never maps its page, since a
page fault maps the neighbouring pages too (the kernel's fault-around) and a
process reading 1% of the records would otherwise carry most of the image in
its resident set.  The mapping serves the records it reads again.

So ``get`` is a hash probe (one or two slots) and a slice; a page is a
slice of positions read backwards; ``find_by_*`` is a hash probe into the
postings and a slice of ``lists``; ``count`` is ``n``.  Bisecting the order
for a cursor or a ``created`` bound runs :func:`bisect.bisect_left` over the
``created`` and ``ord`` columns (C speed, no decoding).

**Checks.**  A reader never trusts the mapping's size or any offset it
reads.  On attach: the segment header (:mod:`.shm`: magic, layout version,
kind, capacity within the mapping, the sealed length), the generation, the
image header's magic, version, crc32 and that every area it names lies
inside the image.  On a partition's first use: its block's magic, crc32
and areas.  On a record's first decode in this process: the record's crc32
(over its id, index values, record and order fields).  Any failure is a
:class:`~papertiger.errors.StoreError` naming the segment; an offset or
position read from a damaged area is caught by bounds checks, never a crash.
What is not checked is an index area that damage left self-consistent (a
hash slot cleared, say): a lookup may then miss a record, never return another
record's bytes.  Checking whole areas would make attaching O(size).
"""

from __future__ import annotations

import os
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Container, Iterator
from typing import Any, Literal
from zlib import crc32

import msgpack

from ..errors import StoreError
from ..namespace import Namespace

__all__ = [
    "BLOCK",
    "IMAGE",
    "IMAGE_MAGIC",
    "IMAGE_VERSION",
    "META",
    "BaseEntry",
    "Checkpoint",
    "CheckpointPartition",
    "partition_key",
    "posting_key",
]

IMAGE_MAGIC = b"PTGCKPT\x00"
IMAGE_VERSION = 1
#: magic, version, crc, total, seq, next_ord, partitions, dir, dslots, dmask,
#: tables, tables_len, records
IMAGE = struct.Struct("<8sIIQQQQQQQQQQ")
BLOCK_MAGIC = b"PTPB"
#: magic, crc, block_len, n, key_len, mask, n_post, pmask, n_listed, pkeys_len, ids_len,
#: blob_len, build id, source id, runs, then the offsets of BLOCK_AREAS
BLOCK_AREAS = (
    "key",
    "created",
    "ord",
    "meta",
    "slots",
    "pkoff",
    "pklen",
    "ploff",
    "pllen",
    "pslots",
    "lists",
    "pkeys",
    "ids",
    "runs",
    "blob",
)
BLOCK = struct.Struct("<4sIQQQQQQQQQQQQQ" + "Q" * len(BLOCK_AREAS))
#: id length, the id itself when it fits (zero-padded), index values length, record
#: length, blob offset, id offset, id hash, crc: a lookup reads one cache line of meta,
#: and unpacks only what it needs (LOOKUP, the first five fields)
META = struct.Struct("<H34sIIQIII")
LOOKUP = struct.Struct("<H34sIIQ")
META_SIZE = META.size  # 64
INLINE_ID = 34
BLOCK_FIELDS = 15  # BLOCK's fields before the area offsets
ORDER_FIELDS = struct.Struct("<qQ")
_LOW32 = 0xFFFFFFFF
_DAMAGE = (IndexError, ValueError, TypeError, OverflowError, struct.error, UnicodeDecodeError)

_packb = msgpack.packb
_unpackb = msgpack.unpackb


def partition_key(table: str, ns: Namespace) -> bytes:
    """The bytes a partition is found by: msgpack ``[table, [ns...]]``. O(len(ns))."""
    return _packb([table, list(ns)], use_bin_type=True)  # type: ignore[no-any-return]


def posting_key(field: str, value: Any) -> bytes:
    """The bytes a posting is found by: ``field``, a NUL, then ``s`` and the value for a
    str, ``i`` and its digits for an int (the only values indexed; field names hold no
    NUL). O(1).  Raises TypeError for any other value.

    >>> posting_key("customer", "cus_1"), posting_key("n", 7)
    (b'customer\\x00scus_1', b'n\\x00i7')
    """
    if type(value) is str:
        return f"{field}\x00s{value}".encode("utf-8", "surrogatepass")
    if type(value) is int:
        return f"{field}\x00i{value}".encode("utf-8", "surrogatepass")
    raise TypeError(f"index values are str or int, not {type(value).__name__}")


def entry_crc(created: int, ord_: int, record_id: Any, blob: Any) -> int:
    """The checksum of one entry: its order fields, id and blob. O(len(blob))."""
    return crc32(blob, crc32(record_id, crc32(ORDER_FIELDS.pack(created, ord_))))


def _pad(n: int) -> int:
    return (n + 7) & ~7


class Checkpoint:
    """A checkpoint image read in place, over any buffer (a segment's mapping, or bytes).

    ``name`` only labels errors; ``raw`` (with ``raw[raw_offset + i] ==
    buf[i]``) is what ``buf`` views, when slicing it copies bytes in one step
    (an mmap); ``fd``, when given, is the file it maps (see
    :meth:`CheckpointPartition._first_read`).  Raises :class:`StoreError` when the header
    is damaged or the image does not fit ``buf``. O(1) (plus O(tables)).
    """

    __slots__ = (
        "_by_offset",
        "_dir",
        "_dmask",
        "_dslots",
        "_found",
        "buf",
        "fd",
        "name",
        "next_ord",
        "number",
        "partition_count",
        "raw",
        "raw_offset",
        "records",
        "segment",
        "seq",
        "table_names",
        "total",
    )

    def __init__(
        self,
        buf: memoryview,
        name: str = "checkpoint",
        number: int = 0,
        *,
        raw: Any = None,
        raw_offset: int = 0,
        fd: int | None = None,
    ) -> None:
        self.name = name
        self.number = number
        #: what ``buf`` views, when slicing it makes bytes in one step (an mmap, bytes)
        self.raw = raw if raw is not None else buf.obj if isinstance(buf.obj, bytes) else None
        self.raw_offset = raw_offset
        #: a descriptor of the file ``raw`` maps (first reads use ``pread``), or None
        self.fd = fd
        self.segment: Any = None  # the Segment this image lives in, closed with it
        if len(buf) < IMAGE.size:
            raise self._damaged(f"it is {len(buf)} bytes, shorter than its header")
        fields = IMAGE.unpack_from(buf, 0)
        (magic, version, crc, total, seq, next_ord, parts, dir_off, dslots, dmask, tables, tlen) = (
            fields[:12]
        )
        if magic != IMAGE_MAGIC:
            raise self._damaged(f"its image header has magic {bytes(magic)!r}")
        if version != IMAGE_VERSION:
            raise StoreError(
                f"checkpoint {name} has layout version {version}; this papertiger reads "
                f"version {IMAGE_VERSION}. Use the same papertiger version as the manager."
            )
        if total > len(buf) or total < IMAGE.size:
            raise self._damaged(f"its header claims {total} bytes but {len(buf)} are there")
        for off, size in ((dir_off, 8 * parts), (dslots, 8 * (dmask + 1)), (tables, tlen)):
            if off % 8 or off < IMAGE.size or off + size > total:
                raise self._damaged("its header names an area outside the image")
        if dmask & (dmask + 1):
            raise self._damaged("its directory size is not a power of two")
        header = bytearray(buf[: IMAGE.size])
        header[12:16] = b"\x00\x00\x00\x00"
        if crc32(buf[tables : tables + tlen], crc32(header)) != crc:
            raise self._damaged("its header checksum does not match")
        self.buf = buf[:total]
        self.total = int(total)
        self.seq = int(seq)
        self.next_ord = int(next_ord)
        self.partition_count = int(parts)
        self.records = int(fields[12])
        try:
            names = _unpackb(self.buf[tables : tables + tlen])
        except Exception:
            raise self._damaged("its table list does not decode") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise self._damaged("its table list is not a list of names")
        self.table_names: list[str] = names
        self._dir = self.buf[dir_off : dir_off + 8 * parts].cast("Q")
        self._dslots = self.buf[dslots : dslots + 8 * (dmask + 1)].cast("Q")
        self._dmask = int(dmask)
        self._found: dict[tuple[str, Namespace], CheckpointPartition | None] = {}
        self._by_offset: dict[int, CheckpointPartition] = {}

    def _damaged(self, what: str) -> StoreError:
        return StoreError(
            f"checkpoint {self.name} is damaged: {what}. It was not used; the manager writes "
            "a new one as the log grows (restart the manager if this repeats)."
        )

    # -- partitions ------------------------------------------------------------------
    def partition(self, table: str, ns: Namespace) -> CheckpointPartition | None:
        """The partition of ``table`` in ``ns``, or None. O(1); cached."""
        try:
            return self._found[(table, ns)]
        except KeyError:
            pass
        try:
            key = partition_key(table, ns)
        except (TypeError, ValueError):  # a name msgpack cannot carry is never stored
            return None
        h = crc32(key)
        slots, mask = self._dslots, self._dmask
        i = h & mask
        found = None
        for _ in range(mask + 1):
            slot = slots[i]
            if not slot:
                break
            if slot >> 32 == h:
                part = self._open(self._dir_entry((slot & _LOW32) - 1))
                if part.key == key:
                    found = part
                    break
            i = (i + 1) & mask
        self._found[(table, ns)] = found
        return found

    def _dir_entry(self, k: int) -> int:
        if not 0 <= k < self.partition_count:
            raise self._damaged(f"its directory names partition {k} of {self.partition_count}")
        return int(self._dir[k])

    def _open(self, offset: int) -> CheckpointPartition:
        part = self._by_offset.get(offset)
        if part is None:
            part = self._by_offset[offset] = CheckpointPartition(self, offset)
        return part

    def inherit(self, older: Checkpoint) -> None:
        """Take over what this process verified of ``older`` (the image it used before):
        a block copied whole keeps its bitmap, a rebuilt one takes it run by run (see
        :meth:`CheckpointPartition._first_read`). O(partitions opened + runs)."""
        for old in list(older._by_offset.values()):
            if not old._verified:
                continue
            new = self.partition(old.table, old.ns)
            if new is None or new._verified:
                continue
            if new.build_id == old.build_id and new.n == old.n:
                new._verified = old._verified
            elif new.source_id == old.build_id and len(new._runs):
                bitmap = bytearray(new.n)
                runs = new._runs
                for i in range(0, len(runs), 3):
                    at, src, count = runs[i], runs[i + 1], runs[i + 2]
                    if at + count <= new.n and src + count <= old.n:
                        bitmap[at : at + count] = old._verified[src : src + count]
                new._verified = bitmap

    def partitions(self) -> Iterator[CheckpointPartition]:
        """Every partition, sorted by ``(table, namespace)``. O(P)."""
        for k in range(self.partition_count):
            yield self._open(self._dir_entry(k))

    def close(self) -> None:
        """Release the mapping (the segment is unmapped once no view of it remains)."""
        self._found.clear()
        self._by_offset.clear()
        self.fd = None  # a partition still in use falls back to the mapping
        if self.segment is not None:
            self.segment.close()
            self.segment = None


class CheckpointPartition:
    """One partition of a :class:`Checkpoint`, read in place.

    Positions ``0 .. n-1`` are the list order, ascending (oldest first).
    Lookups are O(1), bisecting the order O(log n); a record is decoded (and
    its checksum verified, once per process) only when it is asked for.
    """

    __slots__ = (
        "_blob",
        "_blob_end",
        "_created",
        "_ids",
        "_ids_end",
        "_lists",
        "_mask",
        "_meta",
        "_ord",
        "_pkeys",
        "_pklen",
        "_pkoff",
        "_pllen",
        "_ploff",
        "_pmask",
        "_pslots",
        "_raw",
        "_raw_blob",
        "_runs",
        "_slots",
        "_verified",
        "block",
        "buf",
        "build_id",
        "checkpoint",
        "key",
        "n",
        "ns",
        "offset",
        "source_id",
        "table",
    )

    def __init__(self, checkpoint: Checkpoint, offset: int) -> None:
        self.checkpoint = checkpoint
        self.offset = offset
        buf = checkpoint.buf
        damaged = checkpoint._damaged
        if offset % 8 or offset < IMAGE.size or offset + BLOCK.size > checkpoint.total:
            raise damaged(f"a partition block at {offset} lies outside the image")
        fields = BLOCK.unpack_from(buf, offset)
        (magic, crc, block_len, n, key_len, mask, n_post, pmask, n_listed, pkeys_len) = fields[:10]
        ids_len, blob_len, build_id, source_id, n_runs = fields[10:BLOCK_FIELDS]
        areas = dict(zip(BLOCK_AREAS, fields[BLOCK_FIELDS:], strict=True))
        if magic != BLOCK_MAGIC or offset + block_len > checkpoint.total:
            raise damaged(f"the partition block at {offset} has a bad header")
        sizes = {
            "key": key_len,
            "created": 8 * n,
            "ord": 8 * n,
            "meta": META_SIZE * n,
            "slots": 8 * (mask + 1),
            "pkoff": 8 * n_post,
            "pklen": 4 * n_post,
            "ploff": 8 * n_post,
            "pllen": 4 * n_post,
            "pslots": 8 * (pmask + 1),
            "lists": 4 * n_listed,
            "pkeys": pkeys_len,
            "ids": ids_len,
            "runs": 24 * n_runs,
            "blob": blob_len,
        }
        for area, size in sizes.items():
            start = areas[area]
            if start % 8 or start < BLOCK.size or start + size > block_len:
                raise damaged(f"the partition block at {offset} names its {area} outside itself")
        if mask & (mask + 1) or pmask & (pmask + 1) or n >= mask + 1 or n_post >= pmask + 1:
            raise damaged(f"the partition block at {offset} has a bad hash table size")
        header = bytearray(buf[offset : offset + BLOCK.size])
        header[4:8] = b"\x00\x00\x00\x00"
        key_start = offset + areas["key"]
        self.key = bytes(buf[key_start : key_start + key_len])
        if crc32(self.key, crc32(header)) != crc:
            raise damaged(f"the partition block at {offset} fails its checksum")
        try:
            table, ns = _unpackb(self.key)
            self.table: str = table
            self.ns: Namespace = tuple(ns)
        except Exception:
            raise damaged(f"the partition block at {offset} has an unreadable key") from None
        self.n = int(n)
        self.buf = buf
        self.block = buf[offset : offset + block_len]

        def column(name: str, fmt: Literal["q", "Q", "I"]) -> memoryview:
            start = offset + areas[name]
            return buf[start : start + sizes[name]].cast(fmt)

        self._created = column("created", "q")
        self._ord = column("ord", "Q")
        self._meta = offset + areas["meta"]
        self._slots = column("slots", "Q")
        self._mask = int(mask)
        self._pkoff = column("pkoff", "Q")
        self._pklen = column("pklen", "I")
        self._ploff = column("ploff", "Q")
        self._pllen = column("pllen", "I")
        self._pslots = column("pslots", "Q")
        self._pmask = int(pmask)
        self._lists = column("lists", "I")
        self._pkeys = offset + areas["pkeys"]
        self._blob = offset + areas["blob"]
        self._blob_end = self._blob + blob_len
        self._ids = offset + areas["ids"]
        self._ids_end = self._ids + ids_len
        #: who built this block (copies keep it), and the block its runs were copied from
        self.build_id = int(build_id)
        self.source_id = int(source_id)
        self._runs = column("runs", "Q")
        #: which positions this process verified (allocated on the first)
        self._verified = bytearray(0)
        #: slicing ``_raw`` at ``_raw_blob + blob offset`` copies a record in one step
        self._raw = checkpoint.raw if checkpoint.raw is not None else _BytesOf(buf)
        self._raw_blob = self._blob + (checkpoint.raw_offset if checkpoint.raw is not None else 0)

    def __len__(self) -> int:
        return self.n

    @property
    def data_bytes(self) -> int:
        """Bytes of ids, index values and records in this block."""
        return int((self._blob_end - self._blob) + (self._ids_end - self._ids))

    def __repr__(self) -> str:
        return f"<CheckpointPartition {self.table} {self.ns} n={self.n}>"

    def _damaged(self, what: str) -> StoreError:
        return self.checkpoint._damaged(f"partition {self.table}/{'/'.join(self.ns)}: {what}")

    damage = _damaged

    def columns(self) -> tuple[memoryview, memoryview]:
        """The ``created`` and ``ord`` columns (position -> value). O(1)."""
        return self._created, self._ord

    # -- lookups --------------------------------------------------------------------
    def get(self, record_id: str, hidden: Container[int] = ()) -> bytes | None:
        """The packed record of ``record_id`` unless its position is in ``hidden``; else
        None.  :meth:`find` and :meth:`packed` in one, for the hottest read. O(1)."""
        key = record_id.encode("utf-8", "surrogatepass")  # such an id is never stored
        n = len(key)
        inline = key.ljust(INLINE_ID, b"\0") if n <= INLINE_ID else None
        h = crc32(key)
        slots, mask, buf, meta = self._slots, self._mask, self.buf, self._meta
        i = h & mask
        probes = 0
        try:
            while probes <= mask:
                slot = slots[i]
                if not slot:
                    return None
                if slot >> 32 == h:
                    p = (slot & _LOW32) - 1
                    id_len, stored, idx_len, rec_len, off = LOOKUP.unpack_from(
                        buf, meta + META_SIZE * p
                    )
                    if id_len == n and (
                        stored == inline if inline is not None else self._id_is(p, key)
                    ):
                        if p in hidden:
                            return None
                        verified = self._verified
                        if p >= len(verified) or not verified[p]:
                            return self._first_read(p)[idx_len:]
                        start = self._raw_blob + off + idx_len
                        return self._raw[start : start + rec_len]  # type: ignore[no-any-return]
                i = (i + 1) & mask
                probes += 1
        except _DAMAGE as exc:
            raise self._damaged(f"{type(exc).__name__} in its hash slots") from None
        return None

    def find(self, record_id: str) -> int:
        """The position of ``record_id``, or -1. O(1) expected."""
        key = record_id.encode("utf-8", "surrogatepass")  # such an id is never stored
        h = crc32(key)
        slots, mask, buf, meta, ids = self._slots, self._mask, self.buf, self._meta, self._ids
        i = h & mask
        n = self.n
        try:
            for _ in range(mask + 1):
                slot = slots[i]
                if not slot:
                    return -1
                if slot >> 32 == h:
                    p = (slot & _LOW32) - 1
                    if p >= n:
                        raise self._damaged(f"a hash slot names position {p} of {n}")
                    id_len, _, _, _, _, id_off, _, _ = META.unpack_from(buf, meta + META_SIZE * p)
                    start = ids + id_off
                    if id_len == len(key) and buf[start : start + id_len] == key:
                        return int(p)
                i = (i + 1) & mask
        except _DAMAGE as exc:
            raise self._damaged(f"{type(exc).__name__} in its hash slots") from None
        return -1

    def _id_is(self, p: int, key: bytes) -> bool:
        """True when the id at ``p`` is ``key`` (for ids too long to be inline)."""
        start = self._ids + META.unpack_from(self.buf, self._meta + META_SIZE * p)[5]
        return self.buf[start : start + len(key)] == key

    def _meta_of(self, p: int) -> tuple[int, int, int, int, int, int, int]:
        """``(blob offset, id offset, id hash, crc, index length, record length, id length)``
        of ``p``, with its areas checked against the block. O(1)."""
        if not 0 <= p < self.n:
            raise self._damaged(f"position {p} is out of range (n = {self.n})")
        try:
            id_len, _, idx_len, rec_len, off, id_off, h, crc = META.unpack_from(
                self.buf, self._meta + META_SIZE * p
            )
        except _DAMAGE as exc:
            raise self._damaged(f"{type(exc).__name__} reading entry {p}") from None
        found = (off, id_off, h, crc, idx_len, rec_len, id_len)
        if self._blob + off + idx_len + rec_len > self._blob_end or (
            self._ids + id_off + id_len > self._ids_end
        ):
            raise self._damaged(f"entry {p} lies outside its areas")
        return found  # type: ignore[no-any-return]

    def _first_read(self, p: int) -> bytes:
        """The blob of ``p`` (index values, then the record), read and verified: the first
        time this process reads it.  Read with ``pread`` where the image is a file, so that
        a record read once is not mapped (see the module doc). O(len(blob))."""
        off, id_off, _, crc, idx_len, rec_len, id_len = self._meta_of(p)
        start = self._blob + off
        length = idx_len + rec_len
        fd = self.checkpoint.fd
        if fd is not None:
            blob = os.pread(fd, length, self.checkpoint.raw_offset + start)
            if len(blob) != length:
                raise self._damaged(f"entry {p} is cut short (the segment was truncated)")
        else:
            blob = bytes(self.buf[start : start + length])
        at = self._ids + id_off
        if entry_crc(self._created[p], self._ord[p], self.buf[at : at + id_len], blob) != crc:
            raise self._damaged(f"entry {p} fails its checksum")
        if not self._verified:
            self._verified = bytearray(self.n)
        self._verified[p] = 1
        return blob

    def _check(self, p: int) -> tuple[int, int, int]:
        """``(blob start, index length, record length)`` of ``p``, verified once."""
        off, _, _, _, idx_len, rec_len, _ = self._meta_of(p)
        if p >= len(self._verified) or not self._verified[p]:
            self._first_read(p)
        return self._blob + off, idx_len, rec_len

    def packed(self, p: int) -> bytes:
        """The packed record at ``p`` (a copy: it outlives the mapping). O(record)."""
        if not (p < len(self._verified) and self._verified[p]):
            blob = self._first_read(p)
            return blob[META.unpack_from(self.buf, self._meta + META_SIZE * p)[2] :]
        _, _, idx_len, rec_len, off = LOOKUP.unpack_from(self.buf, self._meta + META_SIZE * p)
        start = self._raw_blob + off + idx_len
        return bytes(self._raw[start : start + rec_len])

    def packed_view(self, p: int) -> memoryview:
        """The packed record at ``p``, in place (keeps the mapping alive). O(1)."""
        start, idx_len, rec_len = self._check(p)
        start += idx_len
        return self.buf[start : start + rec_len]

    def record_id(self, p: int) -> str:
        """The id at ``p`` (from the ids area: no record page is touched). O(len(id))."""
        _, id_off, _, _, _, _, id_len = self._meta_of(p)
        start = self._ids + id_off
        try:
            return str(self.buf[start : start + id_len], "utf-8")
        except UnicodeDecodeError:
            raise self._damaged(f"the id of entry {p} is not utf-8") from None

    def index_values(self, p: int) -> dict[str, Any] | None:
        """The index values stored with ``p`` (None when there are none). O(their size)."""
        start, idx_len, _ = self._check(p)
        return self._decode_index_values(start, idx_len)

    def _decode_index_values(self, start: int, idx_len: int) -> dict[str, Any] | None:
        if not idx_len:
            return None
        try:
            found = _unpackb(self.buf[start : start + idx_len])
        except Exception:
            raise self._damaged("the index values of an entry do not decode") from None
        return found if isinstance(found, dict) and found else None

    def order_key(self, p: int) -> tuple[int, int]:
        """``(created, ord)`` at ``p``. O(1)."""
        try:
            return self._created[p], self._ord[p]
        except IndexError:
            raise self._damaged(f"position {p} is out of range (n = {self.n})") from None

    def key_at(self, p: int) -> tuple[int, int, str]:
        """The order key ``(created, ord, id)`` at ``p``. O(len(id))."""
        created, ord_ = self.order_key(p)
        return created, ord_, self.record_id(p)

    def entry(self, p: int) -> BaseEntry:
        return BaseEntry(self, p)

    def bisect(self, key: tuple[Any, ...]) -> int:
        """Where ``key`` (``(created,)`` or ``(created, ord[, id])``) would go. O(log n)."""
        created = self._created
        lo = bisect_left(created, key[0])
        if len(key) == 1:
            return lo
        hi = bisect_right(created, key[0], lo)
        return bisect_left(self._ord, key[1], lo, hi)

    def posting(self, field: str, value: Any) -> memoryview | None:
        """Positions (ascending) whose ``field`` holds ``value``, or None. O(1) expected."""
        try:
            key = posting_key(field, value)
        except (TypeError, ValueError, OverflowError):
            return None
        h = crc32(key)
        slots, mask, buf = self._pslots, self._pmask, self.buf
        i = h & mask
        try:
            for _ in range(mask + 1):
                slot = slots[i]
                if not slot:
                    return None
                if slot >> 32 == h:
                    k = (slot & _LOW32) - 1
                    start = self._pkeys + self._pkoff[k]
                    if self._pklen[k] == len(key) and buf[start : start + len(key)] == key:
                        first = self._ploff[k]
                        found: memoryview = self._lists[first : first + self._pllen[k]]
                        return found
                i = (i + 1) & mask
        except _DAMAGE as exc:
            raise self._damaged(f"{type(exc).__name__} in its postings") from None
        return None

    # -- for the writer ------------------------------------------------------------
    def raw(self, p: int) -> tuple[int, int, int, int, int, int, int, int, int]:
        """``(created, ord, blob start, index length, record length, id start, id length,
        id hash, crc)`` of ``p``: what copying it into a new image takes, without decoding
        it.  Bounds are checked, the checksum is not: it is copied with the entry, and
        whoever reads the copy checks it. O(1).
        """
        off, id_off, h, crc, idx_len, rec_len, id_len = self._meta_of(p)
        created, ord_ = self.order_key(p)
        return (
            created,
            ord_,
            self._blob + off,
            idx_len,
            rec_len,
            self._ids + id_off,
            id_len,
            h,
            crc,
        )

    def raw_index_values(self, start: int, idx_len: int) -> dict[str, Any] | None:
        """The index values of the entry whose blob starts at ``start`` (see :meth:`raw`)."""
        return self._decode_index_values(start, idx_len)


class BaseEntry:
    """A stored entry of a :class:`CheckpointPartition`, each field read when first asked."""

    __slots__ = ("_index_values", "_order", "_packed", "part", "position")

    def __init__(self, part: CheckpointPartition, position: int) -> None:
        self.part = part
        self.position = position
        self._order: tuple[int, int] | None = None
        self._packed: bytes | None = None
        self._index_values: Any = _UNSET

    @property
    def created(self) -> int:
        if self._order is None:
            self._order = self.part.order_key(self.position)
        return self._order[0]

    @property
    def ord(self) -> int:
        if self._order is None:
            self._order = self.part.order_key(self.position)
        return self._order[1]

    @property
    def packed(self) -> bytes:
        if self._packed is None:
            self._packed = self.part.packed(self.position)
        return self._packed

    @property
    def index_values(self) -> dict[str, Any] | None:
        if self._index_values is _UNSET:
            self._index_values = self.part.index_values(self.position)
        return self._index_values  # type: ignore[no-any-return]


_UNSET: Any = object()


class _BytesOf:
    """Slicing copies bytes out of a buffer (for images over buffers that are not mmaps)."""

    __slots__ = ("buf",)

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf

    def __getitem__(self, span: slice) -> bytes:
        return bytes(self.buf[span])
