"""Node features: a memory-mappable :class:`FeatureSource` (an .npy file or a
region of a file, e.g. an uncompressed .npz member), and the streaming
converters that turn OGB's raw files into one (``data.npz`` members unpacked in
chunks, ``node-feat.csv.gz`` parsed in chunks)."""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

import numpy as np

from ._cache import (DatasetError, PathLike, _progress, _publish, _read_phase, _tmp,
                     _write_phase, file_identity)


@dataclass
class FeatureSource:
    """A 2-D C-order feature matrix stored contiguously in a file at `offset`."""
    path: Path
    shape: Tuple[int, int]
    dtype: np.dtype
    offset: int = 0

    def __post_init__(self):
        self.path = Path(self.path)
        self.shape = (int(self.shape[0]), int(self.shape[1]))
        self.dtype = np.dtype(self.dtype)

    @classmethod
    def from_npy(cls, path: PathLike) -> "FeatureSource":
        path = Path(path)
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read(f)
            offset = f.tell()
        if len(shape) != 2 or fortran:
            raise DatasetError(f"{path}: features must be a 2-D C-order array, got shape {shape}"
                               f"{' in Fortran order' if fortran else ''}")
        return cls(path, shape, dtype, offset)

    @property
    def row_bytes(self) -> int:
        return self.shape[1] * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.row_bytes

    def open(self) -> np.ndarray:
        """The matrix, memory-mapped read-only (the OS page cache is the one
        copy that every process mapping the file shares)."""
        if self.shape[0] == 0:
            return np.zeros(self.shape, self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset,
                         shape=self.shape)

    def identity(self) -> dict:
        """The source file's identity and the region read from it: a file derived
        from these features (the .ibp cache) is valid while this is unchanged."""
        return {"file": file_identity(self.path), "shape": list(self.shape),
                "dtype": self.dtype.str, "offset": self.offset}

    def to_json(self) -> dict:
        return {"path": str(self.path), "shape": list(self.shape), "dtype": self.dtype.str,
                "offset": self.offset}

    @classmethod
    def from_json(cls, d: dict) -> "FeatureSource":
        return cls(Path(d["path"]), tuple(d["shape"]), np.dtype(d["dtype"]), int(d["offset"]))




def _npz_member(npz: Path, key: str):
    """(zip info, data offset or None, npy header) of member `key` of an .npz.
    The offset is where the array's data starts when the member is stored
    uncompressed (np.savez), so it can be memory-mapped in place."""
    with zipfile.ZipFile(npz) as z:
        try:
            info = z.getinfo(f"{key}.npy")
        except KeyError:
            raise DatasetError(f"{npz}: no array {key!r} (has "
                               f"{[n[:-4] for n in z.namelist()]})") from None
        with z.open(info) as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            header = read(f)
            header_len = f.tell() if info.compress_type == zipfile.ZIP_STORED else None
    if info.compress_type != zipfile.ZIP_STORED:
        return info, None, header
    with open(npz, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
    return info, info.header_offset + 30 + name_len + extra_len + header_len, header


def _npz_features(npz: Path, key: str, out: Path, progress: bool) -> FeatureSource:
    """The 2-D array `key` of an .npz as a FeatureSource: mapped in place when
    stored uncompressed, else decompressed in chunks to the .npy `out` (a
    completed unpack of the same source is reused by a resumed preparation)."""
    info, offset, (shape, fortran, dtype) = _npz_member(npz, key)
    if len(shape) != 2 or fortran:
        raise DatasetError(f"{npz}: {key} must be a 2-D C-order array, got shape {shape}")
    if offset is not None:
        return FeatureSource(npz, shape, dtype, offset)
    phase = {"src": file_identity(npz), "member": key, "out": out.name}
    if _read_phase(out.parent, f"unpack-{out.stem}", phase) is not None:
        return FeatureSource.from_npy(out)
    tmp = _tmp(out)
    dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
    row_bytes = shape[1] * np.dtype(dtype).itemsize
    step = max(1, (64 << 20) // max(1, row_bytes))
    with zipfile.ZipFile(npz) as z, z.open(info) as f, \
            _progress(shape[0], f"unpack {key}", progress) as bar:
        version = np.lib.format.read_magic(f)
        (np.lib.format.read_array_header_1_0 if version == (1, 0)
         else np.lib.format.read_array_header_2_0)(f)
        flat = dst.reshape(-1).view(np.uint8) if dst.size else None
        for a in range(0, shape[0], step):
            n = min(step, shape[0] - a)
            buf = flat[a * row_bytes:(a + n) * row_bytes]
            got = f.readinto(memoryview(buf))
            while got < buf.nbytes:
                more = f.readinto(memoryview(buf[got:]))
                if not more:
                    raise DatasetError(f"{npz}: {key} is shorter than its header says")
                got += more
            bar.update(n)
    dst.flush()
    del dst
    _publish(tmp, out)
    _write_phase(out.parent, f"unpack-{out.stem}", phase, [out.name])
    return FeatureSource.from_npy(out)


def _csv_features(src: Path, num_nodes: int, out: Path, progress: bool) -> FeatureSource:
    """node-feat.csv.gz parsed in chunks into the .npy `out` (as ogb parses it:
    float64 then float32, or int64 for integer files)."""
    import pandas as pd

    phase = {"src": file_identity(src), "num_nodes": num_nodes, "out": out.name}
    if _read_phase(out.parent, f"parse-{out.stem}", phase) is not None:
        return FeatureSource.from_npy(out)
    tmp = _tmp(out)
    dst = None
    row = 0
    with _progress(num_nodes, f"parse {src.name}", progress) as bar:
        for chunk in pd.read_csv(src, compression="gzip", header=None, chunksize=1 << 16):
            v = chunk.values
            v = v.astype(np.int64) if "int" in str(v.dtype) else v.astype(np.float32)
            if dst is None:
                dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=v.dtype,
                                                shape=(num_nodes, v.shape[1]))
            if row + len(v) > num_nodes:
                raise DatasetError(f"{src}: more rows than the {num_nodes} nodes of the graph")
            dst[row:row + len(v)] = v
            row += len(v)
            bar.update(len(v))
    if dst is None or row != num_nodes:
        raise DatasetError(f"{src}: {row} rows for {num_nodes} nodes")
    dst.flush()
    del dst
    _publish(tmp, out)
    _write_phase(out.parent, f"parse-{out.stem}", phase, [out.name])
    return FeatureSource.from_npy(out)


def _read_csv_gz(path: Path) -> np.ndarray:
    import pandas as pd

    return pd.read_csv(path, compression="gzip", header=None).values


