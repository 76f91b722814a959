"""Nothing a caller does ends the process or returns stale data: hostile
arguments, concurrent use, files changed underneath, memory limits.

Cases that used to kill the process (abort, SIGSEGV, SIGBUS) run in a
subprocess, so that a regression fails its test instead of the suite."""
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import ibp_gnn
from ibp_gnn import _C, _files
from ibp_gnn._tensor import MAX_ROW_WORDS, MAX_THREADS
from ibp_gnn.stores import IBPStore

from conftest import assert_bits_equal, special_matrix

ROOT = Path(__file__).resolve().parents[1]


def run_child(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter; the test reads rc/stdout/stderr."""
    path = os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=str(ROOT))


def assert_clean_exit(p: subprocess.CompletedProcess) -> None:
    assert p.returncode == 0, (
        f"child ended with {p.returncode} "
        f"({signal.Signals(-p.returncode).name if p.returncode < 0 else 'exit'}):\n"
        f"{p.stdout[-2000:]}\n{p.stderr[-4000:]}")


@pytest.fixture(scope="module")
def x():
    return special_matrix(torch.float32, 3000, 96)


@pytest.fixture(scope="module")
def ct(x):
    return ibp_gnn.compress(x)


# ---- 1. thread counts and thread pools ---------------------------------------------------------
def test_thread_creation_failure_runs_the_work_on_the_caller():
    """Threads that cannot be created (address-space limit: no room for their
    stacks) used to end the process with 'terminate called without an active
    exception'; the work now runs on the calling thread."""
    p = run_child("""
        import resource, threading, numpy as np, torch, ibp_gnn
        from ibp_gnn import _C
        from conftest import special_matrix
        x = special_matrix(torch.float32, 4000, 128)
        ct = ibp_gnn.compress(x, threads=1)
        idx = torch.randint(0, 4000, (4000,), generator=torch.Generator().manual_seed(1))
        want = x[idx]
        out = torch.empty_like(want)
        out2 = torch.empty_like(want)
        raw = out.view(torch.uint8).reshape(-1).numpy()
        ids = idx.clone()
        vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        # Room for a few thread stacks (8 MiB each), not for 64: some threads start, then
        # one fails, which is when the pool used to abort.
        resource.setrlimit(resource.RLIMIT_AS, (vm + (40 << 20), resource.RLIM_INFINITY))
        try:
            release, started = threading.Event(), []
            for _ in range(16):
                t = threading.Thread(target=release.wait)
                try:
                    t.start()
                except RuntimeError:
                    break
                started.append(t)
            release.set()
            for t in started:
                t.join()
            print("started", len(started))
            # the private core with many threads, then the public entry with a huge count
            _C.gather(ct._header, ct._decode_table, ct._bases, ct._rel, ct._payload,
                      ids.numpy(), raw, 64)
            ct.gather(ids, out=out2, threads=2000)
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY,) * 2)
        assert torch.equal(out.view(torch.int32), want.view(torch.int32))
        assert torch.equal(out2.view(torch.int32), want.view(torch.int32))
        print("ok")
    """)
    assert_clean_exit(p)
    assert "ok" in p.stdout
    started = int(p.stdout.split("started")[1].split()[0])
    assert 0 < started < 16, f"{started} threads started: the limit did not bite as planned"


@pytest.mark.parametrize("threads", [2000, 10**6, 2**31, 2**63, 10**30, np.int64(2),
                                     np.int32(3), np.uint64(2**40)])
def test_gather_accepts_any_positive_thread_count(ct, x, threads):
    idx = torch.randint(0, len(x), (2000,))
    assert_bits_equal(ct.gather(idx, threads=threads), x[idx])


@pytest.mark.parametrize("threads", [0, -1, -2**63, 1.5, "2", True, np.float64(2.0), [2]])
def test_bad_thread_counts_name_the_argument(ct, threads):
    with pytest.raises(ValueError, match=r"CompressedTensor.gather: threads must be a positive "
                                         r"int, got "):
        ct.gather(torch.tensor([1]), threads=threads)


def test_compress_load_compress_file_cap_threads(x, tmp_path):
    ct = ibp_gnn.compress(x[:500], threads=10**6)
    ct.save(tmp_path / "a.ibp")
    b = ibp_gnn.load(tmp_path / "a.ibp", threads=2**31)
    assert_bits_equal(b.decompress(threads=np.int64(2)), x[:500])
    np.save(tmp_path / "a.npy", x[:500].numpy())
    ibp_gnn.compress_file(tmp_path / "a.npy", tmp_path / "b.ibp", threads=2**63,
                          progress=False)
    assert (tmp_path / "a.ibp").read_bytes() == (tmp_path / "b.ibp").read_bytes()
    assert MAX_THREADS <= 256
    for fn, kw in ((ibp_gnn.compress, {}),):
        with pytest.raises(ValueError, match="compress: threads"):
            fn(x[:10], threads=0, **kw)
    with pytest.raises(ValueError, match="load: threads"):
        ibp_gnn.load(tmp_path / "a.ibp", threads=-3)


# ---- 4. gather: ids and out ----------------------------------------------------------------------
def test_ids_sharing_memory_with_out():
    """ids that are a view of `out` used to be read again while out was being
    written: decoded as wild row numbers (out-of-bounds reads)."""
    p = run_child("""
        import torch, ibp_gnn
        g = torch.Generator().manual_seed(0)
        x = torch.randint(-2**62, 2**62, (5000, 2), generator=g, dtype=torch.int64)
        ct = ibp_gnn.compress(x)
        for threads in (1, 2):
            out = torch.empty((4096, 2), dtype=torch.int64)
            ids = out.view(-1)[:4096]  # row i of out overwrites ids 2i and 2i + 1
            ids.copy_(torch.randint(0, 5000, (4096,), generator=g))
            want = x[ids.clone()]
            ct.gather(ids, out=out, threads=threads)
            assert torch.equal(out, want)
        print("ok")
    """)
    assert_clean_exit(p)
    assert "ok" in p.stdout


def test_ids_changed_by_another_thread_during_gather():
    """The GIL is released while decoding: another thread writing huge values
    into the ids must lead to correct rows or an IndexError, never a wild read."""
    p = run_child("""
        import threading, time, torch, ibp_gnn
        g = torch.Generator().manual_seed(0)
        x = torch.randn(20000, 64, generator=g)
        ct = ibp_gnn.compress(x)
        ids = torch.randint(0, 20000, (20000,), generator=g)
        good = ids.clone()
        stop = threading.Event()
        def scribble():
            while not stop.is_set():
                ids[::7] = 2**40
                ids.copy_(good)
        t = threading.Thread(target=scribble)
        t.start()
        ok = bad = 0
        end = time.time() + 1.0
        try:
            while time.time() < end:
                try:
                    out = ct.gather(ids, threads=2)
                except IndexError:
                    bad += 1
                    continue
                assert torch.equal(out.view(torch.int32), x[good].view(torch.int32))
                ok += 1
        finally:
            stop.set()
            t.join()
        print("ok", ok, bad)
    """)
    assert_clean_exit(p)
    assert "ok" in p.stdout


def test_out_over_a_read_only_memory_map_is_rejected(tmp_path):
    """Used to segfault (the decoder wrote into a PROT_READ mapping)."""
    p = run_child(f"""
        import warnings, numpy as np, torch, ibp_gnn
        x = torch.randn(100, 16)
        ct = ibp_gnn.compress(x)
        np.save({str(tmp_path / 'o.npy')!r}, np.zeros((10, 16), np.float32))
        m = np.load({str(tmp_path / 'o.npy')!r}, mmap_mode="r")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = torch.from_numpy(m)
        try:
            ct.gather(torch.arange(10), out=out)
        except ValueError as e:
            assert "read-only" in str(e), e
            print("ok")
    """)
    assert_clean_exit(p)
    assert "ok" in p.stdout


def test_torch_tensor_set_onto_a_read_only_map_is_rejected(tmp_path):
    """ct.gather skips the syscall that checks out for tensors whose storage
    torch allocated (resizable); a tensor of torch's moved onto a read-only
    mapping with set_() has the mapping's storage, so it is still checked."""
    p = run_child(f"""
        import warnings, numpy as np, torch, ibp_gnn
        ct = ibp_gnn.compress(torch.randn(100, 16))
        np.save({str(tmp_path / 'o.npy')!r}, np.zeros((10, 16), np.float32))
        m = np.load({str(tmp_path / 'o.npy')!r}, mmap_mode="r")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ro = torch.from_numpy(m)
        out = torch.empty(0).set_(ro.untyped_storage(), 0, (10, 16))
        assert not out.untyped_storage().resizable()
        try:
            ct.gather(torch.arange(10), out=out)
        except ValueError as e:
            assert "read-only" in str(e), e
            print("ok")
        fine = torch.empty(10, 16)
        assert fine.untyped_storage().resizable()
        assert ct.gather(torch.arange(10), out=fine) is fine
    """)
    assert_clean_exit(p)
    assert "ok" in p.stdout


def test_read_only_numpy_out_is_rejected_writeable_is_filled(ct, x):
    ro = np.zeros((3, 96), np.float32)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match=r"out is a read-only numpy array"):
        ct.gather(torch.tensor([1, 2, 3]), out=ro)
    assert not ro.any()
    rw = np.zeros((3, 96), np.float32)
    got = ct.gather(np.array([4, 5, 6]), out=rw)
    assert got is rw
    assert_bits_equal(torch.from_numpy(rw), x[[4, 5, 6]])


# ---- 5. memory-mapped files changed underneath -------------------------------------------------
def _bump_mtime_if_unchanged(path: Path, before: os.stat_result) -> None:
    """Coarse file-system clocks can give an in-place write the old mtime; a
    real overwrite comes later than a load, so move the clock as it would."""
    st = os.stat(path)
    if st.st_mtime_ns == before.st_mtime_ns:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_truncated_mmap_file_raises_instead_of_sigbus(tmp_path):
    p = run_child(f"""
        import os, torch, ibp_gnn
        x = torch.randn(4000, 64)
        path = {str(tmp_path / 'f.ibp')!r}
        ibp_gnn.compress(x).save(path)
        ct = ibp_gnn.load(path, mmap=True)
        assert torch.equal(ct.gather(torch.arange(10)), x[:10])
        os.truncate(path, 4096)
        try:
            ct.gather(torch.arange(3990, 4000))
        except ibp_gnn.FileChangedError as e:
            assert "modified in place" in str(e) and path in str(e), e
            print("ok")
    """)
    assert_clean_exit(p)
    assert "ok" in p.stdout


def test_file_overwritten_in_place_is_detected(tmp_path):
    x = special_matrix(torch.float32, 500, 32)
    y = special_matrix(torch.float32, 500, 32, seed=5)
    path = tmp_path / "f.ibp"
    ibp_gnn.compress(x).save(path)
    ibp_gnn.compress(y).save(tmp_path / "g.ibp")
    ct = ibp_gnn.load(path, mmap=True)
    before = os.stat(path)
    with open(path, "r+b") as f:  # what `cp g.ibp f.ibp` does: same inode, new bytes
        f.write((tmp_path / "g.ibp").read_bytes())
        f.truncate()
    _bump_mtime_if_unchanged(path, before)
    with pytest.raises(ibp_gnn.FileChangedError, match="modified in place"):
        ct.gather(torch.tensor([0]))
    with pytest.raises(ibp_gnn.FileChangedError, match="modified in place"):
        ct.check_file()


def test_atomic_replacement_keeps_old_rows_and_check_file_reports_it(tmp_path):
    x = special_matrix(torch.float32, 500, 32)
    y = special_matrix(torch.float32, 500, 32, seed=5)
    path = tmp_path / "f.ibp"
    ibp_gnn.compress(x).save(path)
    ct = ibp_gnn.load(path, mmap=True)
    ct.check_file()
    ibp_gnn.compress(y).save(path)  # atomic: the mapped file lives on, unchanged
    assert_bits_equal(ct.gather(torch.arange(500)), x)
    with pytest.raises(ibp_gnn.FileChangedError, match="names another file"):
        ct.check_file()
    assert_bits_equal(ibp_gnn.load(path, mmap=True).decompress(), y)
    ibp_gnn.compress(x).check_file()  # in memory: nothing to check


def test_stores_check_their_files_at_epoch_start(tmp_path):
    from ibp_gnn.pyg import IBPFeatureStore
    from ibp_gnn.stores import IBPStore

    x = special_matrix(torch.float32, 300, 16)
    path = tmp_path / "f.ibp"
    ibp_gnn.compress(x).save(path)
    fs = IBPFeatureStore()
    fs.put_tensor(ibp_gnn.load(path, mmap=True), group_name=None, attr_name="x", index=None)
    store = IBPStore(path)
    fs.check_files()
    store.check_files()
    pf = ibp_gnn.Prefetcher([1, 2], stores=[_Counted(fs)])
    assert list(pf) == [1, 2]
    ibp_gnn.compress(x[:10]).save(path)
    with pytest.raises(ibp_gnn.FileChangedError):
        fs.check_files()
    with pytest.raises(ibp_gnn.FileChangedError):
        store.check_files()
    with pytest.raises(ibp_gnn.FileChangedError):
        list(pf)


class _Counted:
    def __init__(self, fs):
        self.fs, self.bytes_read, self.raw_bytes_read = fs, 0, 0

    def check_files(self):
        self.fs.check_files()


# ---- 6, 8, 9. publishing files -----------------------------------------------------------------
def test_threads_saving_to_one_path_each_publish_a_whole_file(tmp_path):
    """The temporary was path.tmp<pid>: threads of one process overwrote each
    other's temporaries (corrupt results, FileNotFoundError)."""
    xs = [special_matrix(torch.float32, 400 + 50 * i, 24, seed=i) for i in range(4)]
    cts = [ibp_gnn.compress(v) for v in xs]
    path = tmp_path / "f.ibp"
    errors = []

    def work(k):
        try:
            for j in range(8):
                cts[(k + j) % 4].save(path)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    got = ibp_gnn.load(path).decompress()
    assert any(got.shape == v.shape and torch.equal(got.view(torch.int32), v.view(torch.int32))
               for v in xs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.ibp"]


@pytest.mark.parametrize("how", ["save", "compress_file"])
def test_files_are_fsynced_before_the_rename(tmp_path, monkeypatch, x, how):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", fd)), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(b))),
                                                      real_replace(a, b)))
    dst = tmp_path / "f.ibp"
    if how == "save":
        ibp_gnn.compress(x[:100]).save(dst)
    else:
        ibp_gnn.compress_file(x[:100].numpy(), dst, progress=False)
    kinds = [k for k, _ in events]
    assert "replace" in kinds and "fsync" in kinds[:kinds.index("replace")], events
    assert kinds[-1] == "fsync"  # the folder, after the rename
    assert ibp_gnn.load(dst).shape == (100, 96)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path, x):
    dst = tmp_path / "f.ibp"
    dead = _dead_pid()
    host = _files._HOST
    stale = [tmp_path / f"f.ibp.tmp{dead}-abcdef@{host}", tmp_path / f"f.ibp.tmp{dead}"]
    keep = [tmp_path / f"f.ibp.tmp{os.getppid()}-abcdef@{host}",   # a live process
            tmp_path / f"f.ibp.tmp{dead}-abcdef@otherhost",         # another host's
            tmp_path / f"g.ibp.tmp{dead}-abcdef@{host}",            # another file's
            tmp_path / f"f.ibp.tmp{dead}.txt"]                      # not a temporary
    for p in stale + keep:
        p.write_bytes(b"x" * 100)
    old = time.time() - 7200
    os.utime(stale[1], (old, old))  # old-style names are removed once an hour old
    ibp_gnn.compress_file(x[:50].numpy(), dst, progress=False)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in keep)
    stale[0].write_bytes(b"x")
    ibp_gnn.compress(x[:50]).save(dst)
    assert not stale[0].exists()


def test_compress_file_killed_midway_leaves_nothing_behind_the_next_run(tmp_path):
    """kill -9 during compress_file left dst.tmp<pid> files nothing removed."""
    src, dst = tmp_path / "big.npy", tmp_path / "big.ibp"
    np.save(src, np.random.default_rng(0).standard_normal((200000, 64)).astype(np.float32))
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, ibp_gnn; ibp_gnn.compress_file(sys.argv[1], "
         "sys.argv[2], chunk_bytes=1 << 16, threads=1, progress=False)", str(src), str(dst)],
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        deadline = time.time() + 60
        # kill it once its temporary holds some of the payload
        while time.time() < deadline and not any(
                p.stat().st_size > 0 for p in tmp_path.glob("big.ibp.tmp*")):
            if child.poll() is not None:
                break
            time.sleep(0.01)
        assert list(tmp_path.glob("big.ibp.tmp*")), "the child wrote no temporary"
    finally:
        child.kill()
        child.wait()
    assert not dst.exists()
    assert list(tmp_path.glob("big.ibp.tmp*")), "kill -9 left no temporary to clean"
    small = tmp_path / "small.npy"
    np.save(small, np.zeros((10, 4), np.float32))
    ibp_gnn.compress_file(small, dst, progress=False)
    assert not list(tmp_path.glob("big.ibp.tmp*"))
    assert ibp_gnn.load(dst).shape == (10, 4)


def test_compress_file_refuses_to_overwrite_its_source(tmp_path):
    src = tmp_path / "x.npy"
    np.save(src, np.arange(60, dtype=np.float32).reshape(10, 6))
    before = src.read_bytes()
    os.link(src, tmp_path / "hard.npy")
    os.symlink(src, tmp_path / "soft.ibp")
    for dst in (src, tmp_path / "." / "x.npy", tmp_path / "hard.npy", tmp_path / "soft.ibp"):
        with pytest.raises(ValueError, match=r"compress_file: dst .* is the source file itself"):
            ibp_gnn.compress_file(src, dst, progress=False)
    with pytest.raises(ValueError, match="is the source file itself"):
        ibp_gnn.compress_file(np.load(src, mmap_mode="r"), src, progress=False)
    with pytest.raises(ValueError, match="is the source file itself"):
        ibp_gnn.compress_file(np.load(src, mmap_mode="r")[2:], src, progress=False)
    assert src.read_bytes() == before
    with pytest.raises(IsADirectoryError, match="compress_file: dst"):
        ibp_gnn.compress_file(src, tmp_path, progress=False)


# ---- 12. pickling ----------------------------------------------------------------------------------
def test_pickling_a_mapped_tensor_sends_its_path(tmp_path):
    x = special_matrix(torch.float32, 5000, 64)
    path = tmp_path / "f.ibp"
    ibp_gnn.compress(x).save(path)
    ct = ibp_gnn.load(path, mmap=True)
    blob = pickle.dumps(ct)
    assert len(blob) < 1024 < ct.nbytes
    back = pickle.loads(blob)
    assert back.path == ct.path and back._source is not None
    assert_bits_equal(back.decompress(), x)
    # a spawned process maps the same file
    p = run_child(f"""
        import pickle, sys, torch
        ct = pickle.loads(bytes.fromhex({blob.hex()!r}))
        assert ct.path is not None
        print(int(ct.decompress().view(torch.int32).sum()))
    """)
    assert_clean_exit(p)
    assert int(p.stdout.split()[-1]) == int(x.view(torch.int32).sum())
    ibp_gnn.compress(x[:100]).save(path)
    with pytest.raises(ibp_gnn.FileChangedError, match="changed since the tensor was pickled"):
        pickle.loads(blob)


def test_pickled_arrays_are_validated(ct, x):
    back = pickle.loads(pickle.dumps(ct))
    assert_bits_equal(back.decompress(), x)
    assert back._registered is None and back._pinned is None
    func, args = ct.__reduce__()
    bad = np.array(args[3])  # rel: row offsets
    bad[5] = 60000 if bad.dtype == np.uint16 else 2**31
    with pytest.raises(ibp_gnn.FormatError):
        func(args[0], args[1], args[2], bad, args[4])
    with pytest.raises(ibp_gnn.FormatError, match="header"):
        func(args[0][:10], *args[1:])
    with pytest.raises(ibp_gnn.FormatError, match="payload"):
        func(*args[:4], [1, 2, 3])


# ---- errors that name the argument and the value -------------------------------------------------
def _npy_with_shape(path: Path, shape_text: str, payload: bytes = b"") -> None:
    np.save(path, np.zeros((5, 3), np.float32))
    raw = path.read_bytes()
    n = int.from_bytes(raw[8:10], "little")
    header = raw[10:10 + n].replace(b"(5, 3)", shape_text.encode())
    header = header.rstrip(b" \n")
    header = header + b" " * (n - 1 - len(header)) + b"\n"
    path.write_bytes(raw[:10] + header + payload)


def test_npy_with_negative_shape(tmp_path):
    _npy_with_shape(tmp_path / "neg.npy", "(-5, 3)")
    with pytest.raises(ValueError, match=r"compress_file: src .*neg.npy.* shape \(-5, 3\)"):
        ibp_gnn.compress_file(tmp_path / "neg.npy", tmp_path / "o.ibp", progress=False)


def test_npy_shorter_than_its_header(tmp_path):
    _npy_with_shape(tmp_path / "s.npy", "(9, 3)", b"\0" * 20)
    with pytest.raises(ValueError, match=r"compress_file: src .* is truncated"):
        ibp_gnn.compress_file(tmp_path / "s.npy", tmp_path / "o.ibp", progress=False)


@pytest.mark.parametrize("kind", ["directory", "fifo", "dev_zero", "missing"])
def test_load_and_compress_file_on_non_files(tmp_path, kind):
    if kind == "directory":
        path, exc, words = tmp_path, IsADirectoryError, "is a directory"
    elif kind == "fifo":
        path, exc, words = tmp_path / "pipe", ValueError, r"is a FIFO \(named pipe\), not a regular"
        os.mkfifo(path)
    elif kind == "dev_zero":
        if not os.path.exists("/dev/zero"):
            pytest.skip("no /dev/zero here")
        path, exc, words = Path("/dev/zero"), ValueError, "is a character device"
    else:
        path, exc, words = tmp_path / "nope.ibp", FileNotFoundError, "does not exist"
    with pytest.raises(exc, match=rf"load: '{path}' {words}"):
        ibp_gnn.load(path)
    with pytest.raises(exc, match=rf"compress_file: src '{path}' {words}"):
        ibp_gnn.compress_file(path, tmp_path / "o.ibp", progress=False)


@pytest.mark.parametrize("src", ["text", "ibp", "dir"])
def test_cli_compress_on_bad_source_prints_one_line(tmp_path, src):
    if src == "text":
        path = tmp_path / "a.txt"
        path.write_text("not an array\n")
    elif src == "ibp":
        path = tmp_path / "a.ibp"
        ibp_gnn.compress(torch.zeros(4, 4)).save(path)
    else:
        path = tmp_path
    p = subprocess.run([sys.executable, "-m", "ibp_gnn", "compress", str(path),
                        str(tmp_path / "o.ibp")], capture_output=True, text=True, timeout=120,
                       cwd=str(ROOT))
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: compress_file: src"), p.stderr


@pytest.mark.parametrize("value", [True, False, 0, 1.5, "16"])
def test_compress_sample_rows_must_be_a_positive_int(value):
    with pytest.raises(ValueError, match=r"compress: sample_rows must be a positive int, got"):
        ibp_gnn.compress(torch.zeros(4, 4), sample_rows=value)


def test_rows_wider_than_the_format_are_refused_before_allocating(tmp_path):
    """Used to raise std::bad_alloc from select_masks (or need ~64 GiB)."""
    wide = np.empty((1, MAX_ROW_WORDS + 1), np.float32)  # virtual: never touched
    with pytest.raises(ValueError, match=rf"compress: rows of {MAX_ROW_WORDS + 1} float32 "
                                         rf"values are {MAX_ROW_WORDS + 1} 32-bit words"):
        ibp_gnn.compress(wide)
    assert (MAX_ROW_WORDS + 1) == 2**27
    ibp_gnn.compress(np.zeros((1, 5), np.float32))
    src = tmp_path / "wide.npy"
    _npy_with_shape(src, f"(2, {2**28})")
    with open(src, "r+b") as f:  # a sparse file of the size the header promises
        f.truncate(f.seek(0, 2) + 2 * 2**28 * 4)
    with pytest.raises(ValueError, match=r"compress_file: rows of 268435456 float32 values"):
        ibp_gnn.compress_file(src, tmp_path / "o.ibp", progress=False)


def test_graph_store_rejects_negative_coo_ids():
    from ibp_gnn.pyg import IBPGraphStore

    gs = IBPGraphStore()
    with pytest.raises(ValueError, match=r"put_edge_index.*row holds negative id -1"):
        gs.put_edge_index((torch.tensor([0, -1]), torch.tensor([1, 2])), edge_type=None,
                          layout="coo", size=(3, 3))
    with pytest.raises(ValueError, match=r"col holds negative id -7"):
        gs.put_edge_index((torch.tensor([0, 1]), torch.tensor([-7, 2])), edge_type=None,
                          layout="coo")
    with pytest.raises(ValueError, match=r"row holds negative id -2"):
        gs.put_edge_index((torch.tensor([0, -2]), torch.tensor([0, 1, 2])), edge_type=None,
                          layout="csc", size=(3, 2))


def test_feature_store_0d_index_and_size_range():
    from ibp_gnn.pyg import IBPFeatureStore

    x = special_matrix(torch.float32, 10, 4)
    fs = IBPFeatureStore(compress="always")
    fs.put_tensor(x, group_name=None, attr_name="x", index=None)
    assert_bits_equal(fs.get_tensor(group_name=None, attr_name="x", index=torch.tensor(3)), x[3])
    assert_bits_equal(fs.get_tensor(group_name=None, attr_name="x", index=np.int64(-1)), x[9])
    with pytest.raises(IndexError, match=r"get_tensor\('x'\): index 10 is out of range"):
        fs.get_tensor(group_name=None, attr_name="x", index=torch.tensor(10))
    assert fs.get_tensor_size(group_name=None, attr_name="x", index=torch.tensor(3)) == (4,)
    with pytest.raises(IndexError, match=r"size\('x'\): index holds id 20, out of range for 10"):
        fs.get_tensor_size(group_name=None, attr_name="x", index=torch.tensor([1, 20]))
    with pytest.raises(IndexError, match=r"size\('x'\): index holds id -1"):
        fs.get_tensor_size(group_name=None, attr_name="x", index=torch.tensor([-1]))


def test_dgl_update_and_counters_check_ids_first():
    from ibp_gnn import dgl as idgl

    x = special_matrix(torch.float32, 20, 8)
    f = idgl._FeatureImpl(x)
    with pytest.raises(IndexError, match=r"IBPFeature.update: ids holds id -1, out of range"):
        f.update(torch.zeros(1, 8), torch.tensor([-1]))
    with pytest.raises(IndexError, match=r"id 20"):
        f.update(torch.zeros(1, 8), torch.tensor([20]))
    assert_bits_equal(f.read(), x)  # row 19 untouched
    s = idgl._StorageImpl(x)
    s.gather(torch.tensor([1, 2]))
    counts = (s.bytes_read, s.raw_bytes_read)
    assert counts[0] > 0 and counts[1] == 2 * 8 * 4
    with pytest.raises(IndexError):
        s.gather(torch.tensor([1, 99]))
    with pytest.raises(IndexError):
        f.gather(torch.tensor([-5]))
    assert (s.bytes_read, s.raw_bytes_read) == counts
    assert (f.bytes_read, f.raw_bytes_read) == (0, 0)


def _rss_file_pages() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssFile:"):
                return int(line.split()[1]) * 1024
    return -1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc are Linux's")
def test_release_mapped_drops_pages_of_shared_maps_only(tmp_path):
    from ibp_gnn import _files

    x = np.arange(1 << 22, dtype=np.float32).reshape(-1, 64)  # 16 MiB
    np.save(tmp_path / "x.npy", x)
    for mode in ("r", "r+"):
        m = np.load(tmp_path / "x.npy", mmap_mode=mode)
        assert float(m.sum(dtype=np.float64)) == float(x.sum(dtype=np.float64))  # map it all
        before = _rss_file_pages()
        assert _files.release_mapped(m[1:-1])
        assert before - _rss_file_pages() > 12 << 20
        assert np.array_equal(m, x)  # mapped again from the file, unchanged
        del m
    c = np.load(tmp_path / "x.npy", mmap_mode="c")
    c[0, 0] = -1.0  # a private change a madvise would throw away
    assert not _files.release_mapped(c) and c[0, 0] == -1.0
    assert not _files.release_mapped(x) and not _files.release_mapped(x[:, ::2])
    assert not _files.release_mapped(np.zeros(0, np.float32))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_compress_file_from_a_memmap_keeps_its_resident_set_at_a_chunk(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((1 << 16, 128)) * 0.1).astype(np.float32)  # 32 MiB, dense
    np.save(tmp_path / "x.npy", x)
    m = np.load(tmp_path / "x.npy", mmap_mode="r")
    before = _rss_file_pages()
    ibp_gnn.compress_file(m, tmp_path / "x.ibp", chunk_bytes=2 << 20, progress=False)
    # Without releasing, the whole 32 MiB map would stay resident.
    assert _rss_file_pages() - before < 12 << 20
    y = ibp_gnn.load(tmp_path / "x.ibp")
    assert np.array_equal(y.decompress().numpy().view(np.uint32), x.view(np.uint32))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_verifying_a_mapped_file_does_not_keep_it_resident(tmp_path):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((1 << 16, 128)) * 0.1).astype(np.float32)
    ibp_gnn.compress(x).save(tmp_path / "x.ibp")
    before = _rss_file_pages()
    y = ibp_gnn.load(tmp_path / "x.ibp", mmap=True, verify=True)  # CRCs read ~29 MiB
    assert _rss_file_pages() - before < 8 << 20
    assert np.array_equal(y.decompress().numpy().view(np.uint32), x.view(np.uint32))


# ---- 6. load's verify= modes: the checks that read the whole file -----------------------------
def mixed_rows(n: int = 4000, seed: int = 0) -> np.ndarray:
    """Rows of every encoding: sparse, coded (dense embeddings), raw (random
    bits) and kIbp (few varying mantissa bits), shuffled."""
    rng = np.random.default_rng(seed)
    q = n // 8
    sparse = special_matrix(torch.float32, 3 * q, 64).numpy()
    dense = (rng.standard_normal((3 * q, 64)) * 0.1).astype(np.float32)
    raw = rng.integers(0, 2**32, (q // 2, 64), dtype=np.uint64).astype(np.uint32).view(np.float32)
    ibp = (rng.integers(0, 2**12, (n - 6 * q - q // 2, 64)).astype(np.uint32)
           | 0x3F800000).view(np.float32)
    return np.concatenate([sparse, dense, raw, ibp])[rng.permutation(n)]


def restamp(data: bytearray) -> bytes:
    """The file with every CRC recomputed: damage reaches the structure checks."""
    import zlib

    fields = _C.unpack_header(bytes(data[:128]))
    lay = _C.file_layout(bytes(data[:128]))

    def sec(name):
        off, n = lay[name]
        return bytes(data[off:off + n])

    fields.update(crc_tables=zlib.crc32(sec("tables")), crc_payload=zlib.crc32(sec("payload")),
                  crc_index=zlib.crc32(sec("rel"), zlib.crc32(sec("bases"))), crc_header=0)
    fields["crc_header"] = zlib.crc32(_C.pack_header(fields))
    data[:128] = _C.pack_header(fields)
    return bytes(data)


def flip_mode_bit(path: Path, row: int) -> None:
    """Flips the high mode bit of `row` (CRCs restamped): its bits now parse as
    another encoding, whose length disagrees with the index."""
    ct = ibp_gnn.load(path)
    start = int(ct._row_spans(np.array([row]))[0][0]) + 1
    data = bytearray(path.read_bytes())
    data[_C.file_layout(bytes(data[:128]))["payload"][0] + start // 8] ^= 1 << (start % 8)
    path.write_bytes(restamp(data))


def file_maps(path: Path):
    """(mappings of `path` in this process, their resident bytes)."""
    n, rss, cur = 0, 0, False
    name = str(path.resolve())
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5 and ":" in head[3]:
                cur = line.rstrip("\n").endswith(" " + name)
                n += cur
            elif cur and line.startswith("Rss:"):
                rss += int(head[1]) * 1024
    return n, rss


@pytest.fixture(scope="module")
def mixed():
    return mixed_rows()


def test_verify_modes_are_checked_at_the_entry(tmp_path, mixed):
    ibp_gnn.compress(mixed).save(tmp_path / "x.ibp")
    for bad in ("yes", "none", 1, None):
        with pytest.raises(ValueError, match="load: verify must be"):
            ibp_gnn.load(tmp_path / "x.ibp", verify=bad)


@pytest.mark.parametrize("verify", [True, False, "background", "lazy"])
def test_corrupt_row_is_reported_in_every_verify_mode(tmp_path, mixed, verify, monkeypatch):
    path = tmp_path / "x.ibp"
    ibp_gnn.compress(mixed).save(path)
    bad = 2345
    flip_mode_bit(path, bad)
    want = f"x.ibp.*row {bad} is corrupt"
    if verify in (True, False):
        with pytest.raises(ibp_gnn.FormatError, match=want):
            ibp_gnn.load(path, mmap=True, verify=verify)
        return
    go = threading.Event()
    walk = _C.validate_row_range
    monkeypatch.setattr(_C, "validate_row_range", lambda *a: go.wait(30) and walk(*a))
    ct = ibp_gnn.load(path, mmap=True, verify=verify)  # returns before reading any row
    # While the background pass is held, gathers check the rows they read.
    good = torch.tensor([0, 1, bad - 1, bad + 1, 3999])
    assert_bits_equal(ct.gather(good), torch.from_numpy(mixed[good.numpy()]))
    out = torch.full((3, 64), 7.0)
    with pytest.raises(ibp_gnn.FormatError, match=want):
        ct.gather(torch.tensor([5, bad, 6]), out=out)
    assert bool((out == 7.0).all())  # nothing written: the check runs before the decode
    go.set()
    if verify == "background":
        with pytest.raises(ibp_gnn.FormatError, match=f"background check.*{want}"):
            ct.check_verified()
        # Once the pass has failed, every gather reports it, whatever rows it asks for.
        with pytest.raises(ibp_gnn.FormatError, match=f"background check.*{want}"):
            ct.gather(torch.tensor([0]))
    else:
        assert ct.check_verified() is True  # lazy: no pass, rows checked as gathered
        assert_bits_equal(ct.gather(good), torch.from_numpy(mixed[good.numpy()]))
    # Saving writes fresh CRCs: it first needs every row sound.
    with pytest.raises(ibp_gnn.FormatError, match=want):
        ct.save(tmp_path / "copy.ibp")
    assert not (tmp_path / "copy.ibp").exists()


def test_corrupt_index_sections_are_refused_at_load_in_every_mode(tmp_path, mixed):
    path = tmp_path / "x.ibp"
    ibp_gnn.compress(mixed).save(path)
    data = bytearray(path.read_bytes())
    off, n = _C.file_layout(bytes(data[:128]))["bases"]
    data[off + 8 * 5 + 6] ^= 0x40  # block base 5 jumps past the payload
    path.write_bytes(restamp(data))
    for verify in (True, False, "background", "lazy"):
        with pytest.raises(ibp_gnn.FormatError, match="x.ibp.*(index|block bases)"):
            ibp_gnn.load(path, mmap=True, verify=verify)


def test_background_checksum_failure_surfaces_in_the_next_gather(tmp_path, mixed):
    path = tmp_path / "x.ibp"
    ibp_gnn.compress(mixed).save(path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10  # payload padding: every row still parses, only the CRC can tell
    path.write_bytes(bytes(data))
    with pytest.raises(ibp_gnn.ChecksumError, match="x.ibp.*payload checksum"):
        ibp_gnn.load(path, mmap=True)
    ct = ibp_gnn.load(path, mmap=True, verify="background")
    with pytest.raises(ibp_gnn.ChecksumError, match="background check.*payload checksum"):
        ct.check_verified()
    with pytest.raises(ibp_gnn.ChecksumError, match="save: the background check"):
        ct.save(tmp_path / "copy.ibp")
    with pytest.raises(ibp_gnn.ChecksumError, match="CompressedTensor.gather: the background"):
        ct.gather(torch.tensor([1, 2]))
    store = IBPStore(path, verify="background")
    with pytest.raises(ibp_gnn.ChecksumError, match="background check.*x.ibp"):
        store.check_verified()
    with pytest.raises(ibp_gnn.ChecksumError, match="background check"):
        store.gather(torch.tensor([3]))
    # No CRCs in "lazy" and False: the rows are sound, so they decode.
    for verify in (False, "lazy"):
        got = ibp_gnn.load(path, mmap=True, verify=verify).gather(torch.arange(4000))
        assert_bits_equal(got, torch.from_numpy(mixed))
    ibp_gnn.compress(mixed).save(path)
    ibp_gnn.load(path, mmap=True, verify="lazy").save(tmp_path / "copy.ibp")
    assert (tmp_path / "copy.ibp").read_bytes() == path.read_bytes()


def test_row_checks_agree_with_full_validation_on_damaged_files(tmp_path, mixed):
    """Random damage to the offsets and row bits (CRCs restamped), in a child
    process: the full check, the background pass and gathers of a lazy load
    reach the same verdict on the same row, every accepted file decodes as
    the full check's load does, and nothing ends the process."""
    path = tmp_path / "x.ibp"
    ibp_gnn.compress(mixed).save(path)
    p = run_child(f"""
        import re
        import numpy as np, torch, ibp_gnn
        from test_reliability import restamp
        from ibp_gnn import _C
        src = open({str(path)!r}, "rb").read()
        lay = _C.file_layout(src[:128])
        rng = np.random.default_rng(0)
        verdicts = {{}}
        for case in range(40):
            data = bytearray(src)
            for _ in range(int(rng.integers(1, 4))):
                sec = ("rel", "payload")[int(rng.integers(0, 2))]
                off, n = lay[sec]
                data[off + int(rng.integers(0, n))] ^= 1 << int(rng.integers(0, 8))
            bad = {str(tmp_path)!r} + "/bad.ibp"
            open(bad, "wb").write(restamp(data))
            try:
                full = ibp_gnn.load(bad, verify=False).gather(torch.arange(4000))
                verdict = "ok"
            except ibp_gnn.FormatError as e:
                m = re.search(r"row \\d+ is corrupt|the header counts .*", str(e))
                verdict = m.group(0)
            lazy = ibp_gnn.load(bad, mmap=True, verify="lazy")
            try:
                got = lazy.gather(torch.arange(4000))
                assert verdict == "ok" or verdict.startswith("the header counts"), verdict
                if verdict == "ok":
                    assert torch.equal(got.view(torch.int32), full.view(torch.int32))
            except ibp_gnn.FormatError as e:
                assert verdict in str(e), (verdict, str(e))
            bg = ibp_gnn.load(bad, mmap=True, verify="background")
            try:
                bg.check_verified()
                assert verdict == "ok", verdict
            except ibp_gnn.FormatError as e:
                assert verdict in str(e), (verdict, str(e))
            key = verdict.split(" is")[0].split(" rows")[0][:12]
            verdicts[key] = verdicts.get(key, 0) + 1
        print(verdicts)
        assert sum(verdicts.values()) == 40 and verdicts.get("ok", 0) < 40
        assert any(k.startswith("row") for k in verdicts)
    """, timeout=300)
    assert_clean_exit(p)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_background_check_reads_the_tensors_own_mapping(tmp_path, monkeypatch):
    """One mapping of the file while the background pass runs, and the pass
    leaves no pages of it resident (RSS counts each mapping's pages)."""
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((1 << 14, 128)) * 0.1).astype(np.float32)  # ~7 MiB compressed
    path = tmp_path / "x.ibp"
    ibp_gnn.compress(x).save(path)
    go, seen = threading.Event(), []
    walk = _C.validate_row_range

    def held(*a, **k):
        seen.append(file_maps(path)[0])
        go.wait(30)
        return walk(*a, **k)

    monkeypatch.setattr(_C, "validate_row_range", held)
    store = IBPStore(path, verify="background")
    assert not store.check_verified(wait=False)  # the pass is held
    assert file_maps(path)[0] == 1
    go.set()
    assert store.check_verified() is True and seen and set(seen) == {1}
    assert file_maps(path)[1] < 1 << 20  # read whole, then released
    ids = torch.arange(0, 1 << 14, 7)
    assert_bits_equal(store.gather(ids), torch.from_numpy(x)[ids])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_compress_file_sample_leaves_no_source_pages_mapped(tmp_path, monkeypatch):
    """The table sample reads rows spread over the whole source; the pages those
    reads map (a page-cached file maps neighbours too) are released before the
    chunked pass, so the source's resident pages stay at about a chunk."""
    from ibp_gnn import _encode

    rng = np.random.default_rng(2)
    x = (rng.standard_normal((1 << 15, 128)) * 0.1).astype(np.float32)  # 16 MiB
    np.save(tmp_path / "x.npy", x)
    m = np.load(tmp_path / "x.npy", mmap_mode="r")
    resident = []
    release = _encode._ArrayRows.release

    def watched(self, a, count):
        resident.append(file_maps(tmp_path / "x.npy")[1])
        return release(self, a, count)

    monkeypatch.setattr(_encode._ArrayRows, "release", watched)
    ibp_gnn.compress_file(m, tmp_path / "x.ibp", chunk_bytes=1 << 20, progress=False)
    assert len(resident) >= 16 and max(resident) < 5 << 20, resident[:4]
