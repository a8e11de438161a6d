// Small in-memory datasets of random images for tests: the pixel bytes drawn from a seeded
// generator, the labels from a rule of the test's choosing.
#pragma once
#include <cstdint>
#include <functional>

#include <mcd/data/dataset.h>
#include <mcd/engine/generator.h>

namespace mcd::testing {

// n images of channels x height x width whose bytes come from Generator(seed), in `classes`
// classes; labels[i] = label(i, gen), asked after every pixel was drawn from the same
// generator (so a rule may draw its labels at random too).
inline data::Dataset random_dataset(
    std::int64_t n, std::int64_t channels, std::int64_t height, std::int64_t width,
    std::int64_t classes, std::uint64_t seed,
    const std::function<std::int64_t(std::int64_t, Generator&)>& label) {
  data::Dataset d;
  d.name = "synthetic";
  d.channels = channels;
  d.height = height;
  d.width = width;
  d.num_classes = classes;
  Generator gen(seed);
  d.pixels.resize(static_cast<std::size_t>(n * d.image_numel()));
  for (auto& p : d.pixels)
    p = static_cast<std::uint8_t>(gen.below(256));
  for (std::int64_t i = 0; i < n; ++i)
    d.labels.push_back(label(i, gen));
  return d;
}

}  // namespace mcd::testing
