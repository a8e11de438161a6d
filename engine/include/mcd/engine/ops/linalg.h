// Matrix products. matmul: (M, K) x (K, N), or batched (..., M, K) x (..., K, N) with equal
// leading dimensions. linear: y = x W^T + b with x (N, in), W (out, in), b (out) optional.
#pragma once
#include <mcd/engine/tensor.h>

namespace mcd {

Tensor matmul(const Tensor& a, const Tensor& b);
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

}  // namespace mcd
