// pybind11 binding of the torch-free core as ibp_gnn._C. Arrays come in as
// numpy arrays (CPU) or integer device pointers (CUDA). This module is the
// private layer under ibp_gnn: it checks array shapes, not id ranges, which
// ibp_gnn checks once at its public entry points.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>

#include "ibp/coded.h"
#include "ibp/encode.h"
#include "ibp/format.h"
#include "ibp/gather.h"
#include "ibp/cpu/gather_cpu.h"
#include "ibp/runtime.h"
#include "ibp/subset.h"
#include "ibp/validate.h"

namespace py = pybind11;
using namespace ibp;

// Defined in csrc/sampler/bind.cpp.
void bind_sampler(py::module_& m);

template <typename T>
using Array = py::array_t<T, py::array::c_style>;

namespace {

FileHeader header_from_bytes(const py::bytes& b) {
  const std::string s = b;
  if (s.size() != sizeof(FileHeader)) {
    throw std::invalid_argument("ibp header: expected " + std::to_string(sizeof(FileHeader)) +
                                " bytes, got " + std::to_string(s.size()));
  }
  FileHeader h;
  std::memcpy(&h, s.data(), sizeof(h));
  return h;
}

py::dict header_to_dict(const FileHeader& h) {
  py::dict d;
  d["version"] = h.version;
  d["header_bytes"] = h.header_bytes;
  d["dtype"] = h.dtype;
  d["word_view"] = h.word_view;
  d["rows"] = h.rows;
  d["cols"] = h.cols;
  d["row_words"] = h.row_words;
  d["num_groups"] = h.num_groups;
  d["group_bits"] = h.group_bits;
  d["block_rows"] = h.block_rows;
  d["rel_bytes"] = h.rel_bytes;
  d["selector"] = h.selector;
  d["payload_bits"] = h.payload_bits;
  d["mode_rows"] = py::make_tuple(h.mode_rows[0], h.mode_rows[1], h.mode_rows[2], h.mode_rows[3]);
  d["crc_tables"] = h.crc_tables;
  d["crc_index"] = h.crc_index;
  d["crc_payload"] = h.crc_payload;
  d["crc_header"] = h.crc_header;
  d["code_rows"] = h.code_rows;
  d["layout"] = h.layout;
  return d;
}

py::bytes pack_header(const py::dict& d) {
  FileHeader h;
  std::memset(&h, 0, sizeof(h));
  std::memcpy(h.magic, kMagic, sizeof(kMagic));
  h.version = d.contains("version") ? d["version"].cast<uint32_t>() : kFormatVersion;
  h.header_bytes = sizeof(FileHeader);
  h.dtype = d["dtype"].cast<uint32_t>();
  h.word_view = 0;
  h.rows = d["rows"].cast<uint64_t>();
  h.cols = d["cols"].cast<uint64_t>();
  h.row_words = d["row_words"].cast<uint32_t>();
  h.num_groups = d["num_groups"].cast<uint32_t>();
  h.group_bits = d["group_bits"].cast<uint32_t>();
  h.block_rows = d["block_rows"].cast<uint32_t>();
  h.rel_bytes = d["rel_bytes"].cast<uint32_t>();
  h.selector = d["selector"].cast<uint32_t>();
  h.payload_bits = d["payload_bits"].cast<uint64_t>();
  auto modes = d["mode_rows"].cast<py::sequence>();
  for (size_t i = 0; i < 4; ++i) h.mode_rows[i] = modes[i].cast<uint64_t>();
  h.crc_tables = d.contains("crc_tables") ? d["crc_tables"].cast<uint32_t>() : 0;
  h.crc_index = d.contains("crc_index") ? d["crc_index"].cast<uint32_t>() : 0;
  h.crc_payload = d.contains("crc_payload") ? d["crc_payload"].cast<uint32_t>() : 0;
  h.crc_header = d.contains("crc_header") ? d["crc_header"].cast<uint32_t>() : 0;
  h.code_rows = d.contains("code_rows") ? d["code_rows"].cast<uint32_t>() : 0;
  h.layout = d.contains("layout") ? d["layout"].cast<uint8_t>() : 0;
  return py::bytes(reinterpret_cast<const char*>(&h), sizeof(h));
}

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

// Every one of the n ids below rows; else an error naming the op, the
// argument and the first id out of range (the message built only then).
void require_ids(const uint64_t* ids, uint64_t n, uint64_t rows, const char* op,
                 const char* arg) {
  for (uint64_t i = 0; i < n; ++i) {
    if (ids[i] >= rows) {
      throw std::invalid_argument(std::string("ibp ") + op + ": " + arg + " id out of range: " +
                                  arg + "[" + std::to_string(i) + "] = " +
                                  std::to_string(ids[i]) + ", rows " + std::to_string(rows));
    }
  }
}

// Rows of a C-contiguous 2-D uint8 matrix of row_bytes columns.
uint64_t rows_of(const py::array& x, uint64_t row_bytes, const char* op) {
  require((x.flags() & py::array::c_style) && x.ndim() == 2 && x.itemsize() == 1 &&
              static_cast<uint64_t>(x.shape(1)) == row_bytes,
          std::string("ibp ") + op + ": x must be a C-contiguous uint8 matrix of row_bytes columns");
  return static_cast<uint64_t>(x.shape(0));
}

// The CPU view of a tensor whose arrays match its header.
CompressedView cpu_view(const FileHeader& h, const Array<uint32_t>& table,
                        const Array<uint64_t>& bases, const py::array& rel,
                        const Array<uint32_t>& payload) {
  const Geometry geo = geometry_of(h);
  require(static_cast<uint64_t>(table.size()) ==
              static_cast<uint64_t>(h.num_groups) * (kDecodeRows + decode_code_rows(h.code_rows)) *
                  h.row_words,
          "ibp gather: decode table has the wrong size");
  require(static_cast<uint64_t>(bases.size()) == (h.rows + h.block_rows - 1) / h.block_rows + 1,
          "ibp gather: bases has the wrong size");
  require(static_cast<uint64_t>(rel.nbytes()) == h.rows * h.rel_bytes,
          "ibp gather: rel has the wrong size");
  require(static_cast<uint64_t>(payload.size()) == geo.payload_words,
          "ibp gather: payload has the wrong size");
  return CompressedView{geo, table.data(), bases.data(), rel.data(), payload.data()};
}

// The header and the tables' and offsets' shapes, before a validate_* call.
Status check_validate_args(const FileHeader& h, const Array<uint32_t>& tables,
                           const py::array& rel, std::string* msg) {
  const Status s = validate_header(h, msg);
  if (s != Status::kOk) return s;
  if (static_cast<uint64_t>(tables.size()) != (2ull + h.code_rows) * h.num_groups * h.row_words) {
    *msg = "mask table has the wrong size";
    return Status::kBadHeader;
  }
  if (rel.itemsize() != h.rel_bytes || !(rel.flags() & py::array::c_style)) {
    *msg = "row offsets have the wrong width";
    return Status::kBadIndex;
  }
  return Status::kOk;
}

// The sizes the row checks rely on (validate_sections checks them and more).
Status check_row_args(const FileHeader& h, const Array<uint32_t>&, const Array<uint64_t>& bases,
                      const py::array& rel, const Array<uint32_t>& payload, std::string* msg) {
  const uint64_t blocks = (h.rows + h.block_rows - 1) / h.block_rows;
  if (static_cast<uint64_t>(bases.size()) != blocks + 1 ||
      static_cast<uint64_t>(rel.size()) != h.rows ||
      static_cast<uint64_t>(payload.size()) != payload_words(h.payload_bits)) {
    *msg = "index or payload has the wrong size";
    return Status::kBadIndex;
  }
  return Status::kOk;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "ibp_gnn core: Invariant Bit Packing codec (torch-free)";
  m.attr("FORMAT_VERSION") = kFormatVersion;
  m.attr("HEADER_BYTES") = sizeof(FileHeader);
  m.attr("SECTION_ALIGN") = kSectionAlign;
  m.attr("PAYLOAD_PAD_WORDS") = kPayloadPadWords;
  m.attr("DECODE_ROWS") = kDecodeRows;

  bind_sampler(m);

  m.def("cuda_built", &cuda_built);
  m.def("cpu_has_bmi2", &cpu_has_bmi2);
  m.def("cpu_kernels", [] {
    std::vector<int> k;
    for (int i = 1; i <= 4; ++i) {
      if (cpu_has_kernel(static_cast<CpuKernel>(i))) k.push_back(i);
    }
    return k;
  }, "CPU gather kernels this CPU runs: 1 portable, 2 bmi2, 3 avx2, 4 avx512.");
  m.def("cpu_kernel", [] { return static_cast<int>(auto_kernel()); },
        "The kernel a gather with kernel=0 uses (IBP_CPU_KERNEL or the fastest).");
  m.def("gather_threads",
        [](uint64_t n, uint64_t row_bytes, int threads, int64_t payload_bytes) {
          return gather_threads(n, row_bytes, threads,
                                payload_bytes < 0 ? row_bytes : static_cast<uint64_t>(payload_bytes));
        },
        py::arg("n"), py::arg("row_bytes"), py::arg("threads"), py::arg("payload_bytes") = -1,
        "Threads a CPU gather of n rows of row_bytes bytes (payload_bytes compressed bytes "
        "each on average; default row_bytes) uses when allowed `threads`.");
  m.def("cuda_device_count", &cuda_device_count);
  m.def("cuda_versions", [] {
    const CudaVersions v = cuda_versions();
    py::dict d;
    d["driver"] = v.driver;
    d["runtime"] = v.runtime;
    d["device_count"] = v.device_count;
    d["count_error"] = v.count_error;
    return d;
  });
  m.def(
      "host_register",
      [](uintptr_t ptr, uint64_t bytes, bool read_only) {
        uintptr_t dev = 0;
        const int err = host_register(reinterpret_cast<void*>(ptr), bytes, read_only, &dev);
        return py::make_tuple(err, dev);
      },
      py::arg("ptr"), py::arg("bytes"), py::arg("read_only") = false);
  m.def("host_unregister",
        [](uintptr_t ptr) { return host_unregister(reinterpret_cast<void*>(ptr)); });

  m.def("index_geometry", [](uint32_t row_words, uint32_t group_bits) {
    uint32_t b = 0, r = 0;
    if (!index_geometry(row_words, group_bits, &b, &r)) {
      throw std::invalid_argument("ibp: rows of " + std::to_string(row_words) +
                                  " words are too long for the format");
    }
    return py::make_tuple(b, r);
  });
  m.def("group_bits_for", &group_bits_for);
  m.def("payload_words", &payload_words);

  m.def("pack_header", &pack_header, "Header fields (dict) -> 128 header bytes");
  m.def("unpack_header", [](const py::bytes& b) { return header_to_dict(header_from_bytes(b)); });
  m.def("validate_header", [](const py::bytes& b) {
    std::string msg;
    const Status s = validate_header(header_from_bytes(b), &msg);
    return py::make_tuple(static_cast<int>(s), std::string(msg));
  });
  m.def("file_layout", [](const py::bytes& b) {
    const FileLayout l = file_layout(header_from_bytes(b));
    py::dict d;
    d["tables"] = py::make_tuple(l.tables, l.tables_bytes);
    d["bases"] = py::make_tuple(l.bases, l.bases_bytes);
    d["rel"] = py::make_tuple(l.rel, l.rel_bytes);
    d["payload"] = py::make_tuple(l.payload, l.payload_bytes);
    d["total"] = l.total;
    return d;
  });

  m.def(
      "select_masks",
      [](const py::array& x, uint64_t row_bytes, uint32_t row_words, const Array<uint64_t>& sample,
         uint32_t selector, bool frames) {
        require(selector <= static_cast<uint32_t>(Selector::kPaper), "ibp: unknown selector");
        const uint64_t rows = rows_of(x, row_bytes, "select_masks");
        const uint64_t* s = sample.data();
        require_ids(s, static_cast<uint64_t>(sample.size()), rows, "select_masks", "sample");
        Array<uint32_t> mask(row_words), value(row_words);
        const auto* base = static_cast<const uint8_t*>(x.data());
        {
          py::gil_scoped_release nogil;
          select_masks(base, row_bytes, row_words, s, sample.size(),
                       static_cast<Selector>(selector), mask.mutable_data(),
                       value.mutable_data(), frames);
        }
        return py::make_tuple(mask, value);
      },
      py::arg("x"), py::arg("row_bytes"), py::arg("row_words"), py::arg("sample"),
      py::arg("selector"), py::arg("frames") = true);

  py::class_<Encoder>(m, "Encoder")
      .def(py::init([](uint64_t row_bytes, uint32_t row_words, const Array<uint32_t>& tables,
                       bool allow_sparse, bool sparse_code, uint32_t layout) {
             require(tables.ndim() == 3 &&
                         (tables.shape(1) == 2 || tables.shape(1) == 10 || tables.shape(1) == 18) &&
                         static_cast<uint64_t>(tables.shape(2)) == row_words,
                     "ibp Encoder: tables must have shape (groups, 2 + code_rows, row_words), "
                     "code_rows 0, 8 or 16");
             require(layout <= static_cast<uint32_t>(RowLayout::kSectors),
                     "ibp Encoder: layout must be 0 (packed) or 1 (sectors), got " +
                         std::to_string(layout));
             auto* e = new Encoder(row_bytes, row_words, static_cast<uint32_t>(tables.shape(0)),
                                   tables.data(), allow_sparse,
                                   static_cast<uint32_t>(tables.shape(1) - 2), sparse_code);
             e->set_layout(static_cast<RowLayout>(layout));
             return e;
           }),
           py::arg("row_bytes"), py::arg("row_words"), py::arg("tables"),
           py::arg("allow_sparse") = true, py::arg("sparse_code") = true,
           py::arg("layout") = 0)
      .def_property_readonly("layout",
                             [](const Encoder& e) { return static_cast<uint32_t>(e.layout()); })
      .def_property_readonly("block_rows", &Encoder::block_rows)
      .def_property_readonly("rel_bytes", &Encoder::rel_bytes)
      .def_property_readonly("group_bits", &Encoder::group_bits)
      .def_property_readonly("code_rows", &Encoder::code_rows)
      .def_property_readonly("payload_bits", &Encoder::payload_bits)
      .def_property_readonly("rows", &Encoder::rows)
      .def_property_readonly("mode_rows",
                             [](const Encoder& e) {
                               const uint64_t* m = e.mode_rows();
                               return py::make_tuple(m[0], m[1], m[2], m[3]);
                             })
      .def(
          "encode",
          [](Encoder& e, const py::array& x, uint64_t row_bytes, int threads) {
            const uint64_t n = rows_of(x, row_bytes, "Encoder.encode");
            std::vector<uint32_t> words;
            std::vector<uint8_t> rel;
            std::vector<uint64_t> bases;
            {
              py::gil_scoped_release nogil;
              e.encode(static_cast<const uint8_t*>(x.data()), n, threads, &words, &rel, &bases);
            }
            return py::make_tuple(Array<uint32_t>(words.size(), words.data()),
                                  Array<uint8_t>(rel.size(), rel.data()),
                                  Array<uint64_t>(bases.size(), bases.data()));
          },
          py::arg("x"), py::arg("row_bytes"), py::arg("threads") = 1)
      .def(
          "row_bits",
          [](const Encoder& e, const py::array& x, uint64_t row_bytes, int threads) {
            const uint64_t n = rows_of(x, row_bytes, "Encoder.row_bits");
            const auto groups = static_cast<py::ssize_t>(e.num_groups());
            Array<uint64_t> out({static_cast<py::ssize_t>(n), groups});
            const auto* xp = static_cast<const uint8_t*>(x.data());
            uint64_t* op = out.mutable_data();
            {
              py::gil_scoped_release nogil;
              e.row_bits(xp, n, threads, op);
            }
            return out;
          },
          py::arg("x"), py::arg("row_bytes"), py::arg("threads") = 1)
      .def("finish", [](Encoder& e) {
        std::vector<uint32_t> words;
        std::vector<uint64_t> bases;
        e.finish(&words, &bases);
        return py::make_tuple(Array<uint32_t>(words.size(), words.data()),
                              Array<uint64_t>(bases.size(), bases.data()));
      });

  m.def("build_decode_table", [](const Array<uint32_t>& tables) {
    require(tables.ndim() == 3 &&
                (tables.shape(1) == 2 || tables.shape(1) == 10 || tables.shape(1) == 18),
            "ibp build_decode_table: tables must have shape (groups, 2 + code_rows, row_words)");
    const auto G = static_cast<uint32_t>(tables.shape(0));
    const auto W = static_cast<uint32_t>(tables.shape(2));
    const auto C = static_cast<uint32_t>(tables.shape(1) - 2);
    Array<uint32_t> out(static_cast<py::ssize_t>(G) * (kDecodeRows + decode_code_rows(C)) * W);
    build_decode_table(G, W, tables.data(), out.mutable_data(), C);
    return out;
  });

  m.def(
      "select_codes",
      [](const py::array& x, uint64_t row_bytes, uint32_t row_words, uint32_t dtype,
         const Array<uint64_t>& sample, const std::optional<Array<uint64_t>>& prior) -> py::object {
        const uint64_t rows = rows_of(x, row_bytes, "select_codes");
        const uint64_t* s = sample.data();
        require_ids(s, static_cast<uint64_t>(sample.size()), rows, "select_codes", "sample");
        const uint64_t* pr = prior ? prior->data() : nullptr;
        const uint64_t np = prior ? static_cast<uint64_t>(prior->size()) : 0;
        require_ids(pr, np, rows, "select_codes", "prior");
        // (the weighted code bits, up to 2 * sample.size() * np * 31, must fit 64 bits)
        require(np == 0 || static_cast<double>(sample.size()) * static_cast<double>(np) < 0x1p56,
                "ibp select_codes: sample and prior too large (their sizes' product must be < 2^56)");
        require(dtype < static_cast<uint32_t>(DType::kNumDTypes), "ibp select_codes: unknown dtype");
        const uint32_t C = code_rows_for(dtype);
        Array<uint32_t> codes({static_cast<py::ssize_t>(C), static_cast<py::ssize_t>(row_words)});
        bool ok;
        {
          py::gil_scoped_release nogil;
          ok = select_codes(static_cast<const uint8_t*>(x.data()), row_bytes, row_words, dtype, s,
                            sample.size(), codes.mutable_data(), pr, np);
        }
        if (!ok) return py::none();
        return codes;
      },
      py::arg("x"), py::arg("row_bytes"), py::arg("row_words"), py::arg("dtype"),
      py::arg("sample"), py::arg("prior") = py::none(),
      "One group's code rows (code_rows_for(dtype), row_words) from the sample rows, or None "
      "for a dtype without kCoded rows; prior: the ids of a wider sample (every group's rows) "
      "whose symbol counts are added at the sample's total weight.");

  m.def(
      "validate_arrays",
      [](const py::bytes& header, const Array<uint32_t>& tables, const Array<uint64_t>& bases,
         const py::array& rel, const Array<uint32_t>& payload, int threads) {
        const FileHeader h = header_from_bytes(header);
        std::string msg;
        Status s = validate_header(h, &msg);
        if (s == Status::kOk) {
          if (static_cast<uint64_t>(tables.size()) !=
              (2ull + h.code_rows) * h.num_groups * h.row_words) {
            return py::make_tuple(static_cast<int>(Status::kBadHeader),
                                  std::string("mask table has the wrong size"));
          }
          if (rel.itemsize() != h.rel_bytes || !(rel.flags() & py::array::c_style)) {
            return py::make_tuple(static_cast<int>(Status::kBadIndex),
                                  std::string("row offsets have the wrong width"));
          }
          py::gil_scoped_release nogil;
          s = validate_arrays(h, tables.data(), bases.data(), bases.size(), rel.data(),
                              rel.size(), payload.data(), payload.size(), threads, &msg);
        }
        return py::make_tuple(static_cast<int>(s), std::string(msg));
      },
      py::arg("header"), py::arg("tables"), py::arg("bases"), py::arg("rel"), py::arg("payload"),
      py::arg("threads") = 1);

  // The checks of validate.h one by one, for loads that check rows later
  // (ibp_gnn.load's verify=). Each first checks the header and the arrays'
  // sizes against it; validate_row_range and validate_rows need arrays that
  // passed validate_sections.
  m.def(
      "validate_sections",
      [](const py::bytes& header, const Array<uint32_t>& tables, const Array<uint64_t>& bases,
         const py::array& rel, const Array<uint32_t>& payload) {
        const FileHeader h = header_from_bytes(header);
        std::string msg;
        Status s = check_validate_args(h, tables, rel, &msg);
        if (s == Status::kOk) {
          py::gil_scoped_release nogil;
          s = validate_sections(h, tables.data(), bases.data(), bases.size(), rel.size(),
                                payload.size(), &msg);
        }
        return py::make_tuple(static_cast<int>(s), msg);
      },
      py::arg("header"), py::arg("tables"), py::arg("bases"), py::arg("rel"), py::arg("payload"));
  m.def(
      "validate_row_range",
      [](const py::bytes& header, const Array<uint32_t>& tables, const Array<uint64_t>& bases,
         const py::array& rel, const Array<uint32_t>& payload, uint64_t begin, uint64_t end,
         int threads) {
        const FileHeader h = header_from_bytes(header);
        std::string msg;
        uint64_t counts[4] = {0, 0, 0, 0};
        Status s = check_validate_args(h, tables, rel, &msg);
        if (s == Status::kOk) s = check_row_args(h, tables, bases, rel, payload, &msg);
        if (s == Status::kOk) {
          py::gil_scoped_release nogil;
          s = validate_row_range(h, tables.data(), bases.data(), rel.data(), payload.data(),
                                 begin, end, threads, counts, &msg);
        }
        return py::make_tuple(static_cast<int>(s), msg,
                              py::make_tuple(counts[0], counts[1], counts[2], counts[3]));
      },
      py::arg("header"), py::arg("tables"), py::arg("bases"), py::arg("rel"), py::arg("payload"),
      py::arg("begin"), py::arg("end"), py::arg("threads") = 1);
  m.def(
      "validate_mode_counts",
      [](const py::bytes& header, const std::vector<uint64_t>& counts) {
        require(counts.size() == 4, "ibp validate_mode_counts: counts must hold 4 numbers");
        std::string msg;
        const Status s = validate_mode_counts(header_from_bytes(header), counts.data(), &msg);
        return py::make_tuple(static_cast<int>(s), msg);
      },
      py::arg("header"), py::arg("counts"));
  m.def(
      "validate_rows",
      [](const py::bytes& header, const Array<uint32_t>& tables, const Array<uint64_t>& bases,
         const py::array& rel, const Array<uint32_t>& payload, const py::array& ids,
         py::object checked, int threads) {
        const FileHeader h = header_from_bytes(header);
        std::string msg;
        Status s = check_validate_args(h, tables, rel, &msg);
        if (s == Status::kOk) s = check_row_args(h, tables, bases, rel, payload, &msg);
        require((ids.itemsize() == 8 || ids.itemsize() == 4) && (ids.flags() & py::array::c_style),
                "ibp validate_rows: ids must be a contiguous int32 or int64 array");
        uint64_t* bits = nullptr;
        if (!checked.is_none()) {
          auto b = checked.cast<py::array_t<uint64_t>>();
          require((b.flags() & py::array::c_style) && b.writeable() &&
                      static_cast<uint64_t>(b.size()) == (h.rows + 63) / 64,
                  "ibp validate_rows: checked must be a writeable uint64 array of "
                  "ceil(rows / 64) words");
          bits = b.mutable_data();
        }
        if (s == Status::kOk) {
          const void* ip = ids.data();
          const bool ids64 = ids.itemsize() == 8;
          const auto n = static_cast<uint64_t>(ids.size());
          py::gil_scoped_release nogil;
          s = validate_rows(h, tables.data(), bases.data(), rel.data(), payload.data(), ip, ids64,
                            n, bits, threads, &msg);
        }
        return py::make_tuple(static_cast<int>(s), msg);
      },
      py::arg("header"), py::arg("tables"), py::arg("bases"), py::arg("rel"), py::arg("payload"),
      py::arg("ids"), py::arg("checked"), py::arg("threads") = 1);

  m.def(
      "gather",
      [](const py::bytes& header, const Array<uint32_t>& table, const Array<uint64_t>& bases,
         const py::array& rel, const Array<uint32_t>& payload, const py::array& ids,
         py::array& out, int threads, int kernel) {
        require(kernel >= 0 && kernel <= 4,
                "ibp gather: kernel must be 0 (auto), 1 (portable), 2 (bmi2), 3 (avx2) or 4 (avx512)");
        require(cpu_has_kernel(static_cast<CpuKernel>(kernel)),
                "ibp gather: this CPU cannot run kernel " + std::to_string(kernel));
        const FileHeader h = header_from_bytes(header);
        const CompressedView c = cpu_view(h, table, bases, rel, payload);
        const bool ids64 = ids.itemsize() == 8;
        require((ids.itemsize() == 8 || ids.itemsize() == 4) && (ids.flags() & py::array::c_style),
                "ibp gather: ids must be a contiguous int32 or int64 array");
        const auto n = static_cast<uint64_t>(ids.size());
        require((out.flags() & py::array::c_style) && out.writeable() &&
                    static_cast<uint64_t>(out.nbytes()) == n * c.geo.row_bytes,
                "ibp gather: out must be a writeable contiguous array of n * row_bytes bytes");
        const void* ip = ids.data();
        auto* op = static_cast<uint8_t*>(out.mutable_data());
        py::gil_scoped_release nogil;
        gather_cpu(c, ip, ids64, n, op, threads, static_cast<CpuKernel>(kernel));
      },
      py::arg("header"), py::arg("table"), py::arg("bases"), py::arg("rel"), py::arg("payload"),
      py::arg("ids"), py::arg("out"), py::arg("threads") = 1, py::arg("kernel") = 0);

  // The CPU gather with its setup done once (CompressedTensor keeps one): the
  // arrays are checked here and kept alive; a call takes the addresses of a
  // contiguous int32/int64 ids tensor and of an output of n * row_bytes bytes
  // that the caller checked, and returns CpuGather::gather's 0, 1 (an id out
  // of range) or 2 (out not writable), decoding nothing unless 0.
  struct CpuGatherHandle {
    py::object keep;  // header, table, bases, rel, payload
    std::unique_ptr<CpuGather> g;
  };
  py::class_<CpuGatherHandle>(m, "CpuGather")
      .def(py::init([](const py::bytes& header, const Array<uint32_t>& table,
                       const Array<uint64_t>& bases, const py::array& rel,
                       const Array<uint32_t>& payload) {
             const FileHeader h = header_from_bytes(header);
             auto* r = new CpuGatherHandle{py::make_tuple(header, table, bases, rel, payload),
                                           nullptr};
             r->g.reset(new CpuGather(cpu_view(h, table, bases, rel, payload)));
             return r;
           }),
           py::arg("header"), py::arg("table"), py::arg("bases"), py::arg("rel"),
           py::arg("payload"))
      .def(
          "gather",
          [](const CpuGatherHandle& self, uintptr_t ids, uint64_t n, bool ids64, uintptr_t out,
             int threads, bool check_out, int kernel) {
            require(kernel >= 0 && kernel <= 4 && cpu_has_kernel(static_cast<CpuKernel>(kernel)),
                    "ibp CpuGather.gather: kernel must be one this CPU runs (cpu_kernels())");
            auto* op = reinterpret_cast<uint8_t*>(out);
            py::gil_scoped_release nogil;
            return self.g->gather(reinterpret_cast<const void*>(ids), ids64, n, op, threads,
                                  check_out, static_cast<CpuKernel>(kernel));
          },
          py::arg("ids"), py::arg("n"), py::arg("ids64"), py::arg("out"), py::arg("threads") = 1,
          py::arg("check_out") = true, py::arg("kernel") = 0);

  // subset: the size bound, then the call writing into caller-provided arrays
  // (numpy views of pinned buffers for the staged transfer).
  m.def(
      "subset_payload_bits",
      [](const py::bytes& header, const Array<uint32_t>& table, const Array<uint64_t>& bases,
         const py::array& rel, const Array<uint32_t>& payload, const Array<int64_t>& rows,
         int threads) {
        const FileHeader h = header_from_bytes(header);
        const CompressedView c = cpu_view(h, table, bases, rel, payload);
        const int64_t* rp = rows.data();
        const auto n = static_cast<uint64_t>(rows.size());
        py::gil_scoped_release nogil;
        return subset_payload_bits(c, rp, n, threads, h.layout != 0);
      },
      py::arg("header"), py::arg("table"), py::arg("bases"), py::arg("rel"), py::arg("payload"),
      py::arg("rows"), py::arg("threads") = 1);
  m.def(
      "subset_row_bits",
      [](const py::bytes& header, const Array<uint32_t>& table, const Array<uint64_t>& bases,
         const py::array& rel, const Array<uint32_t>& payload, const Array<int64_t>& rows,
         int threads) {
        const FileHeader h = header_from_bytes(header);
        const CompressedView c = cpu_view(h, table, bases, rel, payload);
        const auto n = static_cast<uint64_t>(rows.size());
        Array<uint64_t> out(static_cast<py::ssize_t>(n));
        const int64_t* rp = rows.data();
        uint64_t* op = out.mutable_data();
        {
          py::gil_scoped_release nogil;
          subset_row_bits(c, rp, n, h.layout != 0, op, threads);
        }
        return out;
      },
      py::arg("header"), py::arg("table"), py::arg("bases"), py::arg("rel"), py::arg("payload"),
      py::arg("rows"), py::arg("threads") = 1);
  m.def(
      "subset",
      [](const py::bytes& header, const Array<uint32_t>& table, const Array<uint64_t>& bases,
         const py::array& rel, const Array<uint32_t>& payload, const Array<int64_t>& rows,
         Array<uint64_t>& out_bases, py::array& out_rel, Array<uint32_t>& out_payload,
         uint64_t payload_bits, int threads) {
        const FileHeader h = header_from_bytes(header);
        const CompressedView c = cpu_view(h, table, bases, rel, payload);
        const auto n = static_cast<uint64_t>(rows.size());
        require(static_cast<uint64_t>(out_bases.size()) == (n + h.block_rows - 1) / h.block_rows + 1,
                "ibp subset: out_bases must hold ceil(n / block_rows) + 1 entries");
        require((out_rel.flags() & py::array::c_style) && out_rel.writeable() &&
                    static_cast<uint64_t>(out_rel.nbytes()) == n * h.rel_bytes,
                "ibp subset: out_rel must be a writeable contiguous array of n * rel_bytes bytes");
        require(static_cast<uint64_t>(out_payload.size()) == payload_words(payload_bits),
                "ibp subset: out_payload must hold payload_words(payload_bits) words");
        const int64_t* rp = rows.data();
        uint64_t* bp = out_bases.mutable_data();
        void* relp = out_rel.mutable_data();
        uint32_t* pp = out_payload.mutable_data();
        uint64_t modes[4];
        {
          py::gil_scoped_release nogil;
          require(subset_payload_bits(c, rp, n, threads, h.layout != 0) == payload_bits,
                  "ibp subset: payload_bits is not subset_payload_bits of these rows");
          subset(c, rp, n, bp, relp, pp, modes, threads, h.layout != 0);
        }
        return py::make_tuple(modes[0], modes[1], modes[2], modes[3]);
      },
      py::arg("header"), py::arg("table"), py::arg("bases"), py::arg("rel"), py::arg("payload"),
      py::arg("rows"), py::arg("out_bases"), py::arg("out_rel"), py::arg("out_payload"),
      py::arg("payload_bits"), py::arg("threads") = 1);

  m.def(
      "gather_cuda",
      [](const py::bytes& header, uintptr_t table, uintptr_t bases, uintptr_t rel,
         uintptr_t payload, uintptr_t ids, bool ids64, uint64_t n, uintptr_t positions,
         uintptr_t out, uintptr_t stream) {
        const FileHeader h = header_from_bytes(header);
        const CompressedView c{geometry_of(h), reinterpret_cast<const uint32_t*>(table),
                               reinterpret_cast<const uint64_t*>(bases),
                               reinterpret_cast<const void*>(rel),
                               reinterpret_cast<const uint32_t*>(payload)};
        return gather_cuda(c, reinterpret_cast<const void*>(ids), ids64, n,
                           reinterpret_cast<const int64_t*>(positions),
                           reinterpret_cast<uint8_t*>(out), reinterpret_cast<void*>(stream));
      },
      py::arg("header"), py::arg("table"), py::arg("bases"), py::arg("rel"), py::arg("payload"),
      py::arg("ids"), py::arg("ids64"), py::arg("n"), py::arg("positions"), py::arg("out"),
      py::arg("stream"));
}
