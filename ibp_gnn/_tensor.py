"""CompressedTensor: a 2-D tensor stored with Invariant Bit Packing, gathered
row by row on the CPU or the GPU. The public functions check their inputs once
here; `ibp_gnn._C` below trusts them."""
from __future__ import annotations

import ctypes
import errno
import mmap as _mmap
import operator
import os
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from . import _C, _cuda, _files, _verify
from ._dtypes import code_of, itemsize, torch_dtype
from ._tensorlike import CompressedView, TensorLike

MODES = {"auto": 0, "paper": 1}
# Row layouts (format.h RowLayout): "sectors" starts a row at the next 32-byte
# sector where that saves the sector a zero-copy read of it would touch;
# "auto" takes it for tables of at least LAYOUT_AUTO_MIN_ROWS rows whose sample
# rows average at least LAYOUT_AUTO_MIN_BYTES compressed. Smaller rows, or the
# rows of a small table (mini-batches read most of it, and neighbours share
# their sectors), would mostly gain gaps (benchmarks/bus_bytes.md).
LAYOUTS = {"packed": 0, "sectors": 1}
LAYOUT_AUTO_MIN_BYTES = 32
LAYOUT_AUTO_MIN_ROWS = 8192
LAYOUT_AUTO_SAMPLE = 2048
MODE_NAMES = {v: k for k, v in MODES.items()}
ROW_MODES = ("raw", "ibp", "sparse", "coded")
# Whether mode="auto" may store kCoded rows (format version 3); benchmarks turn
# it off to measure the version-2 encodings side by side.
CODED_ROWS = True
# Whether mode="auto" may store coded-form kSparse rows (format version 4);
# benchmarks and tests turn it off to measure the version-3 encodings. The
# tables are chosen under the version-3 encodings (_estimator) either way, so
# the coded form only ever shrinks a row.
SPARSE_CODE = True


def _estimator(row_bytes, row_words, tables):
    return _C.Encoder(row_bytes, row_words, tables, sparse_code=False)


_STATUS_NEWER = 2
_STATUS_MAGIC = 1
_CRC_HEADER_AT = 116  # offset of FileHeader::crc_header
DEFAULT_SAMPLE_ROWS = 16384
DEFAULT_CHUNK_BYTES = 64 << 20


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


def _threads(threads: Optional[int], op: str = "ibp_gnn") -> int:
    """A thread count: None = torch.get_num_threads(); any positive integer
    (numpy integers included) is accepted and capped at MAX_THREADS."""
    if threads is None:
        return max(1, min(torch.get_num_threads(), MAX_THREADS))
    if isinstance(threads, (bool, np.bool_)):
        raise ValueError(f"{op}: threads must be a positive int, got {threads!r}")
    try:
        n = operator.index(threads)
    except TypeError:
        raise ValueError(f"{op}: threads must be a positive int, got {threads!r}") from None
    if n < 1:
        raise ValueError(f"{op}: threads must be a positive int, got {threads!r}")
    return min(n, MAX_THREADS)


def _as_bytes_2d(x, op: str):
    """(uint8 numpy view [rows, row_bytes], dtype code, shape) of a 2-D input."""
    if isinstance(x, torch.Tensor):
        if x.layout != torch.strided:
            raise TypeError(f"{op}: x is a sparse tensor ({x.layout}); IBP compresses dense "
                            "rows (sparse rows shrink to their nonzeros): pass x.to_dense()")
        if x.device.type != "cpu":
            raise ValueError(f"{op}: x must be a CPU tensor, got device {x.device}")
        if x.dim() != 2:
            raise ValueError(f"{op}: x must be 2-D, got shape {tuple(x.shape)}")
        code = code_of(x.dtype, f"{op}: x")
        if not x.is_contiguous():
            raise ValueError(f"{op}: x must be contiguous (C order); call x.contiguous() first")
        rows, cols = x.shape
        flat = x.reshape(-1).view(torch.uint8).numpy()
    elif isinstance(x, np.ndarray):
        if x.ndim != 2:
            raise ValueError(f"{op}: x must be 2-D, got shape {x.shape}")
        code = code_of(x.dtype, f"{op}: x")
        if not x.flags.c_contiguous:
            raise ValueError(f"{op}: x must be C-contiguous; use np.ascontiguousarray(x)")
        rows, cols = x.shape
        flat = x.reshape(-1).view(np.uint8)
    elif hasattr(x, "toarray") and hasattr(x, "nnz"):
        raise TypeError(f"{op}: x is a scipy sparse matrix; IBP compresses dense rows (sparse "
                        "rows shrink to their nonzeros): pass x.toarray()")
    else:
        raise TypeError(f"{op}: x must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    row_bytes = cols * itemsize(code)
    return flat.reshape(rows, row_bytes), code, (int(rows), int(cols))


def _sample_ids(rows: int, sample_rows: int) -> np.ndarray:
    """The rows that choose the masks: all of them, or a fixed random subset."""
    if rows <= sample_rows:
        return np.arange(rows, dtype=np.uint64)
    rng = np.random.default_rng(0x1B9)
    return np.sort(rng.choice(rows, size=sample_rows, replace=False)).astype(np.uint64)


def _progress(total: int, enabled: Optional[bool], desc: str):
    from ._progress import progress_bar

    return progress_bar(total=total, unit="row", unit_scale=True, desc=desc,
                        disable=not enabled if enabled is not None else total < (1 << 22))


class _Build:
    """Chooses the masks and encodes chunks of rows (shared by compress and
    compress_file, whose outputs are therefore identical)."""

    def __init__(self, sample: np.ndarray, sample_ids: np.ndarray, code: int, shape, mode: str,
                 threads: int = 1, codes: Optional[bool] = None, layout: str = "auto"):
        codes = CODED_ROWS if codes is None else codes
        if mode not in MODES:
            raise ValueError(f"compress: mode must be one of {sorted(MODES)}, got {mode!r}")
        if layout != "auto" and layout not in LAYOUTS:
            raise ValueError(f"compress: layout must be one of {['auto', *LAYOUTS]}, "
                             f"got {layout!r}")
        self.code, self.shape, self.mode = code, shape, mode
        self.row_bytes = shape[1] * itemsize(code)
        self.row_words = (self.row_bytes + 3) // 4
        rows = np.ascontiguousarray(sample[sample_ids.astype(np.int64)]) if len(sample_ids) \
            else np.zeros((0, self.row_bytes), np.uint8)
        self.tables = _choose_tables(rows, self.row_bytes, self.row_words, shape[0], mode,
                                     threads)
        if mode == "auto" and codes:
            self.tables = _with_codes(rows, self.row_bytes, self.row_words, code, shape[0],
                                      self.tables, threads)
        if layout == "auto":
            layout = ("packed" if shape[0] < LAYOUT_AUTO_MIN_ROWS else
                      _auto_layout(rows, self.row_bytes, self.row_words, self.tables, mode,
                                   threads))
        self.encoder = _C.Encoder(self.row_bytes, self.row_words, self.tables,
                                  allow_sparse=mode == "auto", sparse_code=SPARSE_CODE,
                                  layout=LAYOUTS[layout])
        self.words, self.rel, self.bases = [], [], []

    def chunk_rows(self, chunk_bytes: int) -> int:
        """Rows per chunk: a multiple of 64, so every chunk starts an index block."""
        return 64 * max(1, chunk_bytes // max(1, 64 * self.row_bytes))

    def encode(self, rows: np.ndarray, threads: int) -> np.ndarray:
        """Encodes a chunk; keeps its index entries and returns its payload words."""
        w, r, b = self.encoder.encode(rows, self.row_bytes, threads)
        self.rel.append(r)
        self.bases.append(b)
        return w

    def fields(self) -> dict:
        """Header fields for the rows encoded so far."""
        e = self.encoder
        return dict(dtype=self.code, rows=self.shape[0], cols=self.shape[1],
                    row_words=self.row_words, num_groups=int(self.tables.shape[0]),
                    group_bits=e.group_bits, block_rows=e.block_rows, rel_bytes=e.rel_bytes,
                    selector=MODES[self.mode], payload_bits=e.payload_bits,
                    mode_rows=e.mode_rows, code_rows=e.code_rows, layout=e.layout)

    def finish(self):
        """(last payload words, header fields, bases, rel) once every row is in."""
        w, b = self.encoder.finish()
        self.bases.append(b)
        rel = np.concatenate(self.rel) if self.rel else np.zeros(0, np.uint8)
        rel = rel.view(_rel_dtype(self.encoder.rel_bytes))
        return w, self.fields(), np.concatenate(self.bases), rel


def _auto_layout(rows: np.ndarray, row_bytes: int, row_words: int, tables: np.ndarray,
                 mode: str, threads: int) -> str:
    """layout="auto" for a table of LAYOUT_AUTO_MIN_ROWS rows or more:
    "sectors" when the sample's rows average at least LAYOUT_AUTO_MIN_BYTES
    compressed, else "packed"."""
    if rows.shape[0] == 0 or row_words == 0:
        return "packed"
    sub = np.ascontiguousarray(rows[::max(1, -(-rows.shape[0] // LAYOUT_AUTO_SAMPLE))])
    bits = _C.Encoder(row_bytes, row_words, tables, allow_sparse=mode == "auto").row_bits(
        sub, row_bytes, threads).min(axis=1)
    return "sectors" if bits.mean() >= 8 * LAYOUT_AUTO_MIN_BYTES else "packed"


GROUP_CHOICES = (2, 4, 8, 16)
CLUSTER_ROWS = 2048
CLUSTER_ROUNDS = 4


def _fit(rows: np.ndarray, row_bytes: int, row_words: int, ids: np.ndarray, mode: str,
         frames: bool = True):
    mask, value = _C.select_masks(rows, row_bytes, row_words, ids.astype(np.uint64), MODES[mode],
                                  frames)
    return np.stack([mask, value])


def _choose_tables(rows: np.ndarray, row_bytes: int, row_words: int, total_rows: int,
                   mode: str, threads: int) -> np.ndarray:
    """Mask tables (groups, 2, row_words) fitted to the sample `rows`.

    "paper" uses one group. "auto" also tries 2..16 groups, found by a k-means
    over the sample where a row's distance to a group is the bits it takes
    under that group's tables, and keeps the count whose estimated size for
    the whole tensor (rows, plus the tables themselves) is smallest.
    """
    n = rows.shape[0]
    one = _fit(rows, row_bytes, row_words, np.arange(n), mode)[None]
    if mode == "paper" or n < 256 or row_words == 0:
        return one

    rng = np.random.default_rng(0x6B9)
    sub = np.sort(rng.choice(n, size=min(n, CLUSTER_ROWS), replace=False))
    sub_rows = np.ascontiguousarray(rows[sub])
    # Candidates are compared on rows they were not fitted to, where there are any.
    rest = np.setdiff1d(np.arange(n), sub)
    held = np.ascontiguousarray(rows[rest[:2 * CLUSTER_ROWS]] if len(rest) else rows)

    def estimate(tables):
        e = _estimator(row_bytes, row_words, tables)
        bits = e.row_bits(held, row_bytes, threads).min(axis=1).sum()
        return bits / len(held) * total_rows + tables.size * 32

    best, best_size = one, estimate(one)
    start = _estimator(row_bytes, row_words, one).row_bits(sub_rows, row_bytes, threads)[:, 0]
    # The fits release the GIL: the groups of a round are fitted in parallel.
    with ThreadPoolExecutor(max_workers=min(threads, GROUP_CHOICES[-1])) as pool:
        for groups in GROUP_CHOICES:
            if groups * 64 > len(sub):
                break
            # Start from rows ranked by their size under one group, cut in equal parts.
            assign = np.empty(len(sub), np.int64)
            assign[np.argsort(start, kind="stable")] = np.arange(len(sub)) * groups // len(sub)
            for last in [False] * (CLUSTER_ROUNDS - 1) + [True]:
                # Frames of reference are searched for the final tables only.
                members = [np.flatnonzero(assign == g) for g in range(groups)]
                tables = np.stack(list(pool.map(
                    lambda ids: _fit(sub_rows, row_bytes, row_words, ids, mode, frames=last),
                    members)))
                if not last:
                    cost = _estimator(row_bytes, row_words, tables).row_bits(sub_rows, row_bytes,
                                                                             threads)
                    assign = cost.argmin(axis=1)
            size = estimate(tables)
            if size < best_size:
                best, best_size = tables, size
    return best


CODE_ROWS_SAMPLE = 4096  # sample rows (evenly strided) that fit and judge the code rows


def _with_codes(rows: np.ndarray, row_bytes: int, row_words: int, code: int, total_rows: int,
                tables: np.ndarray, threads: int) -> np.ndarray:
    """The tables with each group's code rows (kCoded rows) appended, fitted
    to the sample rows that group encodes best, when the estimated size for
    the whole tensor (rows plus tables) shrinks; else the tables unchanged."""
    if rows.shape[0] == 0 or row_words == 0 or _C.select_codes(
            rows[:1], row_bytes, row_words, code, np.zeros(1, np.uint64)) is None:
        return tables
    rows = np.ascontiguousarray(rows[::max(1, -(-rows.shape[0] // CODE_ROWS_SAMPLE))])
    n = rows.shape[0]
    cost = _estimator(row_bytes, row_words, tables).row_bits(rows, row_bytes, threads)
    assign = cost.argmin(axis=1)
    parts = []
    for g in range(tables.shape[0]):
        ids = np.flatnonzero(assign == g)
        ids = ids if len(ids) else np.arange(n)
        parts.append(_C.select_codes(rows, row_bytes, row_words, code, ids.astype(np.uint64)))
    coded = np.ascontiguousarray(np.concatenate([tables, np.stack(parts)], axis=1))
    with_codes = _estimator(row_bytes, row_words, coded).row_bits(rows, row_bytes, threads)
    saved = (cost.min(axis=1).sum() - with_codes.min(axis=1).sum()) / n * total_rows
    return coded if saved > (coded.size - tables.size) * 32 else tables


def _rel_dtype(rel_bytes: int):
    return np.uint16 if rel_bytes == 2 else np.uint32


# The widest row the format holds: one raw row (a 2-bit tag, up to 4 group bits and
# 32 bits per word) must fit the 32-bit row offsets; 2^27 - 1 words.
MAX_ROW_WORDS = (0xFFFFFFFF - 2 - 4) // 32


def _check_row_width(shape, code: int, op: str) -> None:
    words = (shape[1] * itemsize(code) + 3) // 4
    if words > MAX_ROW_WORDS:
        raise ValueError(f"{op}: rows of {shape[1]} {str(torch_dtype(code)).replace('torch.', '')} "
                         f"values are {words} 32-bit words wide; the format holds rows of at "
                         f"most {MAX_ROW_WORDS} words (2^27 - 1)")


def _check_sample_rows(sample_rows, op: str = "compress") -> None:
    if isinstance(sample_rows, bool) or not isinstance(sample_rows, int) or sample_rows < 1:
        raise ValueError(f"{op}: sample_rows must be a positive int, got {sample_rows!r}")


def compress(x, *, mode: str = "auto", sample_rows: int = DEFAULT_SAMPLE_ROWS,
             threads: Optional[int] = None, progress: Optional[bool] = None,
             layout: str = "auto") -> "CompressedTensor":
    """Losslessly compress a 2-D, C-contiguous CPU tensor (or numpy array).

    mode: "auto" picks per-word masks that minimise size; "paper" uses the
    published algorithm (one majority threshold swept over 0.70..1.00).
    Masks are chosen from `sample_rows` rows (all rows when fewer).
    layout: "packed" stores rows back to back; "sectors" starts a row at the
    next 32-byte sector when that saves a sector of its zero-copy reads (a
    little storage for fewer bus bytes); "auto" (default) picks "sectors" for
    tables of LAYOUT_AUTO_MIN_ROWS rows or more whose rows average
    LAYOUT_AUTO_MIN_BYTES compressed bytes or more.
    """
    xb, code, shape = _as_bytes_2d(x, "compress")
    _check_row_width(shape, code, "compress")
    _check_sample_rows(sample_rows)
    threads = _threads(threads, "compress")
    b = _Build(xb, _sample_ids(shape[0], sample_rows), code, shape, mode, threads,
               layout=layout)
    step = b.chunk_rows(DEFAULT_CHUNK_BYTES)
    words = []
    with _progress(shape[0], progress, "compress") as bar:
        for a in range(0, shape[0], step):
            words.append(b.encode(xb[a:a + step], threads))
            bar.update(min(step, shape[0] - a))
    last, fields, bases, rel = b.finish()
    words.append(last)
    return CompressedTensor(_C.pack_header(fields), b.tables, bases, rel, np.concatenate(words),
                            validate=False)


class _NpyRows:
    """Rows of a 2-D C-order .npy file, read with plain file reads so that
    memory use stays at one chunk however large the file is."""

    def __init__(self, path: Path):
        self.f, st = _files.open_regular_file(path, "compress_file", "src")
        try:
            self._open(path, st)
        except BaseException:
            self.f.close()
            raise

    def _open(self, path: Path, st: os.stat_result) -> None:
        where = f"compress_file: src {str(path)!r}"
        try:
            version = np.lib.format.read_magic(self.f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(self.f)
        except (ValueError, SyntaxError, TypeError) as e:
            raise ValueError(f"{where} is not a readable .npy file: {e}") from None
        if not isinstance(shape, tuple) or len(shape) != 2:
            raise ValueError(f"{where} must hold a 2-D array, got shape {shape}")
        if any(not isinstance(d, int) or d < 0 for d in shape):
            raise ValueError(f"{where} has an invalid shape {shape} in its .npy header "
                             "(negative dimension)")
        if fortran:
            raise ValueError(f"{where} is in Fortran order; save it C-contiguous")
        self.code = code_of(dtype, "compress_file: src")
        self.shape = (int(shape[0]), int(shape[1]))
        self.row_bytes = self.shape[1] * itemsize(self.code)
        self.offset = self.f.tell()
        if st.st_size < self.offset + self.shape[0] * self.row_bytes:
            raise ValueError(f"{where} is truncated: {st.st_size} bytes, its .npy header "
                             f"describes {self.offset + self.shape[0] * self.row_bytes}")
        self.identity = _files.FileIdentity.of(st)

    def read(self, start: int, count: int) -> np.ndarray:
        self.f.seek(self.offset + start * self.row_bytes)
        buf = np.empty((count, self.row_bytes), np.uint8)
        if self.f.readinto(memoryview(buf).cast("B")) != buf.nbytes:
            raise ValueError("compress_file: src is shorter than its .npy header says")
        return buf

    def rows(self, ids: np.ndarray) -> np.ndarray:
        out = np.empty((len(ids), self.row_bytes), np.uint8)
        for i, r in enumerate(ids):
            out[i] = self.read(int(r), 1)[0]
        return out


class _ArrayRows:
    """The same interface over an in-memory array or an np.memmap."""

    def __init__(self, xb: np.ndarray, code: int, shape):
        self.xb, self.code, self.shape = xb, code, shape

    def read(self, start: int, count: int) -> np.ndarray:
        return np.ascontiguousarray(self.xb[start:start + count])

    def rows(self, ids: np.ndarray) -> np.ndarray:
        out = np.ascontiguousarray(self.xb[ids.astype(np.int64)])
        # Each sampled row's page fault maps its cached neighbours too (fault-around,
        # large page-cache folios): a sample spread over a cached file maps most of it.
        _files.release_mapped(self.xb)
        return out

    def release(self, start: int, count: int) -> None:
        """Done with these rows: a memory map's pages leave the resident set."""
        _files.release_mapped(self.xb[start:start + count])


def compress_file(src, dst: Union[str, os.PathLike], *, mode: str = "auto",
                  sample_rows: int = DEFAULT_SAMPLE_ROWS, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                  threads: Optional[int] = None, progress: Optional[bool] = True,
                  layout: str = "auto") -> Path:
    """Compress an .npy file (or a numpy array / np.memmap) straight to an .ibp file.

    One pass over the input in chunks of about `chunk_bytes` (the masks come
    from a random sample of rows read first), writing the payload as it goes:
    peak memory is about one chunk plus the output's index, whatever the input
    size. The file appears under `dst` only once complete. Returns `dst` as a
    Path. The output is byte-identical to `compress(x).save(dst)`.
    """
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes < 1:
        raise ValueError(f"compress_file: chunk_bytes must be a positive int, got {chunk_bytes!r}")
    _check_sample_rows(sample_rows, "compress_file")
    if not isinstance(dst, (str, os.PathLike)):
        raise TypeError(f"compress_file: dst must be a str or os.PathLike, got "
                        f"{type(dst).__name__}")
    dst = Path(dst)
    threads = _threads(threads, "compress_file")
    if isinstance(src, (str, os.PathLike)):
        reader = _NpyRows(Path(src))
        src_file = Path(src)
    elif isinstance(src, np.ndarray):
        reader = _ArrayRows(*_as_bytes_2d(src, "compress_file"))
        src_file = _mapped_filename(src)
    else:
        raise TypeError(f"compress_file: src must be an .npy path or a numpy array, "
                        f"got {type(src).__name__}")
    try:
        _check_row_width(reader.shape, reader.code, "compress_file")
        if src_file is not None and _same_file(src_file, dst):
            raise ValueError(f"compress_file: dst {str(dst)!r} is the source file itself "
                             f"({str(src_file)!r}); compressing in place would destroy the "
                             "input: choose another dst")
        if dst.is_dir():
            raise IsADirectoryError(f"compress_file: dst {str(dst)!r} is a directory; "
                                    "name the .ibp file to write")
        return _compress_to(reader, dst, mode, sample_rows, chunk_bytes, threads, progress,
                            layout)
    finally:
        if isinstance(reader, _NpyRows):
            reader.f.close()


def _mapped_filename(x: np.ndarray) -> Optional[Path]:
    """The file a numpy memory map (or a view of one) maps, if any."""
    while x is not None:
        name = getattr(x, "filename", None)
        if isinstance(x, np.memmap) and name:
            return Path(name)
        x = x.base if isinstance(x.base, np.ndarray) else None
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # b does not exist yet
        return False


def _compress_to(reader, dst: Path, mode: str, sample_rows: int, chunk_bytes: int,
                 threads: int, progress: Optional[bool], layout: str = "auto") -> Path:
    shape = reader.shape
    ids = _sample_ids(shape[0], sample_rows)
    b = _Build(reader.rows(ids), np.arange(len(ids), dtype=np.uint64), reader.code, shape, mode,
               threads, layout=layout)
    step = b.chunk_rows(chunk_bytes)
    crc = 0
    with _files.atomic_write(dst) as f, \
            _progress(shape[0], progress, f"compress {dst.name}") as bar:
        # The payload's offset depends on the shape alone: write it first,
        # then the header and index once they are known.
        f.seek(_C.file_layout(_C.pack_header(b.fields()))["payload"][0])
        for a in range(0, shape[0], step):
            count = min(step, shape[0] - a)
            w = memoryview(b.encode(reader.read(a, count), threads)).cast("B")
            if hasattr(reader, "release"):
                reader.release(a, count)
            f.write(w)
            crc = zlib.crc32(w, crc)
            bar.update(count)
        last, fields, bases, rel = b.finish()
        w = memoryview(last).cast("B")
        f.write(w)
        _write_head(f, fields, b.tables, bases, rel, zlib.crc32(w, crc))
    return dst


def _crc(a: np.ndarray, crc: int = 0, step: int = 1 << 26) -> int:
    """CRC-32 of an array's bytes, read in slices (works on memory maps)."""
    flat = a.reshape(-1).view(np.uint8)
    for i in range(0, flat.size, step):
        crc = zlib.crc32(flat[i:i + step], crc)
        # Maps here are ACCESS_READ (shared): a checked range leaves the resident set.
        _files.release_mapped(flat[i:i + step], shared_mmap=True)
    return crc


def _write_head(f, fields: dict, tables: np.ndarray, bases: np.ndarray, rel: np.ndarray,
                crc_payload: int) -> None:
    """Writes header, tables and index at their offsets (the payload is already there)."""
    fields = dict(fields, crc_tables=_crc(tables),
                  crc_index=_crc(rel, _crc(bases)), crc_payload=crc_payload, crc_header=0)
    fields["crc_header"] = zlib.crc32(_C.pack_header(fields))
    header = _C.pack_header(fields)
    layout = _C.file_layout(header)
    for name, arr in (("tables", tables), ("bases", bases), ("rel", rel)):
        f.seek(layout[name][0])
        f.write(np.ascontiguousarray(arr).tobytes())
    f.seek(0)
    f.write(header)


def _check(status: int, msg: str, where: str) -> None:
    if status == _STATUS_NEWER:
        raise NewerFormatError(f"{where}: {msg}")
    if status != 0:
        raise FormatError(f"{where}: {msg}")


def load(path: Union[str, os.PathLike], *, mmap: bool = False,
         verify: Union[bool, str] = True, threads: Optional[int] = None) -> "CompressedTensor":
    """Load a compressed tensor saved with `CompressedTensor.save` or `compress_file`.

    mmap=True maps the file instead of reading it into memory: the processes
    that map one file share one copy of it (the page cache), and pickling the
    tensor sends its path, not its bytes. The file must then stay as it is
    while the tensor is in use: replace it only atomically (write elsewhere and
    rename over it, as `save` and `compress_file` do: the tensor keeps reading
    the file it mapped). A file truncated or rewritten in place (`cp` over it,
    an editor, a half-finished copy) would make reads fault (SIGBUS) or return
    wrong rows; every gather first checks the file's size and modification
    time and raises FileChangedError instead, and `check_file()` also reports
    a path that now names another file.

    verify chooses when the checks that read the whole file run (the header,
    section sizes, block bases and tables are always checked first; details in
    ``ibp_gnn._verify``): True or "full" checks the CRC-32 of every section and
    every row's structure before returning; False the structure only;
    "background" returns at once and runs both in a thread over the same
    mapping, each gather checking the rows it reads until that pass has
    succeeded (a failure is raised by the next gather and by
    `check_verified`); "lazy" checks each row when a gather first reads it and
    no CRCs. In every mode a damaged file raises FormatError (ChecksumError)
    naming the file and the section or row, rather than crash or return wrong
    rows.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"load: path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    threads = _threads(threads, "load")
    verify = _verify.verify_mode(verify, "load")
    f, st = _files.open_regular_file(path, "load", "")
    try:
        return _load_open(f, st, path, mmap, verify, threads)
    finally:
        f.close()


def _load_open(f, st: os.stat_result, path: Path, mmap: bool, verify: str,
               threads: int) -> "CompressedTensor":
    """load() from an open file; every section is read from (or mapped through) f."""
    size = st.st_size
    hb = _C.HEADER_BYTES
    header = f.read(hb)
    where = f"load({str(path)!r})"
    if len(header) < 16:
        raise FormatError(f"{where}: file is truncated ({size} bytes): no header")
    status, msg = _C.validate_header(header.ljust(hb, b"\0"))
    if status in (_STATUS_MAGIC, _STATUS_NEWER):
        _check(status, msg, where)
    if len(header) < hb:
        raise FormatError(f"{where}: file is truncated ({size} bytes): header needs {hb}")
    fields = _C.unpack_header(header)
    stored = fields["crc_header"]
    if zlib.crc32(header[:_CRC_HEADER_AT] + bytes(4) + header[_CRC_HEADER_AT + 4:]) != stored:
        raise ChecksumError(f"{where}: header checksum mismatch (the header is corrupt)")
    _check(status, msg, where)
    layout = _C.file_layout(header)
    if size < layout["total"]:
        raise FormatError(f"{where}: file is truncated: {size} bytes, the header describes "
                          f"{layout['total']}")
    if size > layout["total"]:
        raise FormatError(f"{where}: file has {size - layout['total']} unexpected trailing bytes")

    rel_dtype = np.uint16 if fields["rel_bytes"] == 2 else np.uint32
    mapping = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_READ) if mmap and size else None

    def section(name, dtype, shape=None):
        offset, nbytes = layout[name]
        count = nbytes // np.dtype(dtype).itemsize
        if count == 0:
            a = np.zeros(0, dtype)
        elif mapping is not None:
            a = np.frombuffer(mapping, dtype=dtype, count=count, offset=offset)
        else:
            f.seek(offset)
            a = np.fromfile(f, dtype=dtype, count=count)
            if a.size != count:
                raise FormatError(f"{where}: file is truncated: the {name} section ends early")
        return a.reshape(shape) if shape is not None else a

    groups, words = fields["num_groups"], fields["row_words"]
    tables = section("tables", np.uint32, (groups, 2 + fields["code_rows"], words))
    bases = section("bases", np.uint64)
    rel = section("rel", rel_dtype)
    payload = section("payload", np.uint32)
    if verify == "full":
        for name, got, want in (
            ("mask table", _crc(tables), fields["crc_tables"]),
            ("index", _crc(rel, _crc(bases)), fields["crc_index"]),
            ("payload", _crc(payload), fields["crc_payload"]),
        ):
            if got != want:
                raise ChecksumError(f"{where}: {name} checksum mismatch (the file is corrupt)")
    plain = _C.pack_header(dict(fields, crc_tables=0, crc_index=0, crc_payload=0, crc_header=0))
    rows_now = verify in ("full", "structure")
    if not rows_now:
        status, msg = _C.validate_sections(plain, tables, bases, rel, payload)
        _check(status, msg, where)
    try:
        ct = CompressedTensor(plain, tables, bases, rel, payload, threads=threads,
                              validate=rows_now)
    except FormatError as e:
        raise FormatError(f"{where}: {e}") from None
    if not rows_now:
        ct._rows = _verify.RowCheck(fields["rows"], repr(str(path)))
        if verify == "background":
            ct._rows.start((plain, tables, bases, rel, payload), fields, crcs=True)
    if mmap:
        ct._source = _MappedFile(path, f, _files.FileIdentity.of(st), verify == "full")
        if rows_now:  # checking read every row; gathers map back only the rows they touch
            _files.release_mapped(payload, shared_mmap=True)
    return ct


class _MappedFile:
    """The file under a tensor loaded with mmap=True: its path, a descriptor of
    the file that was mapped (kept open so that checks stat the same file)
    and the identity it had when loaded."""

    def __init__(self, path: Path, f, identity: "_files.FileIdentity", verify: bool):
        self.path, self.identity, self.verify = Path(os.path.abspath(path)), identity, verify
        self.fd = os.dup(f.fileno())

    def check(self, op: str, path_too: bool = False) -> None:
        st = os.fstat(self.fd)
        if (st.st_size, st.st_mtime_ns) != (self.identity.size, self.identity.mtime_ns):
            raise FileChangedError(
                f"{op}: {str(self.path)!r} was modified in place after it was loaded with "
                f"mmap=True (size {self.identity.size} -> {st.st_size} bytes, mtime changed: "
                f"{st.st_mtime_ns != self.identity.mtime_ns}); reading it could fault or return "
                "wrong rows. Replace such files atomically (write elsewhere, then rename) and "
                "load them again")
        if path_too:
            try:
                now = _files.FileIdentity.of(os.stat(self.path))
            except OSError as e:
                raise FileChangedError(f"{op}: {str(self.path)!r}, loaded with mmap=True, can no "
                                       f"longer be read from its path ({e.strerror})") from None
            if now != self.identity:
                raise FileChangedError(
                    f"{op}: {str(self.path)!r} names another file than the one loaded with "
                    "mmap=True (it was replaced); this tensor still reads the old contents: "
                    "load the path again for the new ones")

    def __del__(self):
        try:
            os.close(self.fd)
        except (OSError, AttributeError, TypeError):
            pass


def _unpickle_mapped(path: str, identity: tuple) -> "CompressedTensor":
    op = "unpickling CompressedTensor"
    f, st = _files.open_regular_file(Path(path), op, "mapped file")
    try:
        if _files.FileIdentity.of(st) != _files.FileIdentity(*identity):
            raise FileChangedError(f"{op}: {path!r} changed since the tensor was pickled (it maps "
                                   "a file by path); load it again")
        return _load_open(f, st, Path(path), True, "lazy", _threads(None))
    finally:
        f.close()


def _unpickle_arrays(header, tables, bases, rel, payload) -> "CompressedTensor":
    if not isinstance(header, bytes) or len(header) != _C.HEADER_BYTES:
        raise FormatError("unpickling CompressedTensor: the header is not "
                          f"{_C.HEADER_BYTES} bytes")
    for name, a, dtypes in (("tables", tables, (np.uint32,)), ("bases", bases, (np.uint64,)),
                            ("rel", rel, (np.uint16, np.uint32)),
                            ("payload", payload, (np.uint32,))):
        if not isinstance(a, np.ndarray):
            raise FormatError(f"unpickling CompressedTensor: {name} is a "
                              f"{type(a).__name__}, not a numpy array")
        if a.dtype not in [np.dtype(d) for d in dtypes]:
            raise FormatError(f"unpickling CompressedTensor: {name} has dtype {a.dtype}")
    return CompressedTensor(header, tables, bases, rel, payload, validate=True)


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


_CPU_IDS = (torch.int64, torch.int32)


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
        if device.type == "cpu" and ids.device.type != "cpu":
            ids = ids.cpu()
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
        if device is None and type(idx) is torch.Tensor and idx.device.type == "cpu":
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
        call takes the general path (other inputs, or an error to report there)."""
        if idx.dtype not in _CPU_IDS or idx.dim() != 1 or not idx.is_contiguous():
            return None
        rows = self._rows
        if rows is not None and (not rows.passed or rows.error is not None):
            return None  # rows not checked yet (verify="background"/"lazy"): the general path
        n, cols = idx.shape[0], self._fields["cols"]
        if out is None:
            out, given = torch.empty((n, cols), dtype=self.dtype), False
        elif (type(out) is not torch.Tensor or out.device.type != "cpu"
              or out.dtype != self.dtype or out.shape != (n, cols) or not out.is_contiguous()):
            return None
        else:
            given = True
        if self._source is not None:
            self._source.check(op)
        payload = self._pinned if self._pinned is not None else self._payload
        dec = self.__dict__.get("_cpu_gather")
        if dec is None or dec[0] is not payload:
            arr = payload.numpy().view(np.uint32) if payload is self._pinned else payload
            dec = self.__dict__["_cpu_gather"] = (payload, _C.CpuGather(
                self._header, self._decode_table, self._bases, self._rel, arr))
        if n and dec[1].gather(idx.data_ptr(), n, idx.dtype == torch.int64, out.data_ptr(),
                               _threads(threads, op), given) != 0:
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
