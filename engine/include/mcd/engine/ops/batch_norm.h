// Batch normalisation over (N, C, ...) inputs, per channel C.
// Training: normalise with the batch statistics (biased variance) and, when running stats
// are given, update them in place with momentum (unbiased variance), as PyTorch does.
// Eval: normalise with the running statistics. Differentiable in x, weight and bias in both
// modes; in training mode the derivatives include the batch statistics exactly.
// With options.relu the op is relu(batch_norm(...)) in one pass, equal to the composition bit
// for bit (values, VJP, JVP) but without keeping the pre-activation for the backward: the ReLU
// mask is recomputed from what batch norm saves anyway. batch_norm_add fuses a residual too
// (the end of a ResNet block): relu(batch_norm(x) + residual) in one pass, likewise.
#pragma once
#include <mcd/engine/tensor.h>

namespace mcd {

struct BatchNormOptions {
  bool training = true;
  double momentum = 0.1;
  double eps = 1e-5;
  bool relu = false;  // apply max(0, .) to the output in the same pass
};

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                  Tensor running_var, const BatchNormOptions& options);

// batch_norm(x, ...) + residual, then max(0, .) with options.relu; residual shaped like x
// (same dtype and device). Differentiable in the residual too. With the ReLU the residual is
// kept for the backward (the mask needs it); without it, nothing more than batch_norm keeps.
Tensor batch_norm_add(const Tensor& x, const Tensor& weight, const Tensor& bias,
                      Tensor running_mean, Tensor running_var, const Tensor& residual,
                      const BatchNormOptions& options);

}  // namespace mcd
