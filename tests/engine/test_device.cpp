// The engine's side of device tensors, checked on the CPU with a fake device backend: storage
// allocated and freed through the backend, copies both ways for contiguous and strided views,
// reads of device tensors through the host, gradients and tangents through Tensor::to(Device),
// Module::to(Device), and clear errors when there is no backend, no device or no kernel.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <vector>

#include <catch2/catch.hpp>

#include <mcd/engine/autograd.h>
#include <mcd/engine/device_backend.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/engine/transfer.h>
#include <mcd/models/registry.h>

#include "support/gradcheck.h"

using namespace mcd;
using mcd::testing::random_tensor;

namespace {

// "Device" memory is host memory that the fake poisons on allocation and tracks, so the test
// sees leaks, double frees and every copy.
class FakeDevice final : public DeviceBackend {
 public:
  explicit FakeDevice(int devices) : devices_(devices) {}
  const char* name() const override { return "fake"; }
  int device_count() const override { return devices_; }
  void* allocate(std::size_t nbytes, int device) override {
    REQUIRE(device >= 0);
    REQUIRE(device < devices_);
    void* p = std::malloc(nbytes);
    std::memset(p, 0xA5, nbytes);
    live_[p] = nbytes;
    live_bytes += nbytes;
    peak_bytes = std::max(peak_bytes, live_bytes);
    return p;
  }
  void deallocate(void* ptr, std::size_t nbytes, int) override {
    auto it = live_.find(ptr);
    REQUIRE(it != live_.end());
    CHECK(it->second == nbytes);
    live_bytes -= nbytes;
    live_.erase(it);
    std::free(ptr);
  }
  void copy(void* dst, Device dst_device, const void* src, Device src_device,
            std::size_t nbytes) override {
    CHECK(dst_device != src_device);
    ++copies;
    std::memcpy(dst, src, nbytes);
  }
  void synchronize(int) override {}
  BlockCacheStats memory_stats(int device) override {
    BlockCacheStats st;
    st.allocated_bytes = static_cast<std::int64_t>(live_bytes);
    st.peak_allocated_bytes = static_cast<std::int64_t>(peak_bytes);
    st.live_blocks = static_cast<std::int64_t>(live_.size());
    st.segments = device;  // which device was asked
    return st;
  }
  void reset_peak_memory(int) override { peak_bytes = live_bytes; }
  void empty_cache(int device) override { emptied.push_back(device); }

  std::size_t live_bytes = 0, peak_bytes = 0;
  std::vector<int> emptied;
  int copies = 0;

 private:
  int devices_;
  std::map<void*, std::size_t> live_;
};

// Registers a fake backend for the scope of one test.
struct FakeDeviceScope {
  FakeDevice device;
  explicit FakeDeviceScope(int devices = 2) : device(devices) {
    register_device_backend(DeviceType::CUDA, &device);
  }
  ~FakeDeviceScope() { register_device_backend(DeviceType::CUDA, nullptr); }
};

void check_equal(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  CHECK(a.to_doubles() == b.to_doubles());
}

}  // namespace

TEST_CASE("device tensors need a backend and an existing device", "[engine][device]") {
  CHECK_THROWS_WITH(
      Tensor::empty({2}, DType::Float32, Device::cuda()),
      Catch::Contains("cuda:0 is not available") && Catch::Contains("no CUDA backend"));
  FakeDeviceScope fake(2);
  CHECK_NOTHROW(Tensor::empty({2}, DType::Float32, Device::cuda(1)));
  CHECK_THROWS_WITH(Tensor::empty({2}, DType::Float32, Device::cuda(2)),
                    Catch::Contains("cuda:2 does not exist") && Catch::Contains("2 device(s)"));
}

TEST_CASE("copies to a device and back keep every value", "[engine][device]") {
  FakeDeviceScope fake;
  Generator gen(1);
  {
    const Tensor x = random_tensor({3, 5}, gen);
    const Tensor d = x.to(Device::cuda());
    CHECK(d.device() == Device::cuda());
    CHECK(fake.device.live_bytes == 15 * sizeof(double));
    CHECK(d.to(Device::cpu()).device().is_cpu());
    check_equal(d.to(Device::cpu()), x);
    CHECK(d.to(Device::cuda()).shares_storage_with(d));  // already there: no copy

    // Strided views, on the host before the copy and on the device after it.
    check_equal(x.transpose(0, 1).to(Device::cuda()).to(Device::cpu()), x.transpose(0, 1));
    check_equal(d.transpose(0, 1).to(Device::cpu()), x.transpose(0, 1));
    check_equal(d.slice(1, 1, 5, 2).to(Device::cpu()), x.slice(1, 1, 5, 2));
    check_equal(d.slice(0, 1, 3).unsqueeze(0).expand({2, 2, 5}).to(Device::cpu()),
                x.slice(0, 1, 3).unsqueeze(0).expand({2, 2, 5}));
    // Between devices, through the host.
    check_equal(d.transpose(0, 1).to(Device::cuda(1)).to(Device::cpu()), x.transpose(0, 1));

    // Reads of device tensors copy to the host; factories fill on the host and copy.
    CHECK(d.to_doubles() == x.to_doubles());
    CHECK(d.slice(0, 2, 3).slice(1, 4, 5).item() == x.to_doubles()[14]);
    check_equal(Tensor::zeros({2, 3}, DType::Float32, Device::cuda()), Tensor::zeros({2, 3}));
    check_equal(Tensor::full({4}, 2.5, DType::Float64, Device::cuda(1)),
                Tensor::full({4}, 2.5, DType::Float64));
    CHECK(Tensor::empty({0, 3}, DType::Float32, Device::cuda()).to(Device::cpu()).numel() == 0);
    CHECK_THAT(d.str(), Catch::Contains("device=cuda:0"));
  }
  CHECK(fake.device.live_bytes == 0);  // every storage went back through the backend
}

TEST_CASE("device memory statistics come from the device's backend", "[engine][device]") {
  CHECK_THROWS_WITH(device_memory_stats(Device::cuda()), Catch::Contains("no CUDA backend"));
  FakeDeviceScope fake(2);
  {
    const Tensor a = Tensor::empty({1000}, DType::Float32, Device::cuda(1));
    {
      const Tensor b = Tensor::empty({500}, DType::Float64, Device::cuda(1));
      const BlockCacheStats st = device_memory_stats(Device::cuda(1));
      CHECK(st.allocated_bytes == 8000);
      CHECK(st.live_blocks == 2);
      CHECK(st.segments == 1);  // the fake's mark of the device asked
    }
    CHECK(device_memory_stats(Device::cuda(1)).allocated_bytes == 4000);
    CHECK(device_memory_stats(Device::cuda(1)).peak_allocated_bytes == 8000);
    reset_peak_device_memory(Device::cuda(1));
    CHECK(device_memory_stats(Device::cuda(1)).peak_allocated_bytes == 4000);
  }
  empty_device_cache(Device::cuda(1));
  CHECK(fake.device.emptied == std::vector<int>{1});
  CHECK_THROWS_WITH(device_memory_stats(Device::cuda(2)), Catch::Contains("cuda:2 does not exist"));
}

TEST_CASE("ops without a device kernel name the op and the device", "[engine][device]") {
  FakeDeviceScope fake;
  const Tensor d = Tensor::ones({2, 2}, DType::Float32, Device::cuda());
  CHECK_THROWS_WITH(add(d, d), Catch::Contains("add") && Catch::Contains("cuda:0"));
  CHECK_THROWS_WITH(sum(d), Catch::Contains("cuda:0"));
}

TEST_CASE("gradients and tangents move with Tensor::to(Device)", "[engine][device][grad]") {
  FakeDeviceScope fake;
  Generator gen(2);
  const Tensor w = random_tensor({3, 4}, gen);
  // The device round trip is the identity, so its derivatives are those of x * w.
  testing::check_gradients(
      "to(cuda).to(cpu)",
      [&](const std::vector<Tensor>& x) {
        return mul(x[0].transpose(0, 1).to(Device::cuda()).to(Device::cpu()).transpose(0, 1), w);
      },
      {random_tensor({3, 4}, gen)});

  const Tensor x = random_tensor({3, 4}, gen).set_requires_grad(true);
  const Tensor on_device = x.to(Device::cuda());
  CHECK(on_device.requires_grad());
  sum(mul(on_device.to(Device::cpu()), 3.0)).backward();
  REQUIRE(x.grad().defined());
  CHECK(x.grad().device().is_cpu());
  for (double g : x.grad().to_doubles())
    CHECK(g == 3.0);
}

TEST_CASE("gradients and tangents on another device than their tensor are refused",
          "[engine][device][grad]") {
  // A rule would hand both to one device's kernels, which cannot read the other's memory.
  FakeDeviceScope fake(2);
  const Tensor on_host = Tensor::ones({2, 3});
  Tensor x = on_host.to(Device::cuda(0)).set_requires_grad(true);
  const Tensor on_one = on_host.to(Device::cuda(1));
  CHECK_THROWS_WITH(x.set_grad(on_one), Catch::Contains("set_grad") &&
                                            Catch::Contains("gradient on cuda:1") &&
                                            Catch::Contains("tensor on cuda:0"));
  CHECK_THROWS_WITH(x.set_tangent(on_host), Catch::Contains("set_tangent") &&
                                                Catch::Contains("tangent on cpu") &&
                                                Catch::Contains("primal on cuda:0"));
  CHECK_THROWS_WITH(x.backward(on_one), Catch::Contains("grad_output on cuda:1"));
  // Through a node (the copy's rule): the output's device counts.
  const Tensor leaf = Tensor::ones({2, 3}).set_requires_grad(true);
  const Tensor y = leaf.to(Device::cuda(1));
  CHECK_THROWS_WITH(y.backward(on_host),
                    Catch::Contains("grad_output on cpu") && Catch::Contains("output 0 on cuda:1"));
  CHECK(!leaf.grad().defined());
  y.backward(on_one);  // the right device: accepted
  REQUIRE(leaf.grad().defined());
  CHECK(leaf.grad().to_doubles() == std::vector<double>(6, 1.0));
}

TEST_CASE("modules move their parameters and buffers to a device and back", "[engine][device]") {
  FakeDeviceScope fake;
  Generator gen(3);
  auto model = nn::make_model("resnet10_xxxs", {1, 4, 8}, gen);
  const StateDict before = model->state_dict();
  const auto params = model->parameters();
  model->to(Device::cuda());
  for (const auto& [name, t] : model->state_dict())
    CHECK(t.device() == (is_floating(t.dtype()) ? Device::cuda() : Device::cpu()));
  CHECK(params[0].device() == Device::cuda());  // same handles, new storage
  model->to(Device::cpu());
  for (const auto& [name, t] : model->state_dict())
    check_equal(t, before.at(name));
}

TEST_CASE("copies that do not wait: through the backend, snapshots, errors", "[engine][device]") {
  FakeDeviceScope fake;
  Generator gen(4);
  const Tensor x = random_tensor({3, 5}, gen);

  // Host to device into an existing tensor, from a strided host view too; the host source
  // may be reused at once.
  Tensor d = Tensor::empty({3, 5}, DType::Float64, Device::cuda());
  Tensor src = x.clone();
  copy_to_device_async(d, src);
  src.fill_(7.0);
  check_equal(d.to(Device::cpu()), x);
  Tensor dt = Tensor::empty({5, 3}, DType::Float64, Device::cuda(1));
  copy_to_device_async(dt, x.transpose(0, 1));
  check_equal(dt.to(Device::cpu()), x.transpose(0, 1));
  const Tensor made = to_device_async(x, Device::cuda());
  CHECK(made.device() == Device::cuda());
  check_equal(made.to(Device::cpu()), x);
  CHECK(to_device_async(made, Device::cuda()).shares_storage_with(made));
  Tensor leaf = x.clone();
  leaf.set_requires_grad(true);
  CHECK_FALSE(to_device_async(leaf, Device::cuda()).requires_grad());  // detached
  CHECK_THROWS_WITH(copy_to_device_async(d, random_tensor({5, 3}, gen)),
                    Catch::Contains("copy_to_device_async") && Catch::Contains("[3, 5]") &&
                        Catch::Contains("[5, 3]"));

  // Device to host: a snapshot of the values when the copy was made (a strided view is made
  // contiguous on the device first, which needs the CUDA kernels: test_cuda_kernels).
  HostCopy whole(made);
  CHECK(whole.defined());
  CHECK(whole.ready());  // the fake's copies arrive at once
  CHECK(whole.get().device().is_cpu());
  check_equal(whole.get(), x);
  HostCopy moved = std::move(whole);
  check_equal(moved.get(), x);
  // From the host: copied at once, so later changes to the source do not show.
  Tensor host = x.clone();
  HostCopy snapshot(host);
  host.fill_(0.0);
  check_equal(snapshot.get(), x);
  CHECK_THROWS_WITH(HostCopy().get(), Catch::Contains("nothing was copied"));
  const Tensor empty = Tensor::empty({0, 2}, DType::Float32, Device::cuda());
  CHECK(HostCopy(empty).get().shape() == Shape{0, 2});
}
