// BlockCache: free blocks live in ordered sets keyed by (pool, stream, size, address), so a
// best-fit lookup restricted to one pool and stream is one lower_bound. Blocks of a segment form a
// doubly linked list by address; a block is in a free set exactly when it is neither allocated nor
// waiting for events, and only such neighbours merge, so a segment whose blocks are all free is one
// block again and can go back to the backend.
#include <mcd/engine/block_cache.h>

#include <algorithm>
#include <mutex>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include <mcd/engine/error.h>

namespace mcd {
namespace {

struct Block {
  std::uintptr_t addr = 0;
  std::size_t size = 0;
  std::size_t requested = 0;
  StreamId stream = 0;
  PoolId pool = 0;
  bool small = false;
  bool allocated = false;
  int pending_events = 0;
  Block* prev = nullptr;  // neighbours inside the segment
  Block* next = nullptr;
  std::vector<StreamId> used_by;  // streams other than `stream` that used the live block
};

struct FreeOrder {
  bool operator()(const Block* a, const Block* b) const {
    if (a->pool != b->pool) return a->pool < b->pool;
    if (a->stream != b->stream) return a->stream < b->stream;
    if (a->size != b->size) return a->size < b->size;
    return a->addr < b->addr;
  }
};
using FreeSet = std::set<Block*, FreeOrder>;

std::size_t round_up(std::size_t n, std::size_t m) {
  return (n + m - 1) / m * m;
}

}  // namespace

struct BlockCache::State {
  explicit State(BlockCacheBackend& b) : backend(b) {}

  BlockCacheBackend& backend;
  mutable std::mutex mutex;
  FreeSet small_free, large_free;
  std::unordered_map<std::uintptr_t, Block*> live;
  std::vector<std::pair<EventId, Block*>> pending;
  // Blocks used by other streams and freed inside a private pool's window: their events are
  // recorded when the window ends, since an event recorded on a capturing stream is a node of
  // the graph and could not be queried (reuse waits until then; see free()).
  std::vector<Block*> deferred;
  BlockCacheStats stats;
  PoolId active_pool = 0;  // where allocations come from now
  bool poison_allocations = false;

  FreeSet& pool(const Block* b) { return b->small ? small_free : large_free; }

  // Makes a block reusable: merges it with free neighbours and files it in its pool.
  void insert_free(Block* b) {
    FreeSet& set = pool(b);
    auto is_free = [](const Block* n) {
      return n != nullptr && !n->allocated && n->pending_events == 0;
    };
    if (is_free(b->prev)) {
      Block* p = b->prev;
      set.erase(p);
      p->size += b->size;
      p->next = b->next;
      if (b->next != nullptr) b->next->prev = p;
      delete b;
      b = p;
    }
    if (is_free(b->next)) {
      Block* n = b->next;
      set.erase(n);
      b->size += n->size;
      b->next = n->next;
      if (n->next != nullptr) n->next->prev = b;
      delete n;
    }
    set.insert(b);
  }

  // Records an event on every other stream that used the freed block b; it becomes free once
  // all have completed.
  void record_use_events(Block* b) {
    for (StreamId other : b->used_by) {
      pending.emplace_back(backend.record_event(other), b);
      b->pending_events += 1;
    }
    b->used_by.clear();
  }

  // Files the blocks whose cross-stream events have all completed; after a synchronize every
  // event is complete, so `all_done` skips the queries.
  void process_events(bool all_done) {
    auto it = pending.begin();
    while (it != pending.end()) {
      if (!all_done && !backend.event_done(it->first)) {
        ++it;
        continue;
      }
      backend.release_event(it->first);
      Block* b = it->second;
      it = pending.erase(it);
      if (--b->pending_events == 0) insert_free(b);
    }
  }

  // Gives every segment that is one free block back to the backend.
  void release_unused(FreeSet& set) {
    for (auto it = set.begin(); it != set.end();) {
      Block* b = *it;
      // A private pool's memory is the graph's, used by its replays: kept until released.
      if (b->prev != nullptr || b->next != nullptr || b->pool != 0) {
        ++it;
        continue;
      }
      it = set.erase(it);
      backend.release(reinterpret_cast<void*>(b->addr), b->size);
      stats.reserved_bytes -= static_cast<std::int64_t>(b->size);
      stats.segments -= 1;
      stats.backend_releases += 1;
      delete b;
    }
  }

  void synchronize_and_release() {
    backend.synchronize();
    process_events(true);
    release_unused(small_free);
    release_unused(large_free);
  }

  Block* new_segment(std::size_t size, StreamId stream, PoolId pool, bool small) {
    const std::size_t seg = small ? kSegmentRound : round_up(size, kSegmentRound);
    void* p = backend.allocate(seg);
    // The retry synchronizes, which a graph being captured into a private pool forbids (it
    // would break the capture): there the allocation fails at once, and the capture with it.
    if (p == nullptr && active_pool == 0) {
      synchronize_and_release();
      p = backend.allocate(seg);
    }
    if (p == nullptr)
      fail(
          "BlockCache: out of memory allocating {} bytes (a {}-byte segment) with {} bytes "
          "allocated and {} reserved{}",
          size, seg, stats.allocated_bytes, stats.reserved_bytes,
          active_pool != 0 ? ", while capturing a graph (no cached memory was released)" : "");
    stats.backend_allocations += 1;
    stats.segments += 1;
    stats.reserved_bytes += static_cast<std::int64_t>(seg);
    stats.peak_reserved_bytes = std::max(stats.peak_reserved_bytes, stats.reserved_bytes);
    Block* b = new Block;
    b->addr = reinterpret_cast<std::uintptr_t>(p);
    b->size = seg;
    b->stream = stream;
    b->pool = pool;
    b->small = small;
    return b;
  }

  ~State() {
    // Segments of live blocks cannot be released; their Block records go with the cache.
    try {
      synchronize_and_release();
    } catch (...) {  // a device already torn down at exit: nothing left to do
    }
    std::vector<Block*> all(small_free.begin(), small_free.end());
    all.insert(all.end(), large_free.begin(), large_free.end());
    for (auto& [addr, b] : live)
      all.push_back(b);
    for (auto& [ev, b] : pending)
      if (std::find(all.begin(), all.end(), b) == all.end()) all.push_back(b);
    for (Block* b : deferred)
      if (std::find(all.begin(), all.end(), b) == all.end()) all.push_back(b);
    for (Block* b : all)
      delete b;
  }
};

BlockCache::BlockCache(BlockCacheBackend& backend) : state_(std::make_unique<State>(backend)) {}
BlockCache::~BlockCache() = default;

std::size_t BlockCache::round_size(std::size_t nbytes) {
  return nbytes == 0 ? kRound : round_up(nbytes, kRound);
}

void* BlockCache::allocate(std::size_t nbytes, StreamId stream) {
  if (nbytes == 0) return nullptr;
  State& s = *state_;
  std::lock_guard lock(s.mutex);
  s.process_events(false);
  const std::size_t size = round_size(nbytes);
  const bool small = size <= kSmallLimit;
  FreeSet& set = small ? s.small_free : s.large_free;

  Block key;
  key.stream = stream;
  key.pool = s.active_pool;
  key.size = size;
  Block* b = nullptr;
  auto it = set.lower_bound(&key);
  if (it != set.end() && (*it)->stream == stream && (*it)->pool == key.pool) {
    b = *it;
    set.erase(it);
    s.stats.cache_hits += 1;
  } else {
    b = s.new_segment(size, stream, key.pool, small);
  }

  b->allocated = true;  // before the split, so that the rest cannot merge back into it
  const std::size_t rest = b->size - size;
  if (small ? rest >= kRound : rest > kSmallLimit) {
    Block* r = new Block;
    r->addr = b->addr + size;
    r->size = rest;
    r->stream = stream;
    r->pool = b->pool;
    r->small = small;
    r->prev = b;
    r->next = b->next;
    if (b->next != nullptr) b->next->prev = r;
    b->next = r;
    b->size = size;
    s.insert_free(r);
  }

  b->requested = nbytes;
  if (s.poison_allocations) s.backend.poison(reinterpret_cast<void*>(b->addr), b->size, stream);
  s.live.emplace(b->addr, b);
  s.stats.allocated_bytes += static_cast<std::int64_t>(size);
  s.stats.requested_bytes += static_cast<std::int64_t>(nbytes);
  s.stats.peak_allocated_bytes = std::max(s.stats.peak_allocated_bytes, s.stats.allocated_bytes);
  s.stats.live_blocks += 1;
  return reinterpret_cast<void*>(b->addr);
}

void BlockCache::free(void* ptr) {
  if (ptr == nullptr) return;
  State& s = *state_;
  std::lock_guard lock(s.mutex);
  auto it = s.live.find(reinterpret_cast<std::uintptr_t>(ptr));
  MCD_CHECK(it != s.live.end(), "BlockCache::free: {} is not a live block of this cache", ptr);
  Block* b = it->second;
  s.live.erase(it);
  b->allocated = false;
  s.stats.allocated_bytes -= static_cast<std::int64_t>(round_size(b->requested));
  s.stats.requested_bytes -= static_cast<std::int64_t>(b->requested);
  s.stats.live_blocks -= 1;
  b->requested = 0;
  if (b->used_by.empty()) {
    s.insert_free(b);
  } else if (s.active_pool != 0) {
    b->pending_events += 1;  // neither free nor mergeable until the window ends
    s.deferred.push_back(b);
  } else {
    s.record_use_events(b);
  }
}

void BlockCache::record_stream(void* ptr, StreamId stream) {
  State& s = *state_;
  std::lock_guard lock(s.mutex);
  auto it = s.live.find(reinterpret_cast<std::uintptr_t>(ptr));
  MCD_CHECK(it != s.live.end(), "BlockCache::record_stream: {} is not a live block of this cache",
            ptr);
  Block* b = it->second;
  if (stream != b->stream &&
      std::find(b->used_by.begin(), b->used_by.end(), stream) == b->used_by.end())
    b->used_by.push_back(stream);
}

void BlockCache::empty_cache() {
  std::lock_guard lock(state_->mutex);
  state_->synchronize_and_release();
}

void BlockCache::set_poison_allocations(bool on) {
  std::lock_guard lock(state_->mutex);
  state_->poison_allocations = on;
}

void BlockCache::begin_private_pool(PoolId pool) {
  std::lock_guard lock(state_->mutex);
  MCD_CHECK(pool != 0, "BlockCache::begin_private_pool: pool 0 is the shared pool");
  MCD_CHECK(state_->active_pool == 0,
            "BlockCache::begin_private_pool: allocations already go to private pool {}",
            state_->active_pool);
  state_->active_pool = pool;
}

void BlockCache::end_private_pool() {
  State& s = *state_;
  std::lock_guard lock(s.mutex);
  s.active_pool = 0;
  // Events first, then the deferral's own count: if recording fails, the block keeps that count
  // and stays on the list (out of the free sets, never merged) instead of dangling.
  while (!s.deferred.empty()) {
    Block* b = s.deferred.back();
    s.record_use_events(b);
    s.deferred.pop_back();
    b->pending_events -= 1;  // the events recorded above keep it from the free sets
  }
}

void BlockCache::release_private_pool(PoolId pool) {
  State& s = *state_;
  std::lock_guard lock(s.mutex);
  MCD_CHECK(pool != 0 && pool != s.active_pool,
            "BlockCache::release_private_pool: pool {} is shared or still allocating", pool);
  s.backend.synchronize();
  s.process_events(true);
  for (auto& [addr, b] : s.live)
    if (b->pool == pool) b->pool = 0;
  for (Block* b : s.deferred)  // freed in another pool's window, filed when that window ends
    if (b->pool == pool) b->pool = 0;
  for (FreeSet* set : {&s.small_free, &s.large_free}) {
    std::vector<Block*> moved;
    for (auto it = set->begin(); it != set->end();)
      if ((*it)->pool == pool) {
        moved.push_back(*it);
        it = set->erase(it);
      } else {
        ++it;
      }
    for (Block* b : moved) {
      b->pool = 0;
      set->insert(b);
    }
  }
}

BlockCacheStats BlockCache::stats() const {
  std::lock_guard lock(state_->mutex);
  return state_->stats;
}

void BlockCache::reset_peak() {
  std::lock_guard lock(state_->mutex);
  state_->stats.peak_allocated_bytes = state_->stats.allocated_bytes;
  state_->stats.peak_reserved_bytes = state_->stats.reserved_bytes;
}

}  // namespace mcd
