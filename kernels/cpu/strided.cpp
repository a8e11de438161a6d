// Merging of dimensions for strided elementwise loops.
#include <mcd/kernels/cpu/strided.h>

namespace mcd::kernels::cpu {

std::int64_t StridedGeometry::numel() const {
  std::int64_t n = 1;
  for (auto d : shape)
    n *= d;
  return n;
}

StridedGeometry make_geometry(const std::vector<std::int64_t>& shape,
                              const std::vector<std::vector<std::int64_t>>& operand_strides) {
  StridedGeometry g;
  g.operands = static_cast<int>(operand_strides.size());
  // Drop size-1 dimensions, then merge neighbours d, d+1 when stride[d] == stride[d+1]*size
  // holds for every operand.
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    const bool can_merge = [&] {
      if (g.shape.empty()) return false;
      for (int k = 0; k < g.operands; ++k)
        if (g.strides[k].back() != operand_strides[k][d] * shape[d]) return false;
      return true;
    }();
    if (can_merge) {
      g.shape.back() *= shape[d];
      for (int k = 0; k < g.operands; ++k)
        g.strides[k].back() = operand_strides[k][d];
    } else {
      g.shape.push_back(shape[d]);
      for (int k = 0; k < g.operands; ++k)
        g.strides[k].push_back(operand_strides[k][d]);
    }
  }
  if (g.shape.empty()) {  // all ones (or rank 0): one element
    g.shape.push_back(1);
    for (int k = 0; k < g.operands; ++k)
      g.strides[k].push_back(0);
  }
  return g;
}

}  // namespace mcd::kernels::cpu
