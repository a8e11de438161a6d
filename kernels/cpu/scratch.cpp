// The per-thread scratch pool: a short list of free blocks, best fit, never shrunk (its size
// is bounded by the largest working set one thread has needed at once).
#include <mcd/kernels/cpu/scratch.h>

#include <cstdlib>
#include <new>
#include <vector>

namespace mcd::kernels::cpu::detail {
namespace {
struct Block {
  void* p;
  std::size_t capacity;
};
struct Pool {
  std::vector<Block> free;
  ~Pool() {
    for (const Block& b : free)
      std::free(b.p);
  }
};
thread_local Pool t_pool;
}  // namespace

void* scratch_acquire(std::size_t nbytes, std::size_t& capacity) {
  auto& free = t_pool.free;
  std::size_t best = free.size();
  for (std::size_t i = 0; i < free.size(); ++i)
    if (free[i].capacity >= nbytes &&
        (best == free.size() || free[i].capacity < free[best].capacity))
      best = i;
  if (best != free.size()) {
    const Block b = free[best];
    free.erase(free.begin() + static_cast<std::ptrdiff_t>(best));
    capacity = b.capacity;
    return b.p;
  }
  capacity = (nbytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, capacity);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

void scratch_release(void* p, std::size_t capacity) {
  if (p != nullptr) t_pool.free.push_back({p, capacity});
}

}  // namespace mcd::kernels::cpu::detail
