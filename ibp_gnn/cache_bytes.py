"""What a compressed cache costs: the device bytes it keeps and the host-to-device
bytes of each transfer path (re-exported by ``ibp_gnn.cache``).

* :func:`device_nbytes` / :func:`cached_prefix` -- the device memory a cache
  keeps (what its byte budget bounds): the cached rows, the decode table and,
  for zero-copy misses, the host tier's index; the rows that fit.
* :func:`raw_sectors` / :func:`span_sectors` / :func:`staged_bytes` -- the
  host-to-device bytes of each path in 32-byte sectors (benchmarks/bus_bytes.py);
  with ``distinct=True`` a sector the rows of one launch share counts once.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from . import _C
from ._tensor import CompressedTensor, _threads

SECTOR = 32


def _view(ct: CompressedTensor):
    payload = (ct._pinned.numpy().view(np.uint32) if ct._pinned is not None else ct._payload)
    return ct._header, ct._decode_table, ct._bases, ct._rel, payload


def _copied_bits(ct: CompressedTensor, ids: np.ndarray, threads: Optional[int] = None):
    """Bits :func:`subset` copies for each row of `ids`: its span, or for a
    tensor of row layout "sectors" its own bits (the zero gap after a kRaw,
    kIbp or kCoded row is left out)."""
    ids = np.ascontiguousarray(ids, np.int64)
    if not ct._fields.get("layout"):
        start, end = ct._row_spans(ids)
        return end - start
    return _C.subset_row_bits(*_view(ct), ids, _threads(threads)).astype(np.int64)


def _index_sizes(ct: CompressedTensor, n: int):
    """(entries of bases, bytes of rel) of an n-row tensor of ct's geometry."""
    b = ct._fields["block_rows"]
    return (n + b - 1) // b + 1, n * ct._fields["rel_bytes"]


def subset_nbytes(ct: CompressedTensor, order: np.ndarray) -> np.ndarray:
    """Bytes a cache of the first k rows of ``order`` occupies, for k = 0..len:
    payload (padding included), index and mask tables (0 for k = 0)."""
    bits = np.concatenate([[0], np.cumsum(_copied_bits(ct, np.asarray(order, np.int64)))])
    k = np.arange(len(bits))
    nb, rel = _index_sizes(ct, k)
    sizes = (4 * ((bits + 31) // 32 + _C.PAYLOAD_PAD_WORDS) + 8 * nb + rel
             + ct._tables.nbytes + ct._decode_table.nbytes)
    sizes[0] = 0  # no cache
    return sizes


def miss_resident_nbytes(ct: CompressedTensor, transfer: str) -> int:
    """Device bytes the misses of `transfer` need, whatever is cached: the
    decode table and, for "zero_copy", the host tier's whole index (bases +
    rel: the kernel looks each missed row up there before reading its span
    from host memory). "staged" misses bring their own index in each copy:
    the host tier's index and payload never leave host memory."""
    if transfer not in ("zero_copy", "staged"):
        raise ValueError(f"ibp_gnn.cache.miss_resident_nbytes: transfer must be 'zero_copy' or "
                         f"'staged', got {transfer!r}")
    index = ct._bases.nbytes + ct._rel.nbytes if transfer == "zero_copy" else 0
    return int(ct._decode_table.nbytes + index)


def device_nbytes(ct: CompressedTensor, order, transfer: str = "zero_copy") -> np.ndarray:
    """Bytes :class:`CachedFeature` keeps on the device with the first k rows
    of ``order`` cached and misses moved by `transfer`, for k = 0..len: the
    cached rows' payload (padding included) and index (none for k = 0) plus
    :func:`miss_resident_nbytes`. The mask tables stay on the host (the
    kernel reads the decode table built from them). A cache of the whole
    tensor is the tensor itself: :func:`whole_nbytes`."""
    order = np.asarray(order, np.int64)
    bits = np.concatenate([[0], np.cumsum(_copied_bits(ct, order))])
    nb, rel = _index_sizes(ct, np.arange(len(bits)))
    sizes = 4 * ((bits + 31) // 32 + _C.PAYLOAD_PAD_WORDS) + 8 * nb + rel
    sizes[0] = 0  # no cached rows: nothing of theirs on the device
    return sizes + miss_resident_nbytes(ct, transfer)


def whole_nbytes(ct: CompressedTensor) -> int:
    """Device bytes of a cache of the whole tensor: its decode table, index and
    payload (no miss ever travels)."""
    return int(ct._decode_table.nbytes + ct._bases.nbytes + ct._rel.nbytes + ct._payload.nbytes)


def cached_prefix(ct: CompressedTensor, order, budget: int, transfer: str = "zero_copy"):
    """(k, whole): :class:`CachedFeature` with `budget` bytes caches the first
    k rows of ``order`` (device_nbytes(ct, order, transfer)[k] <= budget; k = 0
    when even that of k = 0 exceeds it), or, when ``order`` covers every row
    and whole_nbytes(ct) <= budget, the whole tensor (whole=True, k = rows)."""
    order = np.asarray(order, np.int64)
    if whole_nbytes(ct) <= budget and len(np.unique(order)) == len(ct):
        return len(ct), True
    sizes = device_nbytes(ct, order, transfer)
    return max(0, int(np.searchsorted(sizes, budget, side="right")) - 1), False


# ---- bytes over the bus -------------------------------------------------------------------------
def _sector_count(first: np.ndarray, last: np.ndarray, distinct: bool) -> int:
    """Sectors [first, last] of each read, summed; distinct=True counts each
    sector once (the union), as one kernel launch moves it: a sector two rows
    share is read once and served to the other from L2 (the emulation's
    distinct_sectors of a launch)."""
    if first.size == 0:
        return 0
    if not distinct:
        return int((last - first + 1).sum())
    o = np.argsort(first, kind="stable")
    f, l = first[o], last[o]
    seen = np.maximum.accumulate(l)  # highest sector covered by the reads up to each
    prev = np.concatenate([[f[0] - 1], seen[:-1]])
    return int(np.maximum(0, l - np.maximum(f - 1, prev)).sum())


def raw_sectors(ids: np.ndarray, row_bytes: int, *, distinct: bool = False) -> int:
    """32-byte sectors a raw gather of rows `ids` reads from a row-major
    host table (each row at ids * row_bytes; every id counts, or with
    distinct=True each sector once: one launch)."""
    ids = np.asarray(ids, np.int64)
    if row_bytes == 0 or ids.size == 0:
        return 0
    first = ids * row_bytes // SECTOR
    last = ((ids + 1) * row_bytes - 1) // SECTOR
    return _sector_count(first, last, distinct)


def span_sectors(ct: CompressedTensor, ids: np.ndarray, *, distinct: bool = False) -> int:
    """32-byte sectors covering each row's compressed span at its byte address
    in the payload (a zero-copy read of each row once; the kernel's 16-byte
    loads from the span's first sector stay inside its last one). The span is
    the index's [start(r), start(r + 1)): under the kSectors row layout it
    includes the zero gap after the row's bits, which ends at the sector
    boundary where the next row starts, so it adds no sector. With
    distinct=True a sector shared by rows of the launch counts once."""
    ids = np.asarray(ids, np.int64)
    if ids.size == 0:
        return 0
    start, end = ct._row_spans(ids)
    keep = end > start
    first = start[keep] // 8 // SECTOR
    last = ((end[keep] + 7) // 8 - 1) // SECTOR
    return _sector_count(first, last, distinct)


def staged_bytes(ct: CompressedTensor, ids: np.ndarray) -> int:
    """Bytes one staged copy of rows `ids` moves: their packed payload words
    (:func:`subset`'s copies, without kSectors gaps) and the packed tensor's
    index, rounded up to whole sectors."""
    ids = np.asarray(ids, np.int64)
    if ids.size == 0:
        return 0
    nb, rel = _index_sizes(ct, len(ids))
    total = 4 * ((int(_copied_bits(ct, ids).sum()) + 31) // 32) + 8 * nb + rel
    return -(-total // SECTOR) * SECTOR
