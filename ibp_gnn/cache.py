"""A compressed cache of hot rows in device memory, in front of the compressed
host tier, and the staged transfer of missed rows.

* :func:`subset` -- the compressed tensor of some rows of another, made by
  copying the rows' compressed bits (``_C.subset``): rows keep their encoding
  and the mask tables are shared, so a byte budget holds ratio-times more rows
  than a cache of raw rows.
* :func:`presample_hot_rows` / :func:`degree_hot_rows` (``ibp_gnn.hot_rows``,
  importable from here) -- the rows to cache, most valuable first: by the
  accesses of the real sampler over training batches (default) or by in-degree.
* :class:`CachedFeature` -- ``gather(idx)`` bit-identical to ``x[idx]``: hits
  decode from the cache, misses from the host tier, either read zero-copy by
  the kernel or packed by CPU threads into one staging buffer (``subset``
  again), copied once and decoded from device memory. With ``device="cpu"``
  the same split, packing and scatter run on the CPU decoder.
* :func:`device_nbytes` / :func:`cached_prefix` (the device memory a cache
  keeps; the rows that fit a budget) and :func:`raw_sectors` /
  :func:`span_sectors` / :func:`staged_bytes` (the host-to-device bytes of each
  path): ``ibp_gnn.cache_bytes``, importable from here.
* ``ibp_gnn.training.sample_only`` -- ``train.py +sample_only=true``: the
  training loader replayed without a model, bus bytes per epoch of every path.
* Counters (``CachedFeature.take_counters``, :func:`all_sum`) are summed over
  torch.distributed ranks when it is initialised.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch

from . import _C
from ._tensor import CompressedTensor, _rel_dtype, _threads, empty_aligned, index_1d
from .cache_bytes import (SECTOR, _copied_bits, _index_sizes, _sector_count,  # noqa: F401
                          _view, cached_prefix, device_nbytes, miss_resident_nbytes, raw_sectors,
                          span_sectors, staged_bytes, subset_nbytes, whole_nbytes)
from .hot_rows import _in_degree, degree_hot_rows, presample_counts, presample_hot_rows  # noqa: F401

TRANSFERS = ("zero_copy", "staged", "auto")
HOT_METHODS = ("presample", "degree")
AUTO_FRACTION = 0.5  # of free GPU memory, for budget="auto"


# ---- subset -------------------------------------------------------------------------------------
def _rows_np(ct: CompressedTensor, rows, op: str, what: str = "rows") -> np.ndarray:
    if isinstance(rows, (list, tuple, range)):
        rows = np.asarray(rows, np.int64).reshape(-1)
    rows = index_1d(rows, what, op)
    if rows.device.type != "cpu":
        rows = rows.cpu()
    ct._check_range(rows, op)
    return np.ascontiguousarray(rows.numpy().astype(np.int64, copy=False))


def _check_offsets(ct: CompressedTensor, bits: np.ndarray, op: str) -> None:
    """Each index block of a subset whose rows copy `bits` bits fits the
    relative offsets (rows that keep a gap may exceed a raw row)."""
    if not ct._fields.get("layout") or bits.size == 0:
        return
    b = ct._fields["block_rows"]
    blocks = np.zeros(-(-len(bits) // b) * b, np.int64)
    blocks[:len(bits)] = bits
    rel = np.cumsum(blocks.reshape(-1, b), axis=1)[:, :-1]
    limit = (1 << (8 * ct._fields["rel_bytes"])) - 1
    if rel.size and int(rel.max()) > limit:
        raise ValueError(f"{op}: these rows' compressed spans overflow the index's "
                         f"{ct._fields['rel_bytes']}-byte offsets within a block of {b} rows")


def _subset_into(ct: CompressedTensor, rows: np.ndarray, threads: int, alloc=None):
    """(header, bases, rel, payload) of the subset; `alloc(name, nbytes)`
    returns the uint8 buffer an array is written into (default: new arrays)."""
    ct._check_rows(rows, "ibp_gnn.cache.subset", threads)  # rows a lazy load has not checked
    view = _view(ct)
    copied = _copied_bits(ct, rows, threads)
    _check_offsets(ct, copied, "ibp_gnn.cache.subset")
    bits = int(copied.sum())
    nb, rel_bytes = _index_sizes(ct, len(rows))
    rdt = _rel_dtype(ct._fields["rel_bytes"])

    def buf(name, dtype, count):
        if alloc is None:
            return empty_aligned(count, dtype)
        return alloc(name, count * np.dtype(dtype).itemsize).view(dtype)

    bases = buf("bases", np.uint64, nb)
    rel = buf("rel", rdt, len(rows))
    payload = buf("payload", np.uint32, _C.payload_words(bits))
    modes = _C.subset(*view, rows, bases, rel, payload, bits, threads)
    fields = {k: v for k, v in ct._fields.items() if not k.startswith("crc")
              and k != "header_bytes"}
    fields.update(rows=len(rows), payload_bits=bits, mode_rows=modes)
    return _C.pack_header(fields), bases, rel, payload


def subset(ct: CompressedTensor, rows, *, threads: Optional[int] = None,
           validate: bool = False) -> CompressedTensor:
    """The compressed tensor whose row i is row ``rows[i]`` of ``ct``
    (duplicates allowed), bit for bit, without decoding: ``subset(ct,
    rows).gather(arange) == ct.gather(rows)``. validate=True re-checks every
    row of the result (the copy cannot change a row, so it is off by default)."""
    op = "ibp_gnn.cache.subset"
    if not isinstance(ct, CompressedTensor):
        raise TypeError(f"{op}: ct must be a CompressedTensor, got {type(ct).__name__}")
    r = _rows_np(ct, rows, op)
    threads = _threads(threads)
    header, bases, rel, payload = _subset_into(ct, r, threads)
    return CompressedTensor(header, ct._tables, bases, rel, payload, validate=validate,
                            threads=threads)


# ---- the cached feature -------------------------------------------------------------------------
def _budget_bytes(budget, device: torch.device, op: str) -> int:
    if budget == "auto":
        if device.type != "cuda":
            raise ValueError(f"{op}: budget='auto' sizes the cache from free GPU memory; on "
                             f"device {device} give the budget in bytes")
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * AUTO_FRACTION)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise ValueError(f"{op}: budget must be an int >= 0 (bytes) or 'auto', got {budget!r}")
    return budget


class CachedFeature:
    """Rows of a :class:`CompressedTensor` through a compressed cache of hot rows.

    ct: the host tier (pinned for zero-copy reads on a GPU).
    hot: node ids, most valuable first (:func:`presample_hot_rows`,
        :func:`degree_hot_rows`); the cache takes the longest prefix that fits
        `budget` bytes (int, or "auto": half the free GPU memory). The budget
        is the device memory the cache keeps resident (``device_nbytes``,
        :func:`device_nbytes`): the decode table, the cached rows' index and
        payload and, with zero-copy misses, the host tier's whole index
        (bases + rel, which the kernel reads to find a missed row in host
        memory: 8 bytes a block of rows and a 1- to 4-byte offset a row,
        4.125 bytes a row for 128 fp32 features). Staged misses keep
        nothing of the host tier on the device. When the budget does not
        cover what the misses need (:func:`miss_resident_nbytes`), nothing is
        cached and ``device_nbytes`` exceeds it by that much. transfer="auto"
        sizes the cache for zero-copy misses (the larger); when the probe
        picks staged the host index is freed and the cache uses less than the
        budget. Not counted: the slot map (8 bytes a row of the tensor: the
        cache slot of each row, which any cache needs), the output rows and a
        staged batch's transient device copy. The whole tensor fits
        (:func:`whole_nbytes`): it is placed on the device as it is.
    device: where rows are decoded and returned ("cpu" runs the same split,
        packing and scatter with the CPU decoder).
    transfer: how misses travel: "zero_copy" (the kernel reads the host
        payload), "staged" (CPU threads pack them with :func:`subset` into one
        buffer, copied once) or "auto": on a GPU, the faster of the two in a
        start-up measurement (both gather the same sample of uncached rows,
        alternately, 3 times each; the minimum times are in
        ``transfer_probe``); on the CPU always zero_copy (there is no bus to
        cross: staging would only add a copy of the spans).
    Counters (``reset_counters``): requests, hits, bus_bytes (the distinct
    sectors of the missed rows' compressed spans, read in one launch, or the
    staged copies), raw_bytes (the distinct sectors a raw gather of the same
    ids would read).
    """

    def __init__(self, ct: CompressedTensor, hot=None, *, budget: Union[int, str] = 0,
                 device: Union[str, torch.device] = "cpu", transfer: str = "auto",
                 threads: Optional[int] = None, kernel=None):
        op = "CachedFeature"
        if not isinstance(ct, CompressedTensor):
            raise TypeError(f"{op}: ct must be a CompressedTensor, got {type(ct).__name__}")
        if transfer not in TRANSFERS:
            raise ValueError(f"{op}: transfer must be one of {list(TRANSFERS)}, got {transfer!r}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"{op}: device {self.device} but torch.cuda.is_available() is "
                               "False; use device='cpu'")
        if self.device.type not in ("cpu", "cuda"):
            raise ValueError(f"{op}: device must be cpu or cuda, got {self.device}")
        self.ct, self.transfer, self.threads = ct, transfer, _threads(threads)
        self.budget = _budget_bytes(budget, self.device, op)
        rows = len(ct)
        order = (np.arange(rows, dtype=np.int64) if hot is None
                 else _rows_np(ct, hot, op, "hot"))
        # auto: sized for zero-copy misses, whose resident index is the larger.
        k, self.whole = cached_prefix(ct, order, self.budget,
                                      "staged" if transfer == "staged" else "zero_copy")
        if self.whole:
            self.cached_ids = np.arange(rows, dtype=np.int64)
            self.cache = ct
        else:
            self.cached_ids = np.unique(order[:k])  # sorted: neighbours decode together
            self.cache = subset(ct, self.cached_ids, threads=self.threads)
        slot = np.full(rows, -1, np.int64)
        slot[self.cached_ids] = np.arange(len(self.cached_ids))
        self._slot = torch.from_numpy(slot)
        self._dev_slot = self._slot.to(self.device) if self.device.type == "cuda" else self._slot
        # kernel: an object with _C.gather_cuda's signature run on host arrays
        # (ibp_gnn.emulation.Emulator), for device="cpu": the CUDA kernel's
        # decode of hits, zero-copy misses and staged buffers, tested on the CPU.
        if kernel is not None and self.device.type != "cpu":
            raise ValueError(f"{op}: kernel= runs an emulated kernel on host arrays; it needs "
                             f"device='cpu', got {self.device}")
        self._kernel = kernel
        self._resident: dict = {}  # name -> what the kernel reads in device memory
        self._place(transfer)
        self._stage = None  # pinned staging buffer (torch uint8) and its event
        self.transfer_probe = None  # the start-up timings behind transfer="auto" (GPU)
        if transfer == "auto":
            self.transfer = self._choose_transfer()
            if self.transfer == "staged":  # the probe's zero-copy reads needed it, staging not
                for name in ("host_bases", "host_rel"):
                    self._resident.pop(name, None)
        self.reset_counters()

    def _choose_transfer(self, rows: int = 1 << 16, repeats: int = 3) -> str:
        if self.device.type != "cuda":
            return "zero_copy"
        miss = np.flatnonzero(self._slot.numpy() < 0)
        if len(miss) == 0:  # everything is cached: nothing ever travels
            return "zero_copy"
        pick = np.random.default_rng(0).choice(miss, min(rows, len(miss)), replace=False)
        ids = torch.from_numpy(np.sort(pick)).to(self.device)
        pos = torch.arange(len(ids), device=self.device)
        out = torch.empty((len(ids), self.ct.shape[1]), dtype=self.ct.dtype, device=self.device)
        best = {"zero_copy": float("inf"), "staged": float("inf")}
        import time

        for _ in range(repeats):
            for path in best:
                torch.cuda.synchronize(self.device)
                t = time.perf_counter()
                if path == "staged":
                    self._staged(ids, pos, out)
                else:
                    self._decode("host", ids, pos, out)
                torch.cuda.synchronize(self.device)
                best[path] = min(best[path], time.perf_counter() - t)
        self.transfer_probe = {f"{k}_s": v for k, v in best.items()}
        self.transfer_probe["rows"] = len(ids)
        return min(best, key=best.get)

    # ---- description ----------------------------------------------------------------------------
    @property
    def shape(self):
        return self.ct.shape

    @property
    def dtype(self):
        return self.ct.dtype

    @property
    def cache_nbytes(self) -> int:
        """Device bytes of the cached rows: their index and payload (the whole
        tensor's when it is cached whole)."""
        return sum(int(a.nbytes) for name, a in self._resident.items()
                   if name.startswith("cache_"))

    @property
    def device_nbytes(self) -> int:
        """Device bytes the cache keeps resident (what `budget` bounds): the
        decode table, the cached rows and, for zero-copy misses, the host
        tier's index. On device="cpu" the bytes a GPU would hold."""
        return sum(int(a.nbytes) for a in self._resident.values())

    def reset_counters(self) -> None:
        self.requests = self.hits = self.bus_bytes = self.raw_bytes = 0

    def take_counters(self, *, reduce: bool = True) -> dict:
        """The counters since the last call, as a train() epoch record reports
        them, then reset: summed over the ranks of torch.distributed when it is
        initialised (reduce=True; every rank must call it)."""
        req, hits, bus, raw = all_sum([self.requests, self.hits, self.bus_bytes,
                                       self.raw_bytes]) if reduce else \
            (self.requests, self.hits, self.bus_bytes, self.raw_bytes)
        self.reset_counters()
        return {"cache_hit_rate": hits / req if req else 0.0, "cache_requests": req,
                "bus_bytes": bus, "raw_bus_bytes": raw}

    @property
    def hit_rate(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    def describe(self) -> dict:
        return {"cache_rows": len(self.cached_ids), "cache_nbytes": self.cache_nbytes,
                "device_nbytes": self.device_nbytes, "whole": self.whole,
                "budget": self.budget, "transfer": self.transfer,
                "transfer_probe": self.transfer_probe, "device": str(self.device)}

    def __repr__(self) -> str:
        return (f"CachedFeature(rows={len(self.ct)}, cached={len(self.cached_ids)}, "
                f"cache_nbytes={self.cache_nbytes}, transfer={self.transfer!r}, "
                f"device={self.device})")

    # ---- gather -----------------------------------------------------------------------------------
    def gather(self, idx, out: Optional[torch.Tensor] = None, *,
               count_bytes: bool = True) -> torch.Tensor:
        """Rows `idx` (on any device), bit-identical to ``x[idx]``, on ``self.device``."""
        op = "CachedFeature.gather"
        idx = index_1d(idx, "idx", op)
        self.ct._check_range(idx, op)
        n = idx.numel()
        out = self.ct._check_out(out, n, self._out_device(), op)
        idx = idx.to(self._dev_slot.device).to(torch.int64)
        slots = self._dev_slot[idx]
        hit = slots >= 0
        hpos = hit.nonzero().squeeze(1)
        mpos = (~hit).nonzero().squeeze(1)
        if count_bytes:
            miss_ids = idx[mpos].cpu().numpy()
            self.requests += n
            self.hits += hpos.numel()
            self.raw_bytes += SECTOR * raw_sectors(idx.cpu().numpy(), self._row_bytes(),
                                                   distinct=True)
            self.bus_bytes += (staged_bytes(self.ct, miss_ids) if self.transfer == "staged"
                               else SECTOR * span_sectors(self.ct, miss_ids, distinct=True))
        if hpos.numel():
            self._decode("cache", slots[hpos], hpos, out)
        if mpos.numel():
            if self.transfer == "staged":
                self._staged(idx[mpos], mpos, out)
            else:
                self._decode("host", idx[mpos], mpos, out)
        return out

    def _row_bytes(self) -> int:
        return self.ct.raw_nbytes // max(1, len(self.ct))

    def _out_device(self) -> torch.device:
        if self.device.type == "cuda" and self.device.index is None:
            return torch.device("cuda", torch.cuda.current_device())
        return self.device

    def _decode(self, tier: str, ids: torch.Tensor, pos: torch.Tensor,
                out: torch.Tensor) -> None:
        """out[pos[i]] = row ids[i] of the cache (tier "cache") or of the host
        tier ("host": zero-copy, its payload read from pinned host memory
        through its index in device memory)."""
        ct = self.cache if tier == "cache" else self.ct
        if ct._rows is not None:  # rows a lazy load (verify="background"/"lazy") has not checked
            ct._check_rows(ids.cpu().numpy(), "CachedFeature.gather")
        if self.device.type == "cpu" and self._kernel is None:
            out.index_copy_(0, pos, ct.gather(ids, threads=self.threads))
            return
        r = self._resident
        if tier == "cache":
            arrays = (r["table"], r["cache_bases"], r["cache_rel"], r["cache_payload"])
        elif self._kernel is not None:
            arrays = (r["table"], r["host_bases"], r["host_rel"], ct._payload)
        else:
            if not ct.is_pinned():
                ct.pin_memory()
            payload = (ct._registered[1] if ct._registered is not None
                       else ct._pinned.data_ptr())
            arrays = (r["table"], r["host_bases"], r["host_rel"], payload)
        if self._kernel is not None:
            self._host_launch(ct._header, arrays, ids, pos, out)
        else:
            self._launch(ct._header, arrays, ids, pos, out)

    def _launch(self, header: bytes, dev, ids, pos, out) -> None:
        table, bases, rel, payload = dev
        ids, order = torch.sort(ids)
        pos = pos[order].to(torch.int64).contiguous()
        ids = ids.contiguous()
        ptr = payload if isinstance(payload, int) else payload.data_ptr()
        with torch.cuda.device(out.device):
            stream = torch.cuda.current_stream(out.device).cuda_stream
            err = _C.gather_cuda(header, table.data_ptr(), bases.data_ptr(), rel.data_ptr(), ptr,
                                 ids.data_ptr(), True, ids.numel(), pos.data_ptr(),
                                 out.data_ptr(), stream)
        if err != 0:
            raise RuntimeError(f"CachedFeature.gather: CUDA kernel launch failed with "
                               f"cudaError {err}")

    def _host_launch(self, header: bytes, arrays, ids, pos, out) -> None:
        """The kernel (self._kernel) on host arrays: out[pos[i]] = row ids[i]."""
        ids, order = torch.sort(ids.to(torch.int64))
        ids = ids.contiguous()
        pos = pos[order].to(torch.int64).contiguous()
        table, bases, rel, payload = (np.ascontiguousarray(a) for a in arrays)
        err = self._kernel.gather_cuda(header, table.ctypes.data, bases.ctypes.data,
                                       rel.ctypes.data, payload.ctypes.data, ids.data_ptr(), True,
                                       ids.numel(), pos.data_ptr(), out.data_ptr())
        if err != 0:
            raise RuntimeError(f"CachedFeature.gather: kernel launch failed with cudaError {err}")

    def _place(self, transfer: str) -> None:
        """Puts in device memory what the kernel reads there (``_resident``): the
        decode table (the cache's and the host tier's are the same: a subset
        shares its mask tables), the cached rows' index and payload (none
        when nothing is cached) and, for zero-copy misses (and the "auto"
        probe), the host tier's index. Never the host tier's payload, nor
        for staged misses its index: each staged copy brings the index of its
        rows. On the CPU the arrays are the host ones (nothing is copied):
        the emulated kernel reads them, and ``device_nbytes`` counts what a
        GPU would hold."""
        cuda = self.device.type == "cuda"

        def put(name, a):
            a = np.ascontiguousarray(a)
            self._resident[name] = (torch.from_numpy(a.reshape(-1).view(np.uint8))
                                    .to(self.device) if cuda else a)
        put("table", self.ct._decode_table)
        if len(self.cached_ids):
            for name in ("bases", "rel", "payload"):
                put(f"cache_{name}", getattr(self.cache, f"_{name}"))
        if transfer != "staged" and not self.whole:
            put("host_bases", self.ct._bases)
            put("host_rel", self.ct._rel)

    def _staged(self, ids: torch.Tensor, pos: torch.Tensor, out: torch.Tensor) -> None:
        """Packs rows `ids` of the host tier into one buffer, moves it in one copy
        and decodes it into out[pos]."""
        rows = np.ascontiguousarray(ids.cpu().numpy().astype(np.int64, copy=False))
        cuda = self.device.type == "cuda"
        if cuda and self._stage is not None:
            self._stage[1].synchronize()  # the previous copy has left the buffer
        # Sections at 64-byte offsets: bases, rel, payload.
        nb, rel_bytes = _index_sizes(self.ct, len(rows))
        self.ct._check_rows(rows, "CachedFeature.gather")
        bits = _C.subset_payload_bits(*_view(self.ct), rows, self.threads)
        offs = np.cumsum([0, -(-8 * nb // 64) * 64, -(-rel_bytes // 64) * 64])
        total = int(offs[2] + 4 * _C.payload_words(bits))
        if self._stage is None or self._stage[0].numel() < total:
            buf = torch.empty(max(total, 1 << 20), dtype=torch.uint8, pin_memory=cuda)
            self._stage = (buf, torch.cuda.Event() if cuda else None)
        host = self._stage[0].numpy()
        at = dict(zip(("bases", "rel", "payload"), offs))

        def alloc(name, nbytes):
            return host[at[name]:at[name] + nbytes]
        header, bases, rel, payload = _subset_into(self.ct, rows, self.threads, alloc)
        if not cuda and self._kernel is not None:
            self._host_launch(header, (self._resident["table"], bases, rel, payload),
                              torch.arange(len(rows)), pos, out)
            return
        if not cuda:
            packed = CompressedTensor(header, self.ct._tables, bases, rel, payload,
                                      validate=False)
            out.index_copy_(0, pos, packed.gather(torch.arange(len(rows)),
                                                  threads=self.threads))
            return
        dev = self._stage[0][:total].to(out.device, non_blocking=True)
        self._stage[1].record(torch.cuda.current_stream(out.device))
        views = (self._resident["table"], dev[at["bases"]:], dev[at["rel"]:],
                 dev[at["payload"]:])
        arange = torch.arange(len(rows), device=out.device)
        self._launch(header, views, arange, pos, out)


# ---- counters across processes and stores -------------------------------------------------------
def all_sum(values: Sequence[int]) -> list:
    """Integer counters summed over the ranks of torch.distributed when it is
    initialised (every rank calls it), else returned as they are."""
    import torch.distributed as dist

    values = [int(v) for v in values]
    if not (dist.is_available() and dist.is_initialized()):
        return values
    dev = (torch.device("cuda", torch.cuda.current_device())
           if dist.get_backend() == "nccl" else torch.device("cpu"))
    t = torch.tensor(values, dtype=torch.int64, device=dev)
    dist.all_reduce(t)
    return [int(v) for v in t.cpu().tolist()]


def caches_of(store) -> list:
    """The CachedFeatures in front of a store's tensors: ``store.cached``
    (ibp_gnn.stores.IBPStore, the DGL storages) or its entries' ``cached``
    (ibp_gnn.pyg.IBPFeatureStore)."""
    c = getattr(store, "cached", None)
    if isinstance(c, CachedFeature):
        return [c]
    entries = getattr(store, "_entries", None)
    if isinstance(entries, dict):
        return [e.cached for e in entries.values()
                if isinstance(getattr(e, "cached", None), CachedFeature)]
    return []


# ---- configuration (store.cache / store.transfer) -----------------------------------------------
def config_errors(st: dict) -> list:
    """(key, value, allowed) for each bad cache setting of a store config."""
    bad = []
    budget = st.get("cache")
    if budget is not None and budget != "auto" and (isinstance(budget, bool)
                                                    or not isinstance(budget, int) or budget < 0):
        bad.append(("cache", budget, "null (no cache), an int >= 0 (bytes) or 'auto'"))
    if st.get("transfer", "zero_copy") not in TRANSFERS:
        bad.append(("transfer", st.get("transfer"), f"allowed values: {list(TRANSFERS)}"))
    if st.get("cache_hot", "presample") not in HOT_METHODS:
        bad.append(("cache_hot", st.get("cache_hot"), f"allowed values: {list(HOT_METHODS)}"))
    for key in ("cache_batch_size", "cache_batches"):
        v = st.get(key, 1)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            bad.append((key, v, "a positive int"))
    fan = st.get("cache_fanouts", [1])
    if not isinstance(fan, (list, tuple)) or not fan or not all(
            isinstance(f, int) and not isinstance(f, bool) and (f >= 1 or f == -1) for f in fan):
        bad.append(("cache_fanouts", fan, "a non-empty list of ints >= 1 or -1"))
    return bad


def cached_feature(ct: CompressedTensor, graph=None, *, cache=None, cache_hot: str = "presample",
                   cache_fanouts: Sequence[int] = (15, 10, 5), cache_batch_size: int = 1024,
                   cache_batches: int = 64, transfer: str = "zero_copy",
                   device: Union[str, torch.device] = "cpu",
                   threads: Optional[int] = None) -> CachedFeature:
    """The CachedFeature a store config asks for; `graph` is the prepared
    ``GraphData`` (its edges and training split choose the hot rows)."""
    st = dict(cache=cache, cache_hot=cache_hot, cache_fanouts=list(cache_fanouts),
              cache_batch_size=cache_batch_size, cache_batches=cache_batches, transfer=transfer)
    bad = config_errors(st)
    if bad:
        key, value, allowed = bad[0]
        raise ValueError(f"store.{key}={value!r} is not allowed: {allowed}")
    hot = None
    if cache not in (None, 0):
        if graph is None:
            raise ValueError(f"store.cache={cache!r} needs the dataset's graph to choose hot "
                             "rows (pass a GraphData, not bare features)")
        from .sampler import CSCGraph

        csc = CSCGraph(graph.indptr, graph.indices)  # the prepared CSC, in place
        if cache_hot == "degree":
            hot = degree_hot_rows(csc)
        else:
            hot = presample_hot_rows(csc, graph.split["train"], list(cache_fanouts),
                                     batch_size=cache_batch_size, num_batches=cache_batches,
                                     threads=threads)
    return CachedFeature(ct, hot, budget=cache or 0, device=device, transfer=transfer,
                         threads=threads)
