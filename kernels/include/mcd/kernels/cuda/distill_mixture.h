// A mixture of several teachers' temperature softmaxes on the device (CPU twin:
// make_mixture_targets in distill/src/fused_loss.cpp), from each guide's log-probabilities:
//   log_prob = log(mean_j exp(lp_j)) by log-sum-exp in double (finite where every guide's
//   probability underflows), prob = exp(log_prob), and per row
//   offset = (1/n) sum_j sum_c exp(lp_j) (lp_j - log_prob), terms with exp(lp_j) = 0 left out.
// The per-element values follow the CPU's expressions; the row sums are reduced in a fixed
// order (deterministic, equal to the CPU's up to double rounding).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace mcd::kernels::cuda {

inline constexpr int kMaxMixtureGuides = 16;

// log_probs: host array of n (1 <= n <= kMaxMixtureGuides) device pointers to contiguous (B, V)
// arrays; prob, log_prob (B, V) and offset (B): device memory. Runs on `stream`.
template <class T>
void teacher_mixture_cuda(int n, const T* const* log_probs, std::int64_t b, std::int64_t v, T* prob,
                          T* log_prob, T* offset, cudaStream_t stream);

}  // namespace mcd::kernels::cuda
