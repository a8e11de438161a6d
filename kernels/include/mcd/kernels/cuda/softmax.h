// Softmax-family CUDA kernels (CPU twins: kernels/cpu/softmax.cpp; the contracts of
// mcd/kernels/cpu/softmax.h, same formulas in the same precision): temperature softmax and
// log_softmax along the middle axis of a contiguous (outer, V, inner) array with their rule
// kernels, and per-row cross-entropy and softmax KL over (B, V) logits with their VJPs and
// JVPs. Row sums accumulate in double in a fixed order (deterministic). Outputs are
// overwritten; launches go to `stream` on the current device; pointers are device memory.
// A label outside [0, V) makes its row's outputs NaN (the host cannot check device labels
// without a synchronisation).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace mcd::kernels::cuda {

// The rule kernels of softmax_backward_cpu, log_softmax_backward_cpu and log_softmax_jvp_cpu.
enum class SoftmaxRuleKernel { SoftmaxVjpJvp, LogSoftmaxVjp, LogSoftmaxJvp };

template <class T>
void softmax_forward_cuda(std::int64_t outer, std::int64_t v, std::int64_t inner, const T* x,
                          double inv_tau, bool log, T* y, cudaStream_t stream);

// out = rule(y, u): y the saved forward output, u the cotangent (VJP) or tangent (JVP).
template <class T>
void softmax_rule_cuda(SoftmaxRuleKernel rule, std::int64_t outer, std::int64_t v,
                       std::int64_t inner, const T* y, const T* u, double inv_tau, T* out,
                       cudaStream_t stream);

// logits (B, V), labels (B), loss (B), lse (B).
template <class T>
void cross_entropy_forward_cuda(std::int64_t b, std::int64_t v, const T* logits,
                                const std::int64_t* labels, T* loss, double* lse,
                                cudaStream_t stream);
template <class T>
void cross_entropy_backward_cuda(std::int64_t b, std::int64_t v, const T* logits,
                                 const std::int64_t* labels, const double* lse, const T* g,
                                 T* dlogits, cudaStream_t stream);
template <class T>
void cross_entropy_jvp_cuda(std::int64_t b, std::int64_t v, const T* logits,
                            const std::int64_t* labels, const double* lse, const T* logits_t,
                            T* loss_t, cudaStream_t stream);

// s, t (B, V); kl, lse_s, lse_t (B). ds, dt, s_t, t_t may be null.
template <class T>
void kl_div_softmax_forward_cuda(std::int64_t b, std::int64_t v, const T* s, const T* t,
                                 double inv_tau, T* kl, double* lse_s, double* lse_t,
                                 cudaStream_t stream);
template <class T>
void kl_div_softmax_backward_cuda(std::int64_t b, std::int64_t v, const T* s, const T* t,
                                  double inv_tau, const double* lse_s, const double* lse_t,
                                  const T* g, T* ds, T* dt, cudaStream_t stream);
template <class T>
void kl_div_softmax_jvp_cuda(std::int64_t b, std::int64_t v, const T* s, const T* t, double inv_tau,
                             const double* lse_s, const double* lse_t, const T* s_t, const T* t_t,
                             T* kl_t, cudaStream_t stream);

}  // namespace mcd::kernels::cuda
