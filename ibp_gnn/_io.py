"""The .ibp file: its head written after the payload (`_write_head`), and
`load`: the header, sections and index checked before the tensor exists, the
rest as `verify` says (ibp_gnn._verify)."""
from __future__ import annotations

import mmap as _mmap
import os
import zlib
from pathlib import Path
from typing import Optional, Union

import numpy as np

from . import _C, _files, _verify
from ._tensor import (ChecksumError, CompressedTensor, FileChangedError, FormatError,
                      NewerFormatError, _threads, empty_aligned)

_STATUS_NEWER = 2
_STATUS_MAGIC = 1
_CRC_HEADER_AT = 116  # offset of FileHeader::crc_header


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
            a = empty_aligned(count, dtype)
            view, got = memoryview(a).cast("B"), 0
            while got < a.nbytes:
                n = f.readinto(view[got:])
                if not n:
                    break
                got += n
            if got != a.nbytes:
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
