// 2-D convolution CPU kernels (NCHW, contiguous, float and double): forward and the three
// backward kernels. Every kernel overwrites its output; only autograd accumulates into .grad.
// Sums over the batch run in an order fixed by the shapes, so results repeat run to run and,
// for batches of two or more, do not depend on the number of OpenMP threads.
#pragma once
#include <cstdint>

namespace mcd::kernels::cpu {

// Shapes of one convolution: x (batch, in_channels, in_h, in_w),
// weight (out_channels, in_channels / groups, kernel_h, kernel_w), y (batch, out_channels,
// out_h, out_w). Channels split into `groups` independent convolutions.
struct Conv2dGeometry {
  std::int64_t batch = 0, in_channels = 0, in_h = 0, in_w = 0;
  std::int64_t out_channels = 0, kernel_h = 1, kernel_w = 1;
  std::int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  std::int64_t groups = 1;
  std::int64_t out_h = 0, out_w = 0;

  std::int64_t in_per_group() const { return in_channels / groups; }
  std::int64_t out_per_group() const { return out_channels / groups; }
  std::int64_t out_spatial() const { return out_h * out_w; }
  // Rows of one group's im2col matrix: (in_per_group * kernel_h * kernel_w).
  std::int64_t patch_size() const { return in_per_group() * kernel_h * kernel_w; }
};

// Output extent of one spatial axis (floor mode); may be <= 0 for an invalid geometry.
inline std::int64_t conv_out_size(std::int64_t in, std::int64_t kernel, std::int64_t stride,
                                  std::int64_t pad) {
  return (in + 2 * pad - kernel) / stride + 1;
}

// y = conv(x, w) + bias; bias (out_channels) may be null.
template <class T>
void conv2d_forward_cpu(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y);

// dx = conv_transpose(dy, w): the input cotangent, shaped like x.
template <class T>
void conv2d_backward_input_cpu(const Conv2dGeometry& g, const T* dy, const T* w, T* dx);

// dw = sum over the batch of dy * im2col(x)^T, shaped like the weight.
template <class T>
void conv2d_backward_weight_cpu(const Conv2dGeometry& g, const T* x, const T* dy, T* dw);

// db[c] = sum over batch and positions of dy[:, c]; db is (out_channels).
template <class T>
void conv2d_backward_bias_cpu(const Conv2dGeometry& g, const T* dy, T* db);

}  // namespace mcd::kernels::cpu
