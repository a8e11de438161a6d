// The fused multi-student distillation loss on raw pointers (DESIGN.md §3): K students'
// (B, V) logits against one shared teacher softmax, every per-sample term, the weighted losses
// and dL/dz in one call. Rows are max-subtracted so logits of magnitude 1e4 stay finite, row
// sums accumulate in double, and a zero teacher probability contributes exactly 0 to the KL.
// Outputs are overwritten; inputs are contiguous and already validated by the caller.
#pragma once
#include <cstdint>

namespace mcd::kernels::cpu {

// For student s = 0..k-1 and row i, with p = softmax(z), q = softmax(z / tau), qT the teacher:
//   ce[s, i] = -log p[y_i]
//   kl[s, i] = sum_c qT_c (log qT_c - log q_c)                      (0 without a teacher)
//   loss[s]  = (1/B) sum_i (alpha[s, i] ce[s, i] + tau^2 beta[s, i] kl[s, i])
//   grad_logits[s, i] = (alpha[s, i] / B)(p - onehot(y_i)) + (tau beta[s, i] / B)(q - qT)
// logits: k pointers to (B, V) arrays; teacher_prob and teacher_log_prob (B, V), both null
// for "no teacher" (the beta terms then vanish); labels (B) in [0, V); alpha, beta (K, B);
// ce, kl (K, B); loss (K); grad_logits (K, B, V) or null when only the values are wanted.
template <class T>
void distill_loss_forward_cpu(std::int64_t k, std::int64_t b, std::int64_t v,
                              const T* const* logits, const T* teacher_prob,
                              const T* teacher_log_prob, const std::int64_t* labels, const T* alpha,
                              const T* beta, double tau, T* ce, T* kl, T* loss, T* grad_logits);

// Per-sample forward-mode derivatives for logit tangents z_t (k pointers to (B, V); a null
// entry is a zero tangent):
//   ce_t[s, i] = (p - onehot(y_i)) . z_t[s, i]
//   kl_t[s, i] = (q - qT) . z_t[s, i] / tau                           (0 without a teacher)
//   loss_t[s]  = (1/B) sum_i (alpha[s, i] ce_t[s, i] + tau^2 beta[s, i] kl_t[s, i])
// ce_t, kl_t (K, B); loss_t (K).
template <class T>
void distill_loss_jvp_cpu(std::int64_t k, std::int64_t b, std::int64_t v, const T* const* logits,
                          const T* const* logits_t, const T* teacher_prob,
                          const std::int64_t* labels, const T* alpha, const T* beta, double tau,
                          T* ce_t, T* kl_t, T* loss_t);

}  // namespace mcd::kernels::cpu
