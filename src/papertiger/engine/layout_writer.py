"""Writing checkpoint images (:mod:`.layout`): plan the partitions, size the image, write it.

A new image is made from *parts*, one per non-empty partition, sorted by
``(table, namespace)``:

* a partition that did not change since the previous image is copied as it
  is (its block's offsets are relative to the block, so a block is one
  ``memcpy``);
* any other partition is built from its entries in list order
  (:class:`PartitionBuilder`): entries of the previous image are copied
  without being decoded (their blob, checksum and id hash are reused; runs
  of them are copied with one slice each), new entries are encoded once.

:func:`plan_image` collects the parts (O(entries of the changed
partitions)); :meth:`ImagePlan.write` writes the image into a buffer of
:attr:`ImagePlan.size` bytes (O(image size)), which the manager sizes its
segment by.  A plain :class:`~papertiger.core.state.State` (a data file
loaded at start) is written the same way (:func:`state_parts`).
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterable, Iterator
from typing import Any
from zlib import crc32

import msgpack

from ..core.state import Entry, State
from ..namespace import Namespace
from .layout import (
    BLOCK,
    BLOCK_AREAS,
    BLOCK_MAGIC,
    IMAGE,
    IMAGE_MAGIC,
    IMAGE_VERSION,
    INLINE_ID,
    META,
    META_SIZE,
    ORDER_FIELDS,
    CheckpointPartition,
    partition_key,
    posting_key,
)

__all__ = ["ImagePlan", "Part", "PartitionBuilder", "plan_image", "state_parts"]

_packb = msgpack.packb

#: One partition of a new image: ``(table, ns, copy_from, entries)``.  With
#: ``entries`` None the partition is ``copy_from`` unchanged; otherwise
#: ``entries`` yields, in list order, positions of ``copy_from`` (ints) or
#: ``(id, Entry)`` pairs.
Part = tuple[str, Namespace, CheckpointPartition | None, Iterable[Any] | None]


def _pad(n: int) -> int:
    return (n + 7) & ~7


def _table_size(n: int) -> int:
    """Hash table slots for ``n`` keys: a power of two, at least ``2 n`` (load <= 1/2)."""
    size = 2
    while size < 2 * n:
        size *= 2
    return size


class PartitionBuilder:
    """One partition's block, assembled from its entries in ascending list order."""

    def __init__(self, table: str, ns: Namespace) -> None:
        self.key = partition_key(table, ns)
        self.n = 0
        self.created = array("q")
        self.ord = array("Q")
        self.hashes = array("I")
        self.meta = bytearray()
        self.pieces: list[Any] = []  # bytes, or [buffer, start, end] runs of an old image
        self.blob_len = 0
        self.id_pieces: list[Any] = []  # the same, for the ids area
        self.ids_len = 0
        #: a new block's identity; a copy of a whole block keeps its own
        self.build_id = int.from_bytes(os.urandom(8), "little") | 1
        #: the block entries were copied from, and the runs copied: [at, from, count] ...
        self.source_id = 0
        self.runs = array("Q")
        self.postings: dict[bytes, array[int]] = {}

    def _post(self, index_values: dict[str, Any] | None) -> None:
        if not index_values:
            return
        p = self.n
        postings = self.postings
        for field, value in index_values.items():
            key = posting_key(field, value)
            found = postings.get(key)
            if found is None:
                postings[key] = array("I", (p,))
            else:
                found.append(p)

    @staticmethod
    def _extend(pieces: list[Any], source: Any, start: int, length: int) -> None:
        """Append ``source[start:start+length]``, growing the last run when it continues."""
        last = pieces[-1] if pieces else None
        if type(last) is list and last[0] is source and last[2] == start:
            last[2] = start + length
        else:
            pieces.append([source, start, start + length])

    def add(self, record_id: str, entry: Entry) -> None:
        """Append a new entry (encoded here). O(its size)."""
        created, ord_, packed, index_values = entry
        id_bytes = record_id.encode()
        idx = _packb(index_values, use_bin_type=True) if index_values else b""
        h = crc32(id_bytes)
        crc = crc32(packed, crc32(idx, crc32(id_bytes, crc32(ORDER_FIELDS.pack(created, ord_)))))
        self.meta += META.pack(
            len(id_bytes),
            id_bytes if len(id_bytes) <= INLINE_ID else b"",
            len(idx),
            len(packed),
            self.blob_len,
            self.ids_len,
            h,
            crc,
        )
        self.id_pieces.append(id_bytes)
        self.ids_len += len(id_bytes)
        if idx:
            self.pieces.append(idx)
        self.pieces.append(packed)
        self.blob_len += len(idx) + len(packed)
        self._post(index_values)
        self.created.append(created)
        self.ord.append(ord_)
        self.hashes.append(h)
        self.n += 1

    def add_copy(self, part: CheckpointPartition, p: int) -> None:
        """Append entry ``p`` of an old image, copied without decoding its record. O(1)."""
        created, ord_, start, idx_len, rec_len, id_start, id_len, h, crc = part.raw(p)
        inline = part.buf[id_start : id_start + id_len] if id_len <= INLINE_ID else b""
        self.meta += META.pack(
            id_len, bytes(inline), idx_len, rec_len, self.blob_len, self.ids_len, h, crc
        )
        runs = self.runs
        if self.source_id != part.build_id:
            self.source_id, runs[:] = part.build_id, array("Q")  # one source a block
        if runs and runs[-3] + runs[-1] == self.n and runs[-2] + runs[-1] == p:
            runs[-1] += 1
        else:
            runs.extend((self.n, p, 1))
        self._extend(self.pieces, part.buf, start, idx_len + rec_len)
        self._extend(self.id_pieces, part.buf, id_start, id_len)
        self.blob_len += idx_len + rec_len
        self.ids_len += id_len
        if idx_len:
            self._post(part.raw_index_values(start, idx_len))
        self.created.append(created)
        self.ord.append(ord_)
        self.hashes.append(h)
        self.n += 1

    # -- sizing and writing -----------------------------------------------------------
    def _areas(self) -> tuple[dict[str, int], dict[str, int], int]:
        n, posts = self.n, len(self.postings)
        listed = sum(len(v) for v in self.postings.values())
        pkeys = sum(len(k) for k in self.postings)
        sizes = {
            "key": len(self.key),
            "created": 8 * n,
            "ord": 8 * n,
            "meta": META_SIZE * n,
            "slots": 8 * _table_size(n),
            "pkoff": 8 * posts,
            "pklen": 4 * posts,
            "ploff": 8 * posts,
            "pllen": 4 * posts,
            "pslots": 8 * _table_size(posts),
            "lists": 4 * listed,
            "pkeys": pkeys,
            "ids": self.ids_len,
            "runs": 8 * len(self.runs),
            "blob": self.blob_len,
        }
        offsets = {}
        at = BLOCK.size
        for area in BLOCK_AREAS:
            offsets[area] = at
            at += _pad(sizes[area])
        return offsets, sizes, at

    def size(self) -> int:
        """Bytes of the block. O(postings)."""
        return self._areas()[2]

    def write(self, buf: memoryview, offset: int) -> int:
        """Write the block at ``buf[offset:]``; returns its length. O(its size)."""
        offsets, sizes, length = self._areas()

        def put(area: str, data: Any) -> None:
            start = offset + offsets[area]
            buf[start : start + len(data)] = data

        n = self.n
        slots_n = sizes["slots"] // 8
        slots = array("Q", bytes(8 * slots_n))
        mask = slots_n - 1
        for p, h in enumerate(self.hashes):
            i = h & mask
            while slots[i]:
                i = (i + 1) & mask
            slots[i] = (h << 32) | (p + 1)
        pslots_n = sizes["pslots"] // 8
        pmask = pslots_n - 1
        pslots = array("Q", bytes(8 * pslots_n))
        pkoff, pklen, ploff, pllen = array("Q"), array("I"), array("Q"), array("I")
        lists = array("I")
        pkeys = bytearray()
        for k, (key, positions) in enumerate(self.postings.items()):
            pkoff.append(len(pkeys))
            pklen.append(len(key))
            ploff.append(len(lists))
            pllen.append(len(positions))
            pkeys += key
            lists += positions
            h = crc32(key)
            i = h & pmask
            while pslots[i]:
                i = (i + 1) & pmask
            pslots[i] = (h << 32) | (k + 1)
        put("key", self.key)
        put("created", memoryview(self.created).cast("B"))
        put("ord", memoryview(self.ord).cast("B"))
        put("meta", self.meta)
        put("slots", memoryview(slots).cast("B"))
        put("pkoff", memoryview(pkoff).cast("B"))
        put("pklen", memoryview(pklen).cast("B"))
        put("ploff", memoryview(ploff).cast("B"))
        put("pllen", memoryview(pllen).cast("B"))
        put("pslots", memoryview(pslots).cast("B"))
        put("lists", memoryview(lists).cast("B"))
        put("pkeys", pkeys)
        put("runs", memoryview(self.runs).cast("B"))
        for area, pieces in (("ids", self.id_pieces), ("blob", self.pieces)):
            at = offset + offsets[area]
            for piece in pieces:
                if type(piece) is list:
                    source, start, end = piece
                    buf[at : at + end - start] = source[start:end]
                    at += end - start
                else:
                    buf[at : at + len(piece)] = piece
                    at += len(piece)
        header = [
            BLOCK_MAGIC,
            0,
            length,
            n,
            len(self.key),
            mask,
            len(self.postings),
            pmask,
            len(lists),
            len(pkeys),
            self.ids_len,
            self.blob_len,
            self.build_id,
            self.source_id,
            len(self.runs) // 3,
            *(offsets[a] for a in BLOCK_AREAS),
        ]
        BLOCK.pack_into(buf, offset, *header)
        header[1] = crc32(self.key, crc32(buf[offset : offset + BLOCK.size]))
        BLOCK.pack_into(buf, offset, *header)
        return length


class ImagePlan:
    """A new image, planned: :attr:`size` bytes, written by :meth:`write`."""

    def __init__(
        self,
        blocks: list[tuple[bytes, CheckpointPartition | PartitionBuilder]],
        tables: list[str],
        next_ord: int,
        seq: int,
    ) -> None:
        self.blocks = blocks
        self.tables = _packb(sorted(tables), use_bin_type=True)
        self.next_ord = next_ord
        self.seq = seq
        self.records = sum(block.n for _, block in blocks)
        #: bytes of ids, index values and records: what the checkpoint cadence is paced by
        self.data_bytes = sum(
            b.data_bytes if isinstance(b, CheckpointPartition) else b.ids_len + b.blob_len
            for _, b in blocks
        )
        self.block_sizes = [
            len(b.block) if isinstance(b, CheckpointPartition) else b.size() for _, b in blocks
        ]
        count = len(blocks)
        self.dslots = _table_size(count)
        self.dir_off = IMAGE.size
        self.dslots_off = self.dir_off + 8 * count
        self.tables_off = self.dslots_off + 8 * self.dslots
        self.blocks_off = self.tables_off + _pad(len(self.tables))
        #: bytes of the image
        self.size = self.blocks_off + sum(_pad(s) for s in self.block_sizes)

    def write(self, buf: memoryview) -> None:
        """Write the image at ``buf[0:size]``. O(size)."""
        count = len(self.blocks)
        directory = array("Q")
        dslots = array("Q", bytes(8 * self.dslots))
        mask = self.dslots - 1
        at = self.blocks_off
        for k, ((key, block), size) in enumerate(zip(self.blocks, self.block_sizes, strict=True)):
            directory.append(at)
            if isinstance(block, CheckpointPartition):
                buf[at : at + size] = block.block
            else:
                block.write(buf, at)
            h = crc32(key)
            i = h & mask
            while dslots[i]:
                i = (i + 1) & mask
            dslots[i] = (h << 32) | (k + 1)
            at += _pad(size)
        buf[self.dir_off : self.dir_off + 8 * count] = memoryview(directory).cast("B")
        buf[self.dslots_off : self.dslots_off + 8 * self.dslots] = memoryview(dslots).cast("B")
        buf[self.tables_off : self.tables_off + len(self.tables)] = self.tables
        fields = [
            IMAGE_MAGIC,
            IMAGE_VERSION,
            0,
            self.size,
            self.seq,
            self.next_ord,
            count,
            self.dir_off,
            self.dslots_off,
            mask,
            self.tables_off,
            len(self.tables),
            self.records,
        ]
        IMAGE.pack_into(buf, 0, *fields)
        fields[2] = crc32(self.tables, crc32(buf[: IMAGE.size]))
        IMAGE.pack_into(buf, 0, *fields)


def plan_image(parts: Iterable[Part], tables: Iterable[str], next_ord: int, seq: int) -> ImagePlan:
    """Plan an image of ``parts`` (see :data:`Part`). O(entries of the rebuilt partitions)."""
    blocks: list[tuple[bytes, CheckpointPartition | PartitionBuilder]] = []
    for table, ns, copy_from, entries in parts:
        if entries is None:
            assert copy_from is not None
            if copy_from.n:
                blocks.append((copy_from.key, copy_from))
            continue
        builder = PartitionBuilder(table, ns)
        for item in entries:
            if type(item) is int:
                builder.add_copy(copy_from, item)  # type: ignore[arg-type]
            else:
                builder.add(*item)
        if builder.n:
            blocks.append((builder.key, builder))
    return ImagePlan(blocks, list(tables), next_ord, seq)


def state_parts(state: State) -> Iterator[Part]:
    """The parts of a plain :class:`~papertiger.core.state.State`, every table included."""
    for table in sorted(state.tables):
        partitions = state.tables[table]
        for ns in sorted(partitions):
            partition = partitions[ns]
            if partition.records:
                records = partition.records
                entries = ((key[2], records[key[2]]) for key in partition.order)
                yield table, ns, None, entries
