// Registration of the tables that register_cuda_nn_ops() installs (engine/device_ops/nn.h),
// each defined next to its adapters: ops_nn.cpp, ops_optim.cpp, ops_distill.cpp.
#pragma once

namespace mcd::kernels::cuda {

void register_cuda_optim_ops();
void register_cuda_distill_ops();

}  // namespace mcd::kernels::cuda
