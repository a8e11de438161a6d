// Shapes and strides: small helpers shared by views, broadcasting and kernels.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mcd {

using Shape = std::vector<std::int64_t>;

std::string shape_str(const Shape& s);     // "[2, 3, 4]"
std::int64_t shape_numel(const Shape& s);  // product, 1 for rank 0
Shape contiguous_strides(const Shape& s);  // row-major
std::int64_t normalize_dim(std::int64_t d, std::int64_t rank, const char* op);
// Broadcast two shapes as NumPy does; throws naming `op` and both shapes on mismatch.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

}  // namespace mcd
