// 2-D convolution, NCHW. x (N, C_in, H, W), weight (C_out, C_in / groups, kH, kW),
// bias (C_out) optional. Groups include depthwise (groups == C_in).
#pragma once
#include <cstdint>

#include <mcd/engine/tensor.h>

namespace mcd {

struct Conv2dOptions {
  std::int64_t stride_h = 1, stride_w = 1;
  std::int64_t pad_h = 0, pad_w = 0;
  std::int64_t groups = 1;
};

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              const Conv2dOptions& options = {});

}  // namespace mcd
