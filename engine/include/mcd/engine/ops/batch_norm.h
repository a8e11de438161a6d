// Batch normalisation over (N, C, ...) inputs, per channel C.
// Training: normalise with the batch statistics (biased variance) and, when running stats
// are given, update them in place with momentum (unbiased variance), as PyTorch does.
// Eval: normalise with the running statistics. Differentiable in x, weight and bias in both
// modes; in training mode the derivatives include the batch statistics exactly.
#pragma once
#include <mcd/engine/tensor.h>

namespace mcd {

struct BatchNormOptions {
  bool training = true;
  double momentum = 0.1;
  double eps = 1e-5;
};

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                  Tensor running_var, const BatchNormOptions& options);

}  // namespace mcd
