// The CPU/CUDA parity harness of the elementwise family: an op given as a function of its
// inputs runs on the CPU and on CUDA, and its forward, its VJP (mcd::grad with a random
// cotangent) and its JVP (mcd::jvp with random tangents) must agree within the dtype's
// tolerance. Device memory is poisoned with NaN before each evaluation, so an output element
// that a kernel never writes shows up as a NaN mismatch.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <mcd/engine/autograd.h>
#include <mcd/engine/generator.h>
#include <mcd/engine/tensor.h>
#include <mcd/kernels/cuda/backend.h>
#include <mcd/kernels/cuda/caching_allocator.h>
#include <mcd/kernels/cuda/check.h>

#include "cuda/cuda_test_support.h"

namespace mcd::testing {

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

// The parity tolerance: 1e-5 in float32, 1e-12 in float64 (normwise relative error).
inline double rtol_of(DType dtype) {
  return dtype == DType::Float32 ? 1e-5 : 1e-12;
}

inline Tensor on_cuda(const Tensor& t) {
  return t.defined() ? t.detach().to(Device::cuda()) : Tensor();
}

inline Tensor random_uniform(const Shape& shape, Generator& gen, DType dtype, double lo = -1.0,
                             double hi = 1.0) {
  return Tensor::uniform(shape, gen, lo, hi, dtype);
}

// Releases the allocator's unused segments, then fills fresh small-pool and large-pool blocks
// with 0xFF bytes (NaN in float and double, -1 in int64) and frees them, so that the next
// device tensors are carved out of poisoned memory.
inline void poison_device_memory() {
  auto& alloc = kernels::cuda::DeviceAllocator::for_device(0);
  alloc.empty_cache();
  const kernels::cuda::Stream& stream = kernels::cuda::current_stream(0);
  std::vector<Tensor> blocks;
  for (int i = 0; i < 16; ++i)
    blocks.push_back(Tensor::empty({(1 << 20) / 8}, DType::Float64, Device::cuda()));  // 1 MiB
  blocks.push_back(Tensor::empty({(32 << 20) / 8}, DType::Float64, Device::cuda()));   // 32 MiB
  for (Tensor& b : blocks)
    MCD_CUDA_CHECK(
        cudaMemsetAsync(b.raw_data(), 0xFF, static_cast<std::size_t>(b.numel()) * 8, stream.get()));
}

// Same shape and dtype, on CUDA, values within rtol (normwise; `floor` as in require_close).
inline void require_parity(const std::string& what, const Tensor& cuda_value,
                           const Tensor& cpu_value, double rtol, double floor = 0.0) {
  INFO(what);
  REQUIRE(cuda_value.defined());
  REQUIRE(cpu_value.defined());
  CHECK(cuda_value.device() == Device::cuda());
  REQUIRE(cuda_value.shape() == cpu_value.shape());
  REQUIRE(cuda_value.dtype() == cpu_value.dtype());
  require_close(what, cuda_value.to_doubles(), cpu_value.to_doubles(), rtol, floor);
}

struct ParityOptions {
  bool differentiable = true;  // false: forward only (argmax)
  double floor = 0.0;          // see require_close
};

// Forward, VJP and JVP of `f` at `inputs` (CPU tensors; int64 inputs are not differentiated)
// on CUDA against the CPU.
inline void check_op_parity(const std::string& name, const OpFn& f,
                            const std::vector<Tensor>& inputs, Generator& gen,
                            ParityOptions options = {}) {
  REQUIRE(kernels::cuda::install_cuda_backend());
  const DType dtype = inputs.at(0).dtype();
  const double rtol = rtol_of(dtype);
  std::vector<Tensor> device_inputs;
  for (const Tensor& x : inputs)
    device_inputs.push_back(on_cuda(x));

  poison_device_memory();
  const Tensor y_cpu = f(inputs);
  const Tensor y_cuda = f(device_inputs);
  require_parity(name + ": forward", y_cuda, y_cpu, rtol, options.floor);
  if (!options.differentiable) return;

  // VJP: grad of <u, f(x)> with respect to every floating input.
  std::vector<Tensor> leaves_cpu, leaves_cuda, args_cpu, args_cuda;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    Tensor a = inputs[i].detach(), b = device_inputs[i].detach();
    if (is_floating(a.dtype())) {
      a.set_requires_grad(true);
      b.set_requires_grad(true);
      leaves_cpu.push_back(a);
      leaves_cuda.push_back(b);
    }
    args_cpu.push_back(a);
    args_cuda.push_back(b);
  }
  const Tensor u = random_uniform(y_cpu.shape(), gen, y_cpu.dtype());
  poison_device_memory();
  const auto g_cpu = grad({f(args_cpu)}, leaves_cpu, {u});
  const auto g_cuda = grad({f(args_cuda)}, leaves_cuda, {on_cuda(u)});
  for (std::size_t i = 0; i < g_cpu.size(); ++i)
    require_parity(name + ": vjp of floating input " + std::to_string(i), g_cuda[i], g_cpu[i], rtol,
                   options.floor);

  // JVP with random tangents on every floating input.
  std::vector<Tensor> tangents_cpu, tangents_cuda;
  for (const Tensor& x : inputs) {
    const Tensor t = is_floating(x.dtype()) ? random_uniform(x.shape(), gen, x.dtype()) : Tensor();
    tangents_cpu.push_back(t);
    tangents_cuda.push_back(on_cuda(t));
  }
  auto fv = [&](const std::vector<Tensor>& xs) { return std::vector<Tensor>{f(xs)}; };
  poison_device_memory();
  const JvpResult j_cpu = jvp(fv, inputs, tangents_cpu);
  const JvpResult j_cuda = jvp(fv, device_inputs, tangents_cuda);
  require_parity(name + ": jvp", j_cuda.tangents.at(0), j_cpu.tangents.at(0), rtol, options.floor);
}

}  // namespace mcd::testing
