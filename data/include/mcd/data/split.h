// Seeded train/validation split of dataset indices. The two parts are disjoint, cover
// [0, n) and are sorted, so the split is a pure function of (n, val_fraction, seed).
#pragma once
#include <cstdint>
#include <vector>

namespace mcd::data {

struct Split {
  std::vector<std::int64_t> train, val;
};

// val.size() = round(n * val_fraction), at most n - 1 so that the training part is never
// empty; val_fraction must be in [0, 1).
Split train_val_split(std::int64_t n, double val_fraction, std::uint64_t seed);

}  // namespace mcd::data
