// Depthwise convolutions on CPU: one input channel per group, `mult` = out_per_group output
// channels read each one (MobileNetV2, ShuffleNetV2). With unit strides the planes are copied
// into zero-padded scratch and computed on "wide rows" as long as the padded plane's, so that
// every kernel tap is one contiguous multiply-add over the whole plane, with no bounds to test
// (the few columns past each row's end are computed and dropped). Other strides use direct
// loops over each row's valid range. Both add a pixel's taps in the same order, so the forward
// and the input gradient do not depend on the path (for finite weights: the wide rows also
// multiply the padding's zeros, which an infinite weight turns into NaN); the weight gradient
// sums in a fixed order chosen from the shapes alone.
#include <algorithm>
#include <vector>

#include <mcd/kernels/cpu/scratch.h>

#include "conv2d_internal.h"

namespace mcd::kernels::cpu::conv_detail {
namespace {

// ---- unit strides, wide rows

bool unit_stride(const Conv2dGeometry& g) {
  // pad < kernel: the input gradient's padding, kernel - 1 - pad, is then not negative.
  return g.stride_h == 1 && g.stride_w == 1 && g.pad_h < g.kernel_h && g.pad_w < g.kernel_w;
}

// A (h, w) plane copied into a zeroed (rows, cols) buffer at (top, left), followed by `slack`
// zeros: wide rows read up to kernel_w - 1 elements past the last row.
template <class T>
void pad_plane(const T* src, std::int64_t h, std::int64_t w, std::int64_t top, std::int64_t left,
               std::int64_t rows, std::int64_t cols, std::int64_t slack, T* dst) {
  std::fill(dst, dst + rows * cols + slack, T(0));
  for (std::int64_t r = 0; r < h; ++r)
    std::copy(src + r * w, src + (r + 1) * w, dst + (top + r) * cols + left);
}

// The valid columns [0, w) of `rows` wide rows of `cols` elements, packed into (rows, w).
template <class T>
void unpack_wide(const T* wide, std::int64_t rows, std::int64_t cols, std::int64_t w, T* dst) {
  for (std::int64_t r = 0; r < rows; ++r)
    std::copy(wide + r * cols, wide + r * cols + w, dst + r * w);
}

// One kernel tap on wide rows: its offset into the padded plane and its weight.
template <class T>
struct Tap {
  std::int64_t offset;
  T weight;
};

// out[k] += tap.weight * in[k + tap.offset] for k in [0, n), tap after tap in the given order.
template <class T>
void apply_taps(const std::vector<Tap<T>>& taps, const T* in, std::int64_t n, T* out) {
  for (const Tap<T>& t : taps) {
    const T* src = in + t.offset;
    const T wv = t.weight;
#pragma omp simd
    for (std::int64_t k = 0; k < n; ++k)
      out[k] += wv * src[k];
  }
}

// Runs body(p, padded, wide, taps) for every (image, input channel) plane p, in parallel when
// the work is worth it, with per-thread scratch: a padded plane of padded_size elements, n
// wide-row outputs and a list of taps.
template <class T, class Body>
void for_each_input_plane(const Conv2dGeometry& g, std::int64_t padded_size, std::int64_t n,
                          Body&& body) {
  const std::int64_t planes = g.batch * g.in_channels;
  const std::int64_t work = planes * g.out_per_group() * g.out_spatial() * g.kernel_h * g.kernel_w;
#pragma omp parallel if (work > kParallelGrain)
  {
    Scratch<T> padded(padded_size), wide(n);
    std::vector<Tap<T>> taps(static_cast<std::size_t>(g.kernel_h * g.kernel_w));
#pragma omp for schedule(static)
    for (std::int64_t p = 0; p < planes; ++p)
      body(p, padded.get(), wide.get(), taps);
  }
}

// y = bias + sum over taps (i, j) in row-major order of w_ij * xpad(oh + i, ow + j).
template <class T>
void forward_wide(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y) {
  const std::int64_t rows = g.in_h + 2 * g.pad_h, cols = g.in_w + 2 * g.pad_w;
  const std::int64_t mult = g.out_per_group(), n = g.out_h * cols, plane = g.in_h * g.in_w;
  const std::int64_t S = g.out_spatial();
  // One input plane: padded once, then each of its output channels.
  auto plane_forward = [&](std::int64_t p, T* padded, T* wide, std::vector<Tap<T>>& taps) {
    pad_plane(x + p * plane, g.in_h, g.in_w, g.pad_h, g.pad_w, rows, cols, g.kernel_w, padded);
    const std::int64_t n_img = p / g.in_channels, ci = p % g.in_channels;
    for (std::int64_t co = ci * mult; co < (ci + 1) * mult; ++co) {
      for (std::int64_t i = 0; i < g.kernel_h; ++i)
        for (std::int64_t j = 0; j < g.kernel_w; ++j)
          taps[static_cast<std::size_t>(i * g.kernel_w + j)] = {
              i * cols + j, w[(co * g.kernel_h + i) * g.kernel_w + j]};
      std::fill(wide, wide + n, bias != nullptr ? bias[co] : T(0));
      apply_taps(taps, padded, n, wide);
      unpack_wide(wide, g.out_h, cols, g.out_w, y + (n_img * g.out_channels + co) * S);
    }
  };
  for_each_input_plane<T>(g, rows * cols + g.kernel_w, n, plane_forward);
}

// dx = sum over the group's output channels of the full correlation of dy with the flipped
// kernel: dy padded by kernel - 1 - pad, taps in the order the direct loops add them (kernel
// rows from the last, columns from the first).
template <class T>
void backward_input_wide(const Conv2dGeometry& g, const T* dy, const T* w, T* dx) {
  const std::int64_t top = g.kernel_h - 1 - g.pad_h, left = g.kernel_w - 1 - g.pad_w;
  const std::int64_t rows = g.in_h + g.kernel_h - 1, cols = g.in_w + g.kernel_w - 1;
  const std::int64_t mult = g.out_per_group(), n = g.in_h * cols, plane = g.in_h * g.in_w;
  const std::int64_t S = g.out_spatial();
  // One input plane: the sum over its output channels.
  auto plane_gradient = [&](std::int64_t p, T* padded, T* wide, std::vector<Tap<T>>& taps) {
    const std::int64_t n_img = p / g.in_channels, ci = p % g.in_channels;
    std::fill(wide, wide + n, T(0));
    for (std::int64_t co = ci * mult; co < (ci + 1) * mult; ++co) {
      pad_plane(dy + (n_img * g.out_channels + co) * S, g.out_h, g.out_w, top, left, rows, cols,
                g.kernel_w, padded);
      std::size_t t = 0;
      for (std::int64_t i = g.kernel_h - 1; i >= 0; --i)
        for (std::int64_t j = 0; j < g.kernel_w; ++j)
          taps[t++] = {(g.kernel_h - 1 - i) * cols + (g.kernel_w - 1 - j),
                       w[(co * g.kernel_h + i) * g.kernel_w + j]};
      apply_taps(taps, padded, n, wide);
    }
    unpack_wide(wide, g.in_h, cols, g.in_w, dx + p * plane);
  };
  for_each_input_plane<T>(g, rows * cols + g.kernel_w, n, plane_gradient);
}

// dw_ij = sum over the batch and the output of dy * xpad(oh + i, ow + j): per tap and wide-row
// position, partial sums over the batch (dy's wide rows padded with zeros), then the valid
// positions' sums added in double in position order.
template <class T>
void backward_weight_wide(const Conv2dGeometry& g, const T* x, const T* dy, T* dw) {
  const std::int64_t rows = g.in_h + 2 * g.pad_h, cols = g.in_w + 2 * g.pad_w;
  const std::int64_t taps = g.kernel_h * g.kernel_w, mult = g.out_per_group();
  const std::int64_t n = g.out_h * cols, plane = g.in_h * g.in_w, S = g.out_spatial();
#pragma omp parallel if (g.batch * g.out_channels * S * taps > kParallelGrain)
  {
    Scratch<T> padded(rows * cols + g.kernel_w), dy_wide(n), acc(taps * n);
#pragma omp for schedule(static)
    for (std::int64_t co = 0; co < g.out_channels; ++co) {
      std::fill(acc.get(), acc.get() + taps * n, T(0));
      std::fill(dy_wide.get(), dy_wide.get() + n, T(0));
      for (std::int64_t b = 0; b < g.batch; ++b) {
        pad_plane(x + (b * g.in_channels + co / mult) * plane, g.in_h, g.in_w, g.pad_h, g.pad_w,
                  rows, cols, g.kernel_w, padded.get());
        const T* dyp = dy + (b * g.out_channels + co) * S;
        for (std::int64_t r = 0; r < g.out_h; ++r)
          std::copy(dyp + r * g.out_w, dyp + (r + 1) * g.out_w, dy_wide.get() + r * cols);
        for (std::int64_t i = 0; i < g.kernel_h; ++i)
          for (std::int64_t j = 0; j < g.kernel_w; ++j) {
            T* a = acc.get() + (i * g.kernel_w + j) * n;
            const T* src = padded.get() + i * cols + j;
            const T* d = dy_wide.get();
#pragma omp simd
            for (std::int64_t k = 0; k < n; ++k)
              a[k] += d[k] * src[k];
          }
      }
      // Only the valid columns: past a row's end dy is zero, but x there is the next row's
      // (an infinite x would make 0 * x a NaN that the direct loops never compute).
      for (std::int64_t t = 0; t < taps; ++t) {
        double s = 0;
        for (std::int64_t r = 0; r < g.out_h; ++r)
          for (std::int64_t c = 0; c < g.out_w; ++c)
            s += acc[t * n + r * cols + c];
        dw[co * taps + t] = static_cast<T>(s);
      }
    }
  }
}

// ---- any stride: direct loops over each row's valid range

template <class T>
void forward_direct(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y) {
  const std::int64_t S = g.out_spatial(), plane = g.in_h * g.in_w, taps = g.kernel_h * g.kernel_w;
  const std::int64_t mult = g.out_per_group();
  const auto ranges = column_ranges(g);
  const std::int64_t planes = g.batch * g.out_channels;
#pragma omp parallel for if (planes * S * taps > kParallelGrain) schedule(static)
  for (std::int64_t nc = 0; nc < planes; ++nc) {
    const std::int64_t n = nc / g.out_channels, co = nc % g.out_channels;
    const T* xp = x + (n * g.in_channels + co / mult) * plane;
    const T* wk = w + co * taps;
    T* yp = y + nc * S;
    std::fill(yp, yp + S, bias != nullptr ? bias[co] : T(0));
    for (std::int64_t oh = 0; oh < g.out_h; ++oh) {
      T* yr = yp + oh * g.out_w;
      for (std::int64_t i = 0; i < g.kernel_h; ++i) {
        const std::int64_t ih = oh * g.stride_h - g.pad_h + i;
        if (ih < 0 || ih >= g.in_h) continue;
        const T* xr = xp + ih * g.in_w;
        for (std::int64_t j = 0; j < g.kernel_w; ++j) {
          const T wv = wk[i * g.kernel_w + j];
          const auto [lo, hi] = ranges[static_cast<std::size_t>(j)];
          const std::int64_t off = j - g.pad_w;
          if (g.stride_w == 1) {
            for (std::int64_t ow = lo; ow < hi; ++ow)
              yr[ow] += wv * xr[ow + off];
          } else {
            for (std::int64_t ow = lo; ow < hi; ++ow)
              yr[ow] += wv * xr[ow * g.stride_w + off];
          }
        }
      }
    }
  }
}

template <class T>
void backward_input_direct(const Conv2dGeometry& g, const T* dy, const T* w, T* dx) {
  const std::int64_t S = g.out_spatial(), plane = g.in_h * g.in_w, taps = g.kernel_h * g.kernel_w;
  const std::int64_t mult = g.out_per_group();
  const auto ranges = column_ranges(g);
  const std::int64_t planes = g.batch * g.in_channels;
  // One input plane per iteration: every write of an iteration lands in its own plane.
#pragma omp parallel for if (planes * mult * S * taps > kParallelGrain) schedule(static)
  for (std::int64_t nc = 0; nc < planes; ++nc) {
    const std::int64_t n = nc / g.in_channels, ci = nc % g.in_channels;
    T* dxp = dx + nc * plane;
    std::fill(dxp, dxp + plane, T(0));
    for (std::int64_t co = ci * mult; co < (ci + 1) * mult; ++co) {
      const T* dyp = dy + (n * g.out_channels + co) * S;
      const T* wk = w + co * taps;
      for (std::int64_t oh = 0; oh < g.out_h; ++oh) {
        const T* dyr = dyp + oh * g.out_w;
        for (std::int64_t i = 0; i < g.kernel_h; ++i) {
          const std::int64_t ih = oh * g.stride_h - g.pad_h + i;
          if (ih < 0 || ih >= g.in_h) continue;
          T* dxr = dxp + ih * g.in_w;
          for (std::int64_t j = 0; j < g.kernel_w; ++j) {
            const T wv = wk[i * g.kernel_w + j];
            const auto [lo, hi] = ranges[static_cast<std::size_t>(j)];
            const std::int64_t off = j - g.pad_w;
            if (g.stride_w == 1) {
              for (std::int64_t ow = lo; ow < hi; ++ow)
                dxr[ow + off] += wv * dyr[ow];
            } else {
              for (std::int64_t ow = lo; ow < hi; ++ow)
                dxr[ow * g.stride_w + off] += wv * dyr[ow];
            }
          }
        }
      }
    }
  }
}

template <class T>
void backward_weight_direct(const Conv2dGeometry& g, const T* x, const T* dy, T* dw) {
  const std::int64_t S = g.out_spatial(), plane = g.in_h * g.in_w, taps = g.kernel_h * g.kernel_w;
  const std::int64_t mult = g.out_per_group(), W = g.out_w;
  const auto ranges = column_ranges(g);
  // One output channel per iteration. Each tap keeps one partial sum per output column
  // (elementwise updates vectorise; a horizontal sum per row would not), summed at the end.
#pragma omp parallel for if (g.batch * g.out_channels * S * taps > kParallelGrain) schedule(static)
  for (std::int64_t co = 0; co < g.out_channels; ++co) {
    std::vector<T> acc(static_cast<std::size_t>(taps * W), T(0));
    for (std::int64_t n = 0; n < g.batch; ++n) {
      const T* xp = x + (n * g.in_channels + co / mult) * plane;
      const T* dyp = dy + (n * g.out_channels + co) * S;
      for (std::int64_t oh = 0; oh < g.out_h; ++oh) {
        const T* dyr = dyp + oh * W;
        for (std::int64_t i = 0; i < g.kernel_h; ++i) {
          const std::int64_t ih = oh * g.stride_h - g.pad_h + i;
          if (ih < 0 || ih >= g.in_h) continue;
          const T* xr = xp + ih * g.in_w;
          for (std::int64_t j = 0; j < g.kernel_w; ++j) {
            const auto [lo, hi] = ranges[static_cast<std::size_t>(j)];
            const std::int64_t off = j - g.pad_w, sw = g.stride_w;
            T* a = acc.data() + (i * g.kernel_w + j) * W;
            if (sw == 1) {
              for (std::int64_t ow = lo; ow < hi; ++ow)
                a[ow] += dyr[ow] * xr[ow + off];
            } else {
              for (std::int64_t ow = lo; ow < hi; ++ow)
                a[ow] += dyr[ow] * xr[ow * sw + off];
            }
          }
        }
      }
    }
    for (std::int64_t t = 0; t < taps; ++t) {
      double s = 0;
      for (std::int64_t ow = 0; ow < W; ++ow)
        s += acc[static_cast<std::size_t>(t * W + ow)];
      dw[co * taps + t] = static_cast<T>(s);
    }
  }
}

}  // namespace

template <class T>
void depthwise_forward(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y) {
  if (unit_stride(g)) return forward_wide(g, x, w, bias, y);
  forward_direct(g, x, w, bias, y);
}

template <class T>
void depthwise_backward_input(const Conv2dGeometry& g, const T* dy, const T* w, T* dx) {
  if (unit_stride(g)) return backward_input_wide(g, dy, w, dx);
  backward_input_direct(g, dy, w, dx);
}

template <class T>
void depthwise_backward_weight(const Conv2dGeometry& g, const T* x, const T* dy, T* dw) {
  if (unit_stride(g)) return backward_weight_wide(g, x, dy, dw);
  backward_weight_direct(g, x, dy, dw);
}

#define MCD_INSTANTIATE_DEPTHWISE(T)                                                           \
  template void depthwise_forward<T>(const Conv2dGeometry&, const T*, const T*, const T*, T*); \
  template void depthwise_backward_input<T>(const Conv2dGeometry&, const T*, const T*, T*);    \
  template void depthwise_backward_weight<T>(const Conv2dGeometry&, const T*, const T*, T*);
MCD_INSTANTIATE_DEPTHWISE(float)
MCD_INSTANTIATE_DEPTHWISE(double)
#undef MCD_INSTANTIATE_DEPTHWISE

}  // namespace mcd::kernels::cpu::conv_detail
