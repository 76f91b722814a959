"""ibp_gnn.prefetch.Prefetcher: same batches, in order, produced ahead in a
background thread; errors and early exits handled; per-epoch stats."""
import threading
import time
import warnings

import pytest
import torch

from ibp_gnn import _C
from ibp_gnn.prefetch import EpochStats, Prefetcher

needs_gpu = pytest.mark.skipif(
    not (torch.cuda.is_available() and _C.cuda_built() and _C.cuda_device_count() > 0),
    reason="needs a CUDA GPU, a CUDA build of torch and the CUDA gather built in")


class SlowLoader:
    """Batches that take `delay` seconds each to produce (sleeping, like a
    decoder that released the GIL); records the producing thread."""

    def __init__(self, n, delay=0.0, fail_at=None):
        self.n, self.delay, self.fail_at = n, delay, fail_at
        self.threads = set()
        self.produced = 0

    def __len__(self):
        return self.n

    def __iter__(self):
        for i in range(self.n):
            if i == self.fail_at:
                raise ValueError(f"batch {i} is broken")
            time.sleep(self.delay)
            self.threads.add(threading.get_ident())
            self.produced += 1
            yield {"x": torch.full((2, 3), float(i)), "i": i}


def test_same_batches_in_order_from_another_thread():
    loader = SlowLoader(7)
    pf = Prefetcher(loader, depth=3)
    got = [b["i"] for b in pf]
    assert got == list(range(7)) and len(pf) == 7
    assert loader.threads and threading.get_ident() not in loader.threads
    stats = pf.last
    assert isinstance(stats, EpochStats) and stats.batches == 7 and stats.complete
    assert stats.bytes_read == stats.raw_bytes_read == 0 and stats.fetch_ratio == 1.0
    assert [b["i"] for b in pf] == got and len(pf.history) == 2 and pf.history[1].epoch == 1
    assert "epoch 1: 7 batches" in str(pf.last)


def test_overlaps_production_with_consumption():
    """While the consumer still holds batch i, the loader already produces batch
    i + 1 (a serial loop would not start it until asked: the wait times out)."""
    n, delay = 6, 0.01
    started = [threading.Event() for _ in range(n)]

    class Loader:
        def __len__(self):
            return n

        def __iter__(self):
            for i in range(n):
                started[i].set()
                time.sleep(delay)  # sampling + gather
                yield {"i": i}

    pf = Prefetcher(Loader(), depth=2)
    for b in pf:
        if b["i"] + 1 < n:
            assert started[b["i"] + 1].wait(timeout=30), b["i"]
    assert pf.last.batches == n and pf.last.complete
    assert pf.last.produce_s >= delay * n  # time.sleep never returns early
    assert pf.last.wait_s >= 0


def test_errors_reach_the_consumer():
    pf = Prefetcher(SlowLoader(5, fail_at=3))
    seen = []
    with pytest.raises(ValueError, match="batch 3 is broken"):
        for b in pf:
            seen.append(b["i"])
    assert seen == [0, 1, 2] and not pf.last.complete

    def bad_transform(batch):
        raise KeyError("no such feature")

    with pytest.raises(KeyError, match="no such feature"):
        next(iter(Prefetcher(SlowLoader(3), transform=bad_transform)))


def test_early_exit_stops_the_thread():
    loader = SlowLoader(100, delay=0.002)
    pf = Prefetcher(loader, depth=2)
    before = threading.active_count()
    for b in pf:
        if b["i"] == 4:
            break
    time.sleep(0.05)
    assert threading.active_count() <= before
    assert pf.last.batches == 5 and not pf.last.complete
    assert loader.produced <= 5 + 2 + 1  # at most `depth` (+ the one in hand) ahead


def test_transform_and_device():
    pf = Prefetcher(SlowLoader(3), "cpu", transform=lambda b: {**b, "y": b["x"] * 2})
    for b in pf:
        assert torch.equal(b["y"], b["x"] * 2)


def test_background_threads_setting():
    class Probe:
        def __iter__(self):
            yield torch.get_num_threads()

    main = torch.get_num_threads()
    assert list(Prefetcher(Probe())) == [1]
    assert list(Prefetcher(Probe(), threads=None)) == [main]
    assert torch.get_num_threads() == main
    seen = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert seen == [main]  # the default of later threads is restored


def test_argument_errors():
    with pytest.raises(ValueError, match=r"depth must be a positive int, got 0"):
        Prefetcher([], depth=0)
    with pytest.raises(ValueError, match=r"threads must be a positive int or None, got 0"):
        Prefetcher([], threads=0)
    with pytest.raises(TypeError, match=r"transform must be callable, got int"):
        Prefetcher([], transform=3)
    with pytest.raises(TypeError, match=r"store object has no bytes_read"):
        Prefetcher([], stores=[object()])
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match=r"torch.cuda.is_available\(\) is False"):
            Prefetcher([], "cuda")


# ---- with PyG and the compressed store ------------------------------------------------------------
def pyg_setup(seed=0):
    pytest.importorskip("torch_geometric")
    from torch_geometric.data import Data
    from torch_geometric.loader import NeighborLoader

    from ibp_gnn.pyg import from_data
    from ibp_gnn.sampler import NeighborSampler

    g = torch.Generator().manual_seed(seed)
    n = 400
    data = Data(x=(torch.rand(n, 64, generator=g) < 0.05).float(),
                y=torch.randint(0, 4, (n,), generator=g),
                edge_index=torch.randint(0, n, (2, 3000), generator=g), num_nodes=n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fs, gs = from_data(data, compress="always")

    def loader():
        return NeighborLoader((fs, gs), [8, 4], input_nodes=torch.arange(n), batch_size=50,
                              shuffle=True, filter_per_worker=False,
                              generator=torch.Generator().manual_seed(0),
                              neighbor_sampler=NeighborSampler((fs, gs), [8, 4], seed=1))
    return data, fs, loader


def train(batches, data):
    from torch_geometric.nn.models import GraphSAGE

    torch.manual_seed(0)
    model = GraphSAGE(64, 16, num_layers=2, out_channels=4, dropout=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(2):
        for batch in batches:
            assert torch.equal(batch.x.view(torch.int32), data.x[batch.n_id].view(torch.int32))
            opt.zero_grad()
            out = model(batch.x, batch.edge_index)[:batch.batch_size]
            loss = torch.nn.functional.cross_entropy(out, batch.y[:batch.batch_size])
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses


def test_prefetched_training_equals_plain_and_reports_bytes():
    data, fs, loader = pyg_setup()
    plain = train(loader(), data)
    fs.reset_counters()
    pf = Prefetcher(loader(), "cpu")
    assert pf.stores == [fs]
    assert train(pf, data) == plain  # bit-identical run, sampling in the background
    assert len(pf.history) == 2
    for st in pf.history:
        assert st.batches == 8 and st.complete
        assert 0 < st.bytes_read < st.raw_bytes_read and st.fetch_ratio > 4
    assert sum(s.bytes_read for s in pf.history) == fs.bytes_read


@needs_gpu
def test_prefetch_to_cuda():
    data, fs, loader = pyg_setup(seed=3)
    pf = Prefetcher(loader(), "cuda", depth=2)
    n = 0
    for batch in pf:
        assert batch.x.is_cuda and batch.edge_index.is_cuda
        y = batch.x @ torch.ones(64, 1, device="cuda")  # consumer-stream work
        assert torch.equal(batch.x.cpu(), data.x[batch.n_id.cpu()])
        assert torch.allclose(y.cpu(), data.x[batch.n_id.cpu()].sum(1, keepdim=True))
        n += 1
    assert n == 8 and pf.last.complete
