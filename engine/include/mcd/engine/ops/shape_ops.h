// Ops that move data without arithmetic (views are methods on Tensor).
#pragma once
#include <cstdint>
#include <vector>

#include <mcd/engine/tensor.h>

namespace mcd {

Tensor concat(const std::vector<Tensor>& tensors, std::int64_t dim);

}  // namespace mcd
