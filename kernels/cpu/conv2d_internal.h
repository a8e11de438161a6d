// What the convolution kernels share: conv2d.cpp (im2col and GEMM, and the entry points) and
// conv2d_depthwise.cpp (direct loops for one input channel per group). Internal to kernels/cpu.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include <mcd/kernels/cpu/conv2d.h>

namespace mcd::kernels::cpu::conv_detail {

// Below this many multiply-adds a loop runs on one thread.
inline constexpr std::int64_t kParallelGrain = std::int64_t{1} << 15;

// Output columns [lo, hi) whose input column ow * stride - pad + tap lies inside [0, in).
struct OutputRange {
  std::int64_t lo = 0, hi = 0;
};

inline std::int64_t ceil_div_positive(std::int64_t a, std::int64_t b) {
  return a <= 0 ? 0 : (a + b - 1) / b;
}

inline std::vector<OutputRange> column_ranges(const Conv2dGeometry& g) {
  std::vector<OutputRange> r(static_cast<std::size_t>(g.kernel_w));
  for (std::int64_t j = 0; j < g.kernel_w; ++j) {
    const std::int64_t lo = std::min(ceil_div_positive(g.pad_w - j, g.stride_w), g.out_w);
    const std::int64_t hi = std::min(ceil_div_positive(g.in_w + g.pad_w - j, g.stride_w), g.out_w);
    r[static_cast<std::size_t>(j)] = {lo, std::max(lo, hi)};
  }
  return r;
}

inline bool is_depthwise(const Conv2dGeometry& g) {
  return g.in_per_group() == 1;
}

// Depthwise convolutions (is_depthwise), with the entry points' contracts (conv2d.h).
template <class T>
void depthwise_forward(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y);
template <class T>
void depthwise_backward_input(const Conv2dGeometry& g, const T* dy, const T* w, T* dx);
template <class T>
void depthwise_backward_weight(const Conv2dGeometry& g, const T* x, const T* dy, T* dw);

}  // namespace mcd::kernels::cpu::conv_detail
