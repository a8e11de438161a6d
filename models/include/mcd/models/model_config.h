// What a model needs to know about its data: input channels, class count and the side of
// the (square) input image, which picks the stem (CIFAR-style up to 32 pixels).
#pragma once
#include <cstdint>

namespace mcd::nn {

struct ModelConfig {
  std::int64_t in_channels = 3;
  std::int64_t num_classes = 10;
  std::int64_t input_size = 32;
};

}  // namespace mcd::nn
