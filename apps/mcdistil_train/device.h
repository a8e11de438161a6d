// The device the pipeline trains on, from run.device.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <mcd/engine/collective.h>
#include <mcd/engine/dtype.h>

namespace mcd::app {

// "cpu", or "cuda" (GPU 0) or "cuda:N" once the CUDA backend is installed. When this build has no
// CUDA backend or no GPU is usable, returns the CPU after saying so on stderr, so a configuration
// written for a GPU machine still runs anywhere. A GPU index the machine lacks is a ConfigError.
Device resolve_device(const std::string& requested);

// run.devices for data parallelism: every name "cpu" (replicas as threads on the CPU, a check of
// the method rather than a speed-up) or every name a distinct GPU ("cuda", "cuda:N"). Where the
// GPUs are not usable, says so on stderr and returns nothing: one replica trains, on run.device.
// A mix of CPU and GPUs, a GPU named twice or one the machine lacks is a ConfigError. (The
// pipeline then trains on the first entry alone.)
std::vector<Device> resolve_replica_devices(const std::vector<std::string>& names);

// The collective of the replicas on `devices` (two or more, as resolve_replica_devices gives):
// NCCL for GPUs, threads on the CPU.
class ReplicaGroup {
 public:
  virtual ~ReplicaGroup() = default;
  virtual Collective& replica(int rank) = 0;
};
std::unique_ptr<ReplicaGroup> make_replica_group(const std::vector<Device>& devices);

}  // namespace mcd::app
