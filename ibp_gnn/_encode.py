"""compress / compress_file: the choice of tables (masks, frames of reference,
code rows, groups) from a sample of rows, then the rows encoded in chunks by
`ibp_gnn._C.Encoder`. The switches CODED_ROWS and SPARSE_CODE live here."""
from __future__ import annotations

import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from . import _C, _files
from ._dtypes import code_of, itemsize, torch_dtype
from ._io import _write_head
from ._tensor import LAYOUTS, MODES, CompressedTensor, _rel_dtype, _threads, empty_aligned

LAYOUT_AUTO_MIN_BYTES = 32
LAYOUT_AUTO_MIN_ROWS = 8192
LAYOUT_AUTO_SAMPLE = 2048
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
DEFAULT_SAMPLE_ROWS = 16384
DEFAULT_CHUNK_BYTES = 64 << 20


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
        self.tables, one = _choose_tables(rows, self.row_bytes, self.row_words, shape[0], mode,
                                          threads)
        if mode == "auto" and codes:
            self.tables = _with_codes(rows, self.row_bytes, self.row_words, code, shape[0],
                                      self.tables, threads, one)
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
                   mode: str, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Mask tables (groups, 2, row_words) fitted to the sample `rows`, and the
    one-group tables (the same array when one group is kept).

    "paper" uses one group. "auto" also tries 2..16 groups, found by a k-means
    over the sample where a row's distance to a group is the bits it takes
    under that group's tables, and keeps the count whose estimated size for
    the whole tensor (rows, plus the tables themselves) is smallest.
    """
    n = rows.shape[0]
    one = _fit(rows, row_bytes, row_words, np.arange(n), mode)[None]
    if mode == "paper" or n < 256 or row_words == 0:
        return one, one

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
    return best, one


CODE_ROWS_SAMPLE = 4096  # sample rows (evenly strided) that fit and judge the code rows


def _with_codes(rows: np.ndarray, row_bytes: int, row_words: int, code: int, total_rows: int,
                tables: np.ndarray, threads: int, one: Optional[np.ndarray] = None) -> np.ndarray:
    """The tables with each group's code rows (kCoded rows) appended, fitted
    to the sample rows that group encodes best, when the estimated size for
    the whole tensor (rows plus tables) shrinks; else the tables unchanged.

    With several groups, `one` (the one-group mask tables) with code rows
    fitted to every sample row competes too: the groups were chosen for kIbp
    rows, and code rows fitted to a group's share of the sample can lose to
    one set fitted to all of it (fp16 embeddings: 16 groups 1.152, one 1.159),
    while one group's tables stay in a core's caches (its 1024-row gathers
    9% faster). The sizes are estimated on sample rows the code rows were not
    fitted to, where there are any (kept within CODE_ROWS_SAMPLE; ties: the
    fewer tables)."""
    if rows.shape[0] == 0 or row_words == 0 or _C.select_codes(
            rows[:1], row_bytes, row_words, code, np.zeros(1, np.uint64)) is None:
        return tables
    step = max(1, -(-rows.shape[0] // CODE_ROWS_SAMPLE))
    held = np.ascontiguousarray(rows[1::step]) if step > 1 else None
    rows = np.ascontiguousarray(rows[::step])
    n = rows.shape[0]
    held = rows if held is None or len(held) == 0 else held
    assign = _estimator(row_bytes, row_words, tables).row_bits(rows, row_bytes,
                                                               threads).argmin(axis=1)
    # Each group's codes from its rows, with every sample row as the prior
    # (select_codes): the tails a group's few hundred rows miss stay ranked.
    parts, every = [], np.arange(n, dtype=np.uint64)
    for g in range(tables.shape[0]):
        ids = np.flatnonzero(assign == g)
        ids = ids if len(ids) else np.arange(n)
        parts.append(_C.select_codes(rows, row_bytes, row_words, code, ids.astype(np.uint64),
                                     every))
    candidates = [tables]
    if one is not None and tables.shape[0] > 1:
        candidates.append(np.ascontiguousarray(np.concatenate(
            [one, _C.select_codes(rows, row_bytes, row_words, code, every)[None]], axis=1)))
    candidates.append(np.ascontiguousarray(np.concatenate([tables, np.stack(parts)], axis=1)))

    def size(t):  # estimated bits of the whole tensor: its rows, then its tables
        bits = _estimator(row_bytes, row_words, t).row_bits(held, row_bytes, threads)
        return bits.min(axis=1).sum() / len(held) * total_rows + t.size * 32

    sizes = [size(t) for t in candidates]
    return candidates[sizes.index(min(sizes))]


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
    payload = np.concatenate(words, out=empty_aligned(sum(len(w) for w in words), np.uint32))
    return CompressedTensor(_C.pack_header(fields), b.tables, bases, rel, payload, validate=False)


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
