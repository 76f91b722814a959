// Binding of the neighbour sampler into ibp_gnn._C (see csrc/bindings.cpp).
// CPU entry points take numpy arrays and release the GIL; the CUDA steps and
// their host twins take integer pointers, so ibp_gnn.sampler can hand them
// torch tensors on any device. Checks here are about array shapes and types;
// ibp_gnn.sampler checks values (id ranges, a monotone indptr) once.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "neighbor.h"

namespace py = pybind11;
using namespace ibp::sampler;

namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

// Whether a 1-D contiguous integer array is int64 (else int32); throws otherwise.
bool is_int64(const py::array& a, const char* op, const char* name) {
  const auto kind = a.dtype().kind();
  require(a.ndim() == 1 && (a.flags() & py::array::c_style) && (kind == 'i') &&
              (a.itemsize() == 4 || a.itemsize() == 8),
          std::string(op) + ": " + name + " must be a contiguous 1-D int32 or int64 array, got " +
              std::to_string(a.ndim()) + "-D dtype " + std::string(py::str(a.dtype())));
  return a.itemsize() == 8;
}

CscView cpu_view(const py::array& indptr, const py::array& indices, const char* op) {
  CscView g{};
  g.indptr64 = is_int64(indptr, op, "indptr");
  g.indices64 = is_int64(indices, op, "indices");
  require(indptr.size() >= 1, std::string(op) + ": indptr must have num_nodes + 1 >= 1 entries");
  g.indptr = indptr.data();
  g.indices = indices.data();
  g.num_nodes = static_cast<uint64_t>(indptr.size()) - 1;
  g.num_edges = static_cast<uint64_t>(indices.size());
  return g;
}

// (indptr ptr, indptr is int64, indices ptr, indices is int64, num_nodes, num_edges)
CscView ptr_view(const py::tuple& g) {
  require(g.size() == 6, "sampler: graph must be (indptr, indptr64, indices, indices64, "
                         "num_nodes, num_edges)");
  CscView v{};
  v.indptr = reinterpret_cast<const void*>(g[0].cast<uintptr_t>());
  v.indptr64 = g[1].cast<bool>();
  v.indices = reinterpret_cast<const void*>(g[2].cast<uintptr_t>());
  v.indices64 = g[3].cast<bool>();
  v.num_nodes = g[4].cast<uint64_t>();
  v.num_edges = g[5].cast<uint64_t>();
  return v;
}

template <typename Fn>
void with_ptr_type(const CscView& g, const Fn& fn) {
  if (g.indptr64) {
    fn(static_cast<const int64_t*>(g.indptr));
  } else {
    fn(static_cast<const int32_t*>(g.indptr));
  }
}

// (keys ptr, vals ptr, capacity)
RelabelTable table_view(const py::tuple& t) {
  require(t.size() == 3, "sampler: table must be (keys, vals, capacity)");
  const uint64_t cap = t[2].cast<uint64_t>();
  require(cap && (cap & (cap - 1)) == 0, "sampler: table capacity must be a power of two");
  return RelabelTable{reinterpret_cast<uint64_t*>(t[0].cast<uintptr_t>()),
                      reinterpret_cast<uint64_t*>(t[1].cast<uintptr_t>()), cap};
}

// (weight prefix sums ptr or 0, edge times ptr or 0, strategy is "last")
PickMode mode_view(const py::tuple& m) {
  require(m.size() == 3, "sampler: mode must be (wcum, etime, last)");
  PickMode mode;
  mode.wcum = reinterpret_cast<const double*>(m[0].cast<uintptr_t>());
  mode.etime = reinterpret_cast<const int64_t*>(m[1].cast<uintptr_t>());
  mode.last = m[2].cast<bool>();
  return mode;
}

template <typename T>
const T* cptr(uintptr_t p) {
  return reinterpret_cast<const T*>(p);
}
template <typename T>
T* mptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

// A numpy array owning the vector's storage (no copy).
py::array_t<int64_t> to_numpy(IdVector&& v) {
  auto* owner = new IdVector(std::move(v));
  py::capsule free_owner(owner, [](void* p) { delete static_cast<IdVector*>(p); });
  return py::array_t<int64_t>({static_cast<py::ssize_t>(owner->size())}, {sizeof(int64_t)},
                              owner->data(), free_owner);
}

// The CUDA steps and their host twins share one signature, the stream last.
template <bool kCuda>
void bind_steps(py::module_& m, const char* suffix) {
  auto name = [suffix](const char* op) { return std::string(op) + suffix; };
  auto check = [suffix](int err, const char* op) {
    if (err != 0) {
      throw std::runtime_error(std::string("sampler ") + op + suffix +
                               (err < 0 ? ": the module was built without CUDA"
                                        : ": CUDA kernel launch failed with cudaError " +
                                              std::to_string(err)));
    }
  };
  m.def(
      name("neighbor_count").c_str(),
      [check](const py::tuple& graph, uintptr_t frontier, uint64_t n, int64_t fanout,
              bool replace, uintptr_t counts, uintptr_t stream, const py::tuple& mode_t,
              uintptr_t bounds) {
        const CscView g = ptr_view(graph);
        const PickMode mode = mode_view(mode_t);
        int err = 0;
        if (kCuda) {
          err = neighbor_count_cuda(g, cptr<int64_t>(frontier), n, fanout, replace, mode,
                                    cptr<int64_t>(bounds), mptr<int64_t>(counts),
                                    reinterpret_cast<void*>(stream));
        } else {
          py::gil_scoped_release nogil;
          err = neighbor_count_host(g, cptr<int64_t>(frontier), n, fanout, replace, mode,
                                    cptr<int64_t>(bounds), mptr<int64_t>(counts));
        }
        check(err, "neighbor_count");
      },
      py::arg("graph"), py::arg("frontier"), py::arg("n"), py::arg("fanout"),
      py::arg("replace"), py::arg("counts"), py::arg("stream") = 0,
      py::arg("mode") = py::make_tuple(0, 0, false), py::arg("bounds") = 0);
  m.def(
      name("neighbor_pick").c_str(),
      [check](const py::tuple& graph, uintptr_t frontier, uint64_t n, uint64_t first_local,
              int64_t fanout, bool replace, uint64_t seed, uint32_t hop, uintptr_t offsets,
              uintptr_t edge, uintptr_t nbr, uintptr_t col, uintptr_t stream,
              const py::tuple& mode_t, uintptr_t bounds) {
        const CscView g = ptr_view(graph);
        const PickMode mode = mode_view(mode_t);
        int err = 0;
        if (kCuda) {
          err = neighbor_pick_cuda(g, cptr<int64_t>(frontier), n, first_local, fanout, replace,
                                   seed, hop, mode, cptr<int64_t>(bounds), cptr<int64_t>(offsets),
                                   mptr<int64_t>(edge), mptr<int64_t>(nbr), mptr<int64_t>(col),
                                   reinterpret_cast<void*>(stream));
        } else {
          py::gil_scoped_release nogil;
          err = neighbor_pick_host(g, cptr<int64_t>(frontier), n, first_local, fanout, replace,
                                   seed, hop, mode, cptr<int64_t>(bounds), cptr<int64_t>(offsets),
                                   mptr<int64_t>(edge), mptr<int64_t>(nbr), mptr<int64_t>(col));
        }
        check(err, "neighbor_pick");
      },
      py::arg("graph"), py::arg("frontier"), py::arg("n"), py::arg("first_local"),
      py::arg("fanout"), py::arg("replace"), py::arg("seed"), py::arg("hop"), py::arg("offsets"),
      py::arg("edge"), py::arg("nbr"), py::arg("col"), py::arg("stream") = 0,
      py::arg("mode") = py::make_tuple(0, 0, false), py::arg("bounds") = 0);
  m.def(
      name("relabel_insert").c_str(),
      [check](const py::tuple& table, uintptr_t ids, uint64_t n, uint64_t base, uintptr_t stream) {
        const RelabelTable t = table_view(table);
        const int err = kCuda ? relabel_insert_cuda(t, cptr<int64_t>(ids), n, base,
                                                    reinterpret_cast<void*>(stream))
                              : relabel_insert_host(t, cptr<int64_t>(ids), n, base);
        check(err, "relabel_insert");
      },
      py::arg("table"), py::arg("ids"), py::arg("n"), py::arg("base"), py::arg("stream") = 0);
  m.def(
      name("relabel_mark").c_str(),
      [check](const py::tuple& table, uintptr_t ids, uint64_t n, uint64_t base, uintptr_t first,
              uintptr_t stream) {
        const RelabelTable t = table_view(table);
        const int err = kCuda ? relabel_mark_cuda(t, cptr<int64_t>(ids), n, base,
                                                  mptr<int64_t>(first),
                                                  reinterpret_cast<void*>(stream))
                              : relabel_mark_host(t, cptr<int64_t>(ids), n, base,
                                                  mptr<int64_t>(first));
        check(err, "relabel_mark");
      },
      py::arg("table"), py::arg("ids"), py::arg("n"), py::arg("base"), py::arg("first"),
      py::arg("stream") = 0);
  m.def(
      name("relabel_finish").c_str(),
      [check](const py::tuple& table, uintptr_t ids, uint64_t n, uint64_t base, uintptr_t rank,
              uintptr_t row, uintptr_t new_nodes, uintptr_t stream) {
        const RelabelTable t = table_view(table);
        const int err =
            kCuda ? relabel_finish_cuda(t, cptr<int64_t>(ids), n, base, cptr<int64_t>(rank),
                                        mptr<int64_t>(row), mptr<int64_t>(new_nodes),
                                        reinterpret_cast<void*>(stream))
                  : relabel_finish_host(t, cptr<int64_t>(ids), n, base, cptr<int64_t>(rank),
                                        mptr<int64_t>(row), mptr<int64_t>(new_nodes));
        check(err, "relabel_finish");
      },
      py::arg("table"), py::arg("ids"), py::arg("n"), py::arg("base"), py::arg("rank"),
      py::arg("row"), py::arg("new_nodes"), py::arg("stream") = 0);
  m.def(
      name("relabel_commit").c_str(),
      [check](const py::tuple& table, uintptr_t ids, uint64_t n, uint64_t base, uintptr_t rank,
              uintptr_t stream) {
        const RelabelTable t = table_view(table);
        const int err = kCuda ? relabel_commit_cuda(t, cptr<int64_t>(ids), n, base,
                                                    cptr<int64_t>(rank),
                                                    reinterpret_cast<void*>(stream))
                              : relabel_commit_host(t, cptr<int64_t>(ids), n, base,
                                                    cptr<int64_t>(rank));
        check(err, "relabel_commit");
      },
      py::arg("table"), py::arg("ids"), py::arg("n"), py::arg("base"), py::arg("rank"),
      py::arg("stream") = 0);
}

}  // namespace

void bind_sampler(py::module_& m) {
  m.attr("CSC_OK") = static_cast<int>(CscStatus::kOk);
  m.attr("CSC_INDPTR_FIRST") = static_cast<int>(CscStatus::kIndptrFirst);
  m.attr("CSC_INDPTR_DECREASING") = static_cast<int>(CscStatus::kIndptrDecreasing);
  m.attr("CSC_INDPTR_LAST") = static_cast<int>(CscStatus::kIndptrLast);
  m.attr("CSC_INDEX_OUT_OF_RANGE") = static_cast<int>(CscStatus::kIndexOutOfRange);

  m.def(
      "validate_csc",
      [](const py::array& indptr, const py::array& indices, int threads) {
        const CscView g = cpu_view(indptr, indices, "validate_csc");
        uint64_t where = 0;
        CscStatus s;
        {
          py::gil_scoped_release nogil;
          s = validate_csc(g, threads, &where);
        }
        return py::make_tuple(static_cast<int>(s), where);
      },
      py::arg("indptr"), py::arg("indices"), py::arg("threads") = 1,
      "(status, first offending position) of a CSC graph; status CSC_OK when valid");

  m.def(
      "segment_cumsum",
      [](const py::array& indptr, const py::array_t<double, py::array::c_style>& weight) {
        // Per node, the inclusive prefix sums of its edges' weights, summed in
        // CSC order (the sampler's weighted picks read them, pick.h).
        const CscView g = cpu_view(indptr, indptr, "segment_cumsum");
        require(weight.ndim() == 1, "segment_cumsum: weight must be 1-D");
        const auto m = static_cast<uint64_t>(weight.size());
        py::array_t<double> out(static_cast<py::ssize_t>(m));
        const double* w = weight.data();
        double* o = out.mutable_data();
        {
          py::gil_scoped_release nogil;
          with_ptr_type(g, [&](const auto* p) {
            for (uint64_t v = 0; v < g.num_nodes; ++v) {
              double acc = 0.0;
              const auto b = static_cast<uint64_t>(p[v]), e = static_cast<uint64_t>(p[v + 1]);
              for (uint64_t j = b; j < e && j < m; ++j) o[j] = acc += w[j];
            }
          });
        }
        return out;
      },
      py::arg("indptr"), py::arg("weight"));

  m.def(
      "neighbor_sample",
      [](const py::array& indptr, const py::array& indices,
         const py::array_t<int64_t, py::array::c_style>& seeds, const std::vector<int64_t>& fanouts,
         bool replace, uint64_t seed, int threads, bool exact_threads, bool disjoint,
         const py::object& wcum, const py::object& etime, const py::object& seed_time,
         bool last) {
        const CscView g = cpu_view(indptr, indices, "neighbor_sample");
        require(seeds.ndim() == 1, "neighbor_sample: seeds must be 1-D");
        SampleOptions opt{fanouts.data(), static_cast<uint32_t>(fanouts.size()), replace, seed};
        opt.disjoint = disjoint;
        opt.mode.last = last;
        const auto n = static_cast<uint64_t>(seeds.size());
        // Optional per-edge / per-seed arrays, kept alive for the call.
        py::array_t<double, py::array::c_style> wc;
        py::array_t<int64_t, py::array::c_style> et, st;
        if (!wcum.is_none()) {
          wc = py::array_t<double, py::array::c_style>::ensure(wcum);
          require(wc && wc.ndim() == 1 && static_cast<uint64_t>(wc.size()) == g.num_edges,
                  "neighbor_sample: edge weight prefix sums must be num_edges float64 values");
          opt.mode.wcum = wc.data();
        }
        if (!etime.is_none()) {
          et = py::array_t<int64_t, py::array::c_style>::ensure(etime);
          require(et && et.ndim() == 1 && static_cast<uint64_t>(et.size()) == g.num_edges,
                  "neighbor_sample: edge times must be num_edges int64 values");
          // Beyond one hop a node's bound is its root's: only disjoint samples know it.
          require(!seed_time.is_none() && (disjoint || fanouts.size() <= 1),
                  "neighbor_sample: temporal sampling needs seed times and, beyond one hop, "
                  "disjoint=True");
          st = py::array_t<int64_t, py::array::c_style>::ensure(seed_time);
          require(st && st.ndim() == 1 && static_cast<uint64_t>(st.size()) == n,
                  "neighbor_sample: seed times must be one int64 per seed");
          opt.mode.etime = et.data();
          opt.seed_time = st.data();
        }
        NeighborSample out;
        const int64_t* s = seeds.data();
        {
          py::gil_scoped_release nogil;
          neighbor_sample_cpu(g, s, n, opt, threads, &out, exact_threads);
        }
        return py::make_tuple(to_numpy(std::move(out.node)), to_numpy(std::move(out.row)),
                              to_numpy(std::move(out.col)), to_numpy(std::move(out.edge)),
                              out.num_sampled_nodes, out.num_sampled_edges,
                              to_numpy(std::move(out.batch)));
      },
      py::arg("indptr"), py::arg("indices"), py::arg("seeds"), py::arg("fanouts"),
      py::arg("replace") = false, py::arg("seed") = 0, py::arg("threads") = 1,
      py::arg("exact_threads") = false, py::arg("disjoint") = false,
      py::arg("wcum") = py::none(), py::arg("etime") = py::none(),
      py::arg("seed_time") = py::none(), py::arg("last") = false,
      "CPU neighbour sampling: (node, row, col, edge, num_sampled_nodes, num_sampled_edges, "
      "batch); layout in csrc/sampler/neighbor.h (batch is empty unless disjoint)");

  bind_steps<true>(m, "_cuda");
  bind_steps<false>(m, "_host");

}
