// Dataset: a format-neutral image classification set held in memory. Every reader (IDX,
// CIFAR binary, image folders) produces one; splits, statistics and loaders consume only this.
// Invariant: pixels.size() == size() * channels * height * width, labels in [0, num_classes).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mcd::data {

struct Dataset {
  std::string name;
  std::int64_t channels = 0, height = 0, width = 0, num_classes = 0;
  std::vector<std::uint8_t> pixels;  // (N, C, H, W), row-major
  std::vector<std::int64_t> labels;  // (N)
  std::int64_t skipped = 0;  // undecodable files a reader left out (ReadOptions::skip_bad_images)

  std::int64_t size() const { return static_cast<std::int64_t>(labels.size()); }
  std::int64_t image_numel() const { return channels * height * width; }  // C * H * W
  const std::uint8_t* image(std::int64_t i) const { return pixels.data() + i * image_numel(); }
};

struct TrainTest {
  Dataset train, test;
};

// Throws naming `op` and the dataset when the invariant above does not hold.
void check_dataset(const Dataset& d, const char* op);
// Throws naming `op` when an index is outside [0, d.size()).
void check_indices(const Dataset& d, const std::vector<std::int64_t>& indices, const char* op);

}  // namespace mcd::data
