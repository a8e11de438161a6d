// Analytic multiply-accumulate counts of the ResNet family's forward pass (convolutions and
// the classifier; BatchNorm, ReLU and pooling are memory-bound and not counted), so that
// benchmarks can report GFLOP/s without instrumenting the engine.
#pragma once
#include <array>
#include <cstdint>
#include <string>

namespace mcd::bench {

struct ResNetShape {
  std::array<std::int64_t, 4> widths;
  std::array<std::int64_t, 4> blocks;
};

// Widths and blocks of the registered BasicBlock ResNets (DESIGN.md §3).
ResNetShape resnet_shape(const std::string& arch);

// Forward MACs for one image of size (channels, size, size), CIFAR-style stem (size <= 32).
double resnet_forward_macs(const ResNetShape& s, std::int64_t channels, std::int64_t size,
                           std::int64_t classes);

}  // namespace mcd::bench
