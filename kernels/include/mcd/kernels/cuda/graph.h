// CUDA graphs: the kernels a piece of host code queues, captured once and replayed later with
// one launch, which removes the per-kernel launch cost of steps made of many small kernels.
#pragma once
#include <cuda_runtime.h>

#include <functional>
#include <memory>

#include <mcd/engine/block_cache.h>
#include <mcd/kernels/cuda/runtime.h>

namespace mcd::kernels::cuda {

class Graph {
 public:
  // Runs `record` with `stream` capturing, and returns the graph of the work it queued there
  // and on streams that fork from it (an event recorded on it) and join back before `record`
  // returns. Nothing runs on the device meanwhile. Memory allocated during the capture comes
  // from a private pool of the device's caching allocator and stays the graph's for its
  // replays. When `record` throws, or does what a capture forbids (synchronising, a copy
  // through pageable memory), the capture is ended, the CUDA error state cleared, and an
  // mcd::Error thrown; its memory goes back with its pool's last graph (at once when it shared
  // no pool).
  // With `share_memory_with`, the memory comes from that graph's pool instead of a new one; the
  // pool goes back when its last graph is destroyed (engine/graph.h says when sharing is safe).
  static std::unique_ptr<Graph> capture(const Stream& stream, const std::function<void()>& record,
                                        const Graph* share_memory_with = nullptr);

  // Queues the whole graph on `stream`: later work on `stream` runs after it.
  void replay(const Stream& stream) const;

  // Waits for the device (so no replay is running), then frees the graph and, with its pool's
  // last graph, gives the pool's memory back to the shared pool.
  ~Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // A private pool of the caching allocator, released when the last graph holding it goes.
  class Pool;

 private:
  Graph(int device, cudaGraphExec_t exec, std::shared_ptr<Pool> pool);
  int device_;
  cudaGraphExec_t exec_;
  std::shared_ptr<Pool> pool_;
};

}  // namespace mcd::kernels::cuda
