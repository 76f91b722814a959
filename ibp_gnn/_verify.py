"""The checks of a loaded .ibp file that read every row, and when they run.

``ibp_gnn.load(path, verify=...)`` always checks what reads no row before it
returns: the header (and its CRC), the file size, section sizes, the block
bases (increasing, spanning the payload) and the mask and code tables. The
rest reads the whole file -- each row's mode, group and length as its own bits
define it against the index (the structure the decoders rely on to stay in
bounds), the per-mode row counts and the section CRCs -- and `verify` chooses
when:

=================  ==========================  ==========================================
verify             CRC-32 of every section     every row's structure
=================  ==========================  ==========================================
True / "full"      before load returns         before load returns
False              never                       before load returns
"background"       in a thread                 in the same thread, one pass with the CRCs;
                                               until it has passed, each gather first checks
                                               the rows it reads
"lazy"             never                       each row when a gather first reads it
=================  ==========================  ==========================================

In every mode a gather never decodes a row that has not passed its check: a
corrupt row raises FormatError naming the file and the row before any output
is written. A failure of the background pass (a corrupt row anywhere, a row
count or a CRC that does not match) is raised by every gather after it, and by
``CompressedTensor.check_verified`` (which ``train()`` calls when the first
epoch ends). The background pass reads the tensor's own arrays (one mapping of
the file) and drops the pages it is done with from the resident set.
"""
from __future__ import annotations

import threading
import zlib
from typing import Optional

import numpy as np

from . import _C, _files

MODES = (True, False, "full", "background", "lazy")
# Payload bytes the background pass checks between two releases of its pages.
CHUNK_BYTES = 64 << 20


def verify_mode(verify, op: str) -> str:
    """`verify` as one of "full", "structure" (False), "background", "lazy"."""
    if isinstance(verify, bool):
        return "full" if verify else "structure"
    if verify in ("full", "background", "lazy"):
        return verify
    raise ValueError(f"{op}: verify must be True or 'full', False, 'background' or 'lazy', "
                     f"got {verify!r}")


class RowCheck:
    """The rows of a tensor not yet known to be sound, for a tensor loaded with
    verify="background" or "lazy": a bitmap of rows that passed their check,
    and the background pass (its thread, its error)."""

    def __init__(self, rows: int, where: str):
        self.where = where
        self.checked = np.zeros((rows + 63) // 64, np.uint64)
        self.passed = False           # every row checked (and the CRCs, in the background)
        self.error: Optional[BaseException] = None
        self.thread: Optional[threading.Thread] = None

    # ---- rows a gather reads --------------------------------------------------------------
    def check(self, ct, ids: np.ndarray, op: str, threads: int = 1) -> None:
        """Raises the background pass's error, or FormatError naming the lowest
        corrupt row of `ids` (int64/int32; ids out of range are skipped); marks
        the rows that pass."""
        if self.error is not None:
            raise self._failure(op) from self.error
        if self.passed or ids.size == 0:
            return
        status, msg = _C.validate_rows(ct._header, ct._tables, ct._bases, ct._rel, ct._payload,
                                       np.ascontiguousarray(ids), self.checked, threads)
        if status != 0:
            from ._tensor import FormatError

            raise FormatError(f"{op}: {self.where}: {msg}")

    def check_all(self, ct, op: str) -> None:
        """Every row checked (and the row counts) before `op` uses the whole
        tensor, e.g. to save it with fresh CRCs: waits for the background pass
        and raises its error, or (lazy) walks the rows now."""
        if self.thread is not None:
            self.wait()
        if self.error is not None:
            raise self._failure(op) from self.error
        if self.passed:
            return
        status, msg, counts = _C.validate_row_range(ct._header, ct._tables, ct._bases, ct._rel,
                                                    ct._payload, 0, len(ct), 1)
        if status == 0:
            status, msg = _C.validate_mode_counts(ct._header, list(counts))
        if status != 0:
            from ._tensor import FormatError

            raise FormatError(f"{op}: {self.where}: {msg}")
        self.passed = True

    def _failure(self, op: str) -> BaseException:
        msg = f"{op}: the background check of {self.where} failed: {self.error}"
        try:
            return type(self.error)(msg)
        except Exception:  # an exception type that takes other arguments
            return RuntimeError(msg)

    # ---- the background pass ----------------------------------------------------------------
    def start(self, arrays: tuple, fields: dict, crcs: bool, threads: int = 1) -> None:
        self.thread = threading.Thread(target=self._run, args=(arrays, fields, crcs, threads),
                                       daemon=True, name="ibp-verify")
        self.thread.start()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Whether the background pass has ended (it has when there is none)."""
        if self.thread is not None:
            self.thread.join(timeout)
            return not self.thread.is_alive()
        return True

    def _run(self, arrays, fields, crcs, threads) -> None:
        try:
            self._walk(arrays, fields, crcs, threads)
            self.passed = True
        except BaseException as e:  # raised by the next gather and by check_verified
            self.error = e

    def _walk(self, arrays, fields, crcs, threads) -> None:
        """Rows in chunks of ~CHUNK_BYTES of payload, in file order; the CRCs of
        the same bytes in the same pass; each chunk's pages released after it."""
        from ._tensor import ChecksumError, FormatError

        header, tables, bases, rel, payload = arrays
        rows, block = fields["rows"], fields["block_rows"]
        flat = payload.reshape(-1).view(np.uint8)
        rel_bytes = rel.reshape(-1).view(np.uint8)
        bits_per_row = max(1, fields["payload_bits"] // max(1, rows))
        step = max(64, CHUNK_BYTES * 8 // bits_per_row // 64 * 64)  # whole words of `checked`
        crc_index = zlib.crc32(bases.reshape(-1).view(np.uint8)) if crcs else 0
        crc_payload, done = 0, 0
        counts = np.zeros(4, np.uint64)
        for a in range(0, max(rows, 1), step):
            b = min(rows, a + step)
            status, msg, c = _C.validate_row_range(header, tables, bases, rel, payload, a, b,
                                                   threads)
            if status != 0:
                raise FormatError(f"{self.where}: {msg}")
            counts += np.asarray(c, np.uint64)
            self.checked[a // 64:b // 64] = ~np.uint64(0)  # a lost race only re-checks a row
            upto = flat.size if b >= rows else int(bases[b // block]) // 8
            rel_part = rel_bytes[a * rel.itemsize:b * rel.itemsize]
            if crcs:
                crc_index = zlib.crc32(rel_part, crc_index)
                crc_payload = zlib.crc32(flat[done:upto], crc_payload)
            _files.release_mapped(flat[done:upto], shared_mmap=True)
            _files.release_mapped(rel_part, shared_mmap=True)
            done = upto
        status, msg = _C.validate_mode_counts(header, [int(v) for v in counts])
        if status != 0:
            raise FormatError(f"{self.where}: {msg}")
        if not crcs:
            return
        for name, got, want in (
            ("mask table", zlib.crc32(tables.reshape(-1).view(np.uint8)), fields["crc_tables"]),
            ("index", crc_index, fields["crc_index"]),
            ("payload", crc_payload, fields["crc_payload"]),
        ):
            if got != want:
                raise ChecksumError(f"{self.where}: {name} checksum mismatch (the file is "
                                    "corrupt)")
