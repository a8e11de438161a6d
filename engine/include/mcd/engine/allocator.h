// The host caching allocator behind Storage. Training allocates the same sizes every step,
// so freed blocks are kept in per-size free lists and handed out again: after the first
// step no memory is requested from the system and no page is faulted in anew.
#pragma once
#include <cstddef>
#include <cstdint>

namespace mcd {

struct MemoryStats {
  std::int64_t allocated_bytes = 0;       // held by live tensors
  std::int64_t peak_allocated_bytes = 0;  // high-water mark of allocated_bytes
  std::int64_t reserved_bytes = 0;        // allocated + cached in free lists
  std::int64_t system_allocations = 0;    // requests that missed the cache
};

MemoryStats host_memory_stats();
void reset_peak_host_memory();
// Returns every cached block to the system.
void empty_host_cache();

namespace detail {
void* host_allocate(std::size_t nbytes);
void host_release(void* p, std::size_t nbytes);
}  // namespace detail

}  // namespace mcd
