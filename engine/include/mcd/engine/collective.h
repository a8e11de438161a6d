// Data parallelism: R replicas of the same models, each given its own shard of every batch,
// average their gradients after each backward, so that every replica takes the same optimizer
// step: together they train as one model on the whole batch (with BatchNorm statistics per
// shard, as PyTorch's DistributedDataParallel without SyncBatchNorm). A Collective is one
// replica's end of that averaging.
//
// Two implementations: ThreadCollectives below (replicas as threads of one process, on the
// host or any device through host copies: the reference, and what the CPU tests run), and NCCL's
// for one process driving several GPUs (mcd/kernels/cuda/nccl_collectives.h).
#pragma once
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <mcd/engine/tensor.h>

namespace mcd {

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int size() const = 0;  // the replicas, R
  virtual int rank() const = 0;  // this one, 0 .. R - 1
  // Replaces every tensor, in place, by its mean over the replicas; views (strided, transposed)
  // are written through. Every replica calls it with tensors of the same shapes and dtypes, in
  // the same order, for the same reductions (each call waits for the others' matching call).
  // Undefined tensors are skipped (they must be undefined on every replica). On a device the
  // work is queued on the tensors' device's current stream, after the work queued there so far.
  virtual void all_reduce_mean(const std::vector<Tensor>& tensors) = 0;
  // Whether all_reduce_mean queues device work only, so that it may be captured as part of a
  // graph (NCCL's may; the host's waits for the other threads). Replicas must then capture and
  // replay alike (Trainer::set_collective).
  virtual bool capturable() const { return false; }
  // A replica that fails calls this, so that the others, waiting in a reduction or about to,
  // fail too instead of waiting for ever. The group cannot be used afterwards.
  virtual void abort(const std::string& why) = 0;
};

// Replicas as threads of one process: replica(r) is used by thread r only. A reduction waits
// until every replica has called it, then each gets the mean, summed in rank order in float64
// (so the result is the same on every replica and from run to run) and rounded once to the
// tensor's dtype. A replica that throws while others wait in a reduction would leave them
// waiting: abort() (or any replica's Collective::abort) wakes them with an error. After any
// failure (an abort, or replicas whose reductions disagree) every later reduction fails too:
// make a new group. With a timeout, a replica that waits longer than that for the others fails
// the group (a replica stuck or gone without an abort); none (zero) by default.
class ThreadCollectives {
 public:
  explicit ThreadCollectives(int replicas,
                             std::chrono::milliseconds timeout = std::chrono::milliseconds(0));
  ~ThreadCollectives();
  ThreadCollectives(const ThreadCollectives&) = delete;
  ThreadCollectives& operator=(const ThreadCollectives&) = delete;

  int size() const;
  Collective& replica(int rank);
  // Fails every reduction in progress or to come, on every replica, with `why`.
  void abort(const std::string& why);

 private:
  struct Shared;
  class Replica;
  std::unique_ptr<Shared> shared_;
  std::vector<std::unique_ptr<Replica>> replicas_;
};

// The tensors an optimizer step reads from a model: every parameter's gradient (undefined ones
// included, in parameter order), for Collective::all_reduce_mean.
std::vector<Tensor> gradients_of(const std::vector<Tensor>& parameters);

}  // namespace mcd
