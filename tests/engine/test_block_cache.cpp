// The caching-allocator policy over a fake device: fake addresses (never dereferenced), a
// capacity to provoke out-of-memory, and events that complete only when the test says a stream
// has caught up. Random allocate/free/record_stream sequences across several streams check
// after every operation that live blocks never overlap, that a block is reused only on its
// own stream and never while an event still guards it, and that the statistics are exact.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <vector>

#include <catch2/catch.hpp>

#include <mcd/engine/block_cache.h>
#include <mcd/engine/error.h>

using mcd::BlockCache;
using mcd::EventId;
using mcd::StreamId;

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;

class FakeDevice final : public mcd::BlockCacheBackend {
 public:
  explicit FakeDevice(std::size_t capacity = std::size_t{1} << 40) : capacity_(capacity) {}

  void* allocate(std::size_t nbytes) override {
    if (used_ + nbytes > capacity_) return nullptr;
    const std::uintptr_t addr = next_;
    next_ += nbytes + 4096;  // a gap, so that segments are never adjacent
    used_ += nbytes;
    segments[addr] = nbytes;
    return reinterpret_cast<void*>(addr);
  }
  void release(void* ptr, std::size_t nbytes) override {
    auto it = segments.find(reinterpret_cast<std::uintptr_t>(ptr));
    REQUIRE(it != segments.end());
    REQUIRE(it->second == nbytes);
    used_ -= nbytes;
    segments.erase(it);
    if (on_release) on_release(reinterpret_cast<std::uintptr_t>(ptr), nbytes);
  }
  EventId record_event(StreamId stream) override {
    events[++last_event_] = {stream, false};
    return last_event_;
  }
  bool event_done(EventId e) override {
    REQUIRE(events.count(e) == 1);
    return events[e].done;
  }
  void release_event(EventId e) override { REQUIRE(events.erase(e) == 1); }
  void synchronize() override {
    for (auto& [id, ev] : events)
      ev.done = true;
    if (on_finish) on_finish(0, true);
  }
  void poison(void* ptr, std::size_t nbytes, StreamId stream) override {
    poisoned.push_back({reinterpret_cast<std::uintptr_t>(ptr), nbytes, stream});
  }
  // Stream `s` has run everything queued so far.
  void finish(StreamId s) {
    for (auto& [id, ev] : events)
      if (ev.stream == s) ev.done = true;
    if (on_finish) on_finish(s, false);
  }

  struct Event {
    StreamId stream;
    bool done;
  };
  struct Poisoned {
    std::uintptr_t addr;
    std::size_t size;
    StreamId stream;
  };
  std::vector<Poisoned> poisoned;                  // every poison() call, in order
  std::map<std::uintptr_t, std::size_t> segments;  // live segments: address -> size
  std::map<EventId, Event> events;
  std::function<void(std::uintptr_t, std::size_t)> on_release;
  std::function<void(StreamId, bool)> on_finish;

 private:
  std::size_t capacity_;
  std::size_t used_ = 0;
  std::uintptr_t next_ = std::uintptr_t{1} << 32;
  EventId last_event_ = 0;
};

std::int64_t reserved_of(const FakeDevice& d) {
  std::int64_t total = 0;
  for (auto& [a, n] : d.segments)
    total += static_cast<std::int64_t>(n);
  return total;
}

// A request size: mostly small, sometimes just above the small limit, now and then large.
std::size_t random_size(std::mt19937_64& rng) {
  const int kind = static_cast<int>(rng() % 10);
  if (kind < 6) return 1 + rng() % 4096;
  if (kind < 8) return 1 + rng() % kMiB;
  if (kind < 9) return kMiB + 1 + rng() % (2 * kMiB);
  return 1 + rng() % (24 * kMiB);
}

}  // namespace

TEST_CASE("BlockCache: rounding, stats and reuse on the same stream", "[block_cache]") {
  CHECK(BlockCache::round_size(1) == 512);
  CHECK(BlockCache::round_size(512) == 512);
  CHECK(BlockCache::round_size(513) == 1024);
  FakeDevice dev;
  BlockCache cache(dev);
  CHECK(cache.allocate(0, 1) == nullptr);

  void* a = cache.allocate(100, 1);
  REQUIRE(a != nullptr);
  CHECK(reinterpret_cast<std::uintptr_t>(a) % 512 == 0);
  auto st = cache.stats();
  CHECK(st.allocated_bytes == 512);
  CHECK(st.requested_bytes == 100);
  CHECK(st.reserved_bytes == static_cast<std::int64_t>(2 * kMiB));
  CHECK(st.backend_allocations == 1);
  cache.free(a);
  CHECK(cache.stats().allocated_bytes == 0);
  CHECK(cache.stats().peak_allocated_bytes == 512);

  // Same stream: the cached block comes back; another stream gets fresh memory.
  void* b = cache.allocate(300, 1);
  CHECK(b == a);
  CHECK(cache.stats().cache_hits == 1);
  void* c = cache.allocate(300, 2);
  CHECK(c != a);
  CHECK(cache.stats().backend_allocations == 2);
  cache.free(b);
  cache.free(c);

  // Large requests get their own segment, rounded to 2 MiB, and are split only for a large rest.
  void* big = cache.allocate(5 * kMiB + 1, 1);
  CHECK(dev.segments.at(reinterpret_cast<std::uintptr_t>(big)) == 6 * kMiB);
  cache.free(big);
  void* part = cache.allocate(3 * kMiB, 1);  // rest 3 MiB stays in the large pool
  CHECK(part == big);
  void* rest = cache.allocate(2 * kMiB, 1);
  CHECK(reinterpret_cast<std::uintptr_t>(rest) == reinterpret_cast<std::uintptr_t>(big) + 3 * kMiB);
  CHECK(cache.stats().backend_allocations == 3);
  cache.free(part);
  cache.free(rest);

  CHECK_THROWS_AS(cache.free(reinterpret_cast<void*>(std::uintptr_t{12345})), mcd::Error);
  cache.empty_cache();
  CHECK(dev.segments.empty());
  CHECK(cache.stats().reserved_bytes == 0);
  CHECK(cache.stats().segments == 0);
}

TEST_CASE("BlockCache: a block used by another stream waits for that stream", "[block_cache]") {
  FakeDevice dev;
  BlockCache cache(dev);
  void* a = cache.allocate(4096, 1);
  cache.record_stream(a, 2);
  cache.record_stream(a, 1);  // its own stream: nothing to wait for
  cache.free(a);
  CHECK(dev.events.size() == 1);
  void* b = cache.allocate(4096, 1);
  CHECK(b != a);  // still guarded by stream 2's event
  dev.finish(2);
  void* c = cache.allocate(4096, 1);
  CHECK(c == a);
  CHECK(dev.events.empty());
  cache.free(b);
  cache.free(c);
  cache.empty_cache();
  CHECK(dev.segments.empty());
}

TEST_CASE(
    "BlockCache: a block used by another stream and freed while capturing waits for the "
    "window's end",
    "[block_cache]") {
  // An event recorded on a capturing stream is a node of the graph, not something to query:
  // the other stream's event is recorded once the window (and so the capture) has ended.
  FakeDevice dev;
  BlockCache cache(dev);
  void* a = cache.allocate(4096, 1);
  cache.record_stream(a, 2);
  cache.begin_private_pool(7);
  cache.free(a);
  CHECK(dev.events.empty());
  void* inside = cache.allocate(4096, 1);
  CHECK(inside != a);
  cache.end_private_pool();
  CHECK(dev.events.size() == 1);
  void* after = cache.allocate(4096, 1);
  CHECK(after != a);  // stream 2 has not passed the event yet
  dev.finish(2);
  void* reused = cache.allocate(4096, 1);
  CHECK(reused == a);
  CHECK(dev.events.empty());
  for (void* p : {inside, after, reused})
    cache.free(p);
  cache.release_private_pool(7);
  cache.empty_cache();
  CHECK(dev.segments.empty());
}

TEST_CASE("BlockCache: a deferred block of a pool released meanwhile joins the shared pool",
          "[block_cache]") {
  FakeDevice dev;
  BlockCache cache(dev);
  cache.begin_private_pool(5);
  void* a = cache.allocate(4096, 1);
  cache.end_private_pool();
  cache.record_stream(a, 2);
  cache.begin_private_pool(7);
  cache.free(a);                  // deferred until pool 7's window ends
  cache.release_private_pool(5);  // a's pool goes while a waits
  cache.end_private_pool();
  dev.finish(2);
  cache.free(cache.allocate(4096, 1));  // files a once its event is done
  cache.release_private_pool(7);
  cache.empty_cache();
  CHECK(dev.segments.empty());
  CHECK(cache.stats().reserved_bytes == 0);
}

TEST_CASE("BlockCache: poisoned allocations, whole blocks on the allocating stream",
          "[block_cache]") {
  FakeDevice dev;
  BlockCache cache(dev);
  void* off = cache.allocate(1000, 1);
  cache.free(off);
  CHECK(dev.poisoned.empty());  // off by default

  cache.set_poison_allocations(true);
  void* a = cache.allocate(1000, 3);  // a new segment
  void* large = cache.allocate(3 * kMiB, 5);
  cache.free(a);
  void* again = cache.allocate(1000, 3);  // from the cache
  REQUIRE(dev.poisoned.size() == 3);
  CHECK(dev.poisoned[0].addr == reinterpret_cast<std::uintptr_t>(a));
  CHECK(dev.poisoned[0].size == BlockCache::round_size(1000));  // the whole block
  CHECK(dev.poisoned[0].stream == 3);                           // on the allocating stream
  CHECK(dev.poisoned[1].addr == reinterpret_cast<std::uintptr_t>(large));
  CHECK(dev.poisoned[1].size == 4 * kMiB);  // its segment, unsplit: 3 MiB rounded to 2 MiB
  CHECK(dev.poisoned[1].stream == 5);
  CHECK(dev.poisoned[2].addr == reinterpret_cast<std::uintptr_t>(again));
  // In a graph's window too: the fill is captured with the graph and runs at every replay.
  cache.begin_private_pool(7);
  void* in_pool = cache.allocate(1000, 4);
  cache.end_private_pool();
  REQUIRE(dev.poisoned.size() == 4);
  CHECK(dev.poisoned[3].addr == reinterpret_cast<std::uintptr_t>(in_pool));
  CHECK(dev.poisoned[3].stream == 4);
  cache.free(in_pool);
  cache.free(again);
  cache.free(large);
  cache.release_private_pool(7);
  cache.set_poison_allocations(false);
  void* quiet = cache.allocate(1000, 3);
  CHECK(dev.poisoned.size() == 4);
  cache.free(quiet);
  cache.empty_cache();
  CHECK(dev.segments.empty());
}

TEST_CASE("BlockCache: out of memory releases the cache, then throws", "[block_cache]") {
  FakeDevice dev(8 * kMiB);
  BlockCache cache(dev);
  void* a = cache.allocate(6 * kMiB, 1);
  cache.free(a);                          // cached: 6 MiB reserved
  void* b = cache.allocate(7 * kMiB, 2);  // needs 8 MiB: the cached segment must go first
  REQUIRE(b != nullptr);
  CHECK(cache.stats().backend_releases == 1);
  CHECK(cache.stats().reserved_bytes == static_cast<std::int64_t>(8 * kMiB));
  CHECK_THROWS_AS(cache.allocate(1, 1), mcd::Error);
  cache.free(b);
}

TEST_CASE("BlockCache: out of memory while capturing fails without releasing the cache",
          "[block_cache]") {
  // Releasing cached segments synchronizes the device, which breaks a graph being captured:
  // inside a private pool's window the allocation fails at once, naming the capture.
  FakeDevice dev(8 * kMiB);
  BlockCache cache(dev);
  void* a = cache.allocate(6 * kMiB, 1);
  cache.free(a);  // cached: 6 MiB reserved
  cache.begin_private_pool(3);
  CHECK_THROWS_WITH(cache.allocate(7 * kMiB, 1), Catch::Contains("while capturing a graph"));
  CHECK(cache.stats().backend_releases == 0);
  CHECK(cache.stats().reserved_bytes == static_cast<std::int64_t>(6 * kMiB));
  cache.end_private_pool();
  cache.release_private_pool(3);
  void* b = cache.allocate(7 * kMiB, 1);  // outside the window the cache gives way as usual
  CHECK(cache.stats().backend_releases == 1);
  cache.free(b);
}

TEST_CASE("BlockCache: a private pool's memory goes to its windows only", "[block_cache]") {
  FakeDevice dev;
  BlockCache cache(dev);
  void* shared = cache.allocate(4096, 1);
  cache.free(shared);  // a cached shared block

  // In the window: fresh private memory although a shared block fits; reuse inside the pool.
  cache.begin_private_pool(7);
  CHECK_THROWS_AS(cache.begin_private_pool(8), mcd::Error);  // windows do not nest
  void* p1 = cache.allocate(4096, 1);
  CHECK(p1 != shared);
  cache.free(p1);
  void* p2 = cache.allocate(4096, 1);
  CHECK(p2 == p1);
  void* p3 = cache.allocate(100, 2);  // another stream of the graph: the pool's too
  cache.free(p2);
  cache.free(p3);
  cache.end_private_pool();

  // Outside the window the private blocks are never handed out, and empty_cache keeps them.
  void* s1 = cache.allocate(4096, 1);
  CHECK(s1 == shared);
  void* s2 = cache.allocate(4096, 1);
  CHECK(s2 != p1);
  void* s3 = cache.allocate(100, 2);
  CHECK(s3 != p3);
  cache.free(s1);
  cache.free(s2);
  cache.free(s3);
  const std::int64_t before = cache.stats().reserved_bytes;
  cache.empty_cache();
  CHECK(cache.stats().reserved_bytes == static_cast<std::int64_t>(4 * kMiB));  // 2 private segments
  CHECK(before > cache.stats().reserved_bytes);

  // A second window of the same pool finds its memory again; a block stays live past the end.
  cache.begin_private_pool(7);
  void* p4 = cache.allocate(4096, 1);
  CHECK(p4 == p1);
  cache.end_private_pool();
  CHECK_THROWS_AS(cache.release_private_pool(0), mcd::Error);

  // Released: free private blocks are shared at once, live ones when freed.
  cache.release_private_pool(7);
  void* s4 = cache.allocate(100, 2);
  CHECK(s4 == p3);
  cache.free(p4);
  void* s5 = cache.allocate(4096, 1);
  CHECK(s5 == p1);
  cache.free(s4);
  cache.free(s5);
  cache.empty_cache();
  CHECK(dev.segments.empty());
  CHECK(cache.stats().allocated_bytes == 0);
}

TEST_CASE("BlockCache: a private pool reopened for a second graph", "[block_cache]") {
  // Two graphs sharing one pool: the second capture may take what the first freed (its
  // temporaries), never what is still alive (its outputs).
  FakeDevice dev;
  BlockCache cache(dev);
  cache.begin_private_pool(4);
  void* temporary = cache.allocate(8192, 1);
  void* output = cache.allocate(8192, 1);
  cache.free(temporary);
  cache.end_private_pool();

  void* eager = cache.allocate(8192, 1);  // between the windows: never the pool's memory
  CHECK(eager != temporary);
  CHECK(eager != output);
  cache.free(eager);

  cache.begin_private_pool(4);
  void* second = cache.allocate(8192, 1);
  CHECK(second == temporary);
  void* more = cache.allocate(8192, 1);
  CHECK(more != output);
  cache.free(second);
  cache.free(more);
  cache.end_private_pool();
  cache.free(output);
  cache.release_private_pool(4);
  cache.empty_cache();
  CHECK(cache.stats().allocated_bytes == 0);
}

TEST_CASE("BlockCache: a repeating pattern stops calling the backend", "[block_cache]") {
  FakeDevice dev;
  BlockCache cache(dev);
  std::mt19937_64 rng(7);
  struct Req {
    std::size_t size;
    StreamId stream;
  };
  std::vector<Req> pattern;
  for (int i = 0; i < 200; ++i)
    pattern.push_back({random_size(rng), static_cast<StreamId>(1 + rng() % 3)});
  std::vector<std::size_t> order(pattern.size());
  for (std::size_t i = 0; i < order.size(); ++i)
    order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);  // frees in a fixed, scrambled order

  std::int64_t after_warmup = -1;
  for (int iter = 0; iter < 10; ++iter) {
    std::vector<void*> ptrs;
    for (const Req& r : pattern)
      ptrs.push_back(cache.allocate(r.size, r.stream));
    for (std::size_t i : order)
      cache.free(ptrs[i]);
    if (iter == 1) after_warmup = cache.stats().backend_allocations;
  }
  CHECK(cache.stats().backend_allocations == after_warmup);
  CHECK(cache.stats().cache_hits >= 8 * 200);
  cache.empty_cache();
  CHECK(dev.segments.empty());
}

TEST_CASE("BlockCache: random allocate/free/record_stream keeps every invariant", "[block_cache]") {
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    FakeDevice dev(256 * kMiB);
    BlockCache cache(dev);
    std::mt19937_64 rng(seed);

    struct Live {
      std::size_t size;
      StreamId stream;
      std::set<StreamId> used_by;
    };
    struct Freed {
      std::size_t size;
      StreamId stream;
      std::set<StreamId> waiting;  // streams whose events guard the block
    };
    std::map<std::uintptr_t, Live> live;
    std::map<std::uintptr_t, Freed> freed;  // cached ranges, as last freed
    dev.on_release = [&](std::uintptr_t addr, std::size_t n) {
      for (auto it = freed.begin(); it != freed.end();)
        it = (it->first >= addr && it->first < addr + n) ? freed.erase(it) : std::next(it);
      for (auto& [a, l] : live)
        REQUIRE((a + l.size <= addr || a >= addr + n));  // no live block in a released segment
    };
    dev.on_finish = [&](StreamId s, bool all) {
      for (auto& [a, f] : freed) {
        if (all)
          f.waiting.clear();
        else
          f.waiting.erase(s);
      }
    };

    std::int64_t requested = 0, allocated = 0;
    for (int op = 0; op < 4000; ++op) {
      const int what = static_cast<int>(rng() % 100);
      if (what < 50 || live.empty()) {
        const std::size_t n = random_size(rng);
        const StreamId s = 1 + rng() % 3;
        void* p = nullptr;
        try {
          p = cache.allocate(n, s);
        } catch (const mcd::Error&) {
          continue;  // the fake device is full: nothing may have changed
        }
        const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(p);
        // Inside a live segment, overlapping no live block.
        auto seg = dev.segments.upper_bound(a);
        REQUIRE(seg != dev.segments.begin());
        --seg;
        REQUIRE(a + n <= seg->first + seg->second);
        auto next = live.lower_bound(a);
        if (next != live.end()) REQUIRE(a + n <= next->first);
        if (next != live.begin())
          REQUIRE(std::prev(next)->first + std::prev(next)->second.size <= a);
        // Reused memory came from this stream and no event still guards it.
        for (auto it = freed.begin(); it != freed.end();) {
          if (it->first < a + n && a < it->first + it->second.size) {
            REQUIRE(it->second.stream == s);
            REQUIRE(it->second.waiting.empty());
            it = freed.erase(it);
          } else {
            ++it;
          }
        }
        live[a] = {n, s, {}};
        requested += static_cast<std::int64_t>(n);
        allocated += static_cast<std::int64_t>(BlockCache::round_size(n));
      } else if (what < 90) {
        auto it = std::next(live.begin(), static_cast<long>(rng() % live.size()));
        cache.free(reinterpret_cast<void*>(it->first));
        std::set<StreamId> waiting = it->second.used_by;
        waiting.erase(it->second.stream);
        freed[it->first] = {it->second.size, it->second.stream, waiting};
        requested -= static_cast<std::int64_t>(it->second.size);
        allocated -= static_cast<std::int64_t>(BlockCache::round_size(it->second.size));
        live.erase(it);
      } else if (what < 96) {
        auto it = std::next(live.begin(), static_cast<long>(rng() % live.size()));
        const StreamId s = 1 + rng() % 3;
        cache.record_stream(reinterpret_cast<void*>(it->first), s);
        it->second.used_by.insert(s);
      } else if (what < 99) {
        dev.finish(1 + rng() % 3);
      } else {
        cache.empty_cache();
      }
      const auto st = cache.stats();
      REQUIRE(st.requested_bytes == requested);
      REQUIRE(st.allocated_bytes == allocated);
      REQUIRE(st.live_blocks == static_cast<std::int64_t>(live.size()));
      REQUIRE(st.reserved_bytes == reserved_of(dev));
      REQUIRE(st.segments == static_cast<std::int64_t>(dev.segments.size()));
      REQUIRE(st.peak_allocated_bytes >= st.allocated_bytes);
    }
    for (auto& [a, l] : live)
      cache.free(reinterpret_cast<void*>(a));
    live.clear();
    cache.empty_cache();
    CHECK(dev.segments.empty());
    CHECK(dev.events.empty());
    CHECK(cache.stats().reserved_bytes == 0);
    CHECK(cache.stats().allocated_bytes == 0);
  }
}
