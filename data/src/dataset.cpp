// Consistency checks shared by every consumer of a Dataset, so that kernels reading raw
// pixel pointers can trust the sizes.
#include <mcd/data/dataset.h>
#include <mcd/engine/error.h>

namespace mcd::data {

void check_dataset(const Dataset& d, const char* op) {
  MCD_CHECK(d.channels > 0 && d.height > 0 && d.width > 0,
            "{}: dataset '{}' has invalid image shape (C={}, H={}, W={})", op, d.name, d.channels,
            d.height, d.width);
  MCD_CHECK(d.num_classes > 0, "{}: dataset '{}' has num_classes = {}, expected > 0", op, d.name,
            d.num_classes);
  const auto expected = static_cast<std::uint64_t>(d.size() * d.image_numel());
  MCD_CHECK(d.pixels.size() == expected,
            "{}: dataset '{}' holds {} pixel bytes, expected {} ({} images of {}x{}x{})", op,
            d.name, d.pixels.size(), expected, d.size(), d.channels, d.height, d.width);
}

void check_indices(const Dataset& d, const std::vector<std::int64_t>& indices, const char* op) {
  const std::int64_t n = d.size();
  for (std::size_t i = 0; i < indices.size(); ++i) {
    MCD_CHECK(indices[i] >= 0 && indices[i] < n,
              "{}: index {} (at position {}) is outside dataset '{}' of {} images", op, indices[i],
              i, d.name, n);
  }
}

}  // namespace mcd::data
