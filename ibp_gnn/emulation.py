"""The project's CUDA kernels run on the CPU (csrc/testing/cuda_emu.h).

CMake's ``IBP_CUDA_EMU`` option (``make emu``) compiles the real ``.cu``
sources as host C++ into ``build/emu/libibp_emu.so``: every CUDA thread a
fiber, warp collectives checked lane by lane, host-memory traffic counted.
`Emulator` loads it and offers the CUDA entry points of ``ibp_gnn._C`` under
the same names and arguments, taking host addresses instead of device ones,
so tests and benchmarks drive the GPU code paths without a GPU.

A library built with ``-fsanitize=address`` only loads into a process started
with the ASan runtime preloaded: `sanitized_env()` gives that environment.
Test and benchmark code only; nothing in ibp_gnn needs it at run time.
"""
from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT / "build" / "emu"
COUNTER_NAMES = ("launches", "host_loads", "host_bytes", "sector_requests", "distinct_sectors",
                 "round_trips")

_u64, _i64, _int, _vp = ctypes.c_uint64, ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
_ERR = 4096


class EmulationError(RuntimeError):
    """A kernel broke a rule of the CUDA execution model (divergent or
    deadlocked collectives, a collective naming an exited lane, ...)."""


def build_dir() -> Path:
    return Path(os.environ.get("IBP_EMU_DIR", DEFAULT_DIR))


def info(directory: Optional[Path] = None) -> Optional[dict]:
    """What CMake recorded about the emulated build (library path, sanitizers,
    the ASan runtime to preload), or None when it was not built."""
    f = (directory or build_dir()) / "ibp_emu.json"
    if not f.is_file():
        return None
    d = json.loads(f.read_text())
    return d if Path(d["library"]).is_file() else None


def sanitized_env(directory: Optional[Path] = None, base: Optional[dict] = None) -> dict:
    """An environment in which a child process can load a sanitized build."""
    env = dict(os.environ if base is None else base)
    d = info(directory)
    if d and d.get("asan_runtime"):
        pre = env.get("LD_PRELOAD", "")
        if d["asan_runtime"] not in pre.split(":"):
            env["LD_PRELOAD"] = ":".join(p for p in (d["asan_runtime"], pre) if p)
        # Python and torch are not built with ASan: their allocations are not
        # leaks of ours, and their global initialisers are not our ODR.
        env.setdefault("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=1:detect_odr_violation=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return env


def asan_loaded() -> bool:
    """Whether this process runs with the ASan runtime (preloaded)."""
    try:
        ctypes.CDLL(None).__asan_init  # noqa: B018
        return True
    except AttributeError:
        return False


class Emulator:
    """The emulated CUDA entry points, on host addresses (ctypes)."""

    def __init__(self, library: os.PathLike):
        self.path = Path(library)
        lib = self._lib = ctypes.CDLL(str(self.path))
        err = [ctypes.c_char_p, ctypes.c_size_t]
        graph = [_vp, _int, _vp, _int, _u64, _u64]
        table = [_vp, _vp, _u64]
        mode = [_vp, _vp, _int, _vp]  # weight prefix sums, edge times, last, time bounds
        sig = {
            "ibp_emu_gather": [_vp, _vp, _vp, _vp, _vp, _vp, _int, _u64, _vp, _vp] + err,
            "ibp_emu_neighbor_count": graph + [_vp, _u64, _i64, _int, _vp] + mode + err,
            "ibp_emu_neighbor_pick": graph + [_vp, _u64, _u64, _i64, _int, _u64, ctypes.c_uint32,
                                              _vp, _vp, _vp, _vp] + mode + err,
            "ibp_emu_relabel_insert": table + [_vp, _u64, _u64] + err,
            "ibp_emu_relabel_mark": table + [_vp, _u64, _u64, _vp] + err,
            "ibp_emu_relabel_finish": table + [_vp, _u64, _u64, _vp, _vp, _vp] + err,
            "ibp_emu_relabel_commit": table + [_vp, _u64, _u64, _vp] + err,
        }
        for name, args in sig.items():
            f = getattr(lib, name)
            f.argtypes, f.restype = args, _int
        lib.ibp_emu_counters.argtypes, lib.ibp_emu_counters.restype = [_vp], None
        lib.ibp_emu_reset_counters.argtypes, lib.ibp_emu_reset_counters.restype = [], None
        lib.ibp_emu_sanitized.restype = _int

    @classmethod
    def load(cls, directory: Optional[Path] = None) -> "Emulator":
        d = info(directory)
        if d is None:
            raise FileNotFoundError(f"no emulated CUDA build in {directory or build_dir()}: run "
                                    "`make emu`")
        return cls(d["library"])

    @property
    def sanitized(self) -> bool:
        return bool(self._lib.ibp_emu_sanitized())

    def _call(self, name: str, *args) -> int:
        buf = ctypes.create_string_buffer(_ERR)
        rc = getattr(self._lib, name)(*args, buf, _ERR)
        if rc == -2:
            raise EmulationError(buf.value.decode(errors="replace"))
        return rc

    # ---- counters -----------------------------------------------------------
    def counters(self) -> dict:
        """Totals since the last reset: host loads (per lane), host bytes, 32-byte
        sector requests (per warp-wide load), distinct sectors (per launch, summed),
        dependent round trips (per warp, summed) -- see cuda_emu.h."""
        out = (ctypes.c_uint64 * len(COUNTER_NAMES))()
        self._lib.ibp_emu_counters(out)
        return dict(zip(COUNTER_NAMES, (int(v) for v in out)))

    def reset_counters(self) -> None:
        self._lib.ibp_emu_reset_counters()

    # ---- the CUDA entry points of ibp_gnn._C ---------------------------------------
    def gather_cuda(self, header: bytes, table: int, bases: int, rel: int, payload: int, ids: int,
                    ids64: bool, n: int, positions: int, out: int, stream: int = 0) -> int:
        del stream  # kernels run synchronously on the calling thread
        return self._call("ibp_emu_gather", header, table, bases, rel, payload, ids, int(ids64), n,
                          positions or None, out)

    def neighbor_count_cuda(self, graph, frontier, n, fanout, replace, counts, stream=0,
                            mode=(0, 0, False), bounds=0):
        self._check(self._call("ibp_emu_neighbor_count", *graph, frontier, n, fanout,
                               int(replace), counts, mode[0], mode[1], int(mode[2]), bounds),
                    "neighbor_count_cuda")

    def neighbor_pick_cuda(self, graph, frontier, n, first_local, fanout, replace, seed, hop,
                           offsets, edge, nbr, col, stream=0, mode=(0, 0, False), bounds=0):
        self._check(self._call("ibp_emu_neighbor_pick", *graph, frontier, n, first_local, fanout,
                               int(replace), seed, hop, offsets, edge, nbr, col, mode[0],
                               mode[1], int(mode[2]), bounds), "neighbor_pick_cuda")

    def relabel_insert_cuda(self, table, ids, n, base, stream=0):
        self._check(self._call("ibp_emu_relabel_insert", *table, ids, n, base),
                    "relabel_insert_cuda")

    def relabel_mark_cuda(self, table, ids, n, base, first, stream=0):
        self._check(self._call("ibp_emu_relabel_mark", *table, ids, n, base, first),
                    "relabel_mark_cuda")

    def relabel_finish_cuda(self, table, ids, n, base, rank, row, new_nodes, stream=0):
        self._check(self._call("ibp_emu_relabel_finish", *table, ids, n, base, rank, row,
                               new_nodes), "relabel_finish_cuda")

    def relabel_commit_cuda(self, table, ids, n, base, rank, stream=0):
        self._check(self._call("ibp_emu_relabel_commit", *table, ids, n, base, rank),
                    "relabel_commit_cuda")

    def gather(self, ct, ids, *, sort: bool = True, out=None):
        """Rows `ids` of CompressedTensor `ct` by the emulated CUDA kernel, called
        as CompressedTensor._gather_cuda calls _C.gather_cuda (ids sorted, with
        output positions) but on host arrays; `out` a contiguous CPU tensor."""
        import numpy as np
        import torch

        ids = np.ascontiguousarray(np.asarray(ids))
        ct._check_rows(ids, "emulation gather")
        n = len(ids)
        if out is None:
            out = torch.empty((n, ct.shape[1]), dtype=ct.dtype)
        run_ids, positions = ids, None
        if sort and n > 1:
            order = np.argsort(ids, kind="stable")
            run_ids, positions = np.ascontiguousarray(ids[order]), order.astype(np.int64)
        table = np.ascontiguousarray(ct._decode_table)
        payload = np.ascontiguousarray(ct._payload)
        err = self.gather_cuda(ct._header, table.ctypes.data, ct._bases.ctypes.data,
                               ct._rel.ctypes.data, payload.ctypes.data, run_ids.ctypes.data,
                               run_ids.dtype == np.int64, n,
                               positions.ctypes.data if positions is not None else 0,
                               out.data_ptr() if out.numel() else 0)
        if err != 0:
            raise RuntimeError(f"gather_cuda: CUDA kernel launch failed with cudaError {err}")
        return out

    @staticmethod
    def _check(err: int, op: str) -> None:
        if err != 0:
            raise RuntimeError(f"sampler {op}: CUDA kernel launch failed with cudaError {err}")
