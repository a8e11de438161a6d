// Shape arithmetic shared by views, broadcasting and kernels.
#include <mcd/engine/error.h>
#include <mcd/engine/shape.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace mcd {

std::string shape_str(const Shape& s) {
  return fmt::format("[{}]", fmt::join(s, ", "));
}

std::int64_t shape_numel(const Shape& s) {
  std::int64_t n = 1;
  for (auto d : s)
    n *= d;
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  std::int64_t acc = 1;
  for (std::size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

std::int64_t normalize_dim(std::int64_t d, std::int64_t rank, const char* op) {
  const std::int64_t lo = rank == 0 ? -1 : -rank, hi = rank == 0 ? 0 : rank - 1;
  MCD_CHECK(d >= lo && d <= hi, "{}: dimension {} is out of range for a tensor of rank {}", op, d,
            rank);
  return d < 0 ? d + std::max<std::int64_t>(rank, 1) : d;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const std::size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const std::int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    MCD_CHECK(da == db || da == 1 || db == 1,
              "{}: shapes {} and {} cannot be broadcast together (dimension {}: {} vs {})", op,
              shape_str(a), shape_str(b), i, da, db);
    out[i] = da == 1 ? db : da;
  }
  return out;
}

}  // namespace mcd
