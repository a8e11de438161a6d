// The fused multi-student distillation loss on the GPU: the contract of
// mcd/kernels/cpu/distill_loss.h (same formulas, same outputs, same handling of large logits,
// zero teacher probabilities and the no-teacher case), for all K students in one launch.
// Per-sample terms are summed into loss[s] by the last block to finish, in a fixed order, so
// results are deterministic. Outputs are overwritten. Everything runs on `stream`, on the
// current device; all pointers except `logits`/`logits_t` (host arrays) are device memory.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace mcd::kernels::cuda {

inline constexpr std::int64_t kMaxDistillStudents = 16;

// Bytes of device workspace for k students and b rows. The workspace must be zero-filled
// before its first use (e.g. cudaMemsetAsync once); every launch leaves it zero-filled again.
// Launches that may overlap (other streams) need their own workspace.
std::size_t distill_loss_workspace_bytes(std::int64_t k, std::int64_t b);

// k <= kMaxDistillStudents; logits: host array of k device pointers to (B, V) arrays;
// teacher_prob, teacher_log_prob (B, V), both null for no teacher; labels (B) int64 in [0, V)
// (an out-of-range label gives ce = NaN instead of reading out of bounds); alpha, beta (K, B);
// ce, kl (K, B); loss (K); grad_logits (K, B, V) or null.
template <class T>
void distill_loss_forward_cuda(std::int64_t k, std::int64_t b, std::int64_t v,
                               const T* const* logits, const T* teacher_prob,
                               const T* teacher_log_prob, const std::int64_t* labels,
                               const T* alpha, const T* beta, double tau, T* ce, T* kl, T* loss,
                               T* grad_logits, void* workspace, cudaStream_t stream);

// Forward-mode derivatives (contract of distill_loss_jvp_cpu): logits_t is a host array of k
// device pointers to (B, V) tangents, a null entry being a zero tangent. ce_t, kl_t (K, B);
// loss_t (K).
template <class T>
void distill_loss_jvp_cuda(std::int64_t k, std::int64_t b, std::int64_t v, const T* const* logits,
                           const T* const* logits_t, const T* teacher_prob,
                           const std::int64_t* labels, const T* alpha, const T* beta, double tau,
                           T* ce_t, T* kl_t, T* loss_t, void* workspace, cudaStream_t stream);

}  // namespace mcd::kernels::cuda
