// The fiber runtime behind cuda_emu.h: one fiber per CUDA thread, a
// round-robin scheduler per block, warp collectives that complete only when
// every lane of their mask has arrived at the same call site, and the
// host-memory traffic counters.
#include "cuda_emu.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <unordered_set>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define IBP_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define IBP_EMU_ASAN 1
#endif
#endif
#if defined(IBP_EMU_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if defined(__x86_64__)
// ibp_emu_switch(save, to): saves the callee-saved registers and the FP
// control words on the current stack, stores its pointer in *save and resumes
// the context whose stack pointer is `to`. A new fiber starts in the
// trampoline with its Fiber* in rbx.
extern "C" void ibp_emu_switch(void** save, void* to);
extern "C" void ibp_emu_trampoline();
asm(R"(
  .text
  .globl ibp_emu_switch
  .hidden ibp_emu_switch
  .type ibp_emu_switch,@function
ibp_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size ibp_emu_switch,.-ibp_emu_switch
  .globl ibp_emu_trampoline
  .hidden ibp_emu_trampoline
  .type ibp_emu_trampoline,@function
ibp_emu_trampoline:
  movq %rbx, %rdi
  call ibp_emu_fiber_main
  ud2
  .size ibp_emu_trampoline,.-ibp_emu_trampoline
)");
#else
#include <ucontext.h>
#endif

extern "C" __attribute__((visibility("hidden"))) void ibp_emu_fiber_main(void* fiber);

namespace ibp_emu {

thread_local Thread* g_thread = nullptr;

namespace {

constexpr size_t kStackBytes = 256 << 10;
constexpr unsigned kMaxThreads = 1024;

enum class State : uint8_t { kRunnable, kWaiting, kDone };

struct Fiber {
  Thread t;
  void* sp = nullptr;
  char* stack = nullptr;
  State state = State::kDone;
  bool at_barrier = false;
  unsigned lane = 0, warp = 0, index = 0;
  uint64_t in = 0, out = 0;
  int arg = 0;
  uint64_t trip = 0;  // the warp's trip these load sites belong to
  std::vector<std::pair<const void*, uint32_t>> sites;  // load site -> times issued this trip
#if !defined(__x86_64__)
  ucontext_t ctx;
#endif
};

struct Slot {
  Op op;
  unsigned mask;
  int width;
  const char* file;
  int line;
  const void* call;
  unsigned arrived;
};

struct Group {  // one warp-wide load instruction
  const void* call;
  uint32_t k;
  std::vector<uint64_t> sectors;
};

struct Warp {
  unsigned exists = 0, done = 0;
  std::vector<Slot> slots;
  bool trip_open = false;
  uint64_t trip = 1;
  std::vector<Group> groups;
};

struct Launch {
  const char* kernel;
  const char* file;
  int line;
  dim3 grid, block, block_idx;
  unsigned threads = 0;
  const std::function<void()>* body = nullptr;
  std::vector<Warp> warps;
  Fiber* cur = nullptr;
  void* sched_sp = nullptr;
#if !defined(__x86_64__)
  ucontext_t sched_ctx;
#endif
  std::string error;
  unsigned bar_arrived = 0, done = 0;
  const char* bar_file = nullptr;
  int bar_line = 0;
  const void* bar_call = nullptr;
  const void* main_bottom = nullptr;
  size_t main_size = 0;
  std::unordered_set<uint64_t> sectors;
};

thread_local Launch* g_launch = nullptr;
thread_local cudaError_t g_last_error = cudaSuccess;
thread_local std::vector<Fiber> g_fibers;  // stacks kept across launches

Counters g_counters{};
std::vector<std::pair<uintptr_t, uintptr_t>> g_host;  // [begin, end) host ranges

const char* op_name(Op op) {
  switch (op) {
    case Op::kIdx: return "__shfl_sync";
    case Op::kUp: return "__shfl_up_sync";
    case Op::kDown: return "__shfl_down_sync";
    case Op::kXor: return "__shfl_xor_sync";
    case Op::kBallot: return "__ballot_sync";
    case Op::kAny: return "__any_sync";
    case Op::kAll: return "__all_sync";
    case Op::kSyncwarp: return "__syncwarp";
  }
  return "?";
}

std::string hex(unsigned m) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%08x", m);
  return b;
}

std::string lanes(unsigned m) {
  std::string s;
  for (unsigned l = 0; l < 32; ++l) {
    if (!((m >> l) & 1u)) continue;
    unsigned e = l;
    while (e + 1 < 32 && ((m >> (e + 1)) & 1u)) ++e;
    if (!s.empty()) s += ",";
    s += std::to_string(l);
    if (e > l) s += "-" + std::to_string(e);
    l = e;
  }
  return s.empty() ? "none" : s;
}

std::string where(const Launch& L, unsigned warp) {
  std::ostringstream o;
  o << "kernel " << L.kernel << " (launched at " << L.file << ":" << L.line << "), block ("
    << L.block_idx.x << "," << L.block_idx.y << "," << L.block_idx.z << "), warp " << warp;
  return o.str();
}

std::string site(const Slot& s) {
  return std::string(op_name(s.op)) + " at " + s.file + ":" + std::to_string(s.line) +
         " (mask " + hex(s.mask) + ")";
}

char* new_stack() {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void* m = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) throw std::bad_alloc();
  mprotect(m, page, PROT_NONE);  // a guard page below the stack
  return static_cast<char*>(m) + page;
}

void switch_out(Fiber& f, bool exiting) {
  Launch& L = *g_launch;
#if defined(IBP_EMU_ASAN)
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(exiting ? nullptr : &fake, L.main_bottom, L.main_size);
#else
  (void)exiting;
#endif
#if defined(__x86_64__)
  ibp_emu_switch(&f.sp, L.sched_sp);
#else
  swapcontext(&f.ctx, &L.sched_ctx);
#endif
#if defined(IBP_EMU_ASAN)
  __sanitizer_finish_switch_fiber(fake, &L.main_bottom, &L.main_size);
#endif
}

void resume(Launch& L, Fiber& f) {
  L.cur = &f;
  g_thread = &f.t;
#if defined(IBP_EMU_ASAN)
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f.stack, kStackBytes);
#endif
#if defined(__x86_64__)
  ibp_emu_switch(&L.sched_sp, f.sp);
#else
  swapcontext(&L.sched_ctx, &f.ctx);
#endif
#if defined(IBP_EMU_ASAN)
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  g_thread = nullptr;
  L.cur = nullptr;
}

[[noreturn]] void fail(Fiber& f, const std::string& msg) {
  Launch& L = *g_launch;
  if (L.error.empty()) L.error = msg;
  f.state = State::kWaiting;  // never resumed
  switch_out(f, true);
  __builtin_trap();
}

void flush(Launch& L, Warp& w) {
  if (!w.trip_open) return;
  for (const Group& g : w.groups) g_counters.sector_requests += g.sectors.size();
  w.groups.clear();
  w.trip_open = false;
  ++w.trip;
  (void)L;
}

void resolve(Launch& L, Warp& w, unsigned warp, const Slot& s) {
  Fiber* lane0 = &g_fibers[warp * 32];
  uint64_t vote = 0;
  if (s.op == Op::kBallot || s.op == Op::kAny || s.op == Op::kAll) {
    for (unsigned l = 0; l < 32; ++l) {
      if (((s.mask >> l) & 1u) && lane0[l].in) vote |= 1ull << l;
    }
    if (s.op == Op::kAny) vote = vote != 0;
    if (s.op == Op::kAll) vote = vote == s.mask;
  }
  const unsigned seg = ~static_cast<unsigned>(s.width - 1);
  for (unsigned l = 0; l < 32; ++l) {
    if (!((s.mask >> l) & 1u)) continue;
    Fiber& f = lane0[l];
    unsigned src = l;
    const unsigned a = static_cast<unsigned>(f.arg);
    const unsigned in_seg = l & static_cast<unsigned>(s.width - 1);
    switch (s.op) {
      case Op::kIdx: src = (l & seg) + (a & static_cast<unsigned>(s.width - 1)); break;
      case Op::kUp: src = in_seg >= a ? l - a : l; break;
      case Op::kDown: src = in_seg + a < static_cast<unsigned>(s.width) ? l + a : l; break;
      case Op::kXor: src = l ^ (a & 31u); if ((src & seg) != (l & seg)) src = l; break;
      default: break;
    }
    if (s.op == Op::kBallot || s.op == Op::kAny || s.op == Op::kAll) {
      f.out = vote;
    } else if (s.op != Op::kSyncwarp) {
      // Reading a lane outside the mask is undefined in CUDA: a poison value.
      f.out = ((s.mask >> src) & 1u) ? lane0[src].in : 0xDEADBEEFDEADBEEFull;
    }
    f.state = State::kRunnable;
  }
  flush(L, w);
}

void release_barrier(Launch& L) {
  for (unsigned i = 0; i < L.threads; ++i) {
    Fiber& f = g_fibers[i];
    if (f.at_barrier) {
      f.at_barrier = false;
      f.state = State::kRunnable;
    }
  }
  L.bar_arrived = 0;
  L.bar_file = nullptr;
  for (Warp& w : L.warps) flush(L, w);
}

void on_exit(Launch& L, Fiber& f) {
  Warp& w = L.warps[f.warp];
  const unsigned bit = 1u << f.lane;
  w.done |= bit;
  f.state = State::kDone;
  ++L.done;
  for (const Slot& s : w.slots) {
    if (s.mask & bit) {
      fail(f, "ibp_emu: " + where(L, f.warp) + ": lane " + std::to_string(f.lane) +
                  " exited while lanes " + lanes(s.arrived) + " wait at " + site(s) +
                  ", which names it");
    }
  }
  if (L.bar_arrived && L.bar_arrived + L.done == L.threads) release_barrier(L);
}

void init_fiber(Launch& L, Fiber& f, unsigned i) {
  if (!f.stack) f.stack = new_stack();
#if defined(IBP_EMU_ASAN)
  ASAN_UNPOISON_MEMORY_REGION(f.stack, kStackBytes);
#endif
  f.index = i;
  f.lane = i & 31;
  f.warp = i >> 5;
  f.state = State::kRunnable;
  f.at_barrier = false;
  f.in = f.out = 0;
  f.arg = 0;
  f.trip = 0;
  f.sites.clear();
  f.t.block_dim = L.block;
  f.t.grid_dim = L.grid;
  f.t.block_idx = L.block_idx;
  f.t.thread_idx = dim3(i % L.block.x, (i / L.block.x) % L.block.y, i / (L.block.x * L.block.y));
#if defined(__x86_64__)
  uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack) + kStackBytes - 16) & ~uintptr_t(15);
  auto* sp = reinterpret_cast<uint64_t*>(top - 64);
  const uint32_t csr = 0x1F80;      // MXCSR: all exceptions masked, round to nearest
  const uint16_t fpucw = 0x037F;    // x87: extended precision, exceptions masked
  std::memcpy(sp, &csr, 4);
  std::memcpy(reinterpret_cast<char*>(sp) + 4, &fpucw, 2);
  sp[1] = sp[2] = sp[3] = sp[4] = 0;                   // r15..r12
  sp[5] = reinterpret_cast<uint64_t>(&f);              // rbx: the fiber
  sp[6] = 0;                                           // rbp
  sp[7] = reinterpret_cast<uint64_t>(&ibp_emu_trampoline);
  f.sp = sp;
#else
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = f.stack;
  f.ctx.uc_stack.ss_size = kStackBytes;
  f.ctx.uc_link = nullptr;
  makecontext(&f.ctx, reinterpret_cast<void (*)()>(&ibp_emu_fiber_main), 1, &f);
#endif
}

std::string deadlock(const Launch& L) {
  std::ostringstream o;
  o << "ibp_emu: deadlock or divergence in kernel " << L.kernel << " (launched at " << L.file
    << ":" << L.line << "), block (" << L.block_idx.x << "," << L.block_idx.y << ","
    << L.block_idx.z << "):";
  for (unsigned w = 0; w < L.warps.size(); ++w) {
    for (const Slot& s : L.warps[w].slots) {
      o << " warp " << w << " lanes " << lanes(s.arrived) << " wait at " << site(s)
        << " for lanes " << lanes(s.mask & ~s.arrived) << ";";
    }
  }
  if (L.bar_arrived) {
    o << " " << L.bar_arrived << " threads wait at __syncthreads at " << L.bar_file << ":"
      << L.bar_line << ";";
  }
  return o.str();
}

bool in_host(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  for (const auto& r : g_host) {
    if (a >= r.first && a < r.second) return true;
  }
  return false;
}

void record(const void* p, unsigned bytes, const void* call) {
  Launch& L = *g_launch;
  Fiber& f = *L.cur;
  Warp& w = L.warps[f.warp];
  ++g_counters.host_loads;
  g_counters.host_bytes += bytes;
  if (!w.trip_open) {
    w.trip_open = true;
    ++g_counters.round_trips;
  }
  if (f.trip != w.trip) {
    f.sites.clear();
    f.trip = w.trip;
  }
  uint32_t k = 0;
  bool found = false;
  for (auto& s : f.sites) {
    if (s.first == call) {
      k = s.second++;
      found = true;
      break;
    }
  }
  if (!found) f.sites.emplace_back(call, 1);
  Group* g = nullptr;
  for (Group& c : w.groups) {
    if (c.call == call && c.k == k) {
      g = &c;
      break;
    }
  }
  if (!g) {
    w.groups.push_back(Group{call, k, {}});
    g = &w.groups.back();
  }
  const auto a = reinterpret_cast<uintptr_t>(p);
  for (uint64_t s = a >> 5; s <= (a + bytes - 1) >> 5; ++s) {
    if (std::find(g->sectors.begin(), g->sectors.end(), s) == g->sectors.end()) {
      g->sectors.push_back(s);
    }
    L.sectors.insert(s);
  }
}

}  // namespace

uint64_t collective(Op op, unsigned mask, uint64_t value, int arg, int width, const char* file,
                    int line, const void* call) {
  if (!g_launch || !g_launch->cur) throw Error(std::string(op_name(op)) + " outside a kernel");
  Launch& L = *g_launch;
  Fiber& f = *L.cur;
  Warp& w = L.warps[f.warp];
  const unsigned bit = 1u << f.lane;
  const std::string at = std::string(op_name(op)) + " at " + file + ":" + std::to_string(line);
  if (!(mask & bit)) {
    fail(f, "ibp_emu: " + where(L, f.warp) + ": lane " + std::to_string(f.lane) + " calls " +
                at + " with mask " + hex(mask) + ", which does not name it");
  }
  if (mask & ~w.exists) {
    fail(f, "ibp_emu: " + where(L, f.warp) + ": " + at + " with mask " + hex(mask) +
                " names lanes " + lanes(mask & ~w.exists) + " that the block does not have");
  }
  if (mask & w.done) {
    fail(f, "ibp_emu: " + where(L, f.warp) + ": lane " + std::to_string(f.lane) + " reaches " +
                at + " with mask " + hex(mask) + " after lanes " + lanes(mask & w.done) +
                " exited");
  }
  if (width < 1 || width > 32 || (width & (width - 1))) {
    fail(f, "ibp_emu: " + at + ": width " + std::to_string(width) + " is not a power of two <= 32");
  }
  size_t i = 0;
  for (; i < w.slots.size(); ++i) {
    const Slot& s = w.slots[i];
    if (s.op == op && s.mask == mask && s.width == width && s.line == line &&
        (s.file == file || std::strcmp(s.file, file) == 0) && !(s.arrived & bit)) {
      break;
    }
  }
  if (i == w.slots.size()) w.slots.push_back(Slot{op, mask, width, file, line, call, 0});
  w.slots[i].arrived |= bit;
  f.in = value;
  f.arg = arg;
  f.state = State::kWaiting;
  if (w.slots[i].arrived == mask) {
    const Slot s = w.slots[i];
    w.slots.erase(w.slots.begin() + static_cast<std::ptrdiff_t>(i));
    resolve(L, w, f.warp, s);
  }
  switch_out(f, false);
  return f.out;
}

void syncthreads(const char* file, int line, const void* call) {
  if (!g_launch || !g_launch->cur) throw Error("__syncthreads outside a kernel");
  Launch& L = *g_launch;
  Fiber& f = *L.cur;
  if (L.bar_file && (L.bar_line != line || std::strcmp(L.bar_file, file) != 0)) {
    fail(f, "ibp_emu: " + where(L, f.warp) + ": thread " + std::to_string(f.index) +
                " reaches __syncthreads at " + file + ":" + std::to_string(line) + " while " +
                std::to_string(L.bar_arrived) + " threads wait at __syncthreads at " +
                L.bar_file + ":" + std::to_string(L.bar_line));
  }
  L.bar_file = file;
  L.bar_line = line;
  L.bar_call = call;
  ++L.bar_arrived;
  f.at_barrier = true;
  f.state = State::kWaiting;
  if (L.bar_arrived + L.done == L.threads) release_barrier(L);
  switch_out(f, false);
}

void yield() {
  if (!g_launch || !g_launch->cur) return;
  switch_out(*g_launch->cur, false);
}

__attribute__((noinline)) uint32_t load_u32(const uint32_t* p) {
  if (g_launch && g_launch->cur && in_host(p)) record(p, 4, __builtin_return_address(0));
  return *p;
}

__attribute__((noinline)) uint4 load_u128(const uint4* p) {
  if (reinterpret_cast<uintptr_t>(p) & 15) {
    if (g_launch && g_launch->cur) {
      fail(*g_launch->cur, "ibp_emu: misaligned 16-byte load at " +
                               std::to_string(reinterpret_cast<uintptr_t>(p)));
    }
    throw Error("ibp_emu: misaligned 16-byte load");
  }
  if (g_launch && g_launch->cur && in_host(p)) record(p, 16, __builtin_return_address(0));
  return *p;
}

HostRange::HostRange(const void* begin, size_t bytes) {
  const auto a = reinterpret_cast<uintptr_t>(begin);
  g_host.emplace_back(a, a + bytes);
}
HostRange::~HostRange() { g_host.pop_back(); }

Counters counters() { return g_counters; }
void reset_counters() { g_counters = Counters{}; }

void launch(const char* kernel, const char* file, int line, dim3 grid, dim3 block,
            size_t shared_bytes, const std::function<void()>& body) {
  const uint64_t threads = static_cast<uint64_t>(block.x) * block.y * block.z;
  if (threads == 0 || threads > kMaxThreads || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.y > 65535 || grid.z > 65535) {
    g_last_error = 9;  // cudaErrorInvalidConfiguration
    return;
  }
  if (shared_bytes) {
    throw Error(std::string("ibp_emu: ") + kernel + " at " + file + ":" + std::to_string(line) +
                ": dynamic shared memory is not emulated");
  }
  if (g_launch) throw Error("ibp_emu: a kernel launched from inside a kernel");
  Launch L;
  L.kernel = kernel;
  L.file = file;
  L.line = line;
  L.grid = grid;
  L.block = block;
  L.threads = static_cast<unsigned>(threads);
  L.body = &body;
  if (g_fibers.size() < threads) g_fibers.resize(threads);
  ++g_counters.launches;
  g_launch = &L;
  for (unsigned z = 0; z < grid.z && L.error.empty(); ++z) {
    for (unsigned y = 0; y < grid.y && L.error.empty(); ++y) {
      for (unsigned x = 0; x < grid.x && L.error.empty(); ++x) {
        L.block_idx = dim3(x, y, z);
        L.warps.assign((L.threads + 31) / 32, Warp{});
        for (unsigned w = 0; w < L.warps.size(); ++w) {
          const unsigned n = std::min(32u, L.threads - 32 * w);
          L.warps[w].exists = n == 32 ? ~0u : (1u << n) - 1u;
        }
        L.done = 0;
        L.bar_arrived = 0;
        L.bar_file = nullptr;
        for (unsigned i = 0; i < L.threads; ++i) init_fiber(L, g_fibers[i], i);
        for (bool ran = true; ran && L.error.empty();) {
          ran = false;
          for (unsigned i = 0; i < L.threads && L.error.empty(); ++i) {
            if (g_fibers[i].state != State::kRunnable) continue;
            resume(L, g_fibers[i]);
            ran = true;
          }
        }
        if (L.error.empty() && L.done != L.threads) L.error = deadlock(L);
        for (Warp& w : L.warps) flush(L, w);
      }
    }
  }
  g_counters.distinct_sectors += L.sectors.size();
  g_launch = nullptr;
  if (!L.error.empty()) throw Error(L.error);
}

}  // namespace ibp_emu

using ibp_emu::g_launch;

extern "C" void ibp_emu_fiber_main(void* arg) {
  auto* f = static_cast<ibp_emu::Fiber*>(arg);
  ibp_emu::Launch& L = *g_launch;
#if defined(IBP_EMU_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &L.main_bottom, &L.main_size);
#endif
  try {
    (*L.body)();
  } catch (const std::exception& e) {
    if (L.error.empty()) L.error = std::string("ibp_emu: exception in a kernel: ") + e.what();
  }
  ibp_emu::on_exit(L, *f);
  ibp_emu::switch_out(*f, true);
  __builtin_trap();
}

cudaError_t cudaGetLastError() {
  const cudaError_t e = ibp_emu::g_last_error;
  ibp_emu::g_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaHostRegister(void*, size_t, unsigned) { return cudaSuccess; }
cudaError_t cudaHostGetDevicePointer(void** dev, void* ptr, unsigned) {
  *dev = ptr;
  return cudaSuccess;
}
cudaError_t cudaHostUnregister(void*) { return cudaSuccess; }
cudaError_t cudaGetDeviceCount(int* count) {
  *count = 0;
  return cudaSuccess;
}
