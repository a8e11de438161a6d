// 2-D pooling on CPU: one (batch, channel) plane per OpenMP iteration, so every write of an
// iteration lands in its own plane and backward scatters need no atomics. Windows are
// clipped to the input; average pooling still divides by the full kernel area (padding
// counts), adaptive pooling by the bin's area.
#include <mcd/kernels/cpu/pool.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace mcd::kernels::cpu {
namespace {

constexpr std::int64_t kParallelGrain = std::int64_t{1} << 15;

// The input rows (or columns) [lo, hi) covered by window o of a strided, padded axis.
struct Window {
  std::int64_t lo, hi;
};

Window window(std::int64_t o, std::int64_t stride, std::int64_t pad, std::int64_t kernel,
              std::int64_t in) {
  const std::int64_t start = o * stride - pad;
  return {std::max<std::int64_t>(start, 0), std::min(start + kernel, in)};
}

// PyTorch's adaptive bins: [floor(o * in / out), ceil((o + 1) * in / out)).
Window adaptive_bin(std::int64_t o, std::int64_t in, std::int64_t out) {
  return {o * in / out, ((o + 1) * in + out - 1) / out};
}

bool parallel_worth_it(const Pool2dGeometry& g, std::int64_t per_output) {
  return g.planes() * g.out_h * g.out_w * per_output > kParallelGrain;
}

}  // namespace

// ---- max pooling

template <class T>
void max_pool2d_forward_cpu(const Pool2dGeometry& g, const T* x, T* y, std::int64_t* argmax) {
  const std::int64_t in_plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
#pragma omp parallel for if (parallel_worth_it(g, g.kernel_h * g.kernel_w)) schedule(static)
  for (std::int64_t p = 0; p < g.planes(); ++p) {
    const T* xp = x + p * in_plane;
    T* yp = y + p * out_plane;
    std::int64_t* ap = argmax + p * out_plane;
    for (std::int64_t oh = 0; oh < g.out_h; ++oh) {
      const Window wh = window(oh, g.stride_h, g.pad_h, g.kernel_h, g.in_h);
      for (std::int64_t ow = 0; ow < g.out_w; ++ow) {
        const Window ww = window(ow, g.stride_w, g.pad_w, g.kernel_w, g.in_w);
        std::int64_t best_i = wh.lo * g.in_w + ww.lo;
        T best = -std::numeric_limits<T>::infinity();
        for (std::int64_t ih = wh.lo; ih < wh.hi; ++ih)
          for (std::int64_t iw = ww.lo; iw < ww.hi; ++iw) {
            const T v = xp[ih * g.in_w + iw];
            // NaN propagates, as in PyTorch.
            if (v > best || std::isnan(v)) {
              best = v;
              best_i = ih * g.in_w + iw;
            }
          }
        yp[oh * g.out_w + ow] = xp[best_i];
        ap[oh * g.out_w + ow] = best_i;
      }
    }
  }
}

template <class T>
void max_pool2d_backward_cpu(const Pool2dGeometry& g, const T* dy, const std::int64_t* argmax,
                             T* dx) {
  const std::int64_t in_plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
#pragma omp parallel for if (parallel_worth_it(g, 1)) schedule(static)
  for (std::int64_t p = 0; p < g.planes(); ++p) {
    T* dxp = dx + p * in_plane;
    const T* dyp = dy + p * out_plane;
    const std::int64_t* ap = argmax + p * out_plane;
    std::fill(dxp, dxp + in_plane, T(0));
    for (std::int64_t o = 0; o < out_plane; ++o)
      dxp[ap[o]] += dyp[o];
  }
}

template <class T>
void max_pool2d_gather_cpu(const Pool2dGeometry& g, const T* v, const std::int64_t* argmax, T* y) {
  const std::int64_t in_plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
#pragma omp parallel for if (parallel_worth_it(g, 1)) schedule(static)
  for (std::int64_t p = 0; p < g.planes(); ++p) {
    const T* vp = v + p * in_plane;
    const std::int64_t* ap = argmax + p * out_plane;
    T* yp = y + p * out_plane;
    for (std::int64_t o = 0; o < out_plane; ++o)
      yp[o] = vp[ap[o]];
  }
}

// ---- average pooling (count_include_pad)

template <class T>
void avg_pool2d_forward_cpu(const Pool2dGeometry& g, const T* x, T* y) {
  const std::int64_t in_plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
  const T scale = T(1) / static_cast<T>(g.kernel_h * g.kernel_w);
#pragma omp parallel for if (parallel_worth_it(g, g.kernel_h * g.kernel_w)) schedule(static)
  for (std::int64_t p = 0; p < g.planes(); ++p) {
    const T* xp = x + p * in_plane;
    T* yp = y + p * out_plane;
    for (std::int64_t oh = 0; oh < g.out_h; ++oh) {
      const Window wh = window(oh, g.stride_h, g.pad_h, g.kernel_h, g.in_h);
      for (std::int64_t ow = 0; ow < g.out_w; ++ow) {
        const Window ww = window(ow, g.stride_w, g.pad_w, g.kernel_w, g.in_w);
        T s = 0;
        for (std::int64_t ih = wh.lo; ih < wh.hi; ++ih)
          for (std::int64_t iw = ww.lo; iw < ww.hi; ++iw)
            s += xp[ih * g.in_w + iw];
        yp[oh * g.out_w + ow] = s * scale;
      }
    }
  }
}

template <class T>
void avg_pool2d_backward_cpu(const Pool2dGeometry& g, const T* dy, T* dx) {
  const std::int64_t in_plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
  const T scale = T(1) / static_cast<T>(g.kernel_h * g.kernel_w);
#pragma omp parallel for if (parallel_worth_it(g, g.kernel_h * g.kernel_w)) schedule(static)
  for (std::int64_t p = 0; p < g.planes(); ++p) {
    const T* dyp = dy + p * out_plane;
    T* dxp = dx + p * in_plane;
    std::fill(dxp, dxp + in_plane, T(0));
    for (std::int64_t oh = 0; oh < g.out_h; ++oh) {
      const Window wh = window(oh, g.stride_h, g.pad_h, g.kernel_h, g.in_h);
      for (std::int64_t ow = 0; ow < g.out_w; ++ow) {
        const Window ww = window(ow, g.stride_w, g.pad_w, g.kernel_w, g.in_w);
        const T v = dyp[oh * g.out_w + ow] * scale;
        for (std::int64_t ih = wh.lo; ih < wh.hi; ++ih)
          for (std::int64_t iw = ww.lo; iw < ww.hi; ++iw)
            dxp[ih * g.in_w + iw] += v;
      }
    }
  }
}

// ---- adaptive average pooling

template <class T>
void adaptive_avg_pool2d_forward_cpu(const Pool2dGeometry& g, const T* x, T* y) {
  const std::int64_t in_plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
  const std::int64_t per_output = (g.in_h / std::max<std::int64_t>(g.out_h, 1) + 1) *
                                  (g.in_w / std::max<std::int64_t>(g.out_w, 1) + 1);
#pragma omp parallel for if (parallel_worth_it(g, per_output)) schedule(static)
  for (std::int64_t p = 0; p < g.planes(); ++p) {
    const T* xp = x + p * in_plane;
    T* yp = y + p * out_plane;
    for (std::int64_t oh = 0; oh < g.out_h; ++oh) {
      const Window wh = adaptive_bin(oh, g.in_h, g.out_h);
      for (std::int64_t ow = 0; ow < g.out_w; ++ow) {
        const Window ww = adaptive_bin(ow, g.in_w, g.out_w);
        T s = 0;
        for (std::int64_t ih = wh.lo; ih < wh.hi; ++ih)
          for (std::int64_t iw = ww.lo; iw < ww.hi; ++iw)
            s += xp[ih * g.in_w + iw];
        yp[oh * g.out_w + ow] = s / static_cast<T>((wh.hi - wh.lo) * (ww.hi - ww.lo));
      }
    }
  }
}

template <class T>
void adaptive_avg_pool2d_backward_cpu(const Pool2dGeometry& g, const T* dy, T* dx) {
  const std::int64_t in_plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
  const std::int64_t per_output = (g.in_h / std::max<std::int64_t>(g.out_h, 1) + 1) *
                                  (g.in_w / std::max<std::int64_t>(g.out_w, 1) + 1);
#pragma omp parallel for if (parallel_worth_it(g, per_output)) schedule(static)
  for (std::int64_t p = 0; p < g.planes(); ++p) {
    const T* dyp = dy + p * out_plane;
    T* dxp = dx + p * in_plane;
    std::fill(dxp, dxp + in_plane, T(0));
    for (std::int64_t oh = 0; oh < g.out_h; ++oh) {
      const Window wh = adaptive_bin(oh, g.in_h, g.out_h);
      for (std::int64_t ow = 0; ow < g.out_w; ++ow) {
        const Window ww = adaptive_bin(ow, g.in_w, g.out_w);
        const T v = dyp[oh * g.out_w + ow] / static_cast<T>((wh.hi - wh.lo) * (ww.hi - ww.lo));
        for (std::int64_t ih = wh.lo; ih < wh.hi; ++ih)
          for (std::int64_t iw = ww.lo; iw < ww.hi; ++iw)
            dxp[ih * g.in_w + iw] += v;
      }
    }
  }
}

#define MCD_INSTANTIATE_POOL(T)                                                                  \
  template void max_pool2d_forward_cpu<T>(const Pool2dGeometry&, const T*, T*, std::int64_t*);   \
  template void max_pool2d_backward_cpu<T>(const Pool2dGeometry&, const T*, const std::int64_t*, \
                                           T*);                                                  \
  template void max_pool2d_gather_cpu<T>(const Pool2dGeometry&, const T*, const std::int64_t*,   \
                                         T*);                                                    \
  template void avg_pool2d_forward_cpu<T>(const Pool2dGeometry&, const T*, T*);                  \
  template void avg_pool2d_backward_cpu<T>(const Pool2dGeometry&, const T*, T*);                 \
  template void adaptive_avg_pool2d_forward_cpu<T>(const Pool2dGeometry&, const T*, T*);         \
  template void adaptive_avg_pool2d_backward_cpu<T>(const Pool2dGeometry&, const T*, T*);
MCD_INSTANTIATE_POOL(float)
MCD_INSTANTIATE_POOL(double)
#undef MCD_INSTANTIATE_POOL

}  // namespace mcd::kernels::cpu
