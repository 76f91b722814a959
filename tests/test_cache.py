"""The subset op, the compressed cache in front of the host tier (CPU-resident
cache: the same split, packing and scatter the GPU path runs) and the
bus-byte counts of benchmarks/bus_bytes.py on hand-computed examples."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ibp_gnn
from ibp_gnn import _C, cache
from ibp_gnn.sampler import CSCGraph
from ibp_gnn.testing import SHARED_DATASETS, load_shared, shared_dir

from conftest import DTYPES, assert_bits_equal, cuda_available, special_matrix

ROOT = Path(__file__).resolve().parent.parent


def mixed_matrix(rows: int = 600, cols: int = 37, seed: int = 0) -> torch.Tensor:
    """Sparse rows (few nonzeros), dense random rows (stored raw or kCoded), narrow
    integers (frame-of-reference words) and two clusters (groups)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(rows, cols)
    q = rows // 4
    x[:q] = (torch.rand(q, cols, generator=g) < 0.05).float()
    x[q:2 * q] = torch.randn(q, cols, generator=g)
    ints = torch.randint(1000, 1500, (q, cols), generator=g).float()
    x[2 * q:3 * q] = ints
    x[3 * q:] = -1000 - torch.rand(rows - 3 * q, cols, generator=g)
    return x[torch.randperm(rows, generator=g)].contiguous()


def check_subset(ct, x, rows, threads=2):
    s = cache.subset(ct, rows, threads=threads, validate=True)
    assert np.array_equal(ct.subset(rows)._payload, s._payload)
    assert len(s) == len(rows) and s.shape[1] == ct.shape[1] and s.dtype == ct.dtype
    assert_bits_equal(s.gather(torch.arange(len(rows))), x[torch.as_tensor(rows, dtype=torch.long)])
    # Rows keep their encoding: the subset's payload is the sum of the spans.
    start, end = ct._row_spans(np.asarray(rows, np.int64))
    assert s._fields["payload_bits"] == int((end - start).sum())
    assert sum(s._fields["mode_rows"]) == len(rows)
    return s


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("cols", [1, 3, 33, 129])
def test_subset_every_dtype_and_width(dtype, cols):
    x = special_matrix(dtype, 300, cols, seed=cols)
    ct = ibp_gnn.compress(x)
    g = np.random.default_rng(cols)
    for rows in (np.zeros(0, np.int64), np.array([7]), g.integers(0, 300, 500),
                 np.arange(299, -1, -1)):
        check_subset(ct, x, rows)


def test_subset_every_row_mode_groups_and_paper():
    x = mixed_matrix(2000)
    for mode in ("auto", "paper"):
        ct = ibp_gnn.compress(x, mode=mode)
        modes = ct.stats()["rows_per_mode"]
        if mode == "auto":
            assert {"sparse", "coded"} <= set(modes) and ct.num_groups > 1, modes
        rows = np.random.default_rng(1).integers(0, 2000, 3000)
        s = check_subset(ct, x, rows)
        assert s.num_groups == ct.num_groups
        # Multithreaded copy equals the single-threaded one, word for word.
        one = cache.subset(ct, rows, threads=1)
        assert np.array_equal(one._payload, s._payload) and np.array_equal(one._rel, s._rel)
        assert np.array_equal(one._bases, s._bases)


def test_subset_32bit_offsets_and_large_rows():
    x = special_matrix(torch.float32, 40, 3000, seed=5)  # 3000 words: 4-byte rel, short blocks
    ct = ibp_gnn.compress(x)
    assert ct._fields["rel_bytes"] == 4
    check_subset(ct, x, np.array([39, 0, 5, 5, 17] * 9))


def test_subset_of_a_memory_mapped_file(tmp_path):
    x = mixed_matrix(700)
    path = ibp_gnn.compress(x).save(tmp_path / "x.ibp")
    ct = ibp_gnn.load(path, mmap=True)
    s = check_subset(ct, x, np.arange(0, 700, 3))
    # The subset is a tensor like any other: it saves and loads.
    back = ibp_gnn.load(s.save(tmp_path / "s.ibp"))
    assert_bits_equal(back.decompress(), x[::3])


def test_subset_errors():
    ct = ibp_gnn.compress(mixed_matrix(100))
    with pytest.raises(IndexError, match="subset.*100"):
        cache.subset(ct, [3, 100])
    with pytest.raises(IndexError, match="negative"):
        cache.subset(ct, torch.tensor([-1]))
    with pytest.raises(TypeError, match="rows must be int32 or int64"):
        cache.subset(ct, torch.tensor([1.0]))
    with pytest.raises(TypeError, match="ct must be a CompressedTensor"):
        cache.subset(np.zeros((3, 3)), [0])
    # The core rejects arrays of the wrong size instead of writing past them.
    rows = np.array([1, 2], np.int64)
    view = (ct._header, ct._decode_table, ct._bases, ct._rel, ct._payload)
    bits = _C.subset_payload_bits(*view, rows)
    with pytest.raises(ValueError, match="out_payload"):
        _C.subset(*view, rows, np.zeros(2, np.uint64), np.zeros(2, ct._rel.dtype),
                  np.zeros(1, np.uint32), bits)
    with pytest.raises(ValueError, match="payload_bits"):
        _C.subset(*view, rows, np.zeros(2, np.uint64), np.zeros(2, ct._rel.dtype),
                  np.zeros(_C.payload_words(bits + 1), np.uint32), bits + 1)


def shared_or_skip(name):
    if shared_dir() is None:
        pytest.skip("../shared/datasets is not present")
    return torch.from_numpy(load_shared(name))


@pytest.mark.parametrize("name", SHARED_DATASETS)
def test_subset_real_datasets(name):
    x = shared_or_skip(name)[:1200].contiguous()
    ct = ibp_gnn.compress(x, sample_rows=600)
    rows = np.random.default_rng(0).integers(0, len(x), 2000)
    check_subset(ct, x, rows)


# ---- the cached feature --------------------------------------------------------------------------
@pytest.mark.parametrize("transfer", ["zero_copy", "staged"])
@pytest.mark.parametrize("budget", [0, 3000, 10 ** 9])
def test_cached_gather_is_x_idx(transfer, budget):
    x = mixed_matrix(800)
    ct = ibp_gnn.compress(x)
    hot = np.random.default_rng(2).permutation(800)
    cf = cache.CachedFeature(ct, hot, budget=budget, transfer=transfer)
    assert cf.cache_nbytes <= budget or cf.whole
    assert cf.whole == (budget == 10 ** 9)
    g = torch.Generator().manual_seed(3)
    for n in (0, 1, 1500):
        idx = torch.randint(0, 800, (n,), generator=g)
        for ids in (idx, idx.int(), idx.numpy()):
            assert_bits_equal(cf.gather(ids), x[idx])
    out = torch.empty(1500, 37)
    assert cf.gather(idx, out=out) is out
    assert_bits_equal(out, x[idx])


@pytest.mark.parametrize("transfer", ["zero_copy", "staged"])
def test_cache_takes_the_longest_prefix_that_fits(transfer):
    """The budget bounds the device bytes the cache keeps, exactly: with a
    budget of device_nbytes(...)[k] the first k rows are cached and the
    resident arrays add up to the budget."""
    x = mixed_matrix(500)
    ct = ibp_gnn.compress(x)
    hot = np.arange(499, -1, -1)
    sizes = cache.device_nbytes(ct, hot, transfer)
    for k in (0, 1, 57, 300):
        cf = cache.CachedFeature(ct, hot, budget=int(sizes[k]), transfer=transfer)
        assert np.array_equal(cf.cached_ids, np.sort(hot[:k]))
        assert cf.device_nbytes == sizes[k]
        cf = cache.CachedFeature(ct, hot, budget=int(sizes[k + 1]) - 1, transfer=transfer)
        assert len(cf.cached_ids) == k and cf.device_nbytes <= sizes[k + 1] - 1
    # Measured: the subset's index and payload, the decode table and, for
    # zero-copy misses, the host tier's whole index (a uint64 base a block of
    # b rows, rb-byte offsets a row).
    s = cache.subset(ct, np.sort(hot[:57]))
    b, rb = ct._fields["block_rows"], ct._fields["rel_bytes"]
    host_index = 8 * (-(-500 // b) + 1) + 500 * rb if transfer == "zero_copy" else 0
    assert sizes[57] == (s._payload.nbytes + s._bases.nbytes + s._rel.nbytes
                         + ct._decode_table.nbytes + host_index)
    # Below what the misses need: nothing cached, and device_nbytes says so.
    for budget in (0, int(sizes[0]) - 1):
        cf = cache.CachedFeature(ct, hot, budget=budget, transfer=transfer)
        assert len(cf.cached_ids) == 0 and cf.cache_nbytes == 0
        assert cf.device_nbytes == cache.miss_resident_nbytes(ct, transfer) == sizes[0]
    # The whole tensor is cached as it is once it fits (no host index then).
    w = cache.whole_nbytes(ct)
    assert cache.CachedFeature(ct, hot, budget=w, transfer=transfer).device_nbytes == w
    assert cache.CachedFeature(ct, hot, budget=w, transfer=transfer).whole
    assert not cache.CachedFeature(ct, hot, budget=w - 1, transfer=transfer).whole
    # 499 rows and the host index of zero-copy misses take more than the whole.
    assert (sizes[499] >= w) == (transfer == "zero_copy")


def test_staged_cache_places_nothing_of_the_host_tier():
    """Staged misses bring their own index in each copy: the device holds the
    decode table and the cached rows, never the host tier's bases, rel or
    payload; zero-copy misses need the host tier's index there (not its
    payload, which the kernel reads from pinned host memory)."""
    x = mixed_matrix(600)
    ct = ibp_gnn.compress(x)
    hot = np.arange(0, 600, 4)
    host = {"bases": ct._bases, "rel": ct._rel, "payload": ct._payload}

    def placed_host(cf):
        return sorted(h for h, a in host.items()
                      for r in cf._resident.values() if np.shares_memory(np.asarray(r), a))
    budget = int(cache.device_nbytes(ct, hot, "zero_copy")[60])
    for transfer in ("staged", "auto", "zero_copy"):  # auto: zero-copy on the CPU
        cf = cache.CachedFeature(ct, hot, budget=budget, transfer=transfer)
        idx = np.random.default_rng(1).integers(0, 600, 700)
        assert_bits_equal(cf.gather(idx), x[idx])
        assert 0 < cf.hits < cf.requests
        want = [] if transfer == "staged" else ["bases", "rel"]
        assert placed_host(cf) == want, transfer
        assert sorted(cf._resident) == sorted(
            ["table", "cache_bases", "cache_rel", "cache_payload"]
            + ([] if transfer == "staged" else ["host_bases", "host_rel"]))
        assert cf.device_nbytes == sum(a.nbytes for a in cf._resident.values()) <= budget
    # The same budget caches more rows when the misses are staged.
    zc = cache.CachedFeature(ct, hot, budget=budget, transfer="zero_copy")
    st = cache.CachedFeature(ct, hot, budget=budget, transfer="staged")
    assert len(zc.cached_ids) == 60 < len(st.cached_ids)


def test_cached_counters_hand_computed():
    """Rows of 8 fp32 (32 bytes, one sector each raw); cache = rows {0, 1}."""
    x = torch.zeros(10, 8)
    x[3] = torch.arange(8.0)
    ct = ibp_gnn.compress(x)
    for transfer in ("zero_copy", "staged"):
        budget = int(cache.device_nbytes(ct, [0, 1], transfer)[-1])
        cf = cache.CachedFeature(ct, [0, 1], budget=budget, transfer=transfer)
        ids = np.array([0, 1, 3, 3, 9])
        assert_bits_equal(cf.gather(ids), x[ids])
        assert (cf.requests, cf.hits) == (5, 2)
        assert cf.hit_rate == 0.4
        assert cf.raw_bytes == 4 * 32  # row 3 twice in one launch: its sector once
        want = (cache.staged_bytes(ct, ids[2:]) if transfer == "staged"
                else 32 * cache.span_sectors(ct, ids[2:], distinct=True))
        assert cf.bus_bytes == want
        cf.reset_counters()
        assert cf.requests == cf.bus_bytes == 0


def raw_rows_tensor(words: np.ndarray) -> ibp_gnn.CompressedTensor:
    """uint32 rows with no zero word, every row stored raw (one group whose
    masks admit only zero words, no sparse rows)."""
    rows, w = words.shape
    tables = np.zeros((1, 2, w), np.uint32)
    tables[0, 0] = 0xFFFFFFFF
    e = _C.Encoder(4 * w, w, tables, allow_sparse=False)
    payload, rel, bases = e.encode(words.view(np.uint8).reshape(rows, 4 * w), 4 * w)
    last, b2 = e.finish()
    fields = dict(dtype=6, rows=rows, cols=w, row_words=w, num_groups=1, group_bits=0,
                  block_rows=e.block_rows, rel_bytes=e.rel_bytes, selector=0,
                  payload_bits=e.payload_bits, mode_rows=e.mode_rows)
    assert e.mode_rows[0] == rows
    return ibp_gnn.CompressedTensor(_C.pack_header(fields), tables, np.concatenate([bases, b2]),
                                    rel.view(np.uint16 if e.rel_bytes == 2 else np.uint32),
                                    np.concatenate([payload, last]))


def test_sector_counts_hand_computed():
    # Raw rows of 40 bytes: row 0 [0, 40) -> sectors 0, 1; row 1 [40, 80) -> 1, 2;
    # row 3 [120, 160) -> 3, 4; row 4 [160, 200) -> 5, 6.
    assert cache.raw_sectors(np.array([0, 1, 3, 4]), 40) == 8
    assert cache.raw_sectors(np.array([2]), 16) == 1
    assert cache.raw_sectors(np.array([], np.int64), 40) == 0
    # One launch: rows 0 and 1 share sector 1 -> sectors 0..6 once each.
    assert cache.raw_sectors(np.array([0, 1, 3, 4]), 40, distinct=True) == 7
    assert cache.raw_sectors(np.array([1, 0, 1]), 40, distinct=True) == 3
    assert cache.raw_sectors(np.array([7, 2, 7]), 16, distinct=True) == 2
    # IBP spans: rows of 3 words stored raw (2 + 96 bits), back to back.
    ct = raw_rows_tensor(np.random.default_rng(0).integers(1, 2**32, (12, 3), dtype=np.uint32))
    start, end = ct._row_spans(np.arange(12))
    assert np.array_equal(end - start, np.full(12, 98)) and start[0] == 0
    # Row 2: bits [196, 294) -> bytes [24, 37) -> sectors 0, 1. Row 5: [490, 588)
    # -> bytes [61, 74) -> sector 1, 2. Row 0: bytes [0, 13) -> sector 0.
    assert cache.span_sectors(ct, np.array([2])) == 2
    assert cache.span_sectors(ct, np.array([5, 0])) == 3
    # Rows 5, 0, 2 in one launch: sectors {0, 1, 2}; row 2 again adds none.
    assert cache.span_sectors(ct, np.array([5, 0, 2])) == 5
    assert cache.span_sectors(ct, np.array([5, 0, 2, 2]), distinct=True) == 3
    assert cache.span_sectors(ct, np.array([11]), distinct=True) == cache.span_sectors(
        ct, np.array([11]))
    # Staged: 3 rows = 294 bits = 10 words = 40 bytes, + bases (2 x 8) + rel
    # (3 x 2) = 62 bytes -> 2 sectors.
    assert ct._fields["rel_bytes"] == 2
    assert cache.staged_bytes(ct, np.array([2, 5, 0])) == 64


def small_graph(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Power-law-ish in-degrees: targets drawn with weight 1 / (rank + 1).
    w = 1.0 / torch.arange(1, n + 1).double()
    dst = torch.multinomial(w, 6 * n, replacement=True, generator=g)
    src = torch.randint(0, n, (6 * n,), generator=g)
    return CSCGraph.from_edge_index(torch.stack([src, dst]), n)


def test_hot_rows_presample_and_degree():
    graph = small_graph()
    deg = np.diff(graph.indptr.numpy())
    order = cache.degree_hot_rows(graph)
    assert sorted(order.tolist()) == list(range(400))
    assert np.all(np.diff(deg[order]) <= 0)
    seeds = torch.arange(0, 400, 2)
    # 200 seeds in batches of 64: 4 batches an epoch (the last of 8), 9 batches.
    counts = cache.presample_counts(graph, seeds, [3, 2], batch_size=64, num_batches=9, seed=1)
    # Reference: the same batches, sampled here and counted.
    rng = np.random.default_rng(1)
    want = np.zeros(400, np.int64)
    batches = []
    for epoch in range(3):
        perm = rng.permutation(seeds.numpy())
        batches += [perm[a:a + 64] for a in range(0, 200, 64)]
    assert [len(b) for b in batches[:5]] == [64, 64, 64, 8, 64]
    for step in range(9):
        sub = graph.sample(torch.from_numpy(batches[step]), [3, 2], seed=1 * 1_000_003 + step)
        want[sub.node.numpy()] += 1
    assert np.array_equal(counts, want)
    hot = cache.presample_hot_rows(graph, seeds, [3, 2], batch_size=64, num_batches=9, seed=1)
    score = counts + deg * counts.sum() / deg.sum()
    assert np.all(np.diff(score[hot]) <= 0)
    assert sorted(hot.tolist()) == list(range(400))
    with pytest.raises(ValueError, match="batch_size"):
        cache.presample_counts(graph, seeds, [3], batch_size=0)


def test_cached_feature_errors():
    ct = ibp_gnn.compress(mixed_matrix(100))
    with pytest.raises(ValueError, match="transfer.*'fast'"):
        cache.CachedFeature(ct, transfer="fast")
    with pytest.raises(ValueError, match="budget.*-5"):
        cache.CachedFeature(ct, budget=-5)
    with pytest.raises(ValueError, match="budget='auto'.*cpu"):
        cache.CachedFeature(ct, budget="auto")
    with pytest.raises(IndexError, match="hot|rows"):
        cache.CachedFeature(ct, [100])
    cf = cache.CachedFeature(ct, budget=0)
    with pytest.raises(IndexError, match="gather.*100"):
        cf.gather(torch.tensor([100]))
    with pytest.raises(ValueError, match="out has shape"):
        cf.gather(torch.tensor([1]), out=torch.empty(2, 37))


@cuda_available
@pytest.mark.parametrize("transfer", ["zero_copy", "staged"])
def test_cached_gather_on_gpu(transfer):
    x = mixed_matrix(800)
    ct = ibp_gnn.compress(x).pin_memory()
    hot = np.arange(0, 800, 2)
    budget = int(cache.device_nbytes(ct, hot, transfer)[200])
    cf = cache.CachedFeature(ct, hot, budget=budget, device="cuda", transfer=transfer)
    idx = torch.randint(0, 800, (3000,))
    for ids in (idx, idx.cuda()):
        assert_bits_equal(cf.gather(ids).cpu(), x[idx])
    assert 0 < cf.hits < cf.requests and len(cf.cached_ids) == 200
    # What the device holds is the budget; staged misses never upload the host
    # tier's index (ct._device_arrays), zero-copy ones keep it in cf._resident.
    assert cf.device_nbytes == sum(a.numel() for a in cf._resident.values()) == budget
    assert ("host_bases" in cf._resident) == (transfer == "zero_copy")
    assert not ct._device_cache
    whole = cache.CachedFeature(ct, budget=10 ** 9, device="cuda", transfer=transfer)
    assert whole.whole
    assert_bits_equal(whole.gather(idx.cuda()).cpu(), x[idx])


def _bus_bytes():
    """benchmarks/bus_bytes.py as a module."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bus_bytes
    finally:
        sys.path.pop(0)
    return bus_bytes


def test_bus_bytes_benchmark_tiny(tmp_path):
    """The benchmark's counts on a tiny graph equal a per-row recount."""
    bus_bytes = _bus_bytes()
    rng = np.random.default_rng(0)
    x = (rng.random((300, 24)) < 0.1).astype(np.float32)
    graph = small_graph(300)
    train = np.arange(0, 300, 3)
    rows = bus_bytes.run_graph("tiny", x, graph, train, fanouts=[3, 2], batch_size=16,
                               budgets=(0.05, 0.2), presample_batches=4, seed=0)
    ct = ibp_gnn.compress(x)
    batches = bus_bytes.epoch_batches(graph, train, [3, 2], 16, seed=0)
    row_bytes = 24 * 4
    raw = sum(32 * cache.raw_sectors(b, row_bytes, distinct=True) for b in batches)
    ibp = sum(32 * cache.span_sectors(ct, b, distinct=True) for b in batches)
    by = {(r["budget"], r["path"]): r for r in rows}
    assert by[(0.0, "raw UVA")]["bytes"] == raw
    assert by[(0.0, "IBP zero-copy")]["bytes"] == ibp
    for frac in (0.05, 0.2):
        budget = int(frac * x.nbytes)
        k = budget // row_bytes
        hot = cache.presample_hot_rows(graph, train, [3, 2], batch_size=16, num_batches=4,
                                       seed=bus_bytes.PRESAMPLE_SEED)
        cached = np.zeros(300, bool)
        cached[hot[:k]] = True
        want = sum(32 * cache.raw_sectors(b[~cached[b]], row_bytes, distinct=True)
                   for b in batches)
        assert by[(frac, "raw + cache (presampled)")]["bytes"] == want
        assert by[(frac, "IBP + compressed cache")]["bytes"] <= ibp
        # The compressed cache is sized as CachedFeature sizes it, each
        # variant charged what it keeps on the device (here: 5% caches
        # nothing with zero-copy misses, a few rows staged; 20% the whole).
        for path, transfer in (("IBP + compressed cache", "zero_copy"),
                               ("IBP + compressed cache + staged", "staged")):
            r = by[(frac, path)]
            cf = cache.CachedFeature(ct, hot, budget=budget, transfer=transfer)
            assert r["cache_rows"] == len(cf.cached_ids)
            assert cf.device_nbytes <= budget or r["cache_rows"] == 0
            slot = cf._slot.numpy()
            miss = [b[slot[b] < 0] for b in batches]
            assert r["bytes"] == (sum(cache.staged_bytes(ct, m) for m in miss)
                                  if transfer == "staged" else
                                  sum(32 * cache.span_sectors(ct, m, distinct=True)
                                      for m in miss))
        got = (by[(frac, "IBP + compressed cache")]["cache_rows"],
               by[(frac, "IBP + compressed cache + staged")]["cache_rows"])
        assert (got[0] == 0 < got[1] < 300) if frac == 0.05 else got == (300, 300)
        # The LRU baseline against a one-row-at-a-time reference LRU.
        warm = bus_bytes.epoch_batches(graph, train, [3, 2], 16, bus_bytes.WARMUP_SEED)
        assert by[(frac, "raw + cache (LRU)")]["bytes"] == bus_bytes.reference_lru(
            batches, k, row_bytes, warm)
        assert bus_bytes.lru_miss_sectors(batches, k, row_bytes, 300) == \
            bus_bytes.reference_lru(batches, k, row_bytes)
        s3, hit = bus_bytes.s3fifo_miss_sectors(batches, k, row_bytes, 300, warm)
        assert by[(frac, "raw + cache (S3-FIFO)")]["bytes"] == s3
        assert by[(frac, "raw + cache (S3-FIFO)")]["hit_rate"] == hit


def test_bus_bytes_benchmark_without_features_or_other_layout():
    """run_graph from compressed copies alone (x freed) counts the same bytes;
    other_layout=False leaves only the other-layout rows out, and the table
    shows them as '-'."""
    bus_bytes = _bus_bytes()
    rng = np.random.default_rng(1)
    x = (rng.random((300, 24)) < 0.1).astype(np.float32)
    graph, train = small_graph(300), np.arange(0, 300, 3)
    kw = dict(fanouts=[3, 2], batch_size=16, budgets=(0.05, 0.2), presample_batches=4,
              log=lambda line: None)
    full = bus_bytes.run_graph("t", x, graph, train, **kw)
    ct, other, _ = bus_bytes.compress_both(x)
    again = bus_bytes.run_graph("t", None, graph, train, ct=ct, other=other, **kw)
    assert [(r["path"], r["bytes"]) for r in again] == [(r["path"], r["bytes"]) for r in full]
    lean = bus_bytes.run_graph("t", None, graph, train, ct=ct, other_layout=False, **kw)
    want = [(r["path"], r["bytes"]) for r in full if "other layout" not in r["path"]]
    assert [(r["path"], r["bytes"]) for r in lean] == want and len(want) < len(full)
    assert bus_bytes.table(lean).splitlines()[2].endswith("| - | - |")
    assert not bus_bytes.table(full).splitlines()[2].endswith("| - | - |")
    with pytest.raises(ValueError, match="pass ct"):
        bus_bytes.run_graph("t", None, graph, train, ct=ct, **kw)


def test_s3fifo_hand_trace():
    """3 rows: S holds 1, M 2, the ghost 2 ids (see S3FIFO's docstring)."""
    bus_bytes = _bus_bytes()
    c = bus_bytes.S3FIFO(3, 8)
    trace = [([1], [0]), ([2], [0]), ([3], [0]),  # S = 1 2 3
             ([1], [1]),                          # hit: 1 counts an access
             ([4], [0]),   # full: 1 (accessed) -> M, 2 -> ghost; S = 3 4, M = 1
             ([2], [0]),   # 3 -> ghost; 2 was a ghost -> M = 1 2; S = 4
             ([1, 2, 5], [1, 1, 0]),  # hits count; 4 -> ghost; S = 5
             ([4, 3], [0, 0])]  # 5 -> ghost, 4 -> M; then M re-queues 1, 2, evicts 4; 3 -> M
    for batch, want in trace:
        assert c.access(np.array(batch)).astype(int).tolist() == want
    assert sorted(r for r in range(8) if r in c) == [1, 2, 3]
    assert list(c.M) == [1, 2, 3] and not c.S
    empty = bus_bytes.S3FIFO(0, 4)
    assert not empty.access(np.array([1, 1])).any() and 1 not in empty


@pytest.mark.skipif(not os.environ.get("IBP_LONG_TESTS"),
                    reason="runs the benchmark script (~30 s); set IBP_LONG_TESTS=1")
def test_bus_bytes_benchmark_runs_as_a_script(tmp_path):
    out = tmp_path / "t.md"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bus_bytes.py"), "--tiny",
                        "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "IBP + compressed cache" in out.read_text()


# ---- Hydra / stores --------------------------------------------------------------------------------
def _cfg(tmp_path, *overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[
            f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={tmp_path / 'out'}",
            "dataset.num_nodes=2000", "dataset.num_features=64", "trainer.epochs=1",
            "trainer.progress=false", "model.hidden=16", "loader.batch_size=128",
            "store=ibp", *overrides])


def test_train_with_a_cache_and_staged_misses_gives_the_same_losses(tmp_path):
    from ibp_gnn.train import train

    plain = train(_cfg(tmp_path))
    cached = train(_cfg(tmp_path, "store.cache=20000", "store.transfer=staged",
                        "store.cache_batches=4"))
    assert cached["batch_losses"] == plain["batch_losses"]  # bit-identical features
    ep = cached["epochs"][0]
    assert 0 < ep["cache_hit_rate"] < 1
    assert 0 < ep["bus_bytes"] < ep["raw_bus_bytes"]
    assert cached["store_info"]["cache"]["cache_nbytes"] <= 20000
    assert "cache_hit_rate" not in plain["epochs"][0]


@pytest.mark.parametrize("key,value,match", [
    ("store.cache", "-3", "store.cache=-3"), ("store.transfer", "dma", "store.transfer='dma'"),
    ("store.cache_hot", "random", "store.cache_hot='random'"),
    ("store.cache_batches", "0", "store.cache_batches=0")])
def test_cache_config_errors_name_key_and_value(tmp_path, key, value, match):
    from ibp_gnn.train import ConfigError, validate

    with pytest.raises(ConfigError, match=match.replace("[", r"\[")):
        validate(_cfg(tmp_path, "store.cache=1000", f"{key}={value}"))


def test_ibp_store_cache_from_arrays_needs_a_graph():
    from ibp_gnn.stores import IBPStore

    x = mixed_matrix(200)
    with pytest.raises(ValueError, match="store.cache=1000 needs the dataset's graph"):
        IBPStore(x, cache=1000)
    s = IBPStore(x, transfer="staged")  # no cache: staged misses only
    idx = torch.tensor([5, 3, 5, 199])
    assert_bits_equal(s.gather(idx), x[idx])
    assert s.cache_stats()["cache_hit_rate"] == 0


def test_pyg_feature_store_with_a_cache():
    pytest.importorskip("torch_geometric")
    from ibp_gnn.pyg import IBPFeatureStore

    x = mixed_matrix(500)
    store = IBPFeatureStore(compress="always")
    store.put_tensor(x, group_name=None, attr_name="x", index=None)
    store.put_tensor(torch.arange(500), group_name=None, attr_name="y", index=None)
    cf = store.set_cache("x", hot=np.arange(0, 500, 2), budget=20000, transfer="staged")
    idx = torch.randint(0, 500, (700,), generator=torch.Generator().manual_seed(0))
    assert_bits_equal(store.get_tensor(group_name=None, attr_name="x", index=idx), x[idx])
    assert cf.requests == 700 and 0 < cf.hits < 700
    with pytest.raises(ValueError, match="stored raw"):
        store.set_cache("y")


# ---- transfer=auto, counters across ranks, sample-only, DGL / Prefetcher --------------------------
@cuda_available
def test_transfer_auto_on_a_gpu_measures_both_paths():
    x = mixed_matrix(3000)
    ct = ibp_gnn.compress(x).pin_memory()
    cf = cache.CachedFeature(ct, np.arange(0, 3000, 5), budget=20000, device="cuda",
                             transfer="auto")
    p = cf.transfer_probe
    assert p["rows"] == 3000 - len(cf.cached_ids)
    assert cf.transfer == min(("zero_copy", "staged"), key=lambda k: p[f"{k}_s"])
    # Sized for zero-copy misses; staged ones free the host tier's index.
    assert ("host_bases" in cf._resident) == (cf.transfer == "zero_copy")
    assert cf.device_nbytes <= max(20000, cache.miss_resident_nbytes(ct, "zero_copy"))
    idx = torch.randint(0, 3000, (999,), generator=torch.Generator().manual_seed(0))
    assert_bits_equal(cf.gather(idx.cuda()).cpu(), x[idx])


def test_transfer_auto_on_the_cpu_is_zero_copy():
    ct = ibp_gnn.compress(mixed_matrix(100))
    cf = cache.CachedFeature(ct, [1, 2], budget=10 ** 6, transfer="auto")
    assert cf.transfer == "zero_copy" and cf.transfer_probe is None
    assert cf.describe()["transfer"] == "zero_copy"


def test_take_counters_sums_and_resets():
    x = torch.zeros(10, 8)
    ct = ibp_gnn.compress(x)
    cf = cache.CachedFeature(ct, [0, 1], budget=int(cache.device_nbytes(ct, [0, 1])[-1]),
                             transfer="zero_copy")
    cf.gather(np.array([0, 1, 3, 3, 9]))
    got = cf.take_counters()
    assert got == {"cache_hit_rate": 0.4, "cache_requests": 5,
                   "bus_bytes": 32 * cache.span_sectors(ct, np.array([3, 3, 9]), distinct=True),
                   "raw_bus_bytes": 4 * 32}
    assert cf.take_counters()["cache_requests"] == 0


def _ddp_rank(rank, world, init, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        x = torch.zeros(10, 8)
        ct = ibp_gnn.compress(x)
        cf = cache.CachedFeature(ct, [0, 1], budget=10 ** 6, transfer="zero_copy")
        cf.gather(np.array([0, 3]) if rank == 0 else np.array([1, 2, 4, 5]))
        torch.save(cf.take_counters(), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_take_counters_all_reduce_over_two_gloo_ranks(tmp_path):
    import torch.multiprocessing as mp

    init = f"file://{tmp_path / 'init'}"
    mp.start_processes(_ddp_rank, args=(2, init, str(tmp_path / "c")), nprocs=2,
                       start_method="fork")
    for rank in range(2):
        got = torch.load(tmp_path / f"c.{rank}")
        # rank 0: 2 rows, 1 hit; rank 1: 4 rows, 1 hit -> 6 rows, 2 hits on each rank.
        assert got["cache_requests"] == 6
        assert got["cache_hit_rate"] == 2 / 6
        assert got["raw_bus_bytes"] == 6 * 32


class _Batch:
    def __init__(self, ids):
        self.n_id = torch.as_tensor(ids)


def test_sample_only_counts_each_path_exactly():
    from ibp_gnn.stores import IBPStore

    x = mixed_matrix(300)
    store = IBPStore(x)
    store.cached = cache.CachedFeature(store.ct, np.arange(0, 300, 7), budget=3000)
    loader = [_Batch([5, 0, 7, 299, 14]), _Batch(np.arange(40, 90)), _Batch([3])]
    from ibp_gnn.training.sample_only import sample_only
    res = sample_only(store, loader, epochs=2, limit=2, log=lambda *a: None)
    assert res["sample_only"] and len(res["epochs"]) == 2
    ct, row_bytes = store.ct, x.shape[1] * 4
    b = [np.array([5, 0, 7, 299, 14]), np.arange(40, 90)]  # limit=2: the third is not sampled
    slot = store.cached._slot.numpy()
    miss = [i[slot[i] < 0] for i in b]
    want = {"rows": 55, "steps": 2,
            "raw_uva": sum(32 * cache.raw_sectors(i, row_bytes, distinct=True) for i in b),
            "ibp_zero_copy": sum(32 * cache.span_sectors(ct, i, distinct=True) for i in b),
            "ibp_staged": sum(cache.staged_bytes(ct, i) for i in b),
            "cache_hits": 55 - sum(len(m) for m in miss),
            "ibp_cache_zero_copy": sum(32 * cache.span_sectors(ct, m, distinct=True)
                                       for m in miss),
            "ibp_cache_staged": sum(cache.staged_bytes(ct, m) for m in miss)}
    for rec in res["epochs"]:
        assert {k: rec[k] for k in want} == want
        assert rec["cache_hit_rate"] == want["cache_hits"] / 55
        assert rec["ibp_zero_copy_vs_raw"] == want["ibp_zero_copy"] / want["raw_uva"]
    # cache_hits by hand: ids 0, 7, 14 of batch 1 and 42, 49, ..., 84 of batch 2 are
    # multiples of 7 (the cache holds the first rows of hot that fit 3000 bytes).
    cached = set(store.cached.cached_ids.tolist())
    assert want["cache_hits"] == sum(int(i) in cached for i in np.concatenate(b))


def test_train_sample_only_reports_bus_bytes(tmp_path):
    from ibp_gnn.train import train

    res = train(_cfg(tmp_path, "+sample_only=true", "store.cache=20000", "store.cache_batches=4",
                     "trainer.limit_train_batches=3"))
    assert res["sample_only"]
    rec = res["epochs"][0]
    assert rec["steps"] == 3 and rec["rows"] > 0
    assert 0 < rec["ibp_cache_zero_copy"] < rec["ibp_zero_copy"]
    assert 0 < rec["cache_hit_rate"] < 1
    assert res["store_info"]["cache"]["cache_nbytes"] <= 20000


def test_dgl_rows_and_prefetcher_with_a_cache():
    from ibp_gnn.dgl import _CompressedRows
    from ibp_gnn.prefetch import Prefetcher

    x = mixed_matrix(400)
    rows = _CompressedRows(x, op="test")
    cf = rows.set_cache(np.arange(0, 400, 3), budget=int(cache.device_nbytes(
        rows.ct, np.arange(0, 400, 3), "staged")[60]), transfer="staged")
    assert len(cf.cached_ids) == 60
    g = torch.Generator().manual_seed(2)
    batches = [torch.randint(0, 400, (90,), generator=g) for _ in range(4)]
    pf = Prefetcher(batches, transform=lambda ids: (ids, rows.gather(ids)), stores=[rows])
    for ids, got in pf:
        assert_bits_equal(got, x[ids])
    st = pf.last
    assert st.cache_requests == 360 and st.cache_hits == cf.hits > 0
    assert st.bus_bytes == cf.bus_bytes and st.raw_bus_bytes == cf.raw_bytes
    assert st.cache_hit_rate == cf.hit_rate
    # bytes_read counts the misses only.
    slot = cf._slot.numpy()
    assert rows.bytes_read == sum(rows.ct.fetch_nbytes(b[torch.from_numpy(slot[b.numpy()] < 0)])
                                  for b in batches)
    with pytest.raises(IndexError, match="out of range"):
        rows.gather(torch.tensor([400]))


def test_dgl_feature_update_refreshes_its_cache():
    from ibp_gnn.dgl import _FeatureImpl

    x = mixed_matrix(200)
    feat = _FeatureImpl(x)
    cf = feat.set_cache(np.arange(0, 200, 2), budget=10 ** 6, transfer="staged")
    assert 4 in cf.cached_ids
    new = torch.full((2, x.shape[1]), -1.5)
    feat.update(new, torch.tensor([4, 5]))
    want = x.clone()
    want[[4, 5]] = new
    idx = torch.tensor([4, 5, 6, 199])
    assert_bits_equal(feat.read(idx), want[idx])
    assert feat.cached is not cf and feat.cached.hits == 2  # rows 4 and 6 from the new cache
    feat.update(want * 2)
    assert_bits_equal(feat.read(idx), want[idx] * 2)
