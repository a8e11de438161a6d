// The caching policy behind device allocators, independent of any device: blocks are carved
// out of segments obtained from a backend, kept after free and handed out again, so that a
// training loop that repeats its allocation pattern stops calling the backend after warm-up.
// Invariant: a freed block is reused only on the stream it was allocated on, unless every
// other stream that used it (record_stream) has passed an event recorded at the free.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

namespace mcd {

// An opaque stream identity (a cudaStream_t's value for the CUDA backend).
using StreamId = std::uintptr_t;
// An opaque event handle issued by a backend.
using EventId = std::uint64_t;
// A pool of memory: 0 is the shared pool; others are private pools (see begin_private_pool).
using PoolId = std::uint64_t;

// What a BlockCache needs from a device: raw memory and stream-ordered events.
class BlockCacheBackend {
 public:
  virtual ~BlockCacheBackend() = default;
  // nbytes of fresh memory, or nullptr when the device is out of memory (other errors throw).
  virtual void* allocate(std::size_t nbytes) = 0;
  virtual void release(void* ptr, std::size_t nbytes) = 0;
  // An event that completes once the work queued so far on `stream` has run.
  virtual EventId record_event(StreamId stream) = 0;
  virtual bool event_done(EventId event) = 0;
  virtual void release_event(EventId event) = 0;
  // Waits until all work on every stream has run (every recorded event is then done).
  virtual void synchronize() = 0;
  // Overwrites nbytes at ptr with a recognisable pattern, in the order of `stream` (queued
  // after the work queued there so far; captured like any work while `stream` is capturing).
  // Only with BlockCache::set_poison_allocations.
  virtual void poison(void* ptr, std::size_t nbytes, StreamId stream) {}
};

struct BlockCacheStats {
  std::int64_t allocated_bytes = 0;       // live blocks, requests rounded by round_size()
  std::int64_t requested_bytes = 0;       // live blocks, sizes as requested
  std::int64_t peak_allocated_bytes = 0;  // high-water mark of allocated_bytes
  std::int64_t reserved_bytes = 0;        // every segment held from the backend
  std::int64_t peak_reserved_bytes = 0;
  std::int64_t live_blocks = 0;
  std::int64_t segments = 0;
  std::int64_t backend_allocations = 0;  // calls to BlockCacheBackend::allocate that succeeded
  std::int64_t backend_releases = 0;
  std::int64_t cache_hits = 0;  // allocations served from cached memory
};

// Policy (a simplified form of PyTorch's CUDA caching allocator):
// - sizes round up to a multiple of 512 B; a rounded size <= 1 MiB is "small", larger "large";
// - small blocks are cut from 2 MiB segments, large ones from segments of their size rounded
//   up to 2 MiB; each (stream, pool) keeps its free blocks ordered by (size, address) and a
//   request takes the smallest free block that fits (best fit);
// - a block larger than the request is split when the rest is at least 512 B (small pool) or
//   more than 1 MiB (large pool), so the rest stays in its pool; freed neighbours in a segment
//   merge again;
// - when the backend is out of memory the cache synchronizes, releases every unused segment
//   and retries once, then throws mcd::Error with the statistics;
// - empty_cache() synchronizes and releases every segment without live blocks.
// - private pools (for CUDA graphs): between begin_private_pool(p) and end_private_pool() every
//   allocation, on any stream, comes from segments of pool p, and blocks of p are handed out
//   only in such a window, never to other allocations: a graph captured in the window replays
//   into that memory later, so nothing else may hold it. Inside the pool the usual per-stream
//   reuse applies (a captured graph keeps each stream's order). release_private_pool(p) gives
//   the memory to the shared pool once no graph uses it.
// Thread-safe. Blocks still live when the cache is destroyed are not released.
class BlockCache {
 public:
  static constexpr std::size_t kRound = 512;
  static constexpr std::size_t kSmallLimit = std::size_t{1} << 20;
  static constexpr std::size_t kSegmentRound = std::size_t{2} << 20;

  explicit BlockCache(BlockCacheBackend& backend);
  ~BlockCache();
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  // A block of at least nbytes (nbytes 0 gives nullptr) for use on `stream`, aligned to 512 B.
  void* allocate(std::size_t nbytes, StreamId stream);
  // Returns a block; it is reusable on its stream at once (stream order makes that safe) and,
  // when other streams used it, only after events recorded now on those streams complete
  // (inside a private pool's window, where those streams may be capturing, recorded when the
  // window ends).
  void free(void* ptr);
  // Marks a live block as used by `stream` as well as by the stream it was allocated on.
  void record_stream(void* ptr, StreamId stream);
  void empty_cache();
  // A debugging aid (off by default): every block handed out from then on is first filled with
  // the backend's pattern (BlockCacheBackend::poison; NaN in floating point) on the allocating
  // stream. Code that reads memory it never wrote, or that reads a block on another stream after
  // it went to a new owner, then sees the pattern instead of stale values that often look right
  // (in a replayed graph, the previous replay's). Correct code never reads the pattern.
  void set_poison_allocations(bool on);

  // Allocations from now on come from private pool `pool` (non-zero), until end_private_pool.
  // Windows do not nest; a pool may have several windows.
  void begin_private_pool(PoolId pool);
  void end_private_pool();
  // Pool `pool`'s blocks join the shared pool: free ones at once, live ones when freed. The
  // caller guarantees that no queued device work uses its memory through the graph any more;
  // the cache synchronizes the backend first all the same.
  void release_private_pool(PoolId pool);

  BlockCacheStats stats() const;
  void reset_peak();
  // Size after rounding, as allocate() rounds a request.
  static std::size_t round_size(std::size_t nbytes);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace mcd
