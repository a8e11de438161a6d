// The split is a Fisher-Yates shuffle of [0, n) by mcd::Generator(seed): the first part of the
// permutation is the validation set. Sorting each part keeps reads sequential.
#include <mcd/data/split.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include <mcd/engine/error.h>
#include <mcd/engine/generator.h>

namespace mcd::data {

Split train_val_split(std::int64_t n, double val_fraction, std::uint64_t seed) {
  MCD_CHECK(n >= 0, "train_val_split: n = {}, expected >= 0", n);
  MCD_CHECK(val_fraction >= 0.0 && val_fraction < 1.0,
            "train_val_split: val_fraction = {}, expected in [0, 1)", val_fraction);
  std::int64_t n_val = std::llround(static_cast<double>(n) * val_fraction);
  if (n > 0) n_val = std::min(n_val, n - 1);

  std::vector<std::int64_t> perm(static_cast<std::size_t>(n));
  std::iota(perm.begin(), perm.end(), std::int64_t{0});
  Generator gen(seed);
  for (std::int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(i + 1)));
    std::swap(perm[static_cast<std::size_t>(i)], perm[static_cast<std::size_t>(j)]);
  }
  Split s;
  s.val.assign(perm.begin(), perm.begin() + n_val);
  s.train.assign(perm.begin() + n_val, perm.end());
  std::sort(s.val.begin(), s.val.end());
  std::sort(s.train.begin(), s.train.end());
  return s;
}

}  // namespace mcd::data
