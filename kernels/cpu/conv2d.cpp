// 2-D convolution on CPU. Grouped convolutions use im2col + GEMM per image (1x1 stride-1
// unpadded convolutions multiply the image directly); depthwise ones (one input channel per
// group) use direct loops. Outputs are overwritten. The weight gradient sums the batch in a
// fixed number of chunks chosen from the shapes alone, never from the thread count.
#include <mcd/kernels/cpu/conv2d.h>

#include <algorithm>
#include <memory>
#include <vector>

#include <mcd/kernels/cpu/scratch.h>

#include <mcd/kernels/cpu/gemm.h>

#include "conv2d_internal.h"

namespace mcd::kernels::cpu {
namespace {

using conv_detail::column_ranges;
using conv_detail::is_depthwise;
using conv_detail::kParallelGrain;
using conv_detail::OutputRange;

// Weight-gradient partial sums: at most this many chunks and this many elements in total.
constexpr std::int64_t kMaxWeightChunks = 16;
constexpr std::int64_t kMaxPartialElements = std::int64_t{1} << 24;

template <class T>
Scratch<T> scratch(std::int64_t n) {
  return Scratch<T>(n);
}

bool is_pointwise(const Conv2dGeometry& g) {
  return g.kernel_h == 1 && g.kernel_w == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_h == 0 &&
         g.pad_w == 0;
}

// ---- im2col / col2im over all channels of one image: col is (C_in * kh * kw, out_h * out_w),
// rows ordered (channel, kernel row, kernel column), so group gi owns rows
// [gi * patch_size, (gi + 1) * patch_size).

// Stride 1 with out_w == in_w (e.g. 3x3, pad 1): the col row of tap (i, j) is the input
// plane shifted by (i - pad_h) rows and (j - pad_w) columns, so it is one contiguous copy;
// only the |j - pad_w| columns per row that wrap into a neighbouring row read padding.
bool is_shifted_copy(const Conv2dGeometry& g) {
  return g.stride_h == 1 && g.stride_w == 1 && g.out_w == g.in_w;
}

// Output rows [lo, hi) of tap row i that read a real input row, and the run of elements
// [k0, k1) of those rows that is a plain shifted copy.
struct ShiftedRun {
  std::int64_t row_lo, row_hi, dw, k0, k1;
};

ShiftedRun shifted_run(const Conv2dGeometry& g, std::int64_t i, std::int64_t j) {
  const std::int64_t dh = i - g.pad_h, dw = j - g.pad_w;
  const std::int64_t lo = std::clamp<std::int64_t>(-dh, 0, g.out_h);
  const std::int64_t hi = std::clamp<std::int64_t>(g.in_h - dh, lo, g.out_h);
  const std::int64_t count = (hi - lo) * g.in_w;
  const std::int64_t k0 = std::min(std::max<std::int64_t>(0, -dw), count);
  const std::int64_t k1 = std::max(count - std::max<std::int64_t>(0, dw), k0);
  return {lo, hi, dw, k0, k1};
}

// Sets the wrapped columns of the valid rows of a shifted col row to zero.
// Column by column down the rows: n is a kernel half-width (1 for 3x3), and a fill per row
// was a library call (memset) per element.
template <class T>
void zero_wrapped_columns(const Conv2dGeometry& g, const ShiftedRun& s, T* valid_rows) {
  if (s.dw == 0) return;
  const std::int64_t W = g.in_w, n = std::min(s.dw < 0 ? -s.dw : s.dw, W);
  const std::int64_t first = s.dw < 0 ? 0 : W - n, rows = s.row_hi - s.row_lo;
  for (std::int64_t k = first; k < first + n; ++k)
    for (std::int64_t r = 0; r < rows; ++r)
      valid_rows[r * W + k] = T(0);
}

template <class T>
void im2col(const Conv2dGeometry& g, const OutputRange* cols, const T* x, T* col) {
  const std::int64_t S = g.out_spatial(), plane = g.in_h * g.in_w;
  const bool shifted = is_shifted_copy(g);
  for (std::int64_t c = 0; c < g.in_channels; ++c) {
    const T* xp = x + c * plane;
    for (std::int64_t i = 0; i < g.kernel_h; ++i)
      for (std::int64_t j = 0; j < g.kernel_w; ++j) {
        T* row = col + ((c * g.kernel_h + i) * g.kernel_w + j) * S;
        if (shifted) {
          const ShiftedRun s = shifted_run(g, i, j);
          const std::int64_t W = g.in_w;
          std::fill(row, row + s.row_lo * W, T(0));
          std::fill(row + s.row_hi * W, row + S, T(0));
          if (s.k1 > s.k0) {
            // dst[k] = src[k + dw]: src starts at the first input row read
            T* dst = row + s.row_lo * W;
            const T* src = xp + (s.row_lo + i - g.pad_h) * W;
            std::copy(src + s.k0 + s.dw, src + s.k1 + s.dw, dst + s.k0);
            zero_wrapped_columns(g, s, dst);
          } else {
            // Planes narrower than the shift (e.g. 1x1 with a 3x3 kernel): every valid-row
            // element reads padding.
            std::fill(row + s.row_lo * W, row + s.row_hi * W, T(0));
          }
          continue;
        }
        const auto [lo, hi] = cols[j];
        const std::int64_t off = j - g.pad_w;
        for (std::int64_t oh = 0; oh < g.out_h; ++oh) {
          T* r = row + oh * g.out_w;
          const std::int64_t ih = oh * g.stride_h - g.pad_h + i;
          if (ih < 0 || ih >= g.in_h) {
            std::fill(r, r + g.out_w, T(0));
            continue;
          }
          const T* src = xp + ih * g.in_w;
          std::fill(r, r + lo, T(0));
          if (g.stride_w == 1) {
            for (std::int64_t ow = lo; ow < hi; ++ow)
              r[ow] = src[ow + off];
          } else {
            for (std::int64_t ow = lo; ow < hi; ++ow)
              r[ow] = src[ow * g.stride_w + off];
          }
          std::fill(r + hi, r + g.out_w, T(0));
        }
      }
  }
}

// dx (C_in, H, W) = the sum of every col entry back into the input element it was read from.
// col is scratch: entries that read padding may be overwritten.
template <class T>
void col2im(const Conv2dGeometry& g, const OutputRange* cols, T* col, T* dx) {
  const std::int64_t S = g.out_spatial(), plane = g.in_h * g.in_w;
  const bool shifted = is_shifted_copy(g);
  std::fill(dx, dx + g.in_channels * plane, T(0));
  for (std::int64_t c = 0; c < g.in_channels; ++c) {
    T* dxp = dx + c * plane;
    for (std::int64_t i = 0; i < g.kernel_h; ++i)
      for (std::int64_t j = 0; j < g.kernel_w; ++j) {
        T* row = col + ((c * g.kernel_h + i) * g.kernel_w + j) * S;
        if (shifted) {
          const ShiftedRun s = shifted_run(g, i, j);
          if (s.k1 > s.k0) {
            T* src = row + s.row_lo * g.in_w;
            // Wrapped columns belong to padding: drop them, then add the run in one pass.
            zero_wrapped_columns(g, s, src);
            T* dst = dxp + (s.row_lo + i - g.pad_h) * g.in_w;
            const std::int64_t dw = s.dw;
            for (std::int64_t k = s.k0; k < s.k1; ++k)
              dst[k + dw] += src[k];
          }
          continue;
        }
        const auto [lo, hi] = cols[j];
        const std::int64_t off = j - g.pad_w;
        for (std::int64_t oh = 0; oh < g.out_h; ++oh) {
          const std::int64_t ih = oh * g.stride_h - g.pad_h + i;
          if (ih < 0 || ih >= g.in_h) continue;
          const T* r = row + oh * g.out_w;
          T* dst = dxp + ih * g.in_w;
          if (g.stride_w == 1) {
            for (std::int64_t ow = lo; ow < hi; ++ow)
              dst[ow + off] += r[ow];
          } else {
            for (std::int64_t ow = lo; ow < hi; ++ow)
              dst[ow * g.stride_w + off] += r[ow];
          }
        }
      }
  }
}

// ---- GEMM path (any groups with more than one input channel per group)

template <class T>
void forward_gemm(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y) {
  const std::int64_t S = g.out_spatial(), K = g.patch_size(), cog = g.out_per_group();
  const std::int64_t in_image = g.in_channels * g.in_h * g.in_w, out_image = g.out_channels * S;
  const bool pointwise = is_pointwise(g);
  const auto ranges = column_ranges(g);
  // One image per thread; gemm_cpu runs single-threaded inside the region and uses every
  // thread itself when the batch is a single image.
#pragma omp parallel if (g.batch > 1)
  {
    auto col = scratch<T>(pointwise ? 0 : g.groups * K * S);
#pragma omp for schedule(static)
    for (std::int64_t n = 0; n < g.batch; ++n) {
      const T* xn = x + n * in_image;
      T* yn = y + n * out_image;
      const T* cols = xn;
      if (!pointwise) {
        im2col(g, ranges.data(), xn, col.get());
        cols = col.get();
      }
      if (bias != nullptr)
        for (std::int64_t c = 0; c < g.out_channels; ++c)
          std::fill(yn + c * S, yn + (c + 1) * S, bias[c]);
      for (std::int64_t gi = 0; gi < g.groups; ++gi)
        gemm_cpu<T>(false, false, cog, S, K, T(1), w + gi * cog * K, K, cols + gi * K * S, S,
                    bias != nullptr ? T(1) : T(0), yn + gi * cog * S, S);
    }
  }
}

template <class T>
void backward_input_gemm(const Conv2dGeometry& g, const T* dy, const T* w, T* dx) {
  const std::int64_t S = g.out_spatial(), K = g.patch_size(), cog = g.out_per_group();
  const std::int64_t in_image = g.in_channels * g.in_h * g.in_w, out_image = g.out_channels * S;
  const bool pointwise = is_pointwise(g);
  const auto ranges = column_ranges(g);
#pragma omp parallel if (g.batch > 1)
  {
    auto col = scratch<T>(pointwise ? 0 : g.groups * K * S);
#pragma omp for schedule(static)
    for (std::int64_t n = 0; n < g.batch; ++n) {
      const T* dyn = dy + n * out_image;
      T* dxn = dx + n * in_image;
      // dcol_g (K, S) = W_g^T (K, cog) * dy_g (cog, S); pointwise: dcol is dx itself.
      T* dcol = pointwise ? dxn : col.get();
      for (std::int64_t gi = 0; gi < g.groups; ++gi)
        gemm_cpu<T>(true, false, K, S, cog, T(1), w + gi * cog * K, K, dyn + gi * cog * S, S, T(0),
                    dcol + gi * K * S, S);
      if (!pointwise) col2im(g, ranges.data(), dcol, dxn);
    }
  }
}

// Chunks of the batch whose weight gradients are summed separately, then added in order.
std::int64_t weight_chunks(const Conv2dGeometry& g, std::int64_t weight_numel) {
  std::int64_t chunks = std::min(g.batch, kMaxWeightChunks);
  while (chunks > 1 && chunks * weight_numel > kMaxPartialElements)
    --chunks;
  return chunks;
}

template <class T>
void backward_weight_gemm(const Conv2dGeometry& g, const T* x, const T* dy, T* dw) {
  const std::int64_t S = g.out_spatial(), K = g.patch_size(), cog = g.out_per_group();
  const std::int64_t in_image = g.in_channels * g.in_h * g.in_w, out_image = g.out_channels * S;
  const std::int64_t wsize = g.out_channels * K;
  const bool pointwise = is_pointwise(g);
  const auto ranges = column_ranges(g);
  const std::int64_t chunks = weight_chunks(g, wsize);
  // When the positions outnumber the patch entries, Eigen runs the long reduction faster as
  // dw_g^T (K, cog) = col_g (K, S) * dy_g^T (S, cog) (measured 1.3-1.5x at S = 1024), so
  // partial sums are kept transposed and the final reduction transposes them back.
  const bool transposed = S > K;
  const bool in_place = chunks == 1 && !transposed;
  auto partial = scratch<T>(in_place ? 0 : chunks * wsize);
#pragma omp parallel if (chunks > 1)
  {
    auto col = scratch<T>(pointwise ? 0 : g.groups * K * S);
#pragma omp for schedule(static)
    for (std::int64_t ch = 0; ch < chunks; ++ch) {
      T* part = in_place ? dw : partial.get() + ch * wsize;
      const std::int64_t n0 = ch * g.batch / chunks, n1 = (ch + 1) * g.batch / chunks;
      for (std::int64_t n = n0; n < n1; ++n) {
        const T* xn = x + n * in_image;
        const T* cols = xn;
        if (!pointwise) {
          im2col(g, ranges.data(), xn, col.get());
          cols = col.get();
        }
        const T beta = n == n0 ? T(0) : T(1);
        for (std::int64_t gi = 0; gi < g.groups; ++gi) {
          const T* dy_g = dy + n * out_image + gi * cog * S;
          const T* col_g = cols + gi * K * S;
          if (transposed)  // dw_g^T (K, cog) += col_g (K, S) * dy_g^T (S, cog)
            gemm_cpu<T>(false, true, K, cog, S, T(1), col_g, S, dy_g, S, beta, part + gi * K * cog,
                        cog);
          else  // dw_g (cog, K) += dy_g (cog, S) * col_g^T (S, K)
            gemm_cpu<T>(false, true, cog, K, S, T(1), dy_g, S, col_g, S, beta, part + gi * cog * K,
                        K);
        }
      }
    }
  }
  if (in_place) return;
    // Chunks are added in index order; e indexes dw as (group, out channel, patch entry).
#pragma omp parallel for if (chunks * wsize > kParallelGrain) schedule(static)
  for (std::int64_t e = 0; e < wsize; ++e) {
    std::int64_t src = e;
    if (transposed) {
      const std::int64_t co = e / K, k = e % K;
      src = (co / cog) * K * cog + k * cog + co % cog;
    }
    T s = partial[src];
    for (std::int64_t ch = 1; ch < chunks; ++ch)
      s += partial[ch * wsize + src];
    dw[e] = s;
  }
}

}  // namespace

// ---- entry points

template <class T>
void conv2d_forward_cpu(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y) {
  if (is_depthwise(g)) return conv_detail::depthwise_forward(g, x, w, bias, y);
  forward_gemm(g, x, w, bias, y);
}

template <class T>
void conv2d_backward_input_cpu(const Conv2dGeometry& g, const T* dy, const T* w, T* dx) {
  if (is_depthwise(g)) return conv_detail::depthwise_backward_input(g, dy, w, dx);
  backward_input_gemm(g, dy, w, dx);
}

template <class T>
void conv2d_backward_weight_cpu(const Conv2dGeometry& g, const T* x, const T* dy, T* dw) {
  if (g.batch == 0) {
    std::fill(dw, dw + g.out_channels * g.patch_size(), T(0));
    return;
  }
  if (is_depthwise(g)) return conv_detail::depthwise_backward_weight(g, x, dy, dw);
  backward_weight_gemm(g, x, dy, dw);
}

template <class T>
void conv2d_backward_bias_cpu(const Conv2dGeometry& g, const T* dy, T* db) {
  const std::int64_t S = g.out_spatial();
#pragma omp parallel for if (g.batch * g.out_channels * S > kParallelGrain) schedule(static)
  for (std::int64_t c = 0; c < g.out_channels; ++c) {
    double acc = 0.0;
    for (std::int64_t n = 0; n < g.batch; ++n) {
      const T* p = dy + (n * g.out_channels + c) * S;
      T s = 0;
#pragma omp simd reduction(+ : s)
      for (std::int64_t k = 0; k < S; ++k)
        s += p[k];
      acc += s;
    }
    db[c] = static_cast<T>(acc);
  }
}

#define MCD_INSTANTIATE_CONV2D(T)                                                               \
  template void conv2d_forward_cpu<T>(const Conv2dGeometry&, const T*, const T*, const T*, T*); \
  template void conv2d_backward_input_cpu<T>(const Conv2dGeometry&, const T*, const T*, T*);    \
  template void conv2d_backward_weight_cpu<T>(const Conv2dGeometry&, const T*, const T*, T*);   \
  template void conv2d_backward_bias_cpu<T>(const Conv2dGeometry&, const T*, T*);
MCD_INSTANTIATE_CONV2D(float)
MCD_INSTANTIATE_CONV2D(double)
#undef MCD_INSTANTIATE_CONV2D

}  // namespace mcd::kernels::cpu
