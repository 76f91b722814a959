"""Files: atomic publication, stale temporaries, input checks and file identity.

A file is published by writing a temporary next to it under a name no other
writer can pick (host, process id and a random token), fsyncing it, renaming
it over the destination and fsyncing the folder: readers see the old file or
the complete new one, never a mix, and concurrent writers of one path each
publish a complete file (the last rename wins). Temporaries left by a killed
process are removed by the next writer of the same destination on the same host.
"""
from __future__ import annotations

import os
import re
import secrets
import socket
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64] or "host"
# Temporaries of this version: <name>.tmp<pid>-<token>@<host>; of older versions: <name>.tmp<pid>.
_TMP = re.compile(r"\.tmp(\d+)(?:-([0-9a-f]+)@(.+))?$")


def temp_path(dst: Path) -> Path:
    """A fresh temporary path beside dst, unique across threads, processes and hosts."""
    return dst.with_name(f"{dst.name}.tmp{os.getpid()}-{secrets.token_hex(6)}@{_HOST}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale_temporaries(dst: Path) -> list:
    """Removes temporaries of dst left by dead processes of this host; returns them.

    Temporaries of other hosts (a shared file system) and of live processes
    are left alone; so are those of older versions (no host in the name) less
    than an hour old."""
    removed = []
    try:
        entries = list(os.scandir(dst.parent if str(dst.parent) else "."))
    except OSError:
        return removed
    prefix = dst.name + ".tmp"
    for e in entries:
        if not e.name.startswith(prefix):
            continue
        m = _TMP.fullmatch(e.name[len(dst.name):])
        if m is None:
            continue
        pid, host = int(m.group(1)), m.group(3)
        if host is not None and host != _HOST:
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        try:
            st = e.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                continue
            if host is None and st.st_mtime > _now() - 3600:
                continue
            os.unlink(e.path)
            removed.append(Path(e.path))
        except OSError:
            pass
    return removed


def _now() -> float:
    import time

    return time.time()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder if str(folder) else ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a folder
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_write(dst: Path):
    """Yields an open binary file; on a clean exit its contents are fsynced and
    renamed over dst, otherwise the temporary is removed and dst is untouched."""
    dst = Path(dst)
    folder = dst.parent if str(dst.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {str(dst)!r}: its folder {str(folder)!r} does not "
                                "exist")
    clean_stale_temporaries(dst)
    tmp = temp_path(dst)
    f = open(tmp, "xb")
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
        _fsync_dir(dst.parent)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def require_regular_file(path: Path, op: str, what: str) -> os.stat_result:
    """stat(path) of an existing regular file (symlinks followed), or an error
    saying what the path is instead; nothing is opened (a FIFO would block)."""
    label = f"{op}: {what} {str(path)!r}" if what else f"{op}: {str(path)!r}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{label} does not exist") from None
    except NotADirectoryError:
        raise FileNotFoundError(f"{label} does not exist (a parent is not a directory)") from None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(f"{label} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{label} is {_kind(st.st_mode)}, not a regular file")
    return st


def open_regular_file(path: Path, op: str, what: str):
    """(binary file opened for reading, its fstat) of a regular file, or an
    error naming what path is instead. Opened without blocking (a FIFO would
    wait for a writer) and checked on the descriptor itself (no race with a
    rename between the check and the open)."""
    label = f"{op}: {what} {str(path)!r}" if what else f"{op}: {str(path)!r}"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"{label} does not exist") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{label} is a directory, not a file") from None
    except PermissionError:
        raise PermissionError(f"{label} cannot be read (permission denied)") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(f"{label} is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{label} is {_kind(st.st_mode)}, not a regular file")
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st
    except BaseException:
        os.close(fd)
        raise


class FileIdentity(NamedTuple):
    """What identifies a file's contents cheaply: which file (device, inode)
    and its size and modification time."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> "FileIdentity":
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def release_mapped(a, shared_mmap: bool = False) -> bool:
    """Drops the pages under the numpy array `a` from this process's resident set
    when `a` lies in a shared file mapping (np.memmap mode 'r', 'r+' or 'w+', or
    with `shared_mmap`, an array over an ``mmap.mmap`` the caller opened shared):
    the data stays in the file and the page cache, and a later access maps it
    again. Streaming passes over a large memory map call it on each chunk they
    are done with, so their resident memory stays at one chunk. Returns whether
    anything was released; a private mapping (mode 'c'), an in-memory array or
    another OS is left alone."""
    import mmap
    import sys

    import numpy as np

    if sys.platform != "linux" or not isinstance(a, np.ndarray) or a.size == 0 \
            or not a.flags.c_contiguous:
        return False
    m = a
    while isinstance(m, np.ndarray) and not (isinstance(m, np.memmap)
                                             and getattr(m, "filename", None)):
        m = m.base
    if isinstance(m, memoryview):  # np.frombuffer over a mapping
        m = m.obj
    if isinstance(m, np.memmap):
        if getattr(m, "mode", "c") not in ("r", "r+", "w+"):
            return False
    elif not (shared_mmap and isinstance(m, mmap.mmap)):
        return False
    page = mmap.PAGESIZE
    addr = a.__array_interface__["data"][0]
    start = -(-addr // page) * page
    end = (addr + a.nbytes) // page * page
    if end <= start:
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start),
                        mmap.MADV_DONTNEED) == 0
