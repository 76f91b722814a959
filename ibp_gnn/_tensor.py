"""CompressedTensor: a 2-D tensor stored with Invariant Bit Packing, gathered
row by row on the CPU or the GPU. The public functions check their inputs once
here; `ibp_gnn._C` below trusts them."""
from __future__ import annotations

import ctypes
import errno
import operator
import os
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from . import _C, _cuda, _files, _verify
from ._dtypes import itemsize, torch_dtype
from ._tensorlike import CompressedView, TensorLike

MODES = {"auto": 0, "paper": 1}
# Row layouts (format.h RowLayout): "sectors" starts a row at the next 32-byte
# sector where that saves the sector a zero-copy read of it would touch;
# "auto" takes it for tables of at least LAYOUT_AUTO_MIN_ROWS rows whose sample
# rows average at least LAYOUT_AUTO_MIN_BYTES compressed. Smaller rows, or the
# rows of a small table (mini-batches read most of it, and neighbours share
# their sectors), would mostly gain gaps (benchmarks/bus_bytes.md).
LAYOUTS = {"packed": 0, "sectors": 1}
MODE_NAMES = {v: k for k, v in MODES.items()}
ROW_MODES = ("raw", "ibp", "sparse", "coded")


class FormatError(ValueError):
    """A file or array set that is not a valid ibp_gnn compressed tensor."""


class ChecksumError(FormatError):
    """A section of a file does not match its stored CRC-32."""


class NewerFormatError(FormatError):
    """A file written by a newer format version than this ibp_gnn reads."""


class FileChangedError(RuntimeError):
    """The file under a tensor loaded with mmap=True changed after it was loaded."""


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# More decode/encode threads than this never help and may not be creatable.
MAX_THREADS = min(256, 4 * _cpu_count())
_INT64, _INT32 = torch.int64, torch.int32


def _threads(threads: Optional[int], op: str = "ibp_gnn") -> int:
    """A thread count: None = torch.get_num_threads(); any positive integer
    (numpy integers included) is accepted and capped at MAX_THREADS."""
    if threads is None:
        return max(1, min(torch.get_num_threads(), MAX_THREADS))
    if type(threads) is int and 0 < threads <= MAX_THREADS:  # the common call, checked cheaply
        return threads
    if isinstance(threads, (bool, np.bool_)):
        raise ValueError(f"{op}: threads must be a positive int, got {threads!r}")
    try:
        n = operator.index(threads)
    except TypeError:
        raise ValueError(f"{op}: threads must be a positive int, got {threads!r}") from None
    if n < 1:
        raise ValueError(f"{op}: threads must be a positive int, got {threads!r}")
    return min(n, MAX_THREADS)


def _rel_dtype(rel_bytes: int):
    return np.uint16 if rel_bytes == 2 else np.uint32


_DEV_ZERO: Optional[int] = None


def _writable(address: int, nbytes: int) -> bool:
    """False when the first or last byte of [address, address + nbytes) is in
    memory mapped without write permission. Reading a byte of /dev/zero into it
    makes the kernel check (EFAULT instead of a fault); the byte becomes 0,
    which is harmless for an output about to be overwritten."""
    global _DEV_ZERO
    if _DEV_ZERO is None:
        try:
            _DEV_ZERO = os.open("/dev/zero", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            _DEV_ZERO = -1
    if _DEV_ZERO < 0:
        return True
    for at in (address, address + nbytes - 1):
        try:
            os.readv(_DEV_ZERO, [(ctypes.c_char * 1).from_address(at)])
        except OSError as e:
            if e.errno == errno.EFAULT:
                return False
            raise
    return True


def index_1d(x, what: str, op: str) -> torch.Tensor:
    """x as a contiguous 1-D int64/int32 tensor of ids (numpy arrays, memory maps
    included, are viewed without a copy); TypeError/ValueError naming `what`."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "iu":
            raise TypeError(f"{op}: {what} must hold integer ids, got dtype {x.dtype}")
        x = np.ascontiguousarray(x)
        with warnings.catch_warnings():  # read-only memory maps are viewed, never written
            warnings.filterwarnings("ignore", message=".*not writable.*")
            x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: {what} must be a torch.Tensor or numpy.ndarray of int64/int32 "
                        f"ids, got {type(x).__name__}")
    if x.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{op}: {what} must be int32 or int64, got {x.dtype}")
    if x.dim() != 1:
        raise ValueError(f"{op}: {what} must be 1-D, got shape {tuple(x.shape)}")
    return x.contiguous()


PAYLOAD_ALIGN = 64  # bytes: the CPU kernels' 64-byte window loads then never split a cache line


def empty_aligned(count: int, dtype) -> np.ndarray:
    """An uninitialised 1-D array of `count` items whose first byte is
    PAYLOAD_ALIGN-aligned. A payload at 16, 32 or 48 bytes past a line made
    1024-row reddit gathers 1.17-1.21x slower than one at a line (numpy's
    arrays start 16-byte aligned)."""
    dtype = np.dtype(dtype)
    raw = np.empty(count * dtype.itemsize + PAYLOAD_ALIGN, np.uint8)
    skip = -raw.ctypes.data % PAYLOAD_ALIGN
    return raw[skip:skip + count * dtype.itemsize].view(dtype)


class CompressedTensor(TensorLike):
    """A 2-D tensor compressed with Invariant Bit Packing; any rows can be
    gathered without decoding the others. It indexes like a tensor
    (``ct[idx]``, ``ct.shape``, ``ct.size()``, ``ct.dtype``, ``len(ct)``;
    ``ibp_gnn._tensorlike``): rows decode on ``ct.device``, the CPU;
    ``ct.to("cuda")`` is a view that decodes them on the GPU.

    Build one with `ibp_gnn.compress`, `ibp_gnn.compress_file` or `ibp_gnn.load`.
    """

    def __init__(self, header: bytes, tables: np.ndarray, bases: np.ndarray, rel: np.ndarray,
                 payload: np.ndarray, *, validate: bool = True, threads: Optional[int] = None):
        if validate:
            status, msg = _C.validate_arrays(header, tables, bases, rel, payload,
                                             _threads(threads, "load"))
            _check(status, msg, "CompressedTensor")
        self._header = header
        self._fields = _C.unpack_header(header)
        self._tables = tables
        self._bases = bases
        self._rel = rel
        self._payload = payload
        self._decode_table = _C.build_decode_table(np.ascontiguousarray(tables))
        self._pinned: Optional[torch.Tensor] = None  # pinned copy of the payload
        self._registered: Optional[tuple] = None  # (host, device) address of the payload
        self._device_cache: dict = {}
        self._source: Optional[_MappedFile] = None  # the file, when mapped
        self._rows: Optional[_verify.RowCheck] = None  # rows checked later (load's verify=)

    # ---- description -------------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        return torch.Size((self._fields["rows"], self._fields["cols"]))

    @property
    def dtype(self) -> torch.dtype:
        return torch_dtype(self._fields["dtype"])

    @property
    def format_version(self) -> int:
        return self._fields["version"]

    @property
    def mode(self) -> str:
        return MODE_NAMES[self._fields["selector"]]

    @property
    def num_groups(self) -> int:
        return self._fields["num_groups"]

    @property
    def raw_nbytes(self) -> int:
        """Bytes of the uncompressed tensor."""
        rows, cols = self.shape
        return rows * cols * itemsize(self._fields["dtype"])

    @property
    def nbytes(self) -> int:
        """Bytes the compressed tensor occupies in host memory: header, mask
        tables, index and payload."""
        return (_C.HEADER_BYTES + self._tables.nbytes + self._bases.nbytes + self._rel.nbytes
                + self._payload.nbytes)

    @property
    def ratio(self) -> float:
        """raw bytes / compressed bytes (host memory)."""
        return self.raw_nbytes / self.nbytes

    def stats(self) -> dict:
        f = self._fields
        rows = f["rows"]
        return {
            "shape": tuple(self.shape), "dtype": str(self.dtype).replace("torch.", ""),
            "format_version": f["version"], "mode": self.mode, "num_groups": f["num_groups"],
            "raw_bytes": self.raw_nbytes, "nbytes": self.nbytes, "ratio": self.ratio,
            "payload_bytes": self._payload.nbytes,
            "index_bytes": self._bases.nbytes + self._rel.nbytes,
            "table_bytes": self._tables.nbytes,
            "fetch_ratio": self.raw_nbytes / max(1, (f["payload_bits"] + 7) // 8),
            "bits_per_row": f["payload_bits"] / rows if rows else 0.0,
            "rows_per_mode": {ROW_MODES[i]: n for i, n in enumerate(f["mode_rows"]) if n},
        }

    def __repr__(self) -> str:
        rows, cols = self.shape
        return (f"CompressedTensor(shape=({rows}, {cols}), dtype={self.dtype}, "
                f"ratio={self.ratio:.2f}, nbytes={self.nbytes}, mode={self.mode!r}, "
                f"pinned={self.is_pinned()})")

    def __len__(self) -> int:
        return self._fields["rows"]

    # ---- tensor protocol (ibp_gnn._tensorlike) ---------------------------------
    _op_name = "CompressedTensor"

    @property
    def device(self) -> torch.device:
        """Where ``ct[idx]`` decodes: the CPU (``ct.to(device)`` decodes elsewhere)."""
        return torch.device("cpu")

    def _take(self, ids: torch.Tensor) -> torch.Tensor:
        return self._take_on(ids, torch.device("cpu"))

    def _take_on(self, ids: torch.Tensor, device: torch.device) -> torch.Tensor:
        if device.type == "cpu":  # CPU ids, device=None: gather's one-step CPU call
            return self.gather(ids if ids.is_cpu else ids.cpu())
        return self.gather(ids, device=device)

    def _on(self, device: torch.device):
        return CompressedView(self, device)

    # ---- row access ----------------------------------------------------------
    def _ids(self, idx, op: str) -> torch.Tensor:
        return index_1d(idx, "idx", op)

    def _check_range(self, idx: torch.Tensor, op: str) -> None:
        if idx.numel() == 0:
            return
        rows = self._fields["rows"]
        lo, hi = torch.aminmax(idx)
        lo, hi = int(lo), int(hi)  # one synchronisation when idx is on a GPU
        if lo < 0:
            raise IndexError(f"{op}: idx holds negative id {lo}; ids must be in [0, {rows})")
        if hi >= rows:
            raise IndexError(f"{op}: idx holds id {hi}, out of range for {rows} rows")

    def _check_out(self, out, n: int, device: torch.device, op: str) -> torch.Tensor:
        cols = self._fields["cols"]
        if out is None:
            return torch.empty((n, cols), dtype=self.dtype, device=device)
        if isinstance(out, np.ndarray):
            if not out.flags.writeable:
                raise ValueError(f"{op}: out is a read-only numpy array (flags.writeable is "
                                 "False); pass a writeable array")
            try:
                out = torch.from_numpy(out)
            except TypeError as e:
                raise TypeError(f"{op}: out is a numpy array of dtype {out.dtype}, expected "
                                f"{self.dtype}: {e}") from None
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"{op}: out must be a torch.Tensor or numpy array, got "
                            f"{type(out).__name__}")
        if out.dtype != self.dtype:
            raise TypeError(f"{op}: out has dtype {out.dtype}, expected {self.dtype}")
        if tuple(out.shape) != (n, cols):
            raise ValueError(f"{op}: out has shape {tuple(out.shape)}, expected {(n, cols)}")
        if out.device != device:
            raise ValueError(f"{op}: out is on {out.device}, expected {device}")
        if not out.is_contiguous():
            raise ValueError(f"{op}: out must be contiguous")
        if out.device.type == "cpu" and out.numel() and not _writable(
                out.data_ptr(), out.numel() * out.element_size()):
            raise ValueError(f"{op}: out lies in read-only memory (e.g. a tensor over a "
                             "read-only memory map); pass a writeable tensor")
        return out

    def gather(self, idx, out: Optional[torch.Tensor] = None, *,
               device: Optional[Union[str, torch.device]] = None,
               threads: Optional[int] = None, check: bool = True) -> torch.Tensor:
        """Rows `idx` of the tensor, bit-identical to `x[idx]`.

        idx: 1-D int64/int32 tensor (or numpy array). CPU ids decode on the CPU
        with `threads` threads; CUDA ids decode on their GPU, on the current
        stream, reading the compressed rows from pinned host memory. With CPU
        ids and device="cuda", ids are checked on the CPU (no GPU sync) and the
        rows are decoded on the GPU. check=False skips the range check of CUDA
        ids (and its one synchronisation); the kernel then writes zeros for
        ids out of range instead of reading outside the tensor.
        """
        op = "CompressedTensor.gather"
        if device is None and type(idx) is torch.Tensor and idx.is_cpu:
            got = self._gather_cpu(idx, out, threads, op)
            if got is not None:
                return got
        idx = self._ids(idx, op)
        if idx.device.type == "cpu":
            # A private copy: the ids checked are the ids decoded, even when the caller's
            # memory is shared with `out` or changed by another thread meanwhile.
            idx = idx.clone()
        nthreads = _threads(threads, op)
        if self._source is not None:
            self._source.check(op)
        result = out
        target = idx.device if device is None else torch.device(device)
        if target.type == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError(f"{op}: device {target} requested, but torch.cuda.is_available() "
                                   "is False (no GPU, or a CPU build of torch)")
            if target.index is None:
                target = torch.device("cuda", torch.cuda.current_device())
        if idx.device.type == "cpu" or check:
            self._check_range(idx, op)
        if self._rows is not None:  # rows not checked by the load (verify="background"/"lazy")
            self._rows.check(self, idx.cpu().numpy(), op, nthreads)
        n = idx.numel()
        out = self._check_out(out, n, target, op)
        if target.type == "cpu":
            if idx.device.type != "cpu":
                raise ValueError(f"{op}: idx is on {idx.device} but device is cpu")
            if n:
                payload = (self._pinned.numpy().view(np.uint32) if self._pinned is not None
                           else self._payload)
                _C.gather(self._header, self._decode_table, self._bases, self._rel, payload,
                          idx.numpy(), out.view(torch.uint8).reshape(-1).numpy(), nthreads)
            return result if isinstance(result, np.ndarray) else out
        if target.type != "cuda":
            raise ValueError(f"{op}: device must be cpu or cuda, got {target}")
        return self._gather_cuda(idx.to(target, non_blocking=True), out, op)

    def _gather_cpu(self, idx: torch.Tensor, out, threads, op: str) -> Optional[torch.Tensor]:
        """The common CPU call (contiguous 1-D int64/int32 ids, out None or a
        matching contiguous CPU tensor) in one C++ step that range-checks a
        private copy of the ids and checks that out is writable; None when the
        call takes the general path (other inputs, or an error to report there).
        Each attribute of a tensor costs 50-100 ns here, so the call reads each
        once and keeps what the tensor fixes (cols, dtype, the bound C++ call)."""
        dt = idx.dtype
        ids64 = dt is _INT64
        if not (ids64 or dt is _INT32) or idx.dim() != 1 or not idx.is_contiguous():
            return None
        rows = self._rows
        if rows is not None and (not rows.passed or rows.error is not None):
            return None  # rows not checked yet (verify="background"/"lazy"): the general path
        payload = self._pinned if self._pinned is not None else self._payload
        dec = self.__dict__.get("_cpu_gather")
        if dec is None or dec[0] is not payload:
            arr = payload.numpy().view(np.uint32) if payload is self._pinned else payload
            dec = self.__dict__["_cpu_gather"] = (payload, _C.CpuGather(
                self._header, self._decode_table, self._bases, self._rel, arr).gather,
                self._fields["cols"], self.dtype)
        _, call, cols, dtype = dec
        n = idx.numel()
        if out is None:
            out, check_out = torch.empty((n, cols), dtype=dtype), False
        elif (type(out) is not torch.Tensor or not out.is_cpu or out.dtype is not dtype
              or out.shape != (n, cols) or not out.is_contiguous()):
            return None
        else:
            # A resizable storage has memory from torch's allocator, which is writable;
            # other storages (over numpy arrays, memory maps, buffers) get the C++ check
            # (a readv syscall: ~0.6 us here, 0.09 us for this test; 2% of a 1024-row
            # gather of reddit's 256-byte rows).
            check_out = not out.untyped_storage().resizable()
        if self._source is not None:
            self._source.check(op)
        if not (type(threads) is int and 0 < threads <= MAX_THREADS):
            threads = _threads(threads, op)
        if n and call(idx.data_ptr(), n, ids64, out.data_ptr(), threads, check_out) != 0:
            return None
        return out

    def _gather_cuda(self, idx: torch.Tensor, out: torch.Tensor, op: str) -> torch.Tensor:
        if not _C.cuda_built():
            raise RuntimeError(f"{op}: ibp_gnn was built without CUDA (nvcc was not found at "
                               "build time); reinstall it where nvcc is available")
        _cuda.require_runtime(op)
        n = idx.numel()
        if n == 0:
            return out
        if not self.is_pinned():
            warnings.warn(f"{op}: pinning the compressed payload ({self._payload.nbytes} bytes) "
                          "for zero-copy reads; call pin_memory() beforehand to choose when",
                          stacklevel=3)
            self.pin_memory()
        table, bases, rel = self._device_arrays(idx.device)
        ids, positions = idx, None
        if n > 1:
            ids, positions = torch.sort(idx)  # neighbouring rows decode together
            positions = positions.to(torch.int64)
        stream = torch.cuda.current_stream(idx.device)
        payload = (self._registered[1] if self._registered is not None
                   else self._pinned.data_ptr())
        with torch.cuda.device(idx.device):
            err = _C.gather_cuda(self._header, table.data_ptr(), bases.data_ptr(),
                                 rel.data_ptr(), payload, ids.data_ptr(),
                                 ids.dtype == torch.int64, n,
                                 positions.data_ptr() if positions is not None else 0,
                                 out.data_ptr(), stream.cuda_stream)
        if err != 0:
            raise RuntimeError(f"{op}: CUDA kernel launch failed with cudaError {err}")
        # The kernel reads the tables on `stream` (perhaps not the one they were
        # allocated on) and the payload until it ends: keep both until then.
        for t in (table, bases, rel):
            t.record_stream(stream)
        uses = self.__dict__.get("_uses") or self.__dict__.setdefault("_uses", _cuda.StreamUses())
        uses.record(stream)
        return out

    def _device_arrays(self, device: torch.device):
        key = (device.type, device.index)
        if key not in self._device_cache:
            def up(a):
                return torch.from_numpy(np.ascontiguousarray(a).view(np.uint8)).to(device)
            self._device_cache[key] = (up(self._decode_table), up(self._bases), up(self._rel))
        return self._device_cache[key]

    def fetch_nbytes(self, idx) -> int:
        """Bytes of compressed rows that gathering `idx` reads from host memory
        (each row's bit span rounded out to whole bytes; repeated ids count
        each time). The index and mask tables are not counted: the GPU keeps
        them in device memory."""
        idx = self._ids(idx, "CompressedTensor.fetch_nbytes").cpu()
        self._check_range(idx, "CompressedTensor.fetch_nbytes")
        ids = idx.numpy().astype(np.int64)
        start, end = self._row_spans(ids)
        return int(((end + 7) // 8 - start // 8).sum())

    def _row_spans(self, ids: np.ndarray):
        b = self._fields["block_rows"]
        rows = self._fields["rows"]
        start = self._bases[ids // b].astype(np.int64) + self._rel[ids].astype(np.int64)
        nxt = ids + 1
        same = (nxt < rows) & (nxt // b == ids // b)
        end = self._bases[ids // b + 1].astype(np.int64)
        inner = np.flatnonzero(same)
        end[inner] = (self._bases[ids[inner] // b].astype(np.int64)
                      + self._rel[nxt[inner]].astype(np.int64))
        return start, end

    def subset(self, rows, *, threads: Optional[int] = None) -> "CompressedTensor":
        """The tensor of rows `rows` of this one, their compressed bits copied
        as they are (``ibp_gnn.cache.subset``)."""
        from .cache import subset

        return subset(self, rows, threads=threads)

    def decompress(self, *, threads: Optional[int] = None) -> torch.Tensor:
        """The whole tensor, bit-identical to the original."""
        return self.gather(torch.arange(len(self), dtype=torch.int64), threads=threads)

    # ---- memory ---------------------------------------------------------------
    def pin_memory(self) -> "CompressedTensor":
        """Page-lock the payload so the GPU reads the compressed rows zero-copy.

        The payload is registered where it is (cudaHostRegister, read-only): a
        tensor loaded with mmap=True stays one copy in the page cache, shared by
        every process that maps the same file (e.g. the DDP ranks of a node).
        Where registering fails, the payload is copied into pinned memory.
        """
        if self.is_pinned():
            return self
        if not torch.cuda.is_available():
            raise RuntimeError("CompressedTensor.pin_memory needs a CUDA build of torch and a GPU "
                               "(torch.cuda.is_available() is False)")
        payload = np.asarray(self._payload)
        if _C.cuda_built() and payload.nbytes:
            _cuda.require_runtime("CompressedTensor.pin_memory")
            with torch.cuda.device(torch.cuda.current_device()):
                err, dev = _C.host_register(payload.ctypes.data, payload.nbytes, read_only=True)
            if err == 0:
                self._registered = (payload.ctypes.data, dev)
                return self
            warnings.warn(f"CompressedTensor.pin_memory: registering the payload in place failed "
                          f"(cudaError {err}); copying it into pinned memory instead",
                          stacklevel=2)
        self._pinned = torch.from_numpy(payload.view(np.int32)).pin_memory()
        return self

    def is_pinned(self) -> bool:
        return self._pinned is not None or self._registered is not None

    def __del__(self):
        uses = getattr(self, "_uses", None)
        registered = getattr(self, "_registered", None)
        try:
            if uses is not None:
                # Queued gathers still read the payload (registered or pinned
                # copy) and the device tables: let them end first.
                uses.wait()
            if registered is not None:
                _C.host_unregister(registered[0])
        except Exception:  # interpreter shutdown, or a CUDA context already lost
            pass

    # ---- files ------------------------------------------------------------------
    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write the tensor to `path` atomically: readers (and tensors that
        mapped the old file) see the old file or the complete new one, and
        threads or processes saving to one path each publish a complete file.
        Temporaries left beside `path` by killed processes are removed."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"CompressedTensor.save: path must be a str or os.PathLike, got "
                            f"{type(path).__name__}")
        path = Path(path)
        if self._rows is not None:  # fresh CRCs only over rows known to be sound
            self._rows.check_all(self, "CompressedTensor.save")
        with _files.atomic_write(path) as f:
            layout = _C.file_layout(self._header)
            f.seek(layout["payload"][0])
            flat = self._payload.reshape(-1).view(np.uint8)
            for i in range(0, flat.size, DEFAULT_CHUNK_BYTES):
                f.write(memoryview(np.ascontiguousarray(flat[i:i + DEFAULT_CHUNK_BYTES])))
            fields = {k: v for k, v in self._fields.items()
                      if not k.startswith("crc") and k not in ("header_bytes", "version")}
            _write_head(f, fields, self._tables, self._bases, self._rel, _crc(self._payload))
        return path

    # ---- pickling -----------------------------------------------------------------
    def __reduce__(self):
        """A tensor loaded with mmap=True pickles as its path and file identity
        (the receiver maps the same file, e.g. spawned DataLoader workers share
        the page cache); others pickle their arrays. Unpickling re-validates
        the structure either way; pinning is not carried over."""
        if self._source is not None:
            return (_unpickle_mapped, (str(self._source.path), tuple(self._source.identity)))
        return (_unpickle_arrays, (self._header, np.asarray(self._tables),
                                   np.asarray(self._bases), np.asarray(self._rel),
                                   np.asarray(self._payload)))

    def _check_rows(self, ids: np.ndarray, op: str, threads: int = 1) -> None:
        """Rows `ids` pass their structure check before they are read (a tensor
        loaded with verify="background" or "lazy"); no-op otherwise."""
        if self._rows is not None:
            self._rows.check(self, ids, op, threads)

    def check_verified(self, wait: bool = True) -> bool:
        """For a tensor loaded with verify="background": whether the background
        check (every row's structure, the row counts, the CRCs) has passed;
        raises its error if it failed. wait=True blocks until it has ended.
        True for other tensors (checked at load, or row by row with "lazy")."""
        rows = self._rows
        if rows is None or rows.thread is None:
            return True
        if not rows.wait(None if wait else 0):
            return False
        if rows.error is not None:
            raise rows._failure("CompressedTensor.check_verified") from rows.error
        return True

    def check_file(self) -> None:
        """For a tensor loaded with mmap=True: raises FileChangedError when its
        file was modified in place, or when its path now names another file
        (replaced since the load; this tensor still reads the old one). A few
        stat calls: stores call it when an epoch starts. No-op otherwise."""
        if self._source is not None:
            self._source.check("CompressedTensor.check_file", path_too=True)

    @property
    def path(self) -> Optional[Path]:
        """The file a tensor loaded with mmap=True maps (None otherwise)."""
        return self._source.path if self._source is not None else None


# compress / compress_file and load live beside this module; their names are this module's.
from ._encode import DEFAULT_CHUNK_BYTES, MAX_ROW_WORDS, compress, compress_file  # noqa: E402,F401
from ._io import (_MappedFile, _check, _crc, _unpickle_arrays, _unpickle_mapped,  # noqa: E402,F401
                  _write_head, load)
