// Pooling over NCHW inputs. Padding for max pooling is -infinity, for average pooling zeros
// counted in the divisor (PyTorch's count_include_pad=True default).
#pragma once
#include <cstdint>

#include <mcd/engine/tensor.h>

namespace mcd {

struct Pool2dOptions {
  std::int64_t kernel_h = 2, kernel_w = 2;
  std::int64_t stride_h = 2, stride_w = 2;
  std::int64_t pad_h = 0, pad_w = 0;
};

Tensor max_pool2d(const Tensor& x, const Pool2dOptions& options);
Tensor avg_pool2d(const Tensor& x, const Pool2dOptions& options);
// PyTorch's adaptive bins: start = floor(i * H / out), end = ceil((i + 1) * H / out).
Tensor adaptive_avg_pool2d(const Tensor& x, std::int64_t out_h, std::int64_t out_w);

}  // namespace mcd
