#include "device.h"

#include "config.h"

#include <fmt/format.h>

#ifdef MCD_HAVE_CUDA
#include <mcd/kernels/cuda/backend.h>
#include <mcd/kernels/cuda/runtime.h>
#endif

namespace mcd::app {

Device resolve_device(const std::string& requested) {
  if (!requested.starts_with("cuda")) return Device::cpu();
  // The configuration checked the form: "cuda" or "cuda:N".
  const int index = requested == "cuda" ? 0 : std::stoi(requested.substr(5));
#ifdef MCD_HAVE_CUDA
  if (kernels::cuda::install_cuda_backend()) {
    const int count = kernels::cuda::device_count();
    if (index >= count)
      throw ConfigError(
          fmt::format("run.device = \"{}\": this machine has {} CUDA device{} "
                      "(cuda:0{})",
                      requested, count, count == 1 ? "" : "s",
                      count == 1 ? "" : fmt::format(" to cuda:{}", count - 1)));
    fmt::print(stderr, "device: cuda:{} ({})\n", index, kernels::cuda::device_name(index));
    return Device::cuda(index);
  }
  fmt::print(stderr, "run.device = \"{}\": no usable CUDA device; training on the CPU\n",
             requested);
#else
  (void)index;
  fmt::print(stderr,
             "run.device = \"{}\": this build has no CUDA backend (configured without CUDA; "
             "build with the cuda preset on a machine with nvcc); training on the CPU\n",
             requested);
#endif
  return Device::cpu();
}

}  // namespace mcd::app
