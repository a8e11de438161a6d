// Pooling kernels (CPU twin: kernels/cpu/pool.cpp). Windows are clipped to the input exactly
// as on the CPU; the backward kernels find, for one input element, the range of windows that
// cover it along each axis and visit them in ascending (oh, ow) order, the order in which the
// CPU scatters into that element.
#include <mcd/kernels/cuda/pool.h>

#include <mcd/kernels/cuda/check.h>

#include "exact_arith.cuh"

namespace mcd::kernels::cuda {
namespace {

using cpu::Pool2dGeometry;

constexpr int kThreads = 256;

int blocks_for(std::int64_t n) {
  return static_cast<int>(std::min<std::int64_t>((n + kThreads - 1) / kThreads, 65535));
}

struct Range {
  std::int64_t lo, hi;  // [lo, hi)
};

// Input rows [lo, hi) of window o of a strided, padded axis, clipped to the input.
__device__ Range window(std::int64_t o, std::int64_t stride, std::int64_t pad, std::int64_t kernel,
                        std::int64_t in) {
  const std::int64_t start = o * stride - pad;
  return {max(start, std::int64_t{0}), min(start + kernel, in)};
}

// Windows o (in [0, out)) whose unclipped span [o stride - pad, o stride - pad + kernel)
// holds input row i; clipping never removes a real row, so these are the covering windows.
__device__ Range covering_windows(std::int64_t i, std::int64_t stride, std::int64_t pad,
                                  std::int64_t kernel, std::int64_t out) {
  const std::int64_t first = i + pad - kernel + 1;  // smallest o with o stride >= first
  const std::int64_t lo = first <= 0 ? 0 : (first + stride - 1) / stride;
  const std::int64_t hi = min((i + pad) / stride + 1, out);
  return {lo, max(lo, hi)};
}

// PyTorch's adaptive bins: [floor(o in / out), ceil((o + 1) in / out)).
__device__ Range adaptive_bin(std::int64_t o, std::int64_t in, std::int64_t out) {
  return {o * in / out, ((o + 1) * in + out - 1) / out};
}

// Bins holding input row i: bin floor(i out / in) does, and its neighbours while they overlap.
__device__ Range adaptive_covering(std::int64_t i, std::int64_t in, std::int64_t out) {
  const std::int64_t o = i * out / in;
  std::int64_t lo = o, hi = o + 1;
  while (lo > 0 && adaptive_bin(lo - 1, in, out).hi > i)
    --lo;
  while (hi < out && adaptive_bin(hi, in, out).lo <= i)
    ++hi;
  return {lo, hi};
}

#define MCD_GRID_STRIDE(i, n)                                                                    \
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n; \
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)

template <class T>
__global__ void max_pool2d_forward_kernel(Pool2dGeometry g, const T* x, T* y,
                                          std::int64_t* argmax) {
  const std::int64_t n = (g.batch * g.channels) * g.out_h * g.out_w;
  MCD_GRID_STRIDE(i, n) {
    const std::int64_t ow = i % g.out_w, oh = (i / g.out_w) % g.out_h, p = i / (g.out_w * g.out_h);
    const T* xp = x + p * g.in_h * g.in_w;
    const Range wh = window(oh, g.stride_h, g.pad_h, g.kernel_h, g.in_h);
    const Range ww = window(ow, g.stride_w, g.pad_w, g.kernel_w, g.in_w);
    std::int64_t best_i = wh.lo * g.in_w + ww.lo;
    T best = -INFINITY;
    for (std::int64_t ih = wh.lo; ih < wh.hi; ++ih)
      for (std::int64_t iw = ww.lo; iw < ww.hi; ++iw) {
        const T v = xp[ih * g.in_w + iw];
        if (v > best || isnan(v)) {  // NaN propagates, as in PyTorch
          best = v;
          best_i = ih * g.in_w + iw;
        }
      }
    y[i] = xp[best_i];
    argmax[i] = best_i;
  }
}

template <class T>
__global__ void max_pool2d_backward_kernel(Pool2dGeometry g, const T* dy,
                                           const std::int64_t* argmax, T* dx) {
  const std::int64_t n = (g.batch * g.channels) * g.in_h * g.in_w;
  MCD_GRID_STRIDE(i, n) {
    const std::int64_t iw = i % g.in_w, ih = (i / g.in_w) % g.in_h, p = i / (g.in_w * g.in_h);
    const std::int64_t self = ih * g.in_w + iw, plane = p * g.out_h * g.out_w;
    const Range rh = covering_windows(ih, g.stride_h, g.pad_h, g.kernel_h, g.out_h);
    const Range rw = covering_windows(iw, g.stride_w, g.pad_w, g.kernel_w, g.out_w);
    T acc = 0;
    for (std::int64_t oh = rh.lo; oh < rh.hi; ++oh)
      for (std::int64_t ow = rw.lo; ow < rw.hi; ++ow) {
        const std::int64_t o = plane + oh * g.out_w + ow;
        if (argmax[o] == self) acc += dy[o];
      }
    dx[i] = acc;
  }
}

template <class T>
__global__ void max_pool2d_gather_kernel(Pool2dGeometry g, const T* v, const std::int64_t* argmax,
                                         T* y) {
  const std::int64_t n = (g.batch * g.channels) * g.out_h * g.out_w;
  MCD_GRID_STRIDE(i, n) {
    const std::int64_t p = i / (g.out_h * g.out_w);
    y[i] = v[p * g.in_h * g.in_w + argmax[i]];
  }
}

template <class T>
__global__ void avg_pool2d_forward_kernel(Pool2dGeometry g, const T* x, T* y) {
  const std::int64_t n = (g.batch * g.channels) * g.out_h * g.out_w;
  const T scale = T(1) / static_cast<T>(g.kernel_h * g.kernel_w);
  MCD_GRID_STRIDE(i, n) {
    const std::int64_t ow = i % g.out_w, oh = (i / g.out_w) % g.out_h, p = i / (g.out_w * g.out_h);
    const T* xp = x + p * g.in_h * g.in_w;
    const Range wh = window(oh, g.stride_h, g.pad_h, g.kernel_h, g.in_h);
    const Range ww = window(ow, g.stride_w, g.pad_w, g.kernel_w, g.in_w);
    T s = 0;
    for (std::int64_t ih = wh.lo; ih < wh.hi; ++ih)
      for (std::int64_t iw = ww.lo; iw < ww.hi; ++iw)
        s += xp[ih * g.in_w + iw];
    y[i] = s * scale;
  }
}

template <class T>
__global__ void avg_pool2d_backward_kernel(Pool2dGeometry g, const T* dy, T* dx) {
  const std::int64_t n = (g.batch * g.channels) * g.in_h * g.in_w;
  const T scale = T(1) / static_cast<T>(g.kernel_h * g.kernel_w);
  MCD_GRID_STRIDE(i, n) {
    const std::int64_t iw = i % g.in_w, ih = (i / g.in_w) % g.in_h, p = i / (g.in_w * g.in_h);
    const T* dyp = dy + p * g.out_h * g.out_w;
    const Range rh = covering_windows(ih, g.stride_h, g.pad_h, g.kernel_h, g.out_h);
    const Range rw = covering_windows(iw, g.stride_w, g.pad_w, g.kernel_w, g.out_w);
    T acc = 0;
    for (std::int64_t oh = rh.lo; oh < rh.hi; ++oh)
      for (std::int64_t ow = rw.lo; ow < rw.hi; ++ow)
        acc = exact::add(acc, exact::mul(dyp[oh * g.out_w + ow], scale));  // the CPU's rounding
    dx[i] = acc;
  }
}

template <class T>
__global__ void adaptive_avg_pool2d_forward_kernel(Pool2dGeometry g, const T* x, T* y) {
  const std::int64_t n = (g.batch * g.channels) * g.out_h * g.out_w;
  MCD_GRID_STRIDE(i, n) {
    const std::int64_t ow = i % g.out_w, oh = (i / g.out_w) % g.out_h, p = i / (g.out_w * g.out_h);
    const T* xp = x + p * g.in_h * g.in_w;
    const Range wh = adaptive_bin(oh, g.in_h, g.out_h);
    const Range ww = adaptive_bin(ow, g.in_w, g.out_w);
    T s = 0;
    for (std::int64_t ih = wh.lo; ih < wh.hi; ++ih)
      for (std::int64_t iw = ww.lo; iw < ww.hi; ++iw)
        s += xp[ih * g.in_w + iw];
    y[i] = s / static_cast<T>((wh.hi - wh.lo) * (ww.hi - ww.lo));
  }
}

template <class T>
__global__ void adaptive_avg_pool2d_backward_kernel(Pool2dGeometry g, const T* dy, T* dx) {
  const std::int64_t n = (g.batch * g.channels) * g.in_h * g.in_w;
  MCD_GRID_STRIDE(i, n) {
    const std::int64_t iw = i % g.in_w, ih = (i / g.in_w) % g.in_h, p = i / (g.in_w * g.in_h);
    const T* dyp = dy + p * g.out_h * g.out_w;
    const Range rh = adaptive_covering(ih, g.in_h, g.out_h);
    const Range rw = adaptive_covering(iw, g.in_w, g.out_w);
    T acc = 0;
    for (std::int64_t oh = rh.lo; oh < rh.hi; ++oh) {
      const Range wh = adaptive_bin(oh, g.in_h, g.out_h);
      for (std::int64_t ow = rw.lo; ow < rw.hi; ++ow) {
        const Range ww = adaptive_bin(ow, g.in_w, g.out_w);
        acc += dyp[oh * g.out_w + ow] / static_cast<T>((wh.hi - wh.lo) * (ww.hi - ww.lo));
      }
    }
    dx[i] = acc;
  }
}

#undef MCD_GRID_STRIDE

std::int64_t outputs(const Pool2dGeometry& g) {
  return (g.batch * g.channels) * g.out_h * g.out_w;
}
std::int64_t inputs(const Pool2dGeometry& g) {
  return (g.batch * g.channels) * g.in_h * g.in_w;
}

}  // namespace

template <class T>
void max_pool2d_forward_cuda(const Pool2dGeometry& g, const T* x, T* y, std::int64_t* argmax,
                             cudaStream_t stream) {
  if (outputs(g) == 0) return;
  max_pool2d_forward_kernel<T><<<blocks_for(outputs(g)), kThreads, 0, stream>>>(g, x, y, argmax);
  MCD_CUDA_CHECK_LAUNCH("max_pool2d_forward_kernel");
}

template <class T>
void max_pool2d_backward_cuda(const Pool2dGeometry& g, const T* dy, const std::int64_t* argmax,
                              T* dx, cudaStream_t stream) {
  if (inputs(g) == 0) return;
  max_pool2d_backward_kernel<T><<<blocks_for(inputs(g)), kThreads, 0, stream>>>(g, dy, argmax, dx);
  MCD_CUDA_CHECK_LAUNCH("max_pool2d_backward_kernel");
}

template <class T>
void max_pool2d_gather_cuda(const Pool2dGeometry& g, const T* v, const std::int64_t* argmax, T* y,
                            cudaStream_t stream) {
  if (outputs(g) == 0) return;
  max_pool2d_gather_kernel<T><<<blocks_for(outputs(g)), kThreads, 0, stream>>>(g, v, argmax, y);
  MCD_CUDA_CHECK_LAUNCH("max_pool2d_gather_kernel");
}

template <class T>
void avg_pool2d_forward_cuda(const Pool2dGeometry& g, const T* x, T* y, cudaStream_t stream) {
  if (outputs(g) == 0) return;
  avg_pool2d_forward_kernel<T><<<blocks_for(outputs(g)), kThreads, 0, stream>>>(g, x, y);
  MCD_CUDA_CHECK_LAUNCH("avg_pool2d_forward_kernel");
}

template <class T>
void avg_pool2d_backward_cuda(const Pool2dGeometry& g, const T* dy, T* dx, cudaStream_t stream) {
  if (inputs(g) == 0) return;
  avg_pool2d_backward_kernel<T><<<blocks_for(inputs(g)), kThreads, 0, stream>>>(g, dy, dx);
  MCD_CUDA_CHECK_LAUNCH("avg_pool2d_backward_kernel");
}

template <class T>
void adaptive_avg_pool2d_forward_cuda(const Pool2dGeometry& g, const T* x, T* y,
                                      cudaStream_t stream) {
  if (outputs(g) == 0) return;
  adaptive_avg_pool2d_forward_kernel<T><<<blocks_for(outputs(g)), kThreads, 0, stream>>>(g, x, y);
  MCD_CUDA_CHECK_LAUNCH("adaptive_avg_pool2d_forward_kernel");
}

template <class T>
void adaptive_avg_pool2d_backward_cuda(const Pool2dGeometry& g, const T* dy, T* dx,
                                       cudaStream_t stream) {
  if (inputs(g) == 0) return;
  adaptive_avg_pool2d_backward_kernel<T><<<blocks_for(inputs(g)), kThreads, 0, stream>>>(g, dy, dx);
  MCD_CUDA_CHECK_LAUNCH("adaptive_avg_pool2d_backward_kernel");
}

#define MCD_INSTANTIATE_POOL_CUDA(T)                                                              \
  template void max_pool2d_forward_cuda<T>(const Pool2dGeometry&, const T*, T*, std::int64_t*,    \
                                           cudaStream_t);                                         \
  template void max_pool2d_backward_cuda<T>(const Pool2dGeometry&, const T*, const std::int64_t*, \
                                            T*, cudaStream_t);                                    \
  template void max_pool2d_gather_cuda<T>(const Pool2dGeometry&, const T*, const std::int64_t*,   \
                                          T*, cudaStream_t);                                      \
  template void avg_pool2d_forward_cuda<T>(const Pool2dGeometry&, const T*, T*, cudaStream_t);    \
  template void avg_pool2d_backward_cuda<T>(const Pool2dGeometry&, const T*, T*, cudaStream_t);   \
  template void adaptive_avg_pool2d_forward_cuda<T>(const Pool2dGeometry&, const T*, T*,          \
                                                    cudaStream_t);                                \
  template void adaptive_avg_pool2d_backward_cuda<T>(const Pool2dGeometry&, const T*, T*,         \
                                                     cudaStream_t);
MCD_INSTANTIATE_POOL_CUDA(float)
MCD_INSTANTIATE_POOL_CUDA(double)
#undef MCD_INSTANTIATE_POOL_CUDA

}  // namespace mcd::kernels::cuda
