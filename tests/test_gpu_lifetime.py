"""CUDA lifetime and stream bookkeeping of the Python layer, checked on the CPU
with fakes of torch.cuda's events and streams (test_cuda.py runs the same
paths on a GPU): buffers outlive the launches that read them, batches made on
one stream are waited for on another, and a driver too old for _C's CUDA
runtime is an error that names both versions."""
import gc
import subprocess
import sys
import textwrap
import threading
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import ibp_gnn
from ibp_gnn import _C, _cuda, prefetch
from ibp_gnn import sampler as sampler_mod

from conftest import gpu_skip_failure

ROOT = Path(__file__).resolve().parent.parent


class Log(list):
    def __call__(self, *entry):
        self.append(entry)


class FakeEvent:
    """torch.cuda.Event stand-in: done once synchronized (or when told)."""

    def __init__(self, log: Log):
        self.log, self.done, self.stream = log, False, None

    def record(self, stream):
        self.stream = stream
        self.log("record", self, stream)

    def query(self):
        return self.done

    def synchronize(self):
        self.done = True
        self.log("synchronize", self)


class FakeStream:
    def __init__(self, name, handle, device=torch.device("cuda", 0)):
        self.name, self.cuda_stream, self.device = name, handle, device
        self.waited = []

    def wait_event(self, event):
        self.waited.append(event)

    def __repr__(self):
        return f"FakeStream({self.name})"


# ---- StreamUses ----------------------------------------------------------------------------
def test_stream_uses_keeps_the_latest_event_per_stream_and_waits_for_all():
    log = Log()
    uses = _cuda.StreamUses(lambda: FakeEvent(log))
    a, b = FakeStream("a", 1), FakeStream("b", 2)
    uses.record(a)
    uses.record(a)
    uses.record(b)
    assert uses.pending() == 2  # one event per stream: a stream runs in order
    first_a = log[0][1]
    latest_a, latest_b = log[1][1], log[2][1]
    assert latest_a.stream is a and latest_b.stream is b and first_a is not latest_a
    uses.wait()
    synced = [e[1] for e in log if e[0] == "synchronize"]
    assert set(map(id, synced)) == {id(latest_a), id(latest_b)}
    assert uses.pending() == 0


def test_stream_uses_drops_events_of_finished_streams():
    log = Log()
    uses = _cuda.StreamUses(lambda: FakeEvent(log))
    streams = [FakeStream(str(i), i + 1) for i in range(50)]
    for s in streams:
        uses.record(s)
        log[-1][1].done = True  # that launch ended
    assert uses.pending() == 1  # only the latest one, not yet queried
    log[-1][1].done = False
    uses.record(streams[-1])
    uses.wait()
    assert log[-1][0] == "synchronize"


# ---- CompressedTensor: record per launch, wait before unregister --------------------------
class FakeBuf:
    def __init__(self, ptr, log):
        self.ptr, self.log = ptr, log

    def data_ptr(self):
        return self.ptr

    def record_stream(self, s):
        self.log("record_stream", self.ptr, s)


@pytest.fixture
def fake_cuda(monkeypatch):
    """Enough of torch.cuda and _C for CompressedTensor._gather_cuda to run on
    CPU tensors: launches are logged, not run."""
    log = Log()
    side = FakeStream("side", 77)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: side)
    monkeypatch.setattr(torch.cuda, "device", lambda d: types.SimpleNamespace(
        __enter__=lambda *a: None, __exit__=lambda *a: None))
    monkeypatch.setattr(torch.cuda, "Event", lambda: FakeEvent(log))
    monkeypatch.setattr(_C, "cuda_built", lambda: True)
    monkeypatch.setattr(_cuda, "current_problem", lambda: None)
    monkeypatch.setattr(_C, "gather_cuda", lambda *a: log("launch", a[-1]) or 0)
    monkeypatch.setattr(_C, "host_unregister", lambda p: log("unregister", p) or 0)
    return log, side


class _Ctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_gather_records_the_launch_and_del_waits_before_unregister(fake_cuda, monkeypatch):
    log, side = fake_cuda
    monkeypatch.setattr(torch.cuda, "device", lambda d: _Ctx())
    ct = ibp_gnn.compress(torch.randn(64, 9))
    tables = tuple(FakeBuf(p, log) for p in (11, 12, 13))
    ct._device_arrays = lambda device: tables
    ct._registered = (0xABC000, 0xABC000)  # as pin_memory leaves it
    out = torch.empty(5, 9)
    ct._gather_cuda(torch.tensor([3, 1, 4, 1, 5]), out, "test")
    kinds = [e[0] for e in log]
    assert kinds[0] == "launch" and log[0][1] == side.cuda_stream
    # Tables allocated on another stream are marked as used on the launch's stream.
    assert [(e[1], e[2]) for e in log if e[0] == "record_stream"] == [(11, side), (12, side),
                                                                      (13, side)]
    recorded = [e for e in log if e[0] == "record"]
    assert len(recorded) == 1 and recorded[0][2] is side
    event = recorded[0][1]
    assert not event.done
    del ct  # the last reference
    gc.collect()
    kinds = [e[0] for e in log]
    assert kinds[-2:] == ["synchronize", "unregister"], kinds
    assert log[-2][1] is event and log[-1][1] == 0xABC000


def test_del_of_a_pinned_copy_waits_for_its_gathers(fake_cuda, monkeypatch):
    """The fallback pinned copy goes back to torch's host allocator when the
    tensor dies: queued gathers must have finished by then."""
    log, side = fake_cuda
    monkeypatch.setattr(torch.cuda, "device", lambda d: _Ctx())
    ct = ibp_gnn.compress(torch.randn(64, 9))
    monkeypatch.setattr(ct, "_device_arrays", lambda device: tuple(FakeBuf(p, log)
                                                                   for p in (1, 2, 3)))
    ct._pinned = torch.from_numpy(np.asarray(ct._payload).view(np.int32))
    ct._gather_cuda(torch.tensor([0, 63]), torch.empty(2, 9), "test")
    ct.__del__()
    assert [e[0] for e in log][-1] == "synchronize"
    assert not any(e[0] == "unregister" for e in log)


def test_del_without_gpu_use_needs_no_cuda(monkeypatch):
    monkeypatch.setattr(_C, "host_unregister", lambda p: pytest.fail("nothing was registered"))
    ct = ibp_gnn.compress(torch.randn(8, 3))
    ct.__del__()  # no events, no registration: nothing to do


# ---- the sampler registers a read-only mapping read-only ------------------------------------
def test_sampler_registers_graph_arrays_read_only(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(_C, "cuda_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(_C, "host_register",
                        lambda ptr, nbytes, read_only=False: calls.append(read_only) or (0, ptr))
    monkeypatch.setattr(_C, "host_unregister", lambda p: 0)
    np.save(tmp_path / "indices.npy", np.arange(10, dtype=np.int64) % 5)
    mapped = np.load(tmp_path / "indices.npy", mmap_mode="r")  # read-only pages
    reg = sampler_mod._HostRegistration(torch.from_numpy(np.array(mapped)))
    assert calls == [True] and reg.device_ptr


# ---- Prefetcher(device=None) with batches a store put on a GPU ------------------------------
class CudaBatch:
    """A batch whose tensors (as far as the prefetcher can tell) live on cuda:0."""
    device = torch.device("cuda", 0)

    def __init__(self, i):
        self.i, self.recorded = i, []

    def record_stream(self, s):
        self.recorded.append(s)


def test_prefetcher_without_device_hands_gpu_batches_over_with_an_event(monkeypatch):
    log = Log()
    streams = {}

    def current_stream(device=None):
        name = threading.current_thread().name  # torch's current stream is per thread
        return streams.setdefault(name, FakeStream(name, len(streams) + 1))

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_stream", current_stream)
    monkeypatch.setattr(torch.cuda, "Event", lambda: FakeEvent(log))
    pf = ibp_gnn.Prefetcher([CudaBatch(i) for i in range(4)], device=None)
    got = list(pf)
    assert [b.i for b in got] == [0, 1, 2, 3]
    producer, consumer = streams["ibp_gnn-prefetch"], streams[threading.current_thread().name]
    events = [e[1] for e in log if e[0] == "record"]
    assert len(events) == 4 and all(e.stream is producer for e in events)
    assert consumer.waited == events  # the consumer's stream waits for each batch's event
    assert all(b.recorded == [consumer] for b in got)


def test_prefetcher_cpu_batches_make_no_events(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "Event", lambda: pytest.fail("no event for CPU batches"))
    batches = [{"x": torch.zeros(2), "y": [torch.ones(1)]} for _ in range(3)]
    assert len(list(ibp_gnn.Prefetcher(batches))) == 3


def test_cuda_devices_finds_nested_and_pyg_tensors():
    pyg = pytest.importorskip("torch_geometric.data")
    on_gpu = CudaBatch(0)
    data = pyg.Data(x=torch.zeros(2, 2))
    assert prefetch._cuda_devices([{"a": on_gpu}, (torch.zeros(1),), data]) == {on_gpu.device}
    assert prefetch._cuda_devices(data) == set()


# ---- a driver older than _C's CUDA runtime ----------------------------------------------------
OLD_DRIVER = dict(driver=12040, runtime=13000, device_count=0, count_error=35)


def test_runtime_problem_names_driver_and_runtime():
    msg = _cuda.runtime_problem(2, True, OLD_DRIVER)
    assert "torch sees 2 CUDA device(s)" in msg
    assert "CUDA driver 12.4" in msg and "runtime 13.0" in msg
    assert "cudaErrorInsufficientDriver" in msg and "CUDA >= 13.0" in msg


@pytest.mark.parametrize("torch_devices, built, versions", [
    (0, True, OLD_DRIVER),  # no GPU: nothing to report
    (1, False, OLD_DRIVER),  # built without CUDA: reported where CUDA is asked for
    (1, True, dict(driver=13000, runtime=13000, device_count=1, count_error=0)),
])
def test_runtime_problem_none_when_consistent(torch_devices, built, versions):
    assert _cuda.runtime_problem(torch_devices, built, versions) is None


def test_runtime_problem_other_failure():
    msg = _cuda.runtime_problem(1, True, dict(driver=13000, runtime=13000, device_count=0,
                                              count_error=100))
    assert "cudaError 100" in msg and "older" not in msg


def test_this_machine_has_no_problem_or_reports_it():
    v = _C.cuda_versions()
    assert set(v) == {"driver", "runtime", "device_count", "count_error"}
    if _C.cuda_built():
        assert v["runtime"] >= 11000  # the runtime linked in, with or without a driver
    else:
        assert v["runtime"] == -1
    if not torch.cuda.is_available():
        assert _cuda.current_problem() is None


def test_gather_and_pin_memory_fail_loudly_on_an_old_driver(monkeypatch):
    problem = _cuda.runtime_problem(1, True, OLD_DRIVER)
    monkeypatch.setattr(_cuda, "current_problem", lambda: problem)
    monkeypatch.setattr(_C, "cuda_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(_C, "host_register", lambda *a, **k: pytest.fail("must not register"))
    ct = ibp_gnn.compress(torch.randn(8, 3))
    with pytest.raises(RuntimeError, match=r"pin_memory: .*driver 12\.4.*runtime 13\.0"):
        ct.pin_memory()
    with pytest.raises(RuntimeError, match=r"gather: .*driver 12\.4.*runtime 13\.0"):
        ct._gather_cuda(torch.tensor([0]), torch.empty(1, 3), "CompressedTensor.gather")


def test_gpu_skip_becomes_failure_only_on_a_problem():
    reason = "needs a CUDA GPU, a CUDA build of torch and the CUDA gather built in"
    assert gpu_skip_failure(reason, None) is None
    assert gpu_skip_failure("checks the message given without a GPU", "p") is None
    assert "driver 12.4" in gpu_skip_failure(reason, _cuda.runtime_problem(1, True, OLD_DRIVER))


def test_conftest_turns_gpu_skips_into_failures(tmp_path):
    """In a pytest run where torch sees a GPU _C cannot use, a GPU test errors
    with the versions in its report; other skips stay skips."""
    (tmp_path / "conftest.py").write_text(textwrap.dedent(f"""
        import importlib.util, sys
        from ibp_gnn import _cuda
        _cuda._checked[:] = [_cuda.runtime_problem(1, True, {OLD_DRIVER!r})]
        spec = importlib.util.spec_from_file_location("ibp_conftest", {str(ROOT / 'tests' / 'conftest.py')!r})
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        pytest_runtest_makereport = mod.pytest_runtest_makereport
    """))
    (tmp_path / "test_inner.py").write_text(textwrap.dedent("""
        import pytest
        @pytest.mark.skipif(True, reason="needs a CUDA GPU and the CUDA gather built in")
        def test_gpu():
            pass
        @pytest.mark.skipif(True, reason="checks the message given without a GPU")
        def test_other():
            pass
    """))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA",
                        str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "1 skipped, 1 error" in out, out  # the skip at setup becomes a setup error
    assert "driver 12.4" in out and "runtime 13.0" in out, out


def test_stream_uses_tells_default_streams_of_two_devices_apart():
    log = Log()
    uses = _cuda.StreamUses(lambda: FakeEvent(log))
    uses.record(FakeStream("d0", 0, torch.device("cuda", 0)))  # handle 0 on both devices
    uses.record(FakeStream("d1", 0, torch.device("cuda", 1)))
    assert uses.pending() == 2


def test_handoff_uses_the_side_stream_for_the_target_device(monkeypatch):
    """device="cuda:0": the event goes on the prefetcher's side stream; a tensor
    the loader left on cuda:1 gets an event on that device's current stream."""
    log = Log()
    current = {}

    def current_stream(device=None):
        d = torch.device(device)
        return current.setdefault(d, FakeStream(f"current-{d}", 10 + len(current), d))

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_stream", current_stream)
    monkeypatch.setattr(torch.cuda, "Event", lambda: FakeEvent(log))
    side = FakeStream("side", 5)

    class OnOne(CudaBatch):
        device = torch.device("cuda", 1)

    batch = {"a": CudaBatch(0), "b": OnOne(1)}
    events = prefetch._handoff(batch, torch.device("cuda", 0), side)
    assert [(d.index, e.stream) for d, e in events] == [
        (0, side), (1, current[torch.device("cuda", 1)])]
    prefetch._adopt(batch, events)
    assert current[torch.device("cuda", 0)].waited == [events[0][1]]
    assert current[torch.device("cuda", 1)].waited == [events[1][1]]
