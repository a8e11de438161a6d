// Reductions. `dims` may be negative; keepdim keeps reduced dimensions as size 1.
#pragma once
#include <cstdint>
#include <vector>

#include <mcd/engine/tensor.h>

namespace mcd {

Tensor sum(const Tensor& x);  // all elements, rank-0 result
Tensor sum(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim = false);
// Sums a broadcast result back down to `shape` (the reverse of broadcasting).
Tensor sum_to_shape(const Tensor& x, const Shape& shape);
// Index of the largest element along `dim` (int64, not differentiable).
Tensor argmax(const Tensor& x, std::int64_t dim);

}  // namespace mcd
