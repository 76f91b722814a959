"""The cache folder's rules: atomic publication (unique temporary name, fsync,
rename), the per-folder lock, meta.json, phase markers that let an interrupted
preparation resume, file identities that tie derived files to their sources,
and the memory budget of out-of-core phases."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np
import torch

from .._files import _fsync_dir, atomic_write, temp_path
from .._progress import progress_bar

CACHE_VERSION = 2  # bump when the layout of the cache folder changes
SPLITS = ("train", "val", "test")
PathLike = Union[str, os.PathLike]

#: Default bound on the memory an out-of-core phase holds (edge chunks, sort buckets);
#: ``IBP_PREP_MEMORY`` (e.g. ``8GB``) or ``dataset.memory_budget`` change it.
DEFAULT_MEMORY_BUDGET = 3 << 30
MIN_MEMORY_BUDGET = 16 << 20


class DatasetError(RuntimeError):
    """A dataset that cannot be found, read or prepared; the message says why and what to run."""


def _progress(total: Optional[int], desc: str, enabled: bool, unit: str = "row"):
    return progress_bar(total=total, desc=desc, unit=unit, unit_scale=True,
                        disable=not enabled, dynamic_ncols=True, leave=False)


def _log(msg: str, enabled: bool = True) -> None:
    if enabled:
        print(f"[ibp_gnn.data] {msg}", flush=True)


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20,
          "mb": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
          "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}


def memory_budget(value: Any = None) -> int:
    """Bytes an out-of-core phase may hold: `value` (an int of bytes or a string
    such as ``"4GB"``), else ``$IBP_PREP_MEMORY``, else 3 GiB."""
    what = "dataset.memory_budget"
    if value is None:
        value = os.environ.get("IBP_PREP_MEMORY")
        what = "IBP_PREP_MEMORY"
    if value is None:
        return DEFAULT_MEMORY_BUDGET
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        n = int(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", value)
        if not m or m.group(2).lower() not in _UNITS:
            raise DatasetError(f"{what}={value!r}: expected bytes or a size such as '4GB'")
        n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    else:
        raise DatasetError(f"{what}={value!r}: expected bytes or a size such as '4GB'")
    if n < MIN_MEMORY_BUDGET:
        raise DatasetError(f"{what}={value!r} is below the minimum of "
                           f"{MIN_MEMORY_BUDGET >> 20} MiB")
    return n


# ---- locks and atomic files -------------------------------------------------------------------
@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as f:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            yield
            return
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _tmp(path: Path) -> Path:
    """A temporary name beside `path`, unique across threads, processes and hosts."""
    return temp_path(Path(path))


def _publish(tmp: Path, path: Path) -> Path:
    """fsync `tmp`, rename it to `path` and fsync the folder: `path` is then
    either absent or complete, even across a power loss."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def _remove_stale(folder: Path) -> None:
    """Temporary files left by an interrupted preparation (called under the lock)."""
    for p in folder.glob("*.tmp*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _save_npy(path: Path, a) -> Path:
    if isinstance(a, torch.Tensor):
        a = a.numpy()
    with atomic_write(Path(path)) as f:
        np.save(f, np.ascontiguousarray(a))
    return Path(path)


def _save_json(path: Path, obj) -> None:
    with atomic_write(Path(path)) as f:
        f.write(json.dumps(obj, indent=1, sort_keys=True).encode())


def _key(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


# ---- identities and phases --------------------------------------------------------------------
def file_identity(path: PathLike) -> Optional[dict]:
    """What changes when a file is rewritten, replaced or touched: its resolved
    path, size, modification time (ns) and inode; None when it is absent."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return None
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "inode": st.st_ino}


def _read_phase(folder: Path, name: str, key: dict) -> Optional[dict]:
    """The marker of phase `name` if it completed for `key` and its files are intact."""
    p = folder / f"phase-{name}.json"
    try:
        marker = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    if marker.get("key") != _jsonable(key):
        return None
    for fname, size in marker.get("files", {}).items():
        f = folder / fname
        if not f.is_file() or f.stat().st_size != size:
            return None
    return marker


def _write_phase(folder: Path, name: str, key: dict, files, **extra) -> None:
    _save_json(folder / f"phase-{name}.json",
               {"key": _jsonable(key), "files": {f: (folder / f).stat().st_size for f in files},
                **_jsonable(extra)})


def _read_cache(folder: Path, source: dict) -> Optional[dict]:
    """meta.json of a complete cache made from `source`, else None. Files
    outside the folder (features mapped in place) must still have the identity
    they had when the cache was made."""
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError:
        return None
    if meta.get("cache_version") != CACHE_VERSION or meta.get("source") != source:
        return None
    for name, size in meta.get("files", {}).items():
        p = Path(name) if os.path.isabs(name) else folder / name
        if not p.is_file() or p.stat().st_size != size:
            return None
    for name, ident in meta.get("inputs", {}).items():
        if file_identity(name) != ident:
            return None
    return meta
