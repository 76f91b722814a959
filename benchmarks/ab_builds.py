"""Two builds of ibp_gnn._C timed against each other, taking turns.

    python benchmarks/ab_builds.py A.so B.so --datasets reddit,syn_papers

On the shared VMs, the speed of a build moves by 10-45% from one run to the
next (README, "a second speed run"), so comparing runs made minutes apart
cannot show a change of a few percent. This script compresses each dataset
once with the installed ibp_gnn, and times the C++ entry of each build
(`CpuGather.gather`, one thread) on the same tables and ids, taking turns
round by round; torch.index_select is timed in the same rounds. Each build
runs in a worker process of its own: two builds of one pybind11 module cannot
share a process (Python hands back the module already imported under that
name, and pybind11 refuses a second registration of its types), and the
script's first version, which loaded both into one process, timed the
installed build twice. Each worker checks that its build's rows are
bit-identical to x[idx] before it times them, and prints the file it loaded.

Output, per dataset and batch size: each build's median time per call, the
median over rounds of B's time / A's time, and each build's ratio to
index_select. Pass the same file twice to measure the harness's own bias.

A build is a `_C.cpython-*.so` from a build/ folder (copy it out before
rebuilding there). Both must read the format that the installed ibp_gnn
writes.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# benchmarks/ on sys.path for `import codec`. codec, torch and ibp_gnn are
# imported inside the functions that need them: a worker must load its build
# as ibp_gnn._C before anything imports the installed one.
sys.path.insert(0, str(Path(__file__).resolve().parent))

# CpuGather.gather's kernel argument, by name (csrc/ibp/gather.h, CpuKernel)
KERNELS = ("auto", "portable", "bmi2", "avx2", "avx512")
BATCHES = ((1024, 8), (100_000, 2))  # (ids per call, batches cycled), as codec.py
ARRAYS = ("header", "table", "bases", "rel", "payload", "x")


def load_build(path: str):
    """The module of one build, as ibp_gnn._C in a process that has none yet."""
    if not Path(path).is_file():
        raise SystemExit(f"ab_builds: build {path!r} is not a file")
    spec = importlib.util.spec_from_file_location("ibp_gnn._C", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def aligned_empty(shape, dtype, align: int = 64) -> np.ndarray:
    """An uninitialised array whose data starts at a multiple of `align` bytes,
    like the outputs of torch's CPU allocator (64), which the gather's
    non-temporal stores need; numpy's own are 16-byte aligned. (As
    ibp_gnn._tensor.empty_aligned, which a worker cannot import: ibp_gnn
    would load the installed _C beside the build under test.)"""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf = np.empty(nbytes + align, np.uint8)
    at = (-buf.ctypes.data) % align
    return buf[at:at + nbytes].view(dtype).reshape(shape)


def worker(path: str, kernel: int = 0) -> None:
    """Serves one build: reads a command per line on stdin, answers a JSON line.

    load DIR N CYCLE: the case saved in DIR (ARRAYS, ids0..), checked against x[idx];
    round REPS: thread CPU seconds per call over REPS passes of the batches; quit."""
    mod = load_build(path)
    print(json.dumps({"file": str(Path(mod.__file__).resolve())}), flush=True)
    call = ids = out = None
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "load":
            d, n, cycle = Path(cmd[1]), int(cmd[2]), int(cmd[3])
            # (mapped, not read: the large case's x and payload are GBs each)
            arr = {k: np.load(d / f"{k}.npy", mmap_mode="r") for k in ARRAYS}
            table = mod.build_decode_table(arr["table"])
            call = mod.CpuGather(arr["header"].tobytes(), table, np.array(arr["bases"]),
                                 np.array(arr["rel"]), arr["payload"]).gather
            ids = [np.load(d / f"ids{i}.npy") for i in range(cycle)]
            x = arr["x"]
            out = aligned_empty((n,) + x.shape[1:], x.dtype)
            ok = True
            for i in ids:
                if call(i.ctypes.data, n, True, out.ctypes.data, 1, True, kernel) != 0:
                    ok = False
                ok = ok and np.array_equal(out.view(np.uint8), x[i].view(np.uint8))
            print(json.dumps({"exact": ok}), flush=True)
        elif cmd[0] == "round":
            reps = int(cmd[1])
            ptr, n = out.ctypes.data, len(ids[0])
            ptrs = [i.ctypes.data for i in ids]  # an array's .ctypes costs ~1 us
            t0 = time.thread_time()
            for _ in range(reps):
                for i in ptrs:
                    call(i, n, True, ptr, 1, True, kernel)
            print(json.dumps({"s": (time.thread_time() - t0) / (reps * len(ids))}), flush=True)
        else:
            return


class Worker:
    def __init__(self, path: str, kernel: int = 0):
        self.p = subprocess.Popen([sys.executable, __file__, "--worker", path, str(kernel)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.file = self.ask(None)["file"]

    def ask(self, line):
        if line is not None:
            self.p.stdin.write(line + "\n")
            self.p.stdin.flush()
        got = self.p.stdout.readline()
        if not got:
            raise SystemExit(f"ab_builds: the worker of {self.p.args[-1]} ended "
                             f"(exit code {self.p.wait()})")
        return json.loads(got)

    def close(self):
        if self.p.poll() is None:
            self.p.stdin.write("quit\n")
            self.p.stdin.close()
            self.p.wait()


LARGE = "large"  # codec.py --large's 2 GB table; each round's ids are new rows (LARGE_BATCHES)
LARGE_BATCHES = ((1024, 2048), (100_000, 24))  # 2M / 2.4M rows a round: ~1 GB of payload


def features(name: str, quick: bool):
    import torch
    import codec
    from ibp_gnn.testing import load_shared
    if name == LARGE:
        import codec_large
        x, _ = codec_large.large_table(codec_large.LARGE_ROWS // (10 if quick else 1), codec.SEED)
        return torch.from_numpy(x)
    if name in codec.SYNTHETIC:
        x, _ = codec.synthetic(name, quick)
    else:
        x = load_shared(name)
        x = x.x if hasattr(x, "x") else x
    return torch.as_tensor(np.ascontiguousarray(x))


def compare(name: str, x, workers: dict, rounds: int, batches, tmp: Path,
            timing_only: bool = False) -> None:
    import torch
    import ibp_gnn
    import codec
    ct = ibp_gnn.compress(x, threads=2, progress=False)
    d = tmp / name
    d.mkdir()
    for k, v in (("header", np.frombuffer(ct._header, np.uint8)),
                 ("table", np.ascontiguousarray(ct._tables)), ("bases", ct._bases),
                 ("rel", ct._rel), ("payload", ct._payload), ("x", x.numpy())):
        np.save(d / f"{k}.npy", v)
    rng = np.random.default_rng(codec.SEED)
    for n, cycle in batches:
        ids = [rng.integers(0, x.shape[0], n) for _ in range(cycle)]
        for i, v in enumerate(ids):
            np.save(d / f"ids{i}.npy", v)
        for key, w in workers.items():
            if not w.ask(f"load {d} {n} {cycle}")["exact"]:
                if timing_only:
                    print(f"ab_builds: build {key} gathers rows of {name} that differ from "
                          "x[idx] (--timing-only: timed all the same)", flush=True)
                    continue
                raise SystemExit(f"ab_builds: build {key} gathers rows of {name} that "
                                 "differ from x[idx]")
        tids = [torch.from_numpy(i) for i in ids]
        out = torch.empty((n, x.shape[1]), dtype=x.dtype)
        reps = max(1, (1 << 22) // (n * cycle))  # a round of about 4M rows per method
        times = {key: [] for key in ("A", "B", "x[idx]")}
        for r in range(rounds):
            for key in (("A", "B") if r % 2 == 0 else ("B", "A")):
                times[key].append(workers[key].ask(f"round {reps}")["s"])
            t0 = time.thread_time()
            for _ in range(reps):
                for i in tids:
                    torch.index_select(x, 0, i, out=out)
            times["x[idx]"].append((time.thread_time() - t0) / (reps * cycle))
        med = {key: statistics.median(v) for key, v in times.items()}
        b_over_a = statistics.median(b / a for a, b in zip(times["A"], times["B"]))
        print(f"{name:14s} batch {n:6d}: A {med['A'] * 1e6:9.1f} us  B {med['B'] * 1e6:9.1f} us"
              f"  B/A {b_over_a:.3f}  index_select {med['x[idx]'] * 1e6:9.1f} us"
              f"  (ratio A {med['x[idx]'] / med['A']:.3f}, B {med['x[idx]'] / med['B']:.3f})",
              flush=True)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        if len(argv) != 3:
            raise SystemExit(f"ab_builds: --worker takes a build path and a kernel, got {argv[1:]!r}")
        return worker(argv[1], int(argv[2]))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", help="build A: a _C.cpython-*.so")
    p.add_argument("b", help="build B: a _C.cpython-*.so")
    p.add_argument("--datasets", default="reddit",
                   help="comma-separated shared or synthetic datasets (codec.py names), or "
                        f"'{LARGE}': codec.py --large's 2 GB table, the ids of each round new "
                        "rows (the table's rows from DRAM, for both builds and index_select)")
    p.add_argument("--rounds", type=int, default=20, help="turns of each build (default 20)")
    p.add_argument("--quick", action="store_true",
                   help="the synthetic datasets at codec.py --quick size")
    p.add_argument("--batch", type=int, action="append",
                   help="ids per call (repeatable; default 1024 and 100000)")
    p.add_argument("--timing-only", action="store_true",
                   help="time a build whose rows differ from x[idx] instead of stopping (cut-"
                        "down builds that bound what a part of the decode costs)")
    p.add_argument("--kernel", default="auto", choices=KERNELS,
                   help="the CPU kernel both builds run (default auto: the best this CPU has), "
                        "e.g. avx2 to time that kernel on an AVX-512 host")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1, got {args.rounds}")
    import codec
    names = [d for d in args.datasets.split(",") if d]
    unknown = [d for d in names
               if d not in codec.SHARED_DATASETS and d not in codec.SYNTHETIC and d != LARGE]
    if unknown:
        p.error(f"unknown dataset(s) {unknown}; known: "
                f"{', '.join(codec.SHARED_DATASETS + codec.SYNTHETIC + (LARGE,))}")
    if args.batch and min(args.batch) < 1:
        p.error(f"--batch must be >= 1, got {min(args.batch)}")
    for path in (args.a, args.b):
        if not Path(path).is_file():
            raise SystemExit(f"ab_builds: build {path!r} is not a file")
    batches = [(n, 8 if n <= 4096 else 2) for n in args.batch] if args.batch else BATCHES
    import torch
    torch.set_num_threads(1)
    kernel = KERNELS.index(args.kernel)
    workers = {"A": Worker(args.a, kernel), "B": Worker(args.b, kernel)}
    try:
        print(f"A = {workers['A'].file}\nB = {workers['B'].file}\none thread, thread CPU "
              f"clock, {args.rounds} rounds, one worker process per build; "
              f"kernel {args.kernel}; {codec.cpu_model()}; load avg {codec.loadavg()}",
              flush=True)
        with tempfile.TemporaryDirectory(prefix="ab_builds_") as tmp:
            for name in names:
                compare(name, features(name, args.quick), workers, args.rounds,
                        LARGE_BATCHES if name == LARGE and not args.batch else batches,
                        Path(tmp), args.timing_only)
    finally:
        for w in workers.values():
            w.close()


if __name__ == "__main__":
    main()
