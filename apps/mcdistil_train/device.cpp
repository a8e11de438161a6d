#include "device.h"

#include <fmt/format.h>

#ifdef MCD_HAVE_CUDA
#include <mcd/kernels/cuda/backend.h>
#include <mcd/kernels/cuda/runtime.h>
#endif

namespace mcd::app {

Device resolve_device(const std::string& requested) {
  if (requested != "cuda") return Device::cpu();
#ifdef MCD_HAVE_CUDA
  if (kernels::cuda::install_cuda_backend()) {
    fmt::print(stderr, "device: cuda:0 ({})\n", kernels::cuda::device_name(0));
    return Device::cuda(0);
  }
  fmt::print(stderr, "run.device = \"cuda\": no usable CUDA device; training on the CPU\n");
#else
  fmt::print(stderr,
             "run.device = \"cuda\": this build has no CUDA backend (configured without CUDA; "
             "build with the cuda preset on a machine with nvcc); training on the CPU\n");
#endif
  return Device::cpu();
}

}  // namespace mcd::app
