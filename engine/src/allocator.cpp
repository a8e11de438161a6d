// Host caching allocator: exact-size free lists (sizes rounded to 64 bytes, 64-byte aligned
// blocks), guarded by one mutex. Blocks above the cache budget go back to the system.
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include <mcd/engine/allocator.h>

namespace mcd {
namespace {

constexpr std::size_t kAlignment = 64;
constexpr std::int64_t kCacheBudget = std::int64_t(8) << 30;  // bytes kept in free lists at most

struct HostCache {
  std::mutex mutex;
  std::unordered_map<std::size_t, std::vector<void*>> free_lists;
  std::int64_t cached_bytes = 0;
  MemoryStats stats;

  void trim() {  // caller holds the mutex
    for (auto& [size, blocks] : free_lists)
      for (void* p : blocks)
        std::free(p);
    free_lists.clear();
    stats.reserved_bytes -= cached_bytes;
    cached_bytes = 0;
  }
};

HostCache& cache() {
  static HostCache* instance = new HostCache();  // never destroyed: tensors may outlive main
  return *instance;
}

// MCD_POISON_ALLOCATIONS=1 (read once): every block handed out is filled with all bits set
// first (NaN in floating point), as the device allocator does, so that a kernel reading memory
// it never wrote fails its checks instead of passing on stale values.
bool poison_allocations() {
  static const bool on = [] {
    const char* v = std::getenv("MCD_POISON_ALLOCATIONS");
    return v != nullptr && v[0] == '1' && v[1] == '\0';
  }();
  return on;
}

std::size_t rounded(std::size_t nbytes) {
  return nbytes == 0 ? kAlignment : (nbytes + kAlignment - 1) / kAlignment * kAlignment;
}

}  // namespace

namespace detail {

void* host_allocate(std::size_t nbytes) {
  const std::size_t size = rounded(nbytes);
  HostCache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    auto it = c.free_lists.find(size);
    c.stats.allocated_bytes += static_cast<std::int64_t>(size);
    c.stats.peak_allocated_bytes = std::max(c.stats.peak_allocated_bytes, c.stats.allocated_bytes);
    if (it != c.free_lists.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      c.cached_bytes -= static_cast<std::int64_t>(size);
      if (poison_allocations()) std::memset(p, 0xFF, size);
      return p;
    }
    c.stats.reserved_bytes += static_cast<std::int64_t>(size);
    ++c.stats.system_allocations;
  }
  void* p = std::aligned_alloc(kAlignment, size);
  if (p == nullptr) {
    // Out of memory: give the cache back to the system and try once more.
    {
      std::lock_guard<std::mutex> lock(c.mutex);
      c.trim();
    }
    p = std::aligned_alloc(kAlignment, size);
    if (p == nullptr) throw std::bad_alloc();
  }
  if (poison_allocations()) std::memset(p, 0xFF, size);
  return p;
}

void host_release(void* p, std::size_t nbytes) {
  if (p == nullptr) return;
  const std::size_t size = rounded(nbytes);
  HostCache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.stats.allocated_bytes -= static_cast<std::int64_t>(size);
  if (c.cached_bytes + static_cast<std::int64_t>(size) > kCacheBudget) {
    c.stats.reserved_bytes -= static_cast<std::int64_t>(size);
    std::free(p);
    return;
  }
  c.free_lists[size].push_back(p);
  c.cached_bytes += static_cast<std::int64_t>(size);
}

}  // namespace detail

MemoryStats host_memory_stats() {
  HostCache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  return c.stats;
}

void reset_peak_host_memory() {
  HostCache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.stats.peak_allocated_bytes = c.stats.allocated_bytes;
}

void empty_host_cache() {
  HostCache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.trim();
}

}  // namespace mcd
