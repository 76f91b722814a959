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

// (keys ptr, vals ptr, capacity)
RelabelTable table_view(const py::tuple& t) {
  require(t.size() == 3, "sampler: table must be (keys, vals, capacity)");
  const uint64_t cap = t[2].cast<uint64_t>();
  require(cap && (cap & (cap - 1)) == 0, "sampler: table capacity must be a power of two");
  return RelabelTable{reinterpret_cast<uint64_t*>(t[0].cast<uintptr_t>()),
                      reinterpret_cast<uint64_t*>(t[1].cast<uintptr_t>()), cap};
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
              bool replace, uintptr_t counts, uintptr_t stream) {
        const CscView g = ptr_view(graph);
        int err = 0;
        if (kCuda) {
          err = neighbor_count_cuda(g, cptr<int64_t>(frontier), n, fanout, replace,
                                    mptr<int64_t>(counts), reinterpret_cast<void*>(stream));
        } else {
          py::gil_scoped_release nogil;
          err = neighbor_count_host(g, cptr<int64_t>(frontier), n, fanout, replace,
                                    mptr<int64_t>(counts));
        }
        check(err, "neighbor_count");
      },
      py::arg("graph"), py::arg("frontier"), py::arg("n"), py::arg("fanout"),
      py::arg("replace"), py::arg("counts"), py::arg("stream") = 0);
  m.def(
      name("neighbor_pick").c_str(),
      [check](const py::tuple& graph, uintptr_t frontier, uint64_t n, uint64_t first_local,
              int64_t fanout, bool replace, uint64_t seed, uint32_t hop, uintptr_t offsets,
              uintptr_t edge, uintptr_t nbr, uintptr_t col, uintptr_t stream) {
        const CscView g = ptr_view(graph);
        int err = 0;
        if (kCuda) {
          err = neighbor_pick_cuda(g, cptr<int64_t>(frontier), n, first_local, fanout, replace,
                                   seed, hop, cptr<int64_t>(offsets), mptr<int64_t>(edge),
                                   mptr<int64_t>(nbr), mptr<int64_t>(col),
                                   reinterpret_cast<void*>(stream));
        } else {
          py::gil_scoped_release nogil;
          err = neighbor_pick_host(g, cptr<int64_t>(frontier), n, first_local, fanout, replace,
                                   seed, hop, cptr<int64_t>(offsets), mptr<int64_t>(edge),
                                   mptr<int64_t>(nbr), mptr<int64_t>(col));
        }
        check(err, "neighbor_pick");
      },
      py::arg("graph"), py::arg("frontier"), py::arg("n"), py::arg("first_local"),
      py::arg("fanout"), py::arg("replace"), py::arg("seed"), py::arg("hop"), py::arg("offsets"),
      py::arg("edge"), py::arg("nbr"), py::arg("col"), py::arg("stream") = 0);
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
      "neighbor_sample",
      [](const py::array& indptr, const py::array& indices,
         const py::array_t<int64_t, py::array::c_style>& seeds, const std::vector<int64_t>& fanouts,
         bool replace, uint64_t seed, int threads, bool exact_threads) {
        const CscView g = cpu_view(indptr, indices, "neighbor_sample");
        require(seeds.ndim() == 1, "neighbor_sample: seeds must be 1-D");
        SampleOptions opt{fanouts.data(), static_cast<uint32_t>(fanouts.size()), replace, seed};
        NeighborSample out;
        const int64_t* s = seeds.data();
        const auto n = static_cast<uint64_t>(seeds.size());
        {
          py::gil_scoped_release nogil;
          neighbor_sample_cpu(g, s, n, opt, threads, &out, exact_threads);
        }
        return py::make_tuple(to_numpy(std::move(out.node)), to_numpy(std::move(out.row)),
                              to_numpy(std::move(out.col)), to_numpy(std::move(out.edge)),
                              out.num_sampled_nodes, out.num_sampled_edges);
      },
      py::arg("indptr"), py::arg("indices"), py::arg("seeds"), py::arg("fanouts"),
      py::arg("replace") = false, py::arg("seed") = 0, py::arg("threads") = 1,
      py::arg("exact_threads") = false,
      "CPU neighbour sampling: (node, row, col, edge, num_sampled_nodes, num_sampled_edges); "
      "layout in csrc/sampler/neighbor.h");

  bind_steps<true>(m, "_cuda");
  bind_steps<false>(m, "_host");

}
