"""Test and benchmark helpers: the real feature matrices in ../shared/datasets
and a CUDA skip marker. Nothing here is needed at run time."""
from __future__ import annotations

import io
import os
import pickle
import types
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np

# Dataset name -> loader; the matrices are returned as C-contiguous numpy arrays.
SHARED_DATASETS = ("cora", "citeseer", "actor", "squirrel", "chameleon", "tolokers", "cora_ml",
                   "inj_amazon", "reddit", "enron", "books", "disney")


def shared_dir() -> Optional[Path]:
    """../shared/datasets next to the checkout (or $IBP_GNN_SHARED_DATASETS), if present."""
    env = os.environ.get("IBP_GNN_SHARED_DATASETS")
    candidates = [Path(env)] if env else []
    root = Path(__file__).resolve().parent.parent
    candidates += [root.parent / "shared" / "datasets", Path.cwd().parent / "shared" / "datasets"]
    for c in candidates:
        if (c / "README.md").is_file():
            return c
    return None


def _planetoid(folder: Path, name: str) -> np.ndarray:
    parts = []
    for part in ("allx", "tx"):
        with open(folder / f"ind.{name}.{part}", "rb") as f:
            parts.append(pickle.load(f, encoding="latin1"))
    import scipy.sparse as sp

    return np.ascontiguousarray(sp.vstack(parts).toarray().astype(np.float32))


def _csr_npz(path: Path) -> np.ndarray:
    import scipy.sparse as sp

    d = np.load(path, allow_pickle=True)
    m = sp.csr_matrix((d["attr_data"], d["attr_indices"], d["attr_indptr"]),
                      shape=tuple(d["attr_shape"]))
    return np.ascontiguousarray(m.toarray().astype(np.float32))


class _Stub:
    """Stands in for torch_geometric classes when unpickling a saved Data."""

    def __init__(self, *args, **kwargs):
        self.state = {}

    def __setstate__(self, state):
        self.state = state


class _StubUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.startswith("torch_geometric"):
            return _Stub
        return super().find_class(module, name)


def _find_tensor(obj, key: str):
    import torch

    if isinstance(obj, torch.Tensor):
        return None
    if isinstance(obj, _Stub):
        return _find_tensor(obj.state, key)
    if isinstance(obj, dict):
        if isinstance(obj.get(key), torch.Tensor):
            return obj[key]
        for v in obj.values():
            t = _find_tensor(v, key)
            if t is not None:
                return t
    if isinstance(obj, (list, tuple)):
        for v in obj:
            t = _find_tensor(v, key)
            if t is not None:
                return t
    return None


def _pygod(path: Path) -> np.ndarray:
    import torch

    with zipfile.ZipFile(path) as z:
        inner = z.read(z.namelist()[0])
    mod = types.ModuleType("stub_pickle")
    mod.Unpickler = _StubUnpickler
    mod.load = pickle.load
    data = torch.load(io.BytesIO(inner), pickle_module=mod, weights_only=False)
    x = _find_tensor(data, "x")
    if x is None:
        raise ValueError(f"no node feature tensor 'x' in {path}")
    return np.ascontiguousarray(x.numpy())


def load_shared(name: str) -> np.ndarray:
    """Feature matrix of a dataset in ../shared/datasets (FileNotFoundError if absent)."""
    root = shared_dir()
    if root is None:
        raise FileNotFoundError("../shared/datasets is not present")
    if name in ("cora", "citeseer"):
        return _planetoid(root / name, name)
    if name == "cora_ml":
        return _csr_npz(root / "cora_ml" / "cora_ml.npz")
    if name in ("actor", "squirrel", "chameleon", "tolokers", "texas", "cornell", "wisconsin"):
        return np.ascontiguousarray(np.load(root / "heterophilous_npz" / f"{name}.npz")["node_features"])
    if name in ("inj_amazon", "reddit", "enron", "books", "disney"):
        return _pygod(root / "pygod" / f"{name}.pt.zip")
    raise ValueError(f"load_shared: unknown dataset {name!r}; known: {', '.join(SHARED_DATASETS)}")


_FLIP_CHILD = """
import sys
import numpy as np, torch, ibp_gnn
{make}
rng = np.random.default_rng({seed})
refused = 0
for trial in range({trials}):
    p = ct._payload.copy()
    for b in rng.integers(0, ct._fields["payload_bits"], rng.integers(1, 4)):
        p[b // 32] ^= np.uint32(1 << int(b % 32))
    try:
        t = ibp_gnn.CompressedTensor(ct._header, ct._tables, ct._bases, ct._rel, p)
    except ibp_gnn.FormatError:
        refused += 1
        continue
    t.gather(torch.arange(len(t)))
print("refused", refused)
"""


def refused_bit_flips(make: str, trials: int, *, seed: int = 0, timeout: float = 300) -> int:
    """Damages a tensor `trials` times in a child process (a crash fails the
    caller, not the test runner): `make` is Python code that binds `ct`; each
    trial flips 1-3 random payload bits (no CRC catches them) and either the
    structural check refuses the tensor (FormatError) or every row is gathered.
    Returns how many trials were refused; raises AssertionError with the
    child's stderr when it did not exit cleanly."""
    import subprocess
    import sys

    code = _FLIP_CHILD.format(make=make, seed=seed, trials=trials)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return int(r.stdout.split()[-1])


def before_guard_page(payload: np.ndarray) -> np.ndarray:
    """A copy of the uint32 array `payload` placed so that it ends where an
    unreadable page begins: a decoder that reads past the payload faults
    (SIGSEGV) instead of reading stale memory. Use it in a child process; the
    returned array keeps its mapping alive."""
    import ctypes
    import mmap

    payload = np.ascontiguousarray(payload, np.uint32)
    page = mmap.PAGESIZE
    size = -(-payload.nbytes // page) * page
    buf = mmap.mmap(-1, size + page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if libc.mprotect(addr + size, page, 0) != 0:  # the page after the payload faults
        raise OSError(ctypes.get_errno(), "mprotect of the guard page failed")
    tight = np.frombuffer(buf, np.uint32, payload.size, size - payload.nbytes)
    tight[:] = payload
    return tight
