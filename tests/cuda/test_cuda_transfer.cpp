// Copies that do not make the host wait (engine/transfer.h) on a real GPU: values arrive in
// stream order behind work already queued, host sources may be reused at once, strided views
// come back compacted, the page-locked blocks are reused in the steady state, and a copy inside
// a graph capture is refused with a message saying why.
#include <cstdint>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <mcd/engine/device_backend.h>
#include <mcd/engine/generator.h>
#include <mcd/engine/graph.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/linalg.h>
#include <mcd/engine/stream.h>
#include <mcd/engine/transfer.h>
#include <mcd/kernels/cuda/backend.h>
#include <mcd/kernels/cuda/pinned_pool.h>

using namespace mcd;
namespace kcu = mcd::kernels::cuda;

namespace {

// About a millisecond of queued GEMMs, so that the copies after them really wait in the stream
// behind work (and the host reuses its buffers before the device has copied them).
Tensor keep_busy(const Tensor& m) {
  Tensor x = m;
  for (int i = 0; i < 4; ++i)
    x = mul(matmul(x, m), 1e-3);
  return x;
}

}  // namespace

TEST_CASE("CUDA copies that do not wait arrive in stream order", "[gpu][runtime][transfer]") {
  REQUIRE(kcu::install_cuda_backend());
  Generator gen(1);
  const Device dev = Device::cuda();
  const Tensor m = Tensor::randn({1024, 1024}, gen).to(dev);
  const Shape shape{40, 3, 32, 33};  // 4.9 MB: a reference-configuration batch's tenth, odd
  const Tensor values = Tensor::randn(shape, gen);
  std::vector<double> doubled = values.to_doubles();
  for (double& v : doubled)
    v *= 2.0;
  for (int round = 0; round < 3; ++round) {
    INFO("round " << round);
    const Tensor busy = keep_busy(m);
    HostCopy busy_back(busy.slice(0, 0, 1));  // queued first: arrives before the copies below
    Tensor d = Tensor::empty(shape, DType::Float32, dev);
    Tensor source = values.clone();
    copy_to_device_async(d, source);
    source.fill_(-1.0);  // the bytes were staged: the device must still see `values`
    const Tensor made = to_device_async(values, dev);
    HostCopy whole(mul(d, 2.0));
    HostCopy column(made.slice(3, 5, 6));        // strided: compacted on the device first
    CHECK(whole.get().to_doubles() == doubled);  // x2 is exact in float32
    CHECK(column.get().to_doubles() == values.slice(3, 5, 6).to_doubles());
    CHECK(busy_back.ready());  // queued before `whole`, which has arrived
    CHECK(busy_back.get().shape() == Shape{1, 1024});
  }

  // The steady state allocates no page-locked memory: blocks come back once their copy ran.
  Tensor d = Tensor::empty(shape, DType::Float32, dev);
  auto round_trip = [&] {
    copy_to_device_async(d, values);
    HostCopy back(d);
    back.get();
  };
  round_trip();
  const std::size_t blocks = kcu::PinnedPool::instance().blocks();
  for (int i = 0; i < 10; ++i)
    round_trip();
  CHECK(kcu::PinnedPool::instance().blocks() == blocks);

  // Unused blocks go back on request; one lent (a copy still to be read) stays.
  auto& pool = kcu::PinnedPool::instance();
  {
    HostCopy kept(d);  // holds its block until get() has read it
    const std::size_t reserved = pool.reserved_bytes();
    CHECK(pool.release_unused() < reserved);
    CHECK(pool.blocks() == 1);
    CHECK(pool.reserved_bytes() >= static_cast<std::size_t>(d.numel()) * sizeof(float));
    CHECK(kept.get().to_doubles() == values.to_doubles());
  }
  CHECK(pool.release_unused() > 0);
  CHECK(pool.blocks() == 0);
  CHECK(pool.reserved_bytes() == 0);
  round_trip();  // and come again when needed
  CHECK(pool.blocks() >= 1);
}

TEST_CASE("CUDA copies that do not wait are refused inside a graph capture",
          "[gpu][runtime][transfer]") {
  REQUIRE(kcu::install_cuda_backend());
  const Device dev = Device::cuda();
  Tensor d = Tensor::zeros({8}, DType::Float32, dev);
  const Tensor ones = Tensor::ones({8});
  PooledStream lane(dev);
  const StreamGuard on(lane.ref());
  CHECK_THROWS_WITH(DeviceGraph::capture(lane.ref(), [&] { copy_to_device_async(d, ones); }),
                    Catch::Contains("cannot be part of a graph"));
  CHECK_THROWS_WITH(DeviceGraph::capture(lane.ref(), [&] { HostCopy back(d); }),
                    Catch::Contains("cannot be part of a graph"));
  // The stream works as before afterwards.
  copy_to_device_async(d, ones);
  CHECK(HostCopy(d).get().to_doubles() == std::vector<double>(8, 1.0));
}

TEST_CASE("CUDA memory statistics and emptying the cache through the engine", "[gpu][runtime]") {
  REQUIRE(kcu::install_cuda_backend());
  const Device dev = Device::cuda();
  const BlockCacheStats before = device_memory_stats(dev);
  BlockCacheStats held;
  {
    const Tensor t = Tensor::empty({1 << 20}, DType::Float32, dev);  // 4 MiB: a large block
    held = device_memory_stats(dev);
    CHECK(held.allocated_bytes >= before.allocated_bytes + (std::int64_t{4} << 20));
    CHECK(held.reserved_bytes >= held.allocated_bytes);
    reset_peak_device_memory(dev);
    CHECK(device_memory_stats(dev).peak_allocated_bytes == held.allocated_bytes);
  }
  CHECK(device_memory_stats(dev).allocated_bytes == before.allocated_bytes);
  empty_device_cache(dev);
  const BlockCacheStats after = device_memory_stats(dev);
  CHECK(after.reserved_bytes < held.reserved_bytes);  // the freed block's segment went back
  CHECK(after.reserved_bytes >= after.allocated_bytes);
}
