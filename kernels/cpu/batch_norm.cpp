// Batch normalisation kernels, statistics accumulated in double. Every per-element map is
// affine in (u, x - mean) with per-channel coefficients, so the forward, VJP and JVP share two
// primitives, channel moments and a channel affine map. Both stream memory in order: when the
// spatial extent S is long, over (n, c) runs of S values with per-channel partial sums per row
// chunk; when S is short (2-D inputs, late ResNet stages), over rows of C * S columns, where
// per-(n, c) loops would be dominated by loop overhead.
#include <mcd/kernels/cpu/batch_norm.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace mcd::kernels::cpu {
namespace {

constexpr std::int64_t kParallelMin = 1 << 14;
constexpr std::int64_t kShortSpatial = 32;   // below this S, sweep rows of C * S columns
constexpr std::int64_t kBlockColumns = 512;  // columns per task in the row sweep
constexpr std::int64_t kRowChunks = 16;      // row chunks of the long-S statistics

bool worth_parallel(const BatchNormDims& d) {
  return d.n * d.c * d.s > kParallelMin;
}

// Adds sum(u - su) to a1 and, when x is given, sum((u - su)(x - sx)) to a2 over one contiguous
// run. Several independent partial sums keep the double adds pipelined (a single accumulator
// is bound by the add latency, not by memory).
template <class T>
void accumulate_run(std::int64_t len, const T* u, double su, const T* x, double sx, double& a1,
                    double& a2) {
  constexpr std::int64_t kLanes = 8;
  double p1[kLanes] = {}, p2[kLanes] = {};
  std::int64_t s = 0;
  if (x != nullptr) {
    for (; s + kLanes <= len; s += kLanes)
      for (std::int64_t l = 0; l < kLanes; ++l) {
        const double du = static_cast<double>(u[s + l]) - su;
        p1[l] += du;
        p2[l] += du * (static_cast<double>(x[s + l]) - sx);
      }
    for (; s < len; ++s) {
      const double du = static_cast<double>(u[s]) - su;
      p1[0] += du;
      p2[0] += du * (static_cast<double>(x[s]) - sx);
    }
  } else {
    for (; s + kLanes <= len; s += kLanes)
      for (std::int64_t l = 0; l < kLanes; ++l)
        p1[l] += static_cast<double>(u[s + l]) - su;
    for (; s < len; ++s)
      p1[0] += static_cast<double>(u[s]) - su;
  }
  for (std::int64_t l = 0; l < kLanes; ++l) {
    a1 += p1[l];
    a2 += p2[l];
  }
}

// Per channel c: s1[c] = sum(u - mu_c) and, when x is given, s2[c] = sum((u - mu_c)(x - m_c)).
// mu may be null (zero shift).
template <class T>
void channel_moments(const BatchNormDims& d, const T* u, const double* mu, const T* x,
                     const double* m, double* s1, double* s2) {
  if (d.s >= kShortSpatial) {
    // Long S: stream memory in order; each of a fixed number of row chunks keeps per-channel
    // partial sums, combined in chunk order so results do not depend on the thread count.
    const std::int64_t chunks = worth_parallel(d) ? std::min<std::int64_t>(d.n, kRowChunks) : 1;
    const auto nc = static_cast<std::size_t>(d.c);
    std::vector<double> part1(static_cast<std::size_t>(chunks) * nc, 0.0), part2(part1);
#pragma omp parallel for if (chunks > 1) schedule(static)
    for (std::int64_t k = 0; k < chunks; ++k) {
      std::vector<double> a1(nc, 0.0), a2(nc, 0.0);
      for (std::int64_t n = k * d.n / chunks; n < (k + 1) * d.n / chunks; ++n)
        for (std::int64_t c = 0; c < d.c; ++c) {
          const std::int64_t at = (n * d.c + c) * d.s;
          accumulate_run(d.s, u + at, mu != nullptr ? mu[c] : 0.0, x != nullptr ? x + at : nullptr,
                         x != nullptr ? m[c] : 0.0, a1[c], a2[c]);
        }
      std::copy(a1.begin(), a1.end(), part1.begin() + k * d.c);
      std::copy(a2.begin(), a2.end(), part2.begin() + k * d.c);
    }
    for (std::int64_t c = 0; c < d.c; ++c) {
      double t1 = 0.0, t2 = 0.0;
      for (std::int64_t k = 0; k < chunks; ++k) {
        t1 += part1[k * d.c + c];
        t2 += part2[k * d.c + c];
      }
      s1[c] = t1;
      if (x != nullptr) s2[c] = t2;
    }
    return;
  }
  // Short S: a task owns a block of whole channels and sweeps every row over its columns.
  const std::int64_t cols = d.c * d.s;
  const std::int64_t per_block = std::max<std::int64_t>(1, kBlockColumns / d.s);  // channels
  const std::int64_t blocks = (d.c + per_block - 1) / per_block;
#pragma omp parallel for if (worth_parallel(d) && blocks > 1) schedule(static)
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    const std::int64_t c0 = blk * per_block, c1 = std::min(d.c, c0 + per_block);
    const std::int64_t k0 = c0 * d.s, nk = (c1 - c0) * d.s;
    std::vector<double> su(nk), sx(nk), a1(nk, 0.0), a2(nk, 0.0);
    for (std::int64_t j = 0; j < nk; ++j) {
      const std::int64_t c = c0 + j / d.s;
      su[j] = mu != nullptr ? mu[c] : 0.0;
      sx[j] = x != nullptr ? m[c] : 0.0;
    }
    for (std::int64_t n = 0; n < d.n; ++n) {
      const T* pu = u + n * cols + k0;
      if (x != nullptr) {
        const T* px = x + n * cols + k0;
#pragma omp simd
        for (std::int64_t j = 0; j < nk; ++j) {
          const double du = static_cast<double>(pu[j]) - su[j];
          a1[j] += du;
          a2[j] += du * (static_cast<double>(px[j]) - sx[j]);
        }
      } else {
#pragma omp simd
        for (std::int64_t j = 0; j < nk; ++j)
          a1[j] += static_cast<double>(pu[j]) - su[j];
      }
    }
    for (std::int64_t c = c0; c < c1; ++c) {
      double t1 = 0.0, t2 = 0.0;
      for (std::int64_t s = 0; s < d.s; ++s) {
        t1 += a1[(c - c0) * d.s + s];
        t2 += a2[(c - c0) * d.s + s];
      }
      s1[c] = t1;
      if (x != nullptr) s2[c] = t2;
    }
  }
}

// out = a_c * u + b_c * (x - m_c) + k_c for every element; u may be null (a is then ignored).
template <class T>
void channel_affine(const BatchNormDims& d, const T* u, const double* a, const T* x,
                    const double* m, const double* b, const double* k, T* out) {
  if (d.s >= kShortSpatial) {
#pragma omp parallel for collapse(2) if (worth_parallel(d)) schedule(static)
    for (std::int64_t n = 0; n < d.n; ++n)
      for (std::int64_t c = 0; c < d.c; ++c) {
        const std::int64_t at = (n * d.c + c) * d.s;
        const double ac = a[c], mc = m[c], bc = b[c], kc = k[c];
        const T* px = x + at;
        T* po = out + at;
        if (u != nullptr) {
          const T* pu = u + at;
#pragma omp simd
          for (std::int64_t s = 0; s < d.s; ++s)
            po[s] = static_cast<T>(ac * static_cast<double>(pu[s]) +
                                   bc * (static_cast<double>(px[s]) - mc) + kc);
        } else {
#pragma omp simd
          for (std::int64_t s = 0; s < d.s; ++s)
            po[s] = static_cast<T>(bc * (static_cast<double>(px[s]) - mc) + kc);
        }
      }
    return;
  }
  // Short S: per-column coefficients, then row sweeps.
  const std::int64_t cols = d.c * d.s;
  std::vector<double> ak(cols), mk(cols), bk(cols), kk(cols);
  for (std::int64_t j = 0; j < cols; ++j) {
    const std::int64_t c = j / d.s;
    ak[j] = a[c];
    mk[j] = m[c];
    bk[j] = b[c];
    kk[j] = k[c];
  }
#pragma omp parallel for if (worth_parallel(d) && d.n > 1) schedule(static)
  for (std::int64_t n = 0; n < d.n; ++n) {
    const T* px = x + n * cols;
    T* po = out + n * cols;
    if (u != nullptr) {
      const T* pu = u + n * cols;
#pragma omp simd
      for (std::int64_t j = 0; j < cols; ++j)
        po[j] = static_cast<T>(ak[j] * static_cast<double>(pu[j]) +
                               bk[j] * (static_cast<double>(px[j]) - mk[j]) + kk[j]);
    } else {
#pragma omp simd
      for (std::int64_t j = 0; j < cols; ++j)
        po[j] = static_cast<T>(bk[j] * (static_cast<double>(px[j]) - mk[j]) + kk[j]);
    }
  }
}

template <class T>
double value_or(const T* p, std::int64_t c, double fallback) {
  return p != nullptr ? static_cast<double>(p[c]) : fallback;
}

using Coefs = std::vector<double>;

}  // namespace

template <class T>
void batch_norm_forward_train_cpu(const BatchNormDims& d, const T* x, const T* weight,
                                  const T* bias, double eps, T* y, double* mean, double* var,
                                  double* invstd) {
  const double count = static_cast<double>(d.n * d.s);
  const std::size_t nc = static_cast<std::size_t>(d.c);
  Coefs first(nc, 0.0), sum(nc), sq(nc), scale(nc), shift(nc);
  // One pass over x - K_c, K_c the channel's first value. By Samuelson's inequality
  // |K_c - mean| <= sqrt(M) std, so the cancellation in sq / M - (sum / M)^2 costs at most a
  // factor M of double precision: far below float32 resolution for any real batch.
  if (count > 0)
    for (std::size_t c = 0; c < nc; ++c)
      first[c] = static_cast<double>(x[static_cast<std::int64_t>(c) * d.s]);
  channel_moments(d, x, first.data(), x, first.data(), sum.data(), sq.data());
  for (std::size_t c = 0; c < nc; ++c) {
    const double shifted_mean = sum[c] / count;
    mean[c] = first[c] + shifted_mean;
    var[c] = std::max(0.0, sq[c] / count - shifted_mean * shifted_mean);
    invstd[c] = 1.0 / std::sqrt(var[c] + eps);
    scale[c] = value_or(weight, static_cast<std::int64_t>(c), 1.0) * invstd[c];
    shift[c] = value_or(bias, static_cast<std::int64_t>(c), 0.0);
  }
  channel_affine<T>(d, nullptr, scale.data(), x, mean, scale.data(), shift.data(), y);
}

template <class T>
void batch_norm_forward_eval_cpu(const BatchNormDims& d, const T* x, const T* weight, const T* bias,
                                 const double* mean, const double* invstd, T* y) {
  const std::size_t nc = static_cast<std::size_t>(d.c);
  Coefs scale(nc), shift(nc);
  for (std::size_t c = 0; c < nc; ++c) {
    scale[c] = value_or(weight, static_cast<std::int64_t>(c), 1.0) * invstd[c];
    shift[c] = value_or(bias, static_cast<std::int64_t>(c), 0.0);
  }
  channel_affine<T>(d, nullptr, scale.data(), x, mean, scale.data(), shift.data(), y);
}

template <class T>
void batch_norm_backward_cpu(const BatchNormDims& d, bool training, const T* dy, const T* x,
                             const T* weight, const double* mean, const double* invstd, T* dx,
                             T* dweight, T* dbias) {
  const double count = static_cast<double>(d.n * d.s);
  const std::size_t nc = static_cast<std::size_t>(d.c);
  Coefs sum_dy(nc, 0.0), sum_dy_xc(nc, 0.0);
  if (training || dweight != nullptr || dbias != nullptr)
    channel_moments(d, dy, nullptr, x, mean, sum_dy.data(), sum_dy_xc.data());
  for (std::size_t c = 0; c < nc; ++c) {
    if (dweight != nullptr) dweight[c] = static_cast<T>(sum_dy_xc[c] * invstd[c]);
    if (dbias != nullptr) dbias[c] = static_cast<T>(sum_dy[c]);
  }
  if (dx == nullptr) return;
  Coefs a(nc), b(nc, 0.0), k(nc, 0.0);
  for (std::size_t c = 0; c < nc; ++c) {
    const double is = invstd[c];
    a[c] = value_or(weight, static_cast<std::int64_t>(c), 1.0) * is;
    if (training) {
      // a * (dy - mean(dy) - xhat * mean(dy * xhat)), with xhat = (x - m) * is
      b[c] = -a[c] * is * (sum_dy_xc[c] * is) / count;
      k[c] = -a[c] * sum_dy[c] / count;
    }
  }
  channel_affine(d, dy, a.data(), x, mean, b.data(), k.data(), dx);
}

template <class T>
void batch_norm_jvp_cpu(const BatchNormDims& d, bool training, const T* x, const T* x_t,
                        const T* weight, const T* weight_t, const T* bias_t, const double* mean,
                        const double* invstd, T* y_t) {
  const double count = static_cast<double>(d.n * d.s);
  const std::size_t nc = static_cast<std::size_t>(d.c);
  // mean(x_t) and sum((x_t - mean(x_t)) (x - m)) per channel, in training mode only; the
  // latter equals sum(x_t (x - m)) because sum(x - m) = 0 up to rounding of m.
  Coefs mt(nc, 0.0), cross(nc, 0.0);
  if (training && x_t != nullptr) {
    channel_moments(d, x_t, nullptr, x, mean, mt.data(), cross.data());
    for (std::size_t c = 0; c < nc; ++c)
      mt[c] /= count;
  }
  // y_t = a * x_t + b * (x - m) + k, collecting the x_t, xhat and constant terms.
  Coefs a(nc, 0.0), b(nc), k(nc);
  for (std::size_t c = 0; c < nc; ++c) {
    const auto ci = static_cast<std::int64_t>(c);
    const double is = invstd[c], w = value_or(weight, ci, 1.0);
    b[c] = value_or(weight_t, ci, 0.0) * is;
    k[c] = value_or(bias_t, ci, 0.0);
    if (x_t == nullptr) continue;
    a[c] = w * is;
    if (training) {
      const double c2 = is * cross[c] / count;  // mean(xhat * (x_t - mean(x_t)))
      b[c] -= w * is * is * c2;
      k[c] -= w * is * mt[c];
    }
  }
  channel_affine(d, x_t, a.data(), x, mean, b.data(), k.data(), y_t);
}

#define MCD_INSTANTIATE_BATCH_NORM(T)                                                              \
  template void batch_norm_forward_train_cpu<T>(const BatchNormDims&, const T*, const T*,          \
                                                const T*, double, T*, double*, double*, double*);  \
  template void batch_norm_forward_eval_cpu<T>(const BatchNormDims&, const T*, const T*, const T*, \
                                               const double*, const double*, T*);                  \
  template void batch_norm_backward_cpu<T>(const BatchNormDims&, bool, const T*, const T*,         \
                                           const T*, const double*, const double*, T*, T*, T*);    \
  template void batch_norm_jvp_cpu<T>(const BatchNormDims&, bool, const T*, const T*, const T*,    \
                                      const T*, const T*, const double*, const double*, T*);
MCD_INSTANTIATE_BATCH_NORM(float)
MCD_INSTANTIATE_BATCH_NORM(double)
#undef MCD_INSTANTIATE_BATCH_NORM

}  // namespace mcd::kernels::cpu
