// Multi-tensor optimizer updates: every parameter of a model updated by one launch, from a
// device table of tensors cut into fixed-size chunks (one block per chunk). The arithmetic
// is the CPU optimizers' (engine/src/optim/sgd.cpp, adam.cpp) operation by operation, with
// contraction into fused multiply-adds disabled, so results match them to the last bit.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include <mcd/kernels/cuda/caching_allocator.h>
#include <mcd/kernels/cuda/runtime.h>

namespace mcd::kernels::cuda {

// One tensor: up to four device arrays of numel elements each (which slot holds what is the
// update's contract), numel >= 0.
struct TensorSlots {
  void* ptr[4] = {nullptr, nullptr, nullptr, nullptr};
  std::int64_t numel = 0;
};

// The table for one list of tensors, uploaded once and reused by every step while the
// pointers stay valid. Build a new list when the tensors change (e.g. a parameter without a
// gradient must be left out of a step, as the CPU optimizers skip it). The table lives in
// caching-allocator memory of `stream`: launch the steps on that stream, or keep the list
// alive until steps launched elsewhere have run.
class MultiTensorList {
 public:
  static constexpr std::int64_t kChunk = 16384;  // elements per block

  MultiTensorList(const std::vector<TensorSlots>& tensors, const Stream& stream);

  int device() const { return device_; }
  std::int64_t num_tensors() const { return num_tensors_; }
  std::int64_t num_chunks() const { return num_chunks_; }
  std::int64_t numel() const { return numel_; }
  const void* device_table() const { return table_.data(); }  // tensors, then chunks

 private:
  int device_;
  std::int64_t num_tensors_ = 0, num_chunks_ = 0, numel_ = 0;
  DeviceBuffer table_;
};

// torch.optim.SGD for every tensor of the list; slots: param, grad, momentum buffer (unused
// without momentum). has_buffer false is the first step: the buffer is set to the direction.
struct SgdStepArgs {
  double lr = 0.1, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
  bool has_buffer = false;
};
template <class T>
void sgd_step_cuda(const MultiTensorList& list, const SgdStepArgs& args, cudaStream_t stream);

// torch.optim.Adam / AdamW; slots: param, grad, exp_avg, exp_avg_sq (zero before step 1).
// `step` is the step count after incrementing (1 on the first step), shared by the list.
struct AdamStepArgs {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  bool decoupled = false;  // AdamW
  std::int64_t step = 1;
};
template <class T>
void adam_step_cuda(const MultiTensorList& list, const AdamStepArgs& args, cudaStream_t stream);

}  // namespace mcd::kernels::cuda
