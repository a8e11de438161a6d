// Data-parallel replicas on several GPUs of one process (engine/collective.h): one replica per
// GPU, each driven by a host thread of its own, averaging through NCCL (ncclAllReduce with
// ncclAvg, queued on the replica's current stream, so it may be captured into a CUDA graph).
//
// Several GPUs in one process with CUDA graphs: NCCL's documentation warns that a thread's
// cudaFree or cudaMalloc (a graph capture empties the caching allocator first) can wait for
// another GPU's NCCL kernel that waits for this thread: one process per GPU is the safe layout
// for graphs, and this class is for one process driving all (tested with one GPU only).
//
// NCCL is loaded when first needed (libnccl.so.2, found as the dynamic loader finds libraries:
// LD_LIBRARY_PATH, the system's paths), so a program that never averages over GPUs runs where
// NCCL is not installed. Every NCCL call is checked: a failure throws mcd::Error naming the
// call, the file, the line and NCCL's own message.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <mcd/engine/collective.h>

namespace mcd::kernels::cuda {

class NcclCollectives {
 public:
  // One replica per device of `devices` (distinct CUDA device indices), in that order: replica
  // r runs on devices[r]. Throws when NCCL cannot be loaded or is older than 2.10 (ncclAvg).
  explicit NcclCollectives(const std::vector<int>& devices);
  ~NcclCollectives();
  NcclCollectives(const NcclCollectives&) = delete;
  NcclCollectives& operator=(const NcclCollectives&) = delete;

  int size() const;
  int device(int rank) const;
  // Replica `rank`'s end, used by its thread only. Its reductions take tensors on its device,
  // contiguous, float32 or float64.
  Collective& replica(int rank);

  // Whether NCCL can be loaded here; when not, `why` (if given) says what failed.
  static bool available(std::string* why = nullptr);
  // NCCL's version as NCCL_VERSION_CODE (e.g. 22809 for 2.28.9); throws when not available.
  static int version();

 private:
  class Replica;
  struct Communicators;
  std::unique_ptr<Communicators> comms_;
  std::vector<std::unique_ptr<Replica>> replicas_;
};

}  // namespace mcd::kernels::cuda
