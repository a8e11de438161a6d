// The engine's CUDA backend: installs the CUDA DeviceBackend (device memory from the caching
// allocator, tagged with the current stream; copies staged through pinned memory) and the
// CUDA op tables, after which Tensor::to(Device::cuda(i)) and the covered ops work on CUDA
// tensors. Programs call install_cuda_backend() once at start-up.
#pragma once
#include <cuda_runtime.h>

#include <mcd/kernels/cuda/runtime.h>

namespace mcd::kernels::cuda {

// Installs everything and returns true, or installs nothing and returns false when no CUDA
// device is usable (no driver, no device), so callers can fall back to the CPU. Idempotent.
bool install_cuda_backend();

// The stream that ops and copies on `device` use in this thread: the innermost StreamScope's
// stream for that device, else the device's default stream (non-blocking, created on first
// use, never destroyed).
const Stream& current_stream(int device);

// Makes `stream` the current stream of its device in this thread for the scope's lifetime.
class StreamScope {
 public:
  explicit StreamScope(const Stream& stream);
  ~StreamScope();
  StreamScope(const StreamScope&) = delete;
  StreamScope& operator=(const StreamScope&) = delete;

 private:
  int device_;
  const Stream* previous_;
};

// Registration hooks of the op families, each defined next to its kernels; called by
// install_cuda_backend().
void register_cuda_elementwise_ops();
void register_cuda_nn_ops();

}  // namespace mcd::kernels::cuda
