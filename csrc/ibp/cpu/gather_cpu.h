// The CPU gather with its per-tensor setup done once: a CpuGather holds a
// tensor's view and the per-group programs of its kIbp rows (dense.h) and of
// its kCoded rows (coded_cpu.h, coded16_cpu.h), so a call costs its rows
// only. Same contract as gather_cpu (gather.h): the view passed validate()
// and stays alive as long as the CpuGather.
#pragma once

#include <cstdint>
#include <memory>

#include "../gather.h"

namespace ibp {

struct DenseProgram;
struct Coded16Program;
struct Coded32Program;

class CpuGather {
 public:
  explicit CpuGather(const CompressedView& c);
  ~CpuGather();
  const CompressedView& view() const { return c_; }

  // gather_cpu(view(), ids, ids64, n, out, num_threads, kernel) for ids the
  // caller may still change or share with `out`: the ids are copied first
  // and range-checked on the copy, then (when check_out) out is checked with
  // cpu_writable. Returns 0; or, writing nothing, 1 when an id is outside
  // [0, rows), 2 when out is not writable.
  int gather(const void* ids, bool ids64, uint64_t n, uint8_t* out, int num_threads,
             bool check_out, CpuKernel kernel = CpuKernel::kAuto) const;

 private:
  CompressedView c_;
  std::unique_ptr<const DenseProgram> prog_;
  std::unique_ptr<const Coded16Program> c16_;  // coded16_cpu.h
  std::unique_ptr<const Coded32Program> c32_;  // coded_cpu.h
};

// Whether the first and last bytes of [p, p + bytes) are in writable memory
// (a read of /dev/zero into them: EFAULT, not a fault, when they are not;
// the bytes become 0). True when /dev/zero cannot be opened.
bool cpu_writable(void* p, uint64_t bytes);

}  // namespace ibp
