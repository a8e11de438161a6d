// NCCL's averaging (mcd/kernels/cuda/nccl_collectives.h): on one GPU the mean of one replica is
// the value itself, also when captured into a graph and replayed; bad tensors are refused before
// any NCCL call, views reduced through dense copies; on a machine with two GPUs, two replicas
// (one thread each) get their mean. Without NCCL the tests say so and pass (the library is
// optional at run time), unless MCD_REQUIRE_NCCL=1.
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include <mcd/engine/generator.h>
#include <mcd/engine/graph.h>
#include <mcd/engine/stream.h>
#include <mcd/kernels/cuda/backend.h>
#include <mcd/kernels/cuda/nccl_collectives.h>
#include <mcd/kernels/cuda/runtime.h>

#include "cuda/nccl_test_support.h"

using namespace mcd;
namespace kcu = mcd::kernels::cuda;

using mcd::testing::nccl_here;

TEST_CASE("NCCL: one replica's mean is its own values, eager and replayed", "[gpu][nccl]") {
  REQUIRE(kcu::install_cuda_backend());
  if (!nccl_here()) return;
  INFO("NCCL " << kcu::NcclCollectives::version());
  kcu::NcclCollectives group({0});
  REQUIRE(group.size() == 1);
  CHECK(group.device(0) == 0);
  Collective& replica = group.replica(0);
  CHECK(replica.capturable());
  Generator gen(3);
  const Tensor a_host = Tensor::randn({1000}, gen, DType::Float32);
  const Tensor b_host = Tensor::randn({3, 5}, gen, DType::Float64);
  Tensor a = a_host.to(Device::cuda()), b = b_host.to(Device::cuda());
  replica.all_reduce_mean({a, Tensor(), b});
  CHECK(a.to_doubles() == a_host.to_doubles());
  CHECK(b.to_doubles() == b_host.to_doubles());

  PooledStream lane(Device::cuda());
  const StreamGuard on(lane.ref());
  const auto graph = DeviceGraph::capture(lane.ref(), [&] { replica.all_reduce_mean({a, b}); });
  for (int i = 0; i < 3; ++i)
    graph->replay(lane.ref());
  CHECK(a.to_doubles() == a_host.to_doubles());
  CHECK(b.to_doubles() == b_host.to_doubles());

  Tensor on_host = Tensor::zeros({4});
  CHECK_THROWS_WITH(replica.all_reduce_mean({a, on_host}),
                    Catch::Contains("was given a tensor on cpu"));
  // A view (a gradient may be a transposed one) is reduced through a dense copy, written back.
  replica.all_reduce_mean({b.transpose(0, 1), a.slice(0, 10, 400, 3)});
  CHECK(a.to_doubles() == a_host.to_doubles());
  CHECK(b.to_doubles() == b_host.to_doubles());
  Tensor ints = Tensor::zeros({4}, DType::Int64).to(Device::cuda());
  CHECK_THROWS_WITH(replica.all_reduce_mean({ints}), Catch::Contains("only float32 and float64"));
  CHECK_THROWS_WITH(kcu::NcclCollectives({0, 0}), Catch::Contains("appears twice"));
}

TEST_CASE("NCCL: two replicas on two GPUs get their mean", "[gpu][nccl]") {
  REQUIRE(kcu::install_cuda_backend());
  if (!nccl_here()) return;
  if (kcu::device_count() < 2) {
    WARN("one GPU: two replicas need two, not tested");
    return;
  }
  kcu::NcclCollectives group({0, 1});
  std::vector<std::vector<double>> results(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      const Device d = Device::cuda(r);
      Tensor t = Tensor::from_vector<double>({1.0 + r, -4.0 * r, 0.5}, {3}).to(d);
      {
        const StreamGuard on(current_stream(d));
        group.replica(r).all_reduce_mean({t});
      }
      results[static_cast<std::size_t>(r)] = t.to_doubles();
    });
  for (auto& t : threads)
    t.join();
  for (const auto& r : results)
    CHECK(r == std::vector<double>{1.5, -2.0, 0.5});
}
