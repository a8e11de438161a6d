#include "device.h"

#include "config.h"

#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>

#ifdef MCD_HAVE_CUDA
#include <mcd/kernels/cuda/backend.h>
#include <mcd/kernels/cuda/nccl_collectives.h>
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

std::vector<Device> resolve_replica_devices(const std::vector<std::string>& names) {
  const bool all_cpu =
      std::all_of(names.begin(), names.end(), [](const std::string& n) { return n == "cpu"; });
  if (all_cpu) return std::vector<Device>(names.size(), Device::cpu());
  if (std::any_of(names.begin(), names.end(), [](const std::string& n) { return n == "cpu"; }))
    throw ConfigError(
        fmt::format("run.devices: the replicas are either all on the CPU or all on GPUs, got {}",
                    fmt::join(names, ", ")));
  std::vector<Device> devices;
  for (const std::string& n : names) {
    const Device d = n == "cuda" ? Device::cuda(0) : Device::cuda(std::stoi(n.substr(5)));
    if (std::find(devices.begin(), devices.end(), d) != devices.end())
      throw ConfigError(
          fmt::format("run.devices: {} appears twice (one replica per GPU)", d.str()));
    devices.push_back(d);
  }
#ifdef MCD_HAVE_CUDA
  if (kernels::cuda::install_cuda_backend()) {
    const int count = kernels::cuda::device_count();
    for (const Device& d : devices)
      if (d.index >= count)
        throw ConfigError(fmt::format("run.devices: this machine has {} CUDA device{}, no {}",
                                      count, count == 1 ? "" : "s", d.str()));
    std::string why;
    if (kernels::cuda::NcclCollectives::available(&why)) {
      fmt::print(stderr, "data parallel: {} replicas on {}\n", devices.size(),
                 fmt::join(names, ", "));
      return devices;
    }
    fmt::print(stderr, "run.devices: NCCL is not usable ({}); training on one device\n", why);
    return {};
  }
#endif
  fmt::print(stderr, "run.devices: no usable CUDA device; training on one device\n");
  return {};
}

namespace {

class ThreadReplicas final : public ReplicaGroup {
 public:
  explicit ThreadReplicas(int n) : group_(n) {}
  Collective& replica(int rank) override { return group_.replica(rank); }

 private:
  ThreadCollectives group_;
};

#ifdef MCD_HAVE_CUDA
class NcclReplicas final : public ReplicaGroup {
 public:
  explicit NcclReplicas(const std::vector<int>& devices) : group_(devices) {}
  Collective& replica(int rank) override { return group_.replica(rank); }

 private:
  kernels::cuda::NcclCollectives group_;
};
#endif

}  // namespace

std::unique_ptr<ReplicaGroup> make_replica_group(const std::vector<Device>& devices) {
  if (devices.front().is_cpu())
    return std::make_unique<ThreadReplicas>(static_cast<int>(devices.size()));
#ifdef MCD_HAVE_CUDA
  std::vector<int> indices;
  for (const Device& d : devices)
    indices.push_back(d.index);
  return std::make_unique<NcclReplicas>(indices);
#else
  fail("make_replica_group: this build has no CUDA backend");
#endif
}

}  // namespace mcd::app
