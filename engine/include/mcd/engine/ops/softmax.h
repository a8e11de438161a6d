// Temperature softmax and the per-sample distillation losses built on it. All are
// numerically stable for large logits (max-subtracted / log-sum-exp).
#pragma once
#include <cstdint>

#include <mcd/engine/tensor.h>

namespace mcd {

// softmax(x / tau) and log_softmax(x / tau) along `dim`.
Tensor softmax(const Tensor& x, std::int64_t dim = -1, double tau = 1.0);
Tensor log_softmax(const Tensor& x, std::int64_t dim = -1, double tau = 1.0);
// Per-sample cross-entropy: logits (B, V), labels int64 (B) -> (B): -log softmax(z)[y].
Tensor cross_entropy(const Tensor& logits, const Tensor& labels);
// Per-sample KL(softmax(t / tau) || softmax(s / tau)) for student logits s and target
// logits t, both (B, V) -> (B). Differentiable in both arguments.
Tensor kl_div_softmax(const Tensor& student_logits, const Tensor& target_logits, double tau);

}  // namespace mcd
