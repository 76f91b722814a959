"""Prefetcher: batches whose features are already on the device, produced while
the model computes the previous one.

::

    from ibp_gnn.prefetch import Prefetcher

    batches = Prefetcher(loader, "cuda", depth=2)
    for epoch in range(epochs):
        for batch in batches:          # batch.x is on the GPU already
            ...
        print(batches.last)            # EpochStats: wait for features, bytes read, ...

A background thread iterates the loader -- sampling, the feature gather-decode
(PyG's loaders fetch features inside ``next()``), an optional ``transform``
(e.g. :func:`ibp_gnn.dgl.fetch_block_features` for DGL's loader) and the copy to
``device`` -- and keeps up to ``depth`` finished batches ready. The decoders
release the GIL, so on the CPU the decode of batch i+1 runs beside the model's
work on batch i. On a GPU that work is issued on a side CUDA stream; the
consumer's stream waits for an event recorded after it (no host sync; with
``device=None`` and a loader that puts batches on a GPU itself, e.g. a store
decoding there, after the work on the background thread's current stream), and every
tensor of the batch is marked as used by the consumer's stream
(``record_stream``) so the caching allocator never recycles its memory early.
The background thread runs torch with ``threads`` intra-op threads (default 1),
so that it does not fight the consumer's OpenMP threads for the cores.

Per epoch the prefetcher records an :class:`EpochStats`: the time the consumer
spent waiting for a batch (the part of sampling and feature fetching that was not
hidden), the time the background thread spent producing batches, and the bytes
the feature stores read from host memory (``bytes_read``; ``raw_bytes_read`` is
what an uncompressed store would read).

Reproducibility: ``iter(loader)`` is called in the consumer's thread, so a
shuffling loader draws its order at a fixed point; a sampler that draws a fresh
random seed per batch from torch's global generator would do so from the
background thread, racing the model's own draws (dropout). For runs that repeat
bit for bit, give the sampler a fixed seed (``ibp_gnn.sampler.NeighborSampler(...,
seed=0)``) and the loader a ``generator``.
"""
from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Sequence, Union

import torch

__all__ = ["EpochStats", "Prefetcher"]


@dataclass
class EpochStats:
    """What one pass over the loader cost."""
    epoch: int
    batches: int
    complete: bool          # False when the consumer stopped early
    epoch_s: float          # wall time from iter() to the end of the pass
    wait_s: float           # consumer time blocked waiting for the next batch
    produce_s: float        # background time sampling, fetching and copying batches
    bytes_read: int         # bytes the stores read from host memory
    raw_bytes_read: int     # bytes the same gathers would read uncompressed
    cache_requests: int = 0  # rows asked of the stores' compressed caches (ibp_gnn.cache)
    cache_hits: int = 0
    bus_bytes: int = 0       # the caches' host-to-device sectors (misses), in bytes
    raw_bus_bytes: int = 0   # the sectors a raw gather of the same rows would move

    @property
    def cache_hit_rate(self) -> float:
        return self.cache_hits / self.cache_requests if self.cache_requests else 0.0

    @property
    def fetch_ratio(self) -> float:
        """raw bytes / bytes read (1.0 for an uncompressed store)."""
        return self.raw_bytes_read / self.bytes_read if self.bytes_read else 1.0

    def __str__(self) -> str:
        mib = 1 << 20
        return (f"epoch {self.epoch}: {self.batches} batches in {self.epoch_s:.3f} s, waited "
                f"{self.wait_s:.3f} s for features ({self.produce_s:.3f} s producing), read "
                f"{self.bytes_read / mib:.2f} MiB from host memory for "
                f"{self.raw_bytes_read / mib:.2f} MiB of rows (x{self.fetch_ratio:.2f})")


class _End:
    pass


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _to_device(obj: Any, device: torch.device) -> Any:
    """obj with its tensors on `device` (PyG Data/HeteroData, DGL graphs and blocks,
    tensors, and lists/tuples/dicts of them); other objects unchanged."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, (list, tuple)):
        out = [_to_device(o, device) for o in obj]
        return type(obj)(out) if not hasattr(obj, "_fields") else type(obj)(*out)
    if isinstance(obj, dict):
        return type(obj)((k, _to_device(v, device)) for k, v in obj.items())
    to = getattr(obj, "to", None)
    if callable(to):
        try:
            return to(device, non_blocking=True)
        except TypeError:  # a .to() without non_blocking
            return to(device)
    return obj


def _cuda_devices(obj: Any, found: Optional[set] = None) -> set:
    """The CUDA devices holding tensors of obj (tensors, lists/tuples/dicts, PyG
    Data/HeteroData through their stores, objects with a ``device``: DGL graphs)."""
    found = set() if found is None else found
    if isinstance(obj, torch.Tensor):
        if obj.is_cuda:
            found.add(obj.device)
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _cuda_devices(o, found)
    elif isinstance(obj, dict):
        for o in obj.values():
            _cuda_devices(o, found)
    else:
        stores = getattr(obj, "stores", None)
        if isinstance(stores, (list, tuple)):
            for st in stores:
                _cuda_devices(dict(st.items()) if hasattr(st, "items") else st, found)
        device = getattr(obj, "device", None)
        if isinstance(device, torch.device) and device.type == "cuda":
            found.add(device)
    return found


def _handoff(batch: Any, device: Optional[torch.device], stream) -> list:
    """Producer side: (device, event) pairs, an event recorded after the work
    that made `batch` on each CUDA device it uses: on `stream` for `device`
    (the side stream), else on this thread's current stream of that device
    (a loader or store that decodes on a GPU with device=None)."""
    devices = set()
    if device is not None and device.type == "cuda":
        devices.add(device)
    if torch.cuda.is_initialized():  # no CUDA tensor can exist otherwise
        _cuda_devices(batch, devices)
    out = []
    for d in sorted(devices, key=lambda d: d.index or 0):
        s = stream if stream is not None and d == device else torch.cuda.current_stream(d)
        event = torch.cuda.Event()
        event.record(s)
        out.append((d, event))
    return out


def _adopt(batch: Any, events: list) -> None:
    """Consumer side: its current stream of each device waits for the batch's
    event (no host sync), and the batch's tensors are marked as used there."""
    for d, event in events:
        consumer = torch.cuda.current_stream(d)
        consumer.wait_event(event)
        _record_stream(batch, consumer)


def _record_stream(obj: Any, stream) -> None:
    """Marks every CUDA tensor of obj on the stream's device as used by `stream`."""
    if isinstance(obj, torch.Tensor):
        if obj.is_cuda and obj.device == stream.device:
            obj.record_stream(stream)
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _record_stream(o, stream)
    elif isinstance(obj, dict):
        for o in obj.values():
            _record_stream(o, stream)
    elif callable(getattr(obj, "record_stream", None)):
        obj.record_stream(stream)  # PyG Data/HeteroData, DGL graphs


def _find_stores(loader) -> List[Any]:
    """Feature stores with byte counters reachable from a PyG loader."""
    data = getattr(loader, "data", None)
    if isinstance(data, (tuple, list)) and data and hasattr(data[0], "bytes_read"):
        return [data[0]]
    return []


class Prefetcher:
    """Iterates `loader` in a background thread, `depth` batches ahead, with
    each batch moved to `device` (None: left where the loader puts it).

    loader: any iterable of batches (a PyG loader, a DGL ``DataLoader``, ...).
        Iterating the prefetcher makes one pass over it (one epoch).
    transform: optional callable applied to each batch in the background thread
        before the copy to `device` (e.g. fetching DGL block features).
    stores: objects with ``bytes_read`` and ``raw_bytes_read`` counters to report
        (default: the feature store of a PyG loader over (FeatureStore, GraphStore));
        the counters of their compressed caches (``set_cache``) are reported too.
    threads: torch's intra-op threads in the background thread (what its torch ops
        and the ibp decoders, whose default is ``torch.get_num_threads()``, use).
        Default 1: the consumer's threads keep the cores, and two OpenMP teams
        competing for the same cores can slow both down several times. None
        leaves torch's setting.
    """

    def __init__(self, loader, device: Optional[Union[str, torch.device]] = None,
                 depth: int = 2, *, transform: Optional[Callable[[Any], Any]] = None,
                 stores: Optional[Sequence[Any]] = None, threads: Optional[int] = 1):
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"Prefetcher: depth must be a positive int, got {depth!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise ValueError(f"Prefetcher: threads must be a positive int or None, got "
                             f"{threads!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"Prefetcher: transform must be callable, got "
                            f"{type(transform).__name__}")
        self.device = torch.device(device) if device is not None else None
        if self.device is not None and self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError(f"Prefetcher: device {self.device} requested, but "
                                   "torch.cuda.is_available() is False")
            if self.device.index is None:
                self.device = torch.device("cuda", torch.cuda.current_device())
        self.loader = loader
        self.depth = depth
        self.threads = threads
        self.transform = transform
        self.stores = list(stores) if stores is not None else _find_stores(loader)
        for s in self.stores:
            if not (hasattr(s, "bytes_read") and hasattr(s, "raw_bytes_read")):
                raise TypeError(f"Prefetcher: store {type(s).__name__} has no bytes_read / "
                                "raw_bytes_read counters")
        self.history: List[EpochStats] = []

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def last(self) -> Optional[EpochStats]:
        """The stats of the latest pass (None before the first)."""
        return self.history[-1] if self.history else None

    def _counters(self):
        from .cache import caches_of

        caches = [c for s in self.stores for c in caches_of(s)]
        return (sum(int(s.bytes_read) for s in self.stores),
                sum(int(s.raw_bytes_read) for s in self.stores),
                *(sum(getattr(c, k) for c in caches)
                  for k in ("requests", "hits", "bus_bytes", "raw_bytes")))

    def __iter__(self) -> Iterator[Any]:
        cuda = self.device is not None and self.device.type == "cuda"
        stream = torch.cuda.Stream(self.device) if cuda else None
        start = time.perf_counter()
        c0 = self._counters()
        for s in self.stores:  # a memory-mapped file changed underneath: fail now, clearly
            if callable(getattr(s, "check_files", None)):
                s.check_files()
        it = iter(self.loader)  # here, so a shuffling loader draws its order in this thread
        q: "queue.Queue" = queue.Queue(maxsize=self.depth)
        stop = threading.Event()
        produced = [0.0]

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def produce():
            ctx = torch.cuda.stream(stream) if cuda else contextlib.nullcontext()
            before = torch.get_num_threads()
            if self.threads is not None:
                # Applies to this thread; torch also keeps it as the default of threads
                # started later, hence the reset below.
                torch.set_num_threads(self.threads)
            try:
                with torch.no_grad(), ctx:
                    while not stop.is_set():
                        t = time.perf_counter()
                        try:
                            batch = next(it)
                        except StopIteration:
                            break
                        if self.transform is not None:
                            batch = self.transform(batch)
                        if self.device is not None:
                            batch = _to_device(batch, self.device)
                        events = _handoff(batch, self.device, stream)
                        produced[0] += time.perf_counter() - t
                        if not put((batch, events)):
                            return
                put(_End)
            except BaseException as e:  # handed to the consumer, raised there
                put(_Failed(e))
            finally:
                if self.threads is not None:
                    torch.set_num_threads(before)

        thread = threading.Thread(target=produce, name="ibp_gnn-prefetch", daemon=True)
        thread.start()
        waited, n, complete = 0.0, 0, False
        try:
            while True:
                t = time.perf_counter()
                item = q.get()
                waited += time.perf_counter() - t
                if item is _End:
                    complete = True
                    break
                if isinstance(item, _Failed):
                    raise item.exc
                batch, events = item
                _adopt(batch, events)
                n += 1
                yield batch
        finally:
            stop.set()
            while thread.is_alive():
                try:
                    q.get(timeout=0.05)
                except queue.Empty:
                    pass
            thread.join()
            d = [b - a for a, b in zip(c0, self._counters())]
            self.history.append(EpochStats(
                epoch=len(self.history), batches=n, complete=complete,
                epoch_s=time.perf_counter() - start, wait_s=waited, produce_s=produced[0],
                bytes_read=d[0], raw_bytes_read=d[1], cache_requests=d[2], cache_hits=d[3],
                bus_bytes=d[4], raw_bus_bytes=d[5]))

    def __repr__(self) -> str:
        return (f"Prefetcher(loader={type(self.loader).__name__}, device={self.device}, "
                f"depth={self.depth}, epochs={len(self.history)})")
