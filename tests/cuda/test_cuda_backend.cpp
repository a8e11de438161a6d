// The engine's CUDA backend: tensors and modules moved to the device and back keep every
// value, strided device views copy correctly, device storage comes from the caching allocator
// and goes back to it, gradients flow through Tensor::to(Device), and StreamScope switches the
// stream that allocations are tagged with.
#include <catch2/catch.hpp>

#include <mcd/engine/autograd.h>
#include <mcd/engine/generator.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/engine/safetensors.h>
#include <mcd/kernels/cuda/backend.h>
#include <mcd/kernels/cuda/caching_allocator.h>
#include <mcd/models/registry.h>

using namespace mcd;
namespace kcu = mcd::kernels::cuda;

namespace {
void check_equal(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  CHECK(a.to_doubles() == b.to_doubles());
}
}  // namespace

TEST_CASE("CUDA tensors: copies both ways and strided device views", "[cuda][backend]") {
  REQUIRE(kcu::install_cuda_backend());
  Generator gen(1);
  const Tensor x = Tensor::randn({37, 129}, gen);  // odd sizes: no accidental alignment
  const auto before = kcu::DeviceAllocator::for_device(0).stats();
  {
    const Tensor d = x.to(Device::cuda());
    CHECK(d.device() == Device::cuda());
    check_equal(d.to(Device::cpu()), x);
    check_equal(d.transpose(0, 1).to(Device::cpu()), x.transpose(0, 1));
    check_equal(d.slice(1, 3, 120, 7).to(Device::cpu()), x.slice(1, 3, 120, 7));
    check_equal(x.transpose(0, 1).to(Device::cuda()).to(Device::cpu()), x.transpose(0, 1));
    CHECK(d.slice(0, 5, 6).slice(1, 9, 10).item() == x.to_doubles()[5 * 129 + 9]);
    check_equal(Tensor::full({1000}, 1.5, DType::Float64, Device::cuda()),
                Tensor::full({1000}, 1.5, DType::Float64));
    // A large copy takes several pinned staging chunks.
    const Tensor big = Tensor::randn({3, 1 << 20}, gen);
    check_equal(big.to(Device::cuda()).to(Device::cpu()), big);
  }
  const auto after = kcu::DeviceAllocator::for_device(0).stats();
  CHECK(after.allocated_bytes == before.allocated_bytes);  // every block went back
}

TEST_CASE("CUDA tensors: gradients flow back to the host", "[cuda][backend]") {
  REQUIRE(kcu::install_cuda_backend());
  Generator gen(2);
  const Tensor x = Tensor::randn({4, 5}, gen).set_requires_grad(true);
  sum(mul(x.to(Device::cuda()).to(Device::cpu()), 2.0)).backward();
  REQUIRE(x.grad().defined());
  for (double g : x.grad().to_doubles())
    CHECK(g == 2.0);
}

TEST_CASE("CUDA tensors: a stream scope tags allocations with its stream", "[cuda][backend]") {
  REQUIRE(kcu::install_cuda_backend());
  kcu::Stream side(0);
  CHECK(&kcu::current_stream(0) != &side);
  {
    kcu::StreamScope scope(side);
    CHECK(&kcu::current_stream(0) == &side);
    const Tensor t = Tensor::zeros({256}, DType::Float32, Device::cuda());
    CHECK(t.to_doubles() == std::vector<double>(256, 0.0));
  }
  CHECK(&kcu::current_stream(0) != &side);
}

TEST_CASE("CUDA modules: host checkpoints load into a device module and save from it",
          "[cuda][backend]") {
  REQUIRE(kcu::install_cuda_backend());
  Generator gen(3);
  auto model = nn::make_model("resnet10_xxxs", {3, 10, 32}, gen);
  const StateDict host = model->state_dict();
  StateDict copy;
  for (const auto& [k, v] : host)
    copy[k] = v.clone();
  model->to(Device::cuda());
  for (auto& [k, v] : copy)
    if (is_floating(v.dtype())) v.mul_(0.5);
  model->load_state_dict(copy, "halved");  // host values copied into device tensors
  for (const auto& [k, v] : model->state_dict())
    CHECK(v.to_doubles() == copy.at(k).to_doubles());
  const std::string path = "cuda_backend_module.safetensors";
  save_safetensors(path, model->state_dict());  // written from host copies
  for (const auto& [k, v] : load_safetensors(path).tensors)
    CHECK(v.to_doubles() == copy.at(k).to_doubles());
}
