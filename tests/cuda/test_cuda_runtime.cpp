// The device runtime on a real GPU: error messages that name the failing call, staged copies,
// and the caching allocator under random allocate/free patterns across three streams. Every
// live block is filled on its stream with its own byte and checked before it is freed, so
// blocks that overlap, or memory handed to another stream too early, show up as corruption.
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <mcd/kernels/cuda/caching_allocator.h>
#include <mcd/kernels/cuda/check.h>
#include <mcd/kernels/cuda/runtime.h>

using mcd::kernels::cuda::DeviceAllocator;
using mcd::kernels::cuda::Event;
using mcd::kernels::cuda::Stream;

TEST_CASE("CUDA errors name the call, the file and the error", "[gpu][runtime]") {
  try {
    MCD_CUDA_CHECK(cudaSetDevice(9999));
    FAIL("no exception");
  } catch (const std::exception& e) {
    const std::string what = e.what();
    CHECK_THAT(what, Catch::Contains("cudaSetDevice(9999)") &&
                         Catch::Contains("test_cuda_runtime.cpp") &&
                         Catch::Contains("cudaErrorInvalidDevice"));
  }
  CHECK_THROWS_WITH(mcd::kernels::cuda::set_device(9999), Catch::Contains("9999"));
}

TEST_CASE("Staged host<->device copies round-trip, larger than the staging buffers",
          "[gpu][runtime]") {
  Stream st(0);
  for (std::size_t n : {std::size_t{1}, std::size_t{4099}, std::size_t{3} << 22}) {
    std::vector<std::uint8_t> host(n), back(n, 0);
    for (std::size_t i = 0; i < n; ++i)
      host[i] = static_cast<std::uint8_t>(i * 131 + 7);
    mcd::kernels::cuda::DeviceBuffer d(0, n, st.get());
    mcd::kernels::cuda::copy_host_to_device(d.data(), host.data(), n, st);
    mcd::kernels::cuda::copy_device_to_host(back.data(), d.data(), n, st);
    CHECK(back == host);
  }
}

TEST_CASE("Device caching allocator: random patterns across streams", "[gpu][allocator]") {
  DeviceAllocator& alloc = DeviceAllocator::for_device(0);
  std::vector<Stream> streams;
  for (int i = 0; i < 3; ++i)
    streams.emplace_back(0);
  std::mt19937_64 rng(5);
  struct Live {
    std::size_t size;
    int stream;
    std::uint8_t tag;
  };
  std::map<void*, Live> live;
  std::uint8_t next_tag = 1;
  auto size = [&] {
    const int kind = static_cast<int>(rng() % 10);
    if (kind < 7) return static_cast<std::size_t>(1 + rng() % 8192);
    if (kind < 9) return static_cast<std::size_t>(1 + rng() % (1 << 20));
    return static_cast<std::size_t>(1 + rng() % (24 << 20));
  };
  auto verify_and_free = [&](std::map<void*, Live>::iterator it) {
    const Stream& st = streams[it->second.stream];
    std::vector<std::uint8_t> back(it->second.size);
    MCD_CUDA_CHECK(
        cudaMemcpyAsync(back.data(), it->first, back.size(), cudaMemcpyDeviceToHost, st.get()));
    st.synchronize();
    std::size_t bad = 0;
    for (std::uint8_t b : back)
      bad += b != it->second.tag;
    REQUIRE(bad == 0);
    alloc.free(it->first);
    live.erase(it);
  };

  const std::int64_t reserved_before = alloc.stats().reserved_bytes;
  for (int op = 0; op < 3000; ++op) {
    if (rng() % 2 == 0 || live.empty()) {
      const std::size_t n = size();
      const int s = static_cast<int>(rng() % 3);
      void* p = alloc.allocate(n, streams[s].get());
      REQUIRE(p != nullptr);
      const std::uint8_t tag = next_tag;
      next_tag = static_cast<std::uint8_t>(next_tag % 250 + 1);
      MCD_CUDA_CHECK(cudaMemsetAsync(p, tag, n, streams[s].get()));
      live[p] = {n, s, tag};
    } else {
      auto it = std::next(live.begin(), static_cast<long>(rng() % live.size()));
      if (rng() % 8 == 0) {
        // Rewrite the block on another stream after its own stream's work, then free it on
        // the allocator's terms: it must not be reused before that stream has run.
        const int other = (it->second.stream + 1) % 3;
        Event done(0);
        done.record(streams[it->second.stream].get());
        streams[other].wait(done.get());
        MCD_CUDA_CHECK(
            cudaMemsetAsync(it->first, it->second.tag, it->second.size, streams[other].get()));
        alloc.record_stream(it->first, streams[other].get());
        streams[other].synchronize();  // the host check below reads on the block's own stream
      }
      verify_and_free(it);
    }
    const auto st = alloc.stats();
    REQUIRE(st.live_blocks == static_cast<std::int64_t>(live.size()));
    REQUIRE(st.allocated_bytes <= st.reserved_bytes);
  }
  while (!live.empty())
    verify_and_free(live.begin());

  // A repeating pattern stops calling cudaMalloc after its first round.
  std::int64_t mallocs = -1;
  for (int iter = 0; iter < 5; ++iter) {
    std::vector<void*> ptrs;
    for (int i = 0; i < 100; ++i)
      ptrs.push_back(alloc.allocate(1 + (i * 7919) % (3 << 20), streams[i % 3].get()));
    for (int i = 99; i >= 0; --i)
      alloc.free(ptrs[i]);
    if (iter == 0) mallocs = alloc.stats().backend_allocations;
  }
  CHECK(alloc.stats().backend_allocations == mallocs);
  alloc.empty_cache();
  CHECK(alloc.stats().reserved_bytes <= reserved_before);
  CHECK(alloc.stats().allocated_bytes == 0);
}
