// Binding of the neighbour sampler into ibp_gnn._C (see csrc/bindings.cpp).
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_sampler(py::module_& m) { (void)m; }
