// What the nn-family adapters (ops_nn.cpp, ops_optim.cpp, ops_distill.cpp) share: the
// registration of the tables that register_cuda_nn_ops() installs (engine/device_ops/nn.h),
// each defined next to its adapters, and the float32/float64 dispatch.
#pragma once
#include <mcd/engine/error.h>
#include <mcd/engine/tensor.h>

namespace mcd::kernels::cuda {

// Runs f(T{}) with T the C++ type of a float32 or float64 tensor; throws naming `op` otherwise.
template <class F>
void floating(const char* op, const Tensor& t, F&& f) {
  if (t.dtype() == DType::Float32)
    f(float{});
  else if (t.dtype() == DType::Float64)
    f(double{});
  else
    fail("{}: expected a float32 or float64 tensor, got {}", op, dtype_name(t.dtype()));
}

void register_cuda_optim_ops();
void register_cuda_distill_ops();

}  // namespace mcd::kernels::cuda
