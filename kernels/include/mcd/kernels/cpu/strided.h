// Geometry of an elementwise loop over up to three strided operands (output first) that
// share one shape. Dimensions that are contiguous for every operand are merged, so the
// common cases (contiguous, broadcast along one axis) become one or two tight loops.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

namespace mcd::kernels::cpu {

constexpr int kMaxOperands = 3;

struct StridedGeometry {
  std::vector<std::int64_t> shape;                              // merged shape
  std::array<std::vector<std::int64_t>, kMaxOperands> strides;  // in elements, per operand
  int operands = 0;
  std::int64_t numel() const;
};

StridedGeometry make_geometry(const std::vector<std::int64_t>& shape,
                              const std::vector<std::vector<std::int64_t>>& operand_strides);

// Calls body(offsets, inner_count, inner_strides) for every run along the innermost merged
// dimension. `offsets` are element offsets of each operand at the start of the run.
template <class Body>
void for_each_run(const StridedGeometry& g, Body&& body) {
  const int rank = static_cast<int>(g.shape.size());
  std::array<std::int64_t, kMaxOperands> inner{};
  for (int k = 0; k < g.operands; ++k)
    inner[k] = rank ? g.strides[k][rank - 1] : 0;
  const std::int64_t inner_n = rank ? g.shape[rank - 1] : 1;
  if (inner_n == 0) return;
  std::int64_t outer = 1;
  for (int d = 0; d + 1 < rank; ++d)
    outer *= g.shape[d];
  std::vector<std::int64_t> idx(rank > 0 ? rank - 1 : 0, 0);
  std::array<std::int64_t, kMaxOperands> off{};
  for (std::int64_t o = 0; o < outer; ++o) {
    body(off, inner_n, inner);
    for (int d = rank - 2; d >= 0; --d) {  // odometer increment
      ++idx[d];
      for (int k = 0; k < g.operands; ++k)
        off[k] += g.strides[k][d];
      if (idx[d] < g.shape[d]) break;
      for (int k = 0; k < g.operands; ++k)
        off[k] -= g.strides[k][d] * g.shape[d];
      idx[d] = 0;
    }
  }
}

}  // namespace mcd::kernels::cpu
