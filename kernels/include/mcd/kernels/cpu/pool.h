// 2-D pooling CPU kernels (NCHW, contiguous, float and double). Outputs are overwritten.
// Every window is assumed to hold at least one real input element (the engine checks
// pad <= kernel / 2), so max pooling always has an argmax inside the input.
#pragma once
#include <cstdint>

namespace mcd::kernels::cpu {

// x (batch, channels, in_h, in_w) -> y (batch, channels, out_h, out_w). For adaptive pooling
// only the extents are used.
struct Pool2dGeometry {
  std::int64_t batch = 0, channels = 0, in_h = 0, in_w = 0;
  std::int64_t kernel_h = 1, kernel_w = 1;
  std::int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  std::int64_t out_h = 0, out_w = 0;

  std::int64_t planes() const { return batch * channels; }
};

// y = max over each window (padding counts as -infinity); argmax (same shape as y) receives
// the index of the chosen element inside its (in_h, in_w) plane, the first one on ties.
template <class T>
void max_pool2d_forward_cpu(const Pool2dGeometry& g, const T* x, T* y, std::int64_t* argmax);

// dx = dy scattered to the argmax elements (summed where windows share a maximum).
template <class T>
void max_pool2d_backward_cpu(const Pool2dGeometry& g, const T* dy, const std::int64_t* argmax,
                             T* dx);

// y = v at the argmax elements: the tangent of max pooling for an input tangent v.
template <class T>
void max_pool2d_gather_cpu(const Pool2dGeometry& g, const T* v, const std::int64_t* argmax, T* y);

// y = window sum / (kernel_h * kernel_w): padding counts in the divisor.
template <class T>
void avg_pool2d_forward_cpu(const Pool2dGeometry& g, const T* x, T* y);

template <class T>
void avg_pool2d_backward_cpu(const Pool2dGeometry& g, const T* dy, T* dx);

// Bins along an axis of length in mapped to out: [floor(i * in / out), ceil((i + 1) * in / out)).
template <class T>
void adaptive_avg_pool2d_forward_cpu(const Pool2dGeometry& g, const T* x, T* y);

template <class T>
void adaptive_avg_pool2d_backward_cpu(const Pool2dGeometry& g, const T* dy, T* dx);

}  // namespace mcd::kernels::cpu
