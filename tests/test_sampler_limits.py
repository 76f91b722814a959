"""The sampler at its limits: memory-mapped graphs read in place, memory
limits (RLIMIT_AS, as under SLURM or containers), threads that cannot be
started, huge fan-outs, out-of-range seeds with check=False, and argument
errors. Cases that could end the process run in a subprocess."""
import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from ibp_gnn.sampler import CSCGraph
from test_sampler import assert_same, check_invariants, random_graph, reference_sample, star


def run_child(code: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter (OMP_NUM_THREADS=1); the last stdout line is JSON."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=os.path.dirname(__file__))


def child_result(r: subprocess.CompletedProcess) -> dict:
    assert r.returncode == 0, f"child died (rc {r.returncode}): {r.stderr[-2000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


LIMIT_AS = '''
import resource
def limit_address_space(extra):
    """RLIMIT_AS = what the process maps now + extra bytes."""
    with open("/proc/self/status") as f:
        vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + extra, resource.RLIM_INFINITY))
'''


# ---- memory-mapped graphs ----------------------------------------------------------------------
@pytest.mark.parametrize("idx_dtype", [np.int32, np.int64])
def test_memmapped_csc_is_sampled_in_place(tmp_path, idx_dtype):
    g, _ = random_graph(2000, 30000, seed=11)
    np.save(tmp_path / "indptr.npy", g.indptr.numpy().astype(np.int64))
    np.save(tmp_path / "indices.npy", g.indices.numpy().astype(idx_dtype))
    indptr = np.load(tmp_path / "indptr.npy", mmap_mode="r")
    indices = np.load(tmp_path / "indices.npy", mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not writable" warning from torch either
        mg = CSCGraph(indptr, indices)
    assert mg.indptr.data_ptr() == indptr.ctypes.data  # no copy
    assert mg.indices.data_ptr() == indices.ctypes.data
    assert mg.indices.dtype == torch.from_numpy(np.zeros(0, idx_dtype)).dtype
    seeds = torch.randint(0, 2000, (300,), generator=torch.Generator().manual_seed(1))
    for threads in (1, 2):
        sub = mg._sample_cpu(seeds, [15, 10, 5], False, 3, threads, exact_threads=True)
        assert_same(sub, g.sample(seeds, [15, 10, 5], seed=3, threads=1))
    assert mg.edge_perm is None  # no edge permutation unless edge ids are asked for


# ---- Floyd's algorithm at large fan-outs -----------------------------------------------------
def test_large_fanout_without_replacement_is_linear_and_exact():
    """99,999 of 100,000 neighbours: the hash-set membership test (O(k)) gives
    exactly the reference's picks (the reference itself uses a set)."""
    deg = 100_000
    indptr = np.array([0, deg] + [deg] * deg, dtype=np.int64)
    g = CSCGraph(indptr, np.arange(1, deg + 1, dtype=np.int32))
    sub = g.sample([0], [deg - 1], seed=9)
    ref = reference_sample(g.indptr, g.indices, [0], [deg - 1], seed=9)
    assert_same(sub, ref)
    assert sub.edge.unique().numel() == deg - 1


@pytest.mark.parametrize("fanouts", [[50], [40, 33], [-1, 60]])
def test_hash_path_matches_scan_path_and_threads(fanouts):
    """k > 32 uses the hash set on the CPU; the GPU code (host twins) scans:
    the samples agree for every thread count and with the reference."""
    g, _ = random_graph(400, 30000, seed=10)  # 75 in-neighbours per node on average
    seeds = torch.randint(0, 400, (120,), generator=torch.Generator().manual_seed(2))
    ref = reference_sample(g.indptr, g.indices, seeds, fanouts, 77)
    for threads in (1, 2, 3):
        assert_same(g._sample_cpu(seeds, fanouts, False, 77, threads, exact_threads=True), ref)
    assert_same(g._sample_steps(seeds, fanouts, False, 77, "host", 0), ref)
    check_invariants(g, ref, seeds, fanouts)


def test_hash_path_subsets_uniform():
    g = star(60)
    draws = 6000
    sub = g.sample(torch.zeros(draws, dtype=torch.long), [40], seed=5)
    assert sub.num_sampled_edges == [40 * draws]
    sets = sub.edge.view(draws, 40)
    assert bool((sets.sort(1).values.diff(dim=1) > 0).all())  # distinct within a draw
    counts = torch.bincount(sub.edge, minlength=60).numpy()
    assert chisquare(counts).pvalue > 1e-3
    # Pairs that are both in (or both out of) a subset: uniform over positions too.
    first = (sets == 0).any(1).numpy()
    second = (sets == 59).any(1).numpy()
    table = np.bincount(first * 2 + second, minlength=4)
    p_in = 40 / 60
    p_both = p_in * 39 / 59
    want = draws * np.array([1 - 2 * p_in + p_both, p_in - p_both, p_in - p_both, p_both])
    assert chisquare(table, want).pvalue > 1e-3


# ---- memory limits, threads, bad seeds: one child process for all cases ---------------------
# Each step prints one JSON line {case: result}; the fixture collects them, so
# a crash shows which case ended the process. Address-space limits only shrink
# from one step to the next.
CHILD = LIMIT_AS + '''
import json, resource, numpy as np, torch
from ibp_gnn.sampler import CSCGraph

def report(case, value):
    print(json.dumps({case: value}), flush=True)

def digest(s):
    return [s.num_sampled_edges, int(s.row.sum()), int(s.col.sum()), int(s.edge.sum())]

def graph(n, e, seed):
    rng = np.random.default_rng(seed)
    dst = np.sort(rng.integers(0, n, e))
    indptr = np.searchsorted(dst, np.arange(n + 1)).astype(np.int64)
    return CSCGraph(indptr, rng.integers(0, n, e).astype(np.int32))

# CPU seeds out of range with check=False
small = CSCGraph(np.array([0, 1, 2, 2]), np.array([1, 2]))
for bad in (10**12, -1, -(10**12)):
    for kind, seeds in (("tensor", torch.tensor([0, bad])), ("numpy", np.array([0, bad])),
                        ("list", [0, bad])):
        try:
            small.sample(seeds, [2], check=False)
            report(f"seeds {bad} {kind}", "no error")
        except IndexError as e:
            report(f"seeds {bad} {kind}", str(e))

# 1000 nodes, 1000 seeds, [25] * 4 under 8 GiB
dense = graph(1000, 50000, 3)
seeds = torch.from_numpy(np.random.default_rng(4).integers(0, 1000, 1000))
free = [digest(dense._sample_cpu(seeds, [25] * 4, False, 8, 1)), None]
big = graph(2_000_000, 4_000_000, 0)
big_seeds = torch.from_numpy(np.random.default_rng(1).integers(0, 2_000_000, 40000))
many = graph(3000, 40000, 4)
many_seeds = torch.from_numpy(np.random.default_rng(5).integers(0, 3000, 2500))
many_want = digest(many.sample(many_seeds, [10, 5], seed=42, threads=1))
check_arrays = np.arange(0, 4_000_001, dtype=np.int64), np.zeros(4_000_000, dtype=np.int32)
resource.setrlimit(resource.RLIMIT_AS, (8 << 30, resource.RLIM_INFINITY))
for t in (1, 2):
    report(f"reserve t{t}", digest(dense._sample_cpu(seeds, [25] * 4, False, 8, t, True)) == free[0])

# 40,000 seeds x 30,000 picks with replacement (1.2e9 edges, ~29 GB of output):
# MemoryError for every thread count, and the sampler still works afterwards.
limit_address_space(1 << 30)
for t in (1, 2, 3):
    try:
        big._sample_cpu(big_seeds, [30000], True, 1, t, exact_threads=True)
        report(f"oom t{t}", "no error")
    except MemoryError:
        ok = big._sample_cpu(big_seeds[:10], [3], True, 1, t, True).row.numel() == 30
        report(f"oom t{t}", "MemoryError" if ok else "broken afterwards")

# 256 threads asked for, room for ~15 thread stacks: done by those that start.
limit_address_space(160 << 20)
got = digest(many._sample_cpu(many_seeds, [10, 5], False, 42, 256, exact_threads=True))
report("threads sample", got == many_want)
limit_address_space(24 << 20)  # the check of this graph asks for 61 threads
CSCGraph(*check_arrays, threads=256)
report("threads check", True)
'''


@pytest.fixture(scope="module")
def child():
    r = run_child(CHILD, timeout=300)
    out = {}
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            out.update(json.loads(line))
    out["_proc"] = r
    return out


def result(child, case):
    r = child["_proc"]
    assert case in child, (f"the child process died before {case!r} (rc {r.returncode}): "
                           f"{r.stdout[-1000:]}{r.stderr[-2000:]}")
    return child[case]


@pytest.mark.parametrize("bad", [10**12, -1, -(10**12)])
def test_out_of_range_seeds_raise_even_with_check_false(child, bad):
    for kind in ("tensor", "numpy", "list"):
        msg = result(child, f"seeds {bad} {kind}")
        assert f"seeds[1] = {bad} is out of range for a graph of 3 nodes" in msg, msg


@pytest.mark.parametrize("threads", [1, 2])
def test_reservation_bounded_by_the_graph(child, threads):
    """1000 nodes, 1000 seeds, [25] * 4 fits in an 8 GiB address space (the
    sample holds at most ~2000 nodes x 25 picks per hop), same sample."""
    assert result(child, f"reserve t{threads}") is True


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_failed_allocation_raises_memory_error(child, threads):
    assert result(child, f"oom t{threads}") == "MemoryError"


def test_threads_that_cannot_start_are_done_without(child):
    """The sample is made by the threads that started and equals the
    one-thread sample; the graph check likewise runs on fewer threads."""
    assert result(child, "threads sample") is True
    assert result(child, "threads check") is True


# ---- bad input --------------------------------------------------------------------------------
def test_argument_errors_name_argument_and_value():
    g = CSCGraph(np.array([0, 1, 2, 2]), np.array([1, 2]))
    with pytest.raises(ValueError, match=r"threads must be a positive int below 2\*\*31, "
                                         r"got 2147483648"):
        g.sample([0], [1], threads=2**31)
    with pytest.raises(ValueError, match=r"threads must be .* got 10000000000000000000000"):
        CSCGraph(np.array([0, 1]), np.array([0]), threads=10**22)
    with pytest.raises(ValueError, match=r"num_neighbors\[1\] must be an int >= -1 .*below "
                                         r"2\*\*63, got 9223372036854775808"):
        g.sample([0], [1, 2**63])
    for fanouts in ([2**63 - 1], [2**40]):  # accepted: capped by the degree
        assert g.sample([0], fanouts, seed=1).num_sampled_edges == [1]
    with pytest.raises(MemoryError):
        g.sample([0], [2**62], replace=True, seed=1)
    assert g.sample([0], [1], threads=np.int64(2)).num_sampled_edges == [1]
    with pytest.raises(TypeError, match=r"from_edge_index: edge_index must hold integer node "
                                        r"ids, got torch.float32"):
        CSCGraph.from_edge_index(torch.tensor([[0.0, 1.7], [1.0, 0.0]]))
    with pytest.raises(TypeError, match=r"edge_index must hold integer node ids, got torch.bool"):
        CSCGraph.from_edge_index(torch.ones(2, 3, dtype=torch.bool))
