// The fused multi-student distillation loss on the GPU: the contract of
// mcd/kernels/cpu/distill_loss.h (same formulas, same outputs, same handling of large logits,
// zero teacher probabilities and the no-teacher case), for all K students in one launch.
// Per-sample terms are summed into loss[s] by the last block to finish, in a fixed order, so
// results are deterministic (per variant: the variants differ in rounding only). Outputs are
// overwritten. Everything runs on `stream`, on the current device; all pointers except
// `logits`/`logits_t` (host arrays) are device memory.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace mcd::kernels::cuda {

inline constexpr std::int64_t kMaxDistillStudents = 16;

// Kernel variants, all with the same contract and outputs. `automatic` (what the op tables
// use) takes row_per_warp where it applies, else row_split where it applies, else general; the
// others force one (the benchmark times them side by side, the tests check each against the CPU).
enum class FusedLossKernel {
  automatic,
  // One warp (V <= 1024) or one block per (student, row), three passes over the row; long rows
  // are cached in shared memory whole, so one block of them fits on an SM.
  general,
  // Rows of V <= 1024 (float32) or 256 (float64): one pass, the row in registers, one warp per
  // (sample, student) with a sample's K students in one block sharing the teacher's terms.
  row_per_warp,
  // A row split over a cluster of up to 8 blocks, each caching a slice of at most 32 KiB (more
  // for rows over 256 KiB) in shared memory; sm_90 or later.
  row_split,
  // row_split computing log qT from qT instead of reading teacher_log_prob, which saves one of
  // the (2 + 2K) row-sized streams of the forward; agrees with the contract to rounding (log qT
  // in T instead of the caller's log_softmax). Only ever chosen explicitly.
  row_split_log_prob,
};
inline constexpr FusedLossKernel kFusedLossKernels[] = {
    FusedLossKernel::general, FusedLossKernel::row_per_warp, FusedLossKernel::row_split,
    FusedLossKernel::row_split_log_prob};

const char* fused_loss_kernel_name(FusedLossKernel kernel);
// Whether `kernel` takes rows of v elements of elem_bytes (4 or 8) on the current device.
bool fused_loss_kernel_applies(FusedLossKernel kernel, std::int64_t v, std::size_t elem_bytes);
// The variant `automatic` runs for such rows on the current device.
FusedLossKernel fused_loss_automatic_kernel(std::int64_t v, std::size_t elem_bytes);

// Bytes of device workspace for k students and b rows. The workspace must be zero-filled
// before its first use (e.g. cudaMemsetAsync once); every launch leaves its block counter zero
// again (the per-block partial sums it also holds are written before they are read).
// Launches that may overlap (other streams) need their own workspace.
std::size_t distill_loss_workspace_bytes(std::int64_t k, std::int64_t b);

// k <= kMaxDistillStudents; logits: host array of k device pointers to (B, V) arrays;
// teacher_prob, teacher_log_prob (B, V), both null for no teacher; labels (B) int64 in [0, V)
// (an out-of-range label gives ce = NaN instead of reading out of bounds); alpha, beta (K, B);
// ce, kl (K, B); loss (K); grad_logits (K, B, V) or null. A forced `kernel` that does not
// apply (fused_loss_kernel_applies) throws.
template <class T>
void distill_loss_forward_cuda(std::int64_t k, std::int64_t b, std::int64_t v,
                               const T* const* logits, const T* teacher_prob,
                               const T* teacher_log_prob, const std::int64_t* labels,
                               const T* alpha, const T* beta, double tau, T* ce, T* kl, T* loss,
                               T* grad_logits, void* workspace, cudaStream_t stream,
                               FusedLossKernel kernel = FusedLossKernel::automatic);

// Forward-mode derivatives (contract of distill_loss_jvp_cpu): logits_t is a host array of k
// device pointers to (B, V) tangents, a null entry being a zero tangent. ce_t, kl_t (K, B);
// loss_t (K).
template <class T>
void distill_loss_jvp_cuda(std::int64_t k, std::int64_t b, std::int64_t v, const T* const* logits,
                           const T* const* logits_t, const T* teacher_prob,
                           const std::int64_t* labels, const T* alpha, const T* beta, double tau,
                           T* ce_t, T* kl_t, T* loss_t, void* workspace, cudaStream_t stream,
                           FusedLossKernel kernel = FusedLossKernel::automatic);

}  // namespace mcd::kernels::cuda
