// Batch normalisation kernels (CPU twin: kernels/cpu/batch_norm.cpp). As on the CPU, every op
// is built from two primitives: per-channel moments (several blocks per channel, double sums
// reduced in shared memory, then the blocks' partial sums added in a fixed order) and a per-channel
// affine map out = a u + b (x - m) + k (one thread per element). The per-channel coefficients
// between them are computed by one thread per channel with the CPU's expressions, in double. A
// fused ReLU enters both primitives as a per-element gate recomputed from x and the fused residual
// (relu_passes), with the CPU's mask; the residual (or its tangent) is added to the map's output
// before the ReLU.
#include <mcd/kernels/cuda/batch_norm.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include <mcd/kernels/cuda/caching_allocator.h>
#include <mcd/kernels/cuda/check.h>
#include <mcd/kernels/cuda/runtime.h>

#include "exact_arith.cuh"

namespace mcd::kernels::cuda {
namespace {

using cpu::BatchNormDims;

constexpr int kMomentThreads = 256;  // a power of two (tree reduction)
constexpr int kMapThreads = 256;

int map_blocks(std::int64_t n) {
  return static_cast<int>(std::min<std::int64_t>((n + kMapThreads - 1) / kMapThreads, 65535));
}
int channel_blocks(std::int64_t c) {
  return static_cast<int>((c + kMapThreads - 1) / kMapThreads);
}

// How the fused ReLU enters the channel map: not at all, masking the input u (the VJP's dy), or
// masking the output (the JVP's y_t, and the forward's, whose gate is the map itself).
enum class Relu { None, MaskInput, MaskOutput };

// The forward's value before rounding to T, scale (x - mean) + shift with xm = x - mean, with
// the product and the sum rounded separately, never contracted into a fused multiply-add: the
// forward and the ReLU mask recomputed by the VJP and JVP (relu_passes) must round identically,
// which contraction left to the compiler does not promise across kernels, and the CPU kernel
// evaluates this very expression with two roundings, so the outputs and masks agree with it to
// the last bit.
__device__ __forceinline__ double forward_value(double scale, double xm, double shift) {
  return exact::add(exact::mul(scale, xm), shift);
}

// The fused ReLU's gate: the forward's per-channel scale and shift, and the fused residual
// (null for none). All null: no gate.
template <class T>
struct Gate {
  const double* scale = nullptr;
  const double* shift = nullptr;
  const T* residual = nullptr;
};

// Whether the fused ReLU passes an element: its pre-activation, the batch norm's value rounded
// to T as the forward stores it plus the residual r (0 without one: adding 0 changes no
// comparison with 0), is positive. (gs, gh) are the forward's per-channel scale and shift.
template <class T>
__device__ __forceinline__ bool relu_passes(double xm, double gs, double gh, T r) {
  return static_cast<T>(forward_value(gs, xm, gh)) + r > T(0);
}

// Per-channel moments in two deterministic passes. Pass 1: block (c, p) sums the values of
// channel c in images [n0, n1) (its share p of the batch), so every channel gets several
// blocks however few channels there are, and threads walk each image's contiguous plane:
//   s1 = sum(u - mu_c),  s2 = sum((u - mu_c)(x - m_c))   (mu may be null: zero shift)
// With a ReLU gate (x given and m the mean), u is masked by it first.
// Pass 2: thread c adds its channel's P partial sums in a fixed order, so results do not
// depend on scheduling.
template <class T>
__global__ void channel_moments_partial_kernel(BatchNormDims d, int parts, const T* u,
                                               const double* mu, const T* x, const double* m,
                                               Gate<T> gate, double* p1, double* p2) {
  __shared__ double r1[kMomentThreads], r2[kMomentThreads];
  const std::int64_t c = blockIdx.x, part = blockIdx.y;
  const std::int64_t n0 = d.n * part / parts, n1 = d.n * (part + 1) / parts;
  const double su = mu != nullptr ? mu[c] : 0.0, sx = x != nullptr ? m[c] : 0.0;
  const bool gated = gate.scale != nullptr;
  const double gsc = gated ? gate.scale[c] : 0.0, ghc = gated ? gate.shift[c] : 0.0;
  // 32-bit index arithmetic inside the share: (n1 - n0) * s stays far below 2^32 for any
  // batch that fits in memory (checked by the launcher).
  const auto plane = static_cast<unsigned>(d.s);
  const auto count = static_cast<unsigned>((n1 - n0) * d.s);
  double a1 = 0.0, a2 = 0.0;
  for (unsigned j = threadIdx.x; j < count; j += blockDim.x) {
    const unsigned img = j / plane;
    const std::int64_t at = ((n0 + img) * d.c + c) * d.s + (j - img * plane);
    const double xm = x != nullptr ? static_cast<double>(x[at]) - sx : 0.0;
    const bool pass =
        !gated || relu_passes<T>(xm, gsc, ghc, gate.residual != nullptr ? gate.residual[at] : T(0));
    const double du = (pass ? static_cast<double>(u[at]) : 0.0) - su;
    a1 += du;
    if (x != nullptr) a2 += du * xm;
  }
  r1[threadIdx.x] = a1;
  r2[threadIdx.x] = a2;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      r1[threadIdx.x] += r1[threadIdx.x + half];
      r2[threadIdx.x] += r2[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    p1[c * parts + part] = r1[0];
    p2[c * parts + part] = r2[0];
  }
}

__global__ void channel_moments_finish_kernel(std::int64_t channels, int parts, bool second,
                                              const double* p1, const double* p2, double* s1,
                                              double* s2) {
  const std::int64_t c = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (c >= channels) return;
  double a1 = 0.0, a2 = 0.0;
  for (int q = 0; q < parts; ++q) {
    a1 += p1[c * parts + q];
    a2 += p2[c * parts + q];
  }
  s1[c] = a1;
  if (second) s2[c] = a2;
}

// out = a_c u + b_c (x - m_c) + k_c for every element; u may be null (a is then ignored).
// addend (when not null) is added to that in T. With kRelu, the ReLU gate (m the mean) masks u
// (MaskInput; the masked u is also written to masked_u when that is not null) or the result
// (MaskOutput).
// Index is the element index type: 32-bit when the tensor allows, since 64-bit division is
// many times slower on the GPU.
template <class T, class Index, Relu kRelu>
__global__ void channel_affine_kernel(BatchNormDims d, const T* u, const double* a, const T* x,
                                      const double* m, const double* b, const double* k,
                                      Gate<T> gate, const T* addend, T* masked_u, T* out) {
  const auto n = static_cast<Index>(d.n * d.c * d.s);
  const auto plane = static_cast<Index>(d.s), channels = static_cast<Index>(d.c);
  for (Index i = blockIdx.x * static_cast<Index>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<Index>(gridDim.x) * blockDim.x) {
    const Index c = (i / plane) % channels;
    const double xm = static_cast<double>(x[i]) - m[c];
    bool pass = true;
    if constexpr (kRelu != Relu::None)
      pass = relu_passes<T>(xm, gate.scale[c], gate.shift[c],
                            gate.residual != nullptr ? gate.residual[i] : T(0));
    T v;
    if (u != nullptr) {
      T ui = u[i];
      if constexpr (kRelu == Relu::MaskInput) {
        ui = pass ? ui : T(0);
        if (masked_u != nullptr) masked_u[i] = ui;
      }
      v = static_cast<T>(a[c] * static_cast<double>(ui) + b[c] * xm + k[c]);
    } else {
      v = static_cast<T>(forward_value(b[c], xm, k[c]));
    }
    if (addend != nullptr) v = v + addend[i];
    if constexpr (kRelu == Relu::MaskOutput) v = pass ? v : T(0);
    out[i] = v;
  }
}

template <class T>
__device__ double value_or(const T* p, std::int64_t c, double fallback) {
  return p != nullptr ? static_cast<double>(p[c]) : fallback;
}

template <class T>
__global__ void first_value_kernel(BatchNormDims d, const T* x, double* first) {
  const std::int64_t c = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (c < d.c) first[c] = static_cast<double>(x[c * d.s]);
}

// Training forward statistics from the sums about the first value (see the CPU kernel).
template <class T>
__global__ void forward_train_coefficients_kernel(BatchNormDims d, const double* first,
                                                  const double* sum, const double* sq,
                                                  const T* weight, const T* bias, double eps,
                                                  double* mean, double* var, double* invstd,
                                                  double* scale, double* shift) {
  const std::int64_t c = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (c >= d.c) return;
  const double count = static_cast<double>(d.n * d.s);
  const double shifted_mean = sum[c] / count;
  mean[c] = first[c] + shifted_mean;
  var[c] = fmax(0.0, sq[c] / count - shifted_mean * shifted_mean);
  invstd[c] = 1.0 / sqrt(var[c] + eps);
  scale[c] = value_or(weight, c, 1.0) * invstd[c];
  shift[c] = value_or(bias, c, 0.0);
}

template <class T>
__global__ void forward_eval_coefficients_kernel(BatchNormDims d, const T* weight, const T* bias,
                                                 const double* invstd, double* scale,
                                                 double* shift) {
  const std::int64_t c = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (c >= d.c) return;
  scale[c] = value_or(weight, c, 1.0) * invstd[c];
  shift[c] = value_or(bias, c, 0.0);
}

template <class T>
__global__ void backward_coefficients_kernel(BatchNormDims d, bool training, const T* weight,
                                             const double* invstd, const double* sum_dy,
                                             const double* sum_dy_xc, T* dweight, T* dbias,
                                             double* a, double* b, double* k) {
  const std::int64_t c = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (c >= d.c) return;
  const double count = static_cast<double>(d.n * d.s);
  if (dweight != nullptr) dweight[c] = static_cast<T>(sum_dy_xc[c] * invstd[c]);
  if (dbias != nullptr) dbias[c] = static_cast<T>(sum_dy[c]);
  const double is = invstd[c];
  a[c] = value_or(weight, c, 1.0) * is;
  b[c] = 0.0;
  k[c] = 0.0;
  if (training) {
    b[c] = -a[c] * is * (sum_dy_xc[c] * is) / count;
    k[c] = -a[c] * sum_dy[c] / count;
  }
}

template <class T>
__global__ void jvp_coefficients_kernel(BatchNormDims d, bool training, bool has_x_t,
                                        const T* weight, const T* weight_t, const T* bias_t,
                                        const double* invstd, const double* sum_x_t,
                                        const double* cross, double* a, double* b, double* k) {
  const std::int64_t c = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (c >= d.c) return;
  const double count = static_cast<double>(d.n * d.s);
  const double is = invstd[c], w = value_or(weight, c, 1.0);
  a[c] = 0.0;
  b[c] = value_or(weight_t, c, 0.0) * is;
  k[c] = value_or(bias_t, c, 0.0);
  if (!has_x_t) return;
  a[c] = w * is;
  if (training) {
    const double mt = sum_x_t[c] / count;
    const double c2 = is * cross[c] / count;  // mean(xhat * (x_t - mean(x_t)))
    b[c] -= w * is * is * c2;
    k[c] -= w * is * mt;
  }
}

template <class R>
__global__ void eval_stats_kernel(std::int64_t channels, const R* rm, std::int64_t ms, const R* rv,
                                  std::int64_t vs, double eps, double* mean, double* invstd) {
  const std::int64_t c = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (c >= channels) return;
  mean[c] = static_cast<double>(rm[c * ms]);
  invstd[c] = 1.0 / sqrt(static_cast<double>(rv[c * vs]) + eps);
}

template <class R>
__global__ void update_running_kernel(std::int64_t channels, R* rm, std::int64_t ms, R* rv,
                                      std::int64_t vs, const double* mean, const double* var,
                                      double unbias, double momentum) {
  const std::int64_t c = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (c >= channels) return;
  rm[c * ms] =
      static_cast<R>((1.0 - momentum) * static_cast<double>(rm[c * ms]) + momentum * mean[c]);
  rv[c * vs] = static_cast<R>((1.0 - momentum) * static_cast<double>(rv[c * vs]) +
                              momentum * var[c] * unbias);
}

// Per-call scratch of `arrays` double arrays of C entries on the current device.
class Scratch {
 public:
  Scratch(std::int64_t c, int arrays, cudaStream_t stream)
      : c_(c),
        buffer_(current_device(), static_cast<std::size_t>(c * arrays) * sizeof(double), stream) {}
  double* operator[](int i) const { return buffer_.as<double>() + i * c_; }

 private:
  std::int64_t c_;
  DeviceBuffer buffer_;
};

// gate: the ReLU gate that masks u (channel_moments_partial_kernel), empty for none.
template <class T>
void launch_moments(const BatchNormDims& d, const T* u, const double* mu, const T* x,
                    const double* m, double* s1, double* s2, cudaStream_t stream,
                    Gate<T> gate = {}) {
  // About 1024 blocks in all: enough to fill the GPU for a handful of channels, while each
  // block still sums a whole image plane or more.
  constexpr std::int64_t kTargetBlocks = 1024;
  const auto parts = static_cast<int>(
      std::max<std::int64_t>(1, std::min<std::int64_t>(d.n, (kTargetBlocks + d.c - 1) / d.c)));
  MCD_CUDA_REQUIRE((d.n / parts + 1) * d.s < (std::int64_t{1} << 32),
                   "batch norm: an image share of " + std::to_string((d.n / parts + 1) * d.s) +
                       " values per channel is too large");
  MCD_CUDA_REQUIRE(d.c <= std::numeric_limits<int>::max(),
                   "batch norm: " + std::to_string(d.c) + " channels exceed the grid");
  DeviceBuffer partial(current_device(), static_cast<std::size_t>(2 * d.c * parts) * sizeof(double),
                       stream);
  double* p1 = partial.as<double>();
  double* p2 = p1 + d.c * parts;
  channel_moments_partial_kernel<T>
      <<<dim3(static_cast<unsigned>(d.c), static_cast<unsigned>(parts)), kMomentThreads, 0,
         stream>>>(d, parts, u, mu, x, m, gate, p1, p2);
  MCD_CUDA_CHECK_LAUNCH("channel_moments_partial_kernel");
  channel_moments_finish_kernel<<<channel_blocks(d.c), kMapThreads, 0, stream>>>(
      d.c, parts, x != nullptr, p1, p2, s1, s2);
  MCD_CUDA_CHECK_LAUNCH("channel_moments_finish_kernel");
}

// What channel_affine_kernel does besides the map: its ReLU gate (unused with Relu::None),
// addend and masked_u.
template <class T>
struct AffineTail {
  Relu relu = Relu::None;
  Gate<T> gate;
  const T* addend = nullptr;
  T* masked_u = nullptr;
};

template <class T, Relu kRelu>
void launch_affine_as(const BatchNormDims& d, const T* u, const double* a, const T* x,
                      const double* m, const double* b, const double* k, const AffineTail<T>& t,
                      T* out, cudaStream_t stream) {
  const std::int64_t n = d.n * d.c * d.s;
  if (n < (std::int64_t{1} << 31) - static_cast<std::int64_t>(map_blocks(n)) * kMapThreads)
    channel_affine_kernel<T, std::uint32_t, kRelu><<<map_blocks(n), kMapThreads, 0, stream>>>(
        d, u, a, x, m, b, k, t.gate, t.addend, t.masked_u, out);
  else
    channel_affine_kernel<T, std::int64_t, kRelu><<<map_blocks(n), kMapThreads, 0, stream>>>(
        d, u, a, x, m, b, k, t.gate, t.addend, t.masked_u, out);
  MCD_CUDA_CHECK_LAUNCH("channel_affine_kernel");
}

template <class T>
void launch_affine(const BatchNormDims& d, const T* u, const double* a, const T* x, const double* m,
                   const double* b, const double* k, T* out, cudaStream_t stream,
                   const AffineTail<T>& t = {}) {
  if (d.n * d.c * d.s == 0) return;
  switch (t.relu) {
    case Relu::None:
      return launch_affine_as<T, Relu::None>(d, u, a, x, m, b, k, t, out, stream);
    case Relu::MaskInput:
      return launch_affine_as<T, Relu::MaskInput>(d, u, a, x, m, b, k, t, out, stream);
    case Relu::MaskOutput:
      return launch_affine_as<T, Relu::MaskOutput>(d, u, a, x, m, b, k, t, out, stream);
  }
}

}  // namespace

template <class T>
void batch_norm_forward_train_cuda(const BatchNormDims& d, const T* x, const T* weight,
                                   const T* bias, double eps, const cpu::BatchNormTail<T>& tail,
                                   T* y, double* mean, double* var, double* invstd,
                                   cudaStream_t stream) {
  if (d.c == 0) return;
  MCD_CUDA_REQUIRE(d.n * d.s > 0, "batch_norm_forward_train_cuda: no values per channel");
  Scratch w(d.c, 5, stream);  // first, sum, sq, scale, shift
  first_value_kernel<T><<<channel_blocks(d.c), kMapThreads, 0, stream>>>(d, x, w[0]);
  MCD_CUDA_CHECK_LAUNCH("first_value_kernel");
  launch_moments<T>(d, x, w[0], x, w[0], w[1], w[2], stream);
  forward_train_coefficients_kernel<T><<<channel_blocks(d.c), kMapThreads, 0, stream>>>(
      d, w[0], w[1], w[2], weight, bias, eps, mean, var, invstd, w[3], w[4]);
  MCD_CUDA_CHECK_LAUNCH("forward_train_coefficients_kernel");
  // With the ReLU, the gate is the map itself plus the residual: out = v > 0 ? v : 0.
  launch_affine<T>(
      d, nullptr, w[3], x, mean, w[3], w[4], y, stream,
      {tail.relu ? Relu::MaskOutput : Relu::None, {w[3], w[4], tail.residual}, tail.residual});
}

template <class T>
void batch_norm_forward_eval_cuda(const BatchNormDims& d, const T* x, const T* weight,
                                  const T* bias, const double* mean, const double* invstd,
                                  const cpu::BatchNormTail<T>& tail, T* y, cudaStream_t stream) {
  if (d.c == 0) return;
  Scratch w(d.c, 2, stream);  // scale, shift
  forward_eval_coefficients_kernel<T>
      <<<channel_blocks(d.c), kMapThreads, 0, stream>>>(d, weight, bias, invstd, w[0], w[1]);
  MCD_CUDA_CHECK_LAUNCH("forward_eval_coefficients_kernel");
  launch_affine<T>(
      d, nullptr, w[0], x, mean, w[0], w[1], y, stream,
      {tail.relu ? Relu::MaskOutput : Relu::None, {w[0], w[1], tail.residual}, tail.residual});
}

template <class T>
void batch_norm_backward_cuda(const BatchNormDims& d, bool training,
                              const cpu::BatchNormTail<T>& tail, const T* dy, const T* x,
                              const T* weight, const T* bias, const double* mean,
                              const double* invstd, T* dx, T* dweight, T* dbias, T* dresidual,
                              cudaStream_t stream) {
  if (d.c == 0) return;
  const bool relu = tail.relu;
  if (!relu) dresidual = nullptr;  // without the ReLU the residual's gradient is dy itself
  // The masked dy for the residual is written by the dx map: without a wanted dx, into scratch.
  DeviceBuffer dx_scratch;
  if (dresidual != nullptr && dx == nullptr) {
    dx_scratch = DeviceBuffer(current_device(),
                              static_cast<std::size_t>(d.n * d.c * d.s) * sizeof(T), stream);
    dx = dx_scratch.as<T>();
  }
  Scratch w(d.c, relu ? 7 : 5, stream);  // sum_dy, sum_dy_xc, a, b, k[, gate scale, shift]
  // With the ReLU every use of dy below reads it masked: the gate is the forward's scale and
  // shift, from the forward's coefficient kernel (the training forward computes them with the
  // same expressions from the invstd it saves).
  const Gate<T> gate = relu ? Gate<T>{w[5], w[6], tail.residual} : Gate<T>{};
  if (relu) {
    forward_eval_coefficients_kernel<T>
        <<<channel_blocks(d.c), kMapThreads, 0, stream>>>(d, weight, bias, invstd, w[5], w[6]);
    MCD_CUDA_CHECK_LAUNCH("forward_eval_coefficients_kernel");
  }
  if (training || dweight != nullptr || dbias != nullptr) {
    launch_moments<T>(d, dy, nullptr, x, mean, w[0], w[1], stream, gate);
  } else {
    MCD_CUDA_CHECK(cudaMemsetAsync(w[0], 0, 2 * d.c * sizeof(double), stream));
  }
  backward_coefficients_kernel<T><<<channel_blocks(d.c), kMapThreads, 0, stream>>>(
      d, training, weight, invstd, w[0], w[1], dweight, dbias, w[2], w[3], w[4]);
  MCD_CUDA_CHECK_LAUNCH("backward_coefficients_kernel");
  if (dx != nullptr)
    launch_affine<T>(d, dy, w[2], x, mean, w[3], w[4], dx, stream,
                     {relu ? Relu::MaskInput : Relu::None, gate, nullptr, dresidual});
}

template <class T>
void batch_norm_jvp_cuda(const BatchNormDims& d, bool training, const cpu::BatchNormTail<T>& tail,
                         const T* x, const T* x_t, const T* weight, const T* bias,
                         const T* weight_t, const T* bias_t, const T* residual_t,
                         const double* mean, const double* invstd, T* y_t, cudaStream_t stream) {
  if (d.c == 0) return;
  const bool relu = tail.relu;
  Scratch w(d.c, relu ? 7 : 5, stream);  // sum(x_t), cross, a, b, k[, gate scale, shift]
  if (training && x_t != nullptr)
    launch_moments<T>(d, x_t, nullptr, x, mean, w[0], w[1], stream);
  else
    MCD_CUDA_CHECK(cudaMemsetAsync(w[0], 0, 2 * d.c * sizeof(double), stream));
  jvp_coefficients_kernel<T><<<channel_blocks(d.c), kMapThreads, 0, stream>>>(
      d, training, x_t != nullptr, weight, weight_t, bias_t, invstd, w[0], w[1], w[2], w[3], w[4]);
  MCD_CUDA_CHECK_LAUNCH("jvp_coefficients_kernel");
  // y_t = the batch norm's y_t + residual_t; with the ReLU, masked.
  if (relu) {
    forward_eval_coefficients_kernel<T>
        <<<channel_blocks(d.c), kMapThreads, 0, stream>>>(d, weight, bias, invstd, w[5], w[6]);
    MCD_CUDA_CHECK_LAUNCH("forward_eval_coefficients_kernel");
  }
  launch_affine<T>(d, x_t, w[2], x, mean, w[3], w[4], y_t, stream,
                   {relu ? Relu::MaskOutput : Relu::None,
                    relu ? Gate<T>{w[5], w[6], tail.residual} : Gate<T>{}, residual_t});
}

template <class R>
void batch_norm_eval_stats_cuda(std::int64_t c, const R* running_mean, std::int64_t mean_stride,
                                const R* running_var, std::int64_t var_stride, double eps,
                                double* mean, double* invstd, cudaStream_t stream) {
  if (c == 0) return;
  eval_stats_kernel<R><<<channel_blocks(c), kMapThreads, 0, stream>>>(
      c, running_mean, mean_stride, running_var, var_stride, eps, mean, invstd);
  MCD_CUDA_CHECK_LAUNCH("eval_stats_kernel");
}

template <class R>
void batch_norm_update_running_cuda(std::int64_t c, R* running_mean, std::int64_t mean_stride,
                                    R* running_var, std::int64_t var_stride, const double* mean,
                                    const double* var, std::int64_t count, double momentum,
                                    cudaStream_t stream) {
  if (c == 0) return;
  const double unbias = static_cast<double>(count) / static_cast<double>(count - 1);
  update_running_kernel<R><<<channel_blocks(c), kMapThreads, 0, stream>>>(
      c, running_mean, mean_stride, running_var, var_stride, mean, var, unbias, momentum);
  MCD_CUDA_CHECK_LAUNCH("update_running_kernel");
}

#define MCD_INSTANTIATE_BATCH_NORM_CUDA(T)                                                         \
  template void batch_norm_forward_train_cuda<T>(const BatchNormDims&, const T*, const T*,         \
                                                 const T*, double, const cpu::BatchNormTail<T>&,   \
                                                 T*, double*, double*, double*, cudaStream_t);     \
  template void batch_norm_forward_eval_cuda<T>(const BatchNormDims&, const T*, const T*,          \
                                                const T*, const double*, const double*,            \
                                                const cpu::BatchNormTail<T>&, T*, cudaStream_t);   \
  template void batch_norm_backward_cuda<T>(                                                       \
      const BatchNormDims&, bool, const cpu::BatchNormTail<T>&, const T*, const T*, const T*,      \
      const T*, const double*, const double*, T*, T*, T*, T*, cudaStream_t);                       \
  template void batch_norm_jvp_cuda<T>(const BatchNormDims&, bool, const cpu::BatchNormTail<T>&,   \
                                       const T*, const T*, const T*, const T*, const T*, const T*, \
                                       const T*, const double*, const double*, T*, cudaStream_t);  \
  template void batch_norm_eval_stats_cuda<T>(std::int64_t, const T*, std::int64_t, const T*,      \
                                              std::int64_t, double, double*, double*,              \
                                              cudaStream_t);                                       \
  template void batch_norm_update_running_cuda<T>(std::int64_t, T*, std::int64_t, T*,              \
                                                  std::int64_t, const double*, const double*,      \
                                                  std::int64_t, double, cudaStream_t);
MCD_INSTANTIATE_BATCH_NORM_CUDA(float)
MCD_INSTANTIATE_BATCH_NORM_CUDA(double)
#undef MCD_INSTANTIATE_BATCH_NORM_CUDA

}  // namespace mcd::kernels::cuda
