// Batch normalisation kernels: one OpenMP task per channel, statistics accumulated in double.
// Every per-element map here is affine in (u, x - mean) with per-channel coefficients, so the
// forward, VJP and JVP share two primitives: a channel inner product and a channel affine map.
#include <mcd/kernels/cpu/batch_norm.h>

#include <cmath>

namespace mcd::kernels::cpu {
namespace {

constexpr std::int64_t kParallelMin = 1 << 14;

// Runs f(c) for every channel, in parallel when the tensor is large enough to pay for it.
template <class F>
void for_each_channel(const BatchNormDims& d, F&& f) {
  const bool parallel = d.n * d.c * d.s > kParallelMin && d.c > 1;
#pragma omp parallel for if (parallel) schedule(static)
  for (std::int64_t c = 0; c < d.c; ++c) f(c);
}

template <class T>
const T* row(const BatchNormDims& d, const T* base, std::int64_t n, std::int64_t c) {
  return base + (n * d.c + c) * d.s;
}

// sum over channel c of u.
template <class T>
double channel_sum(const BatchNormDims& d, std::int64_t c, const T* u) {
  double acc = 0.0;
  for (std::int64_t n = 0; n < d.n; ++n) {
    const T* pu = row(d, u, n, c);
    double a = 0.0;
#pragma omp simd reduction(+ : a)
    for (std::int64_t s = 0; s < d.s; ++s) a += static_cast<double>(pu[s]);
    acc += a;
  }
  return acc;
}

// sum over channel c of (u - mu) * (x - m).
template <class T>
double channel_dot(const BatchNormDims& d, std::int64_t c, const T* u, double mu, const T* x,
                   double m) {
  double acc = 0.0;
  for (std::int64_t n = 0; n < d.n; ++n) {
    const T* pu = row(d, u, n, c);
    const T* px = row(d, x, n, c);
    double a = 0.0;
#pragma omp simd reduction(+ : a)
    for (std::int64_t s = 0; s < d.s; ++s)
      a += (static_cast<double>(pu[s]) - mu) * (static_cast<double>(px[s]) - m);
    acc += a;
  }
  return acc;
}

// out = a * u + b * (x - m) + k over channel c; u may be null (then a is ignored).
template <class T>
void channel_affine(const BatchNormDims& d, std::int64_t c, const T* u, double a, const T* x,
                    double m, double b, double k, T* out) {
  for (std::int64_t n = 0; n < d.n; ++n) {
    const T* px = row(d, x, n, c);
    T* po = out + (n * d.c + c) * d.s;
    if (u != nullptr) {
      const T* pu = row(d, u, n, c);
#pragma omp simd
      for (std::int64_t s = 0; s < d.s; ++s)
        po[s] = static_cast<T>(a * static_cast<double>(pu[s]) +
                               b * (static_cast<double>(px[s]) - m) + k);
    } else {
#pragma omp simd
      for (std::int64_t s = 0; s < d.s; ++s)
        po[s] = static_cast<T>(b * (static_cast<double>(px[s]) - m) + k);
    }
  }
}

template <class T>
double value_or(const T* p, std::int64_t c, double fallback) {
  return p != nullptr ? static_cast<double>(p[c]) : fallback;
}

}  // namespace

template <class T>
void batch_norm_forward_train_cpu(const BatchNormDims& d, const T* x, const T* weight,
                                  const T* bias, double eps, T* y, double* mean, double* var,
                                  double* invstd) {
  const double count = static_cast<double>(d.n * d.s);
  for_each_channel(d, [&](std::int64_t c) {
    // Two passes (mean, then centred squares) keep the variance accurate when |mean| >> std.
    const double m = channel_sum(d, c, x) / count;
    const double v = channel_dot(d, c, x, m, x, m) / count;
    const double is = 1.0 / std::sqrt(v + eps);
    mean[c] = m;
    var[c] = v;
    invstd[c] = is;
    channel_affine<T>(d, c, nullptr, 0.0, x, m, value_or(weight, c, 1.0) * is,
                      value_or(bias, c, 0.0), y);
  });
}

template <class T>
void batch_norm_forward_eval_cpu(const BatchNormDims& d, const T* x, const T* weight,
                                 const T* bias, const double* mean, const double* invstd, T* y) {
  for_each_channel(d, [&](std::int64_t c) {
    channel_affine<T>(d, c, nullptr, 0.0, x, mean[c], value_or(weight, c, 1.0) * invstd[c],
                      value_or(bias, c, 0.0), y);
  });
}

template <class T>
void batch_norm_backward_cpu(const BatchNormDims& d, bool training, const T* dy, const T* x,
                             const T* weight, const double* mean, const double* invstd, T* dx,
                             T* dweight, T* dbias) {
  const double count = static_cast<double>(d.n * d.s);
  const bool need_sums = training || dweight != nullptr || dbias != nullptr;
  for_each_channel(d, [&](std::int64_t c) {
    const double m = mean[c], is = invstd[c];
    double sum_dy = 0.0, sum_dy_xhat = 0.0;
    if (need_sums) {
      sum_dy = channel_sum(d, c, dy);
      sum_dy_xhat = channel_dot(d, c, dy, 0.0, x, m) * is;
    }
    if (dweight != nullptr) dweight[c] = static_cast<T>(sum_dy_xhat);
    if (dbias != nullptr) dbias[c] = static_cast<T>(sum_dy);
    if (dx == nullptr) return;
    const double a = value_or(weight, c, 1.0) * is;
    if (training) {
      // a * (dy - mean(dy) - xhat * mean(dy * xhat)), with xhat = (x - m) * is
      channel_affine(d, c, dy, a, x, m, -a * is * sum_dy_xhat / count, -a * sum_dy / count, dx);
    } else {
      channel_affine(d, c, dy, a, x, m, 0.0, 0.0, dx);
    }
  });
}

template <class T>
void batch_norm_jvp_cpu(const BatchNormDims& d, bool training, const T* x, const T* x_t,
                        const T* weight, const T* weight_t, const T* bias_t, const double* mean,
                        const double* invstd, T* y_t) {
  const double count = static_cast<double>(d.n * d.s);
  for_each_channel(d, [&](std::int64_t c) {
    const double m = mean[c], is = invstd[c];
    const double w = value_or(weight, c, 1.0);
    // y_t = a * x_t + b * (x - m) + k, collecting the x_t, xhat and constant terms.
    double a = 0.0, b = value_or(weight_t, c, 0.0) * is, k = value_or(bias_t, c, 0.0);
    if (x_t != nullptr) {
      a = w * is;
      if (training) {
        const double mt = channel_sum(d, c, x_t) / count;
        // mean(xhat * (x_t - mt)) = is * mean((x - m) * (x_t - mt))
        const double c2 = is * channel_dot(d, c, x_t, mt, x, m) / count;
        b -= w * is * is * c2;
        k -= w * is * mt;
      }
    }
    channel_affine(d, c, x_t, a, x, m, b, k, y_t);
  });
}

#define MCD_INSTANTIATE_BATCH_NORM(T)                                                          \
  template void batch_norm_forward_train_cpu<T>(const BatchNormDims&, const T*, const T*,     \
                                                const T*, double, T*, double*, double*,       \
                                                double*);                                     \
  template void batch_norm_forward_eval_cpu<T>(const BatchNormDims&, const T*, const T*,      \
                                               const T*, const double*, const double*, T*);   \
  template void batch_norm_backward_cpu<T>(const BatchNormDims&, bool, const T*, const T*,    \
                                           const T*, const double*, const double*, T*, T*,    \
                                           T*);                                               \
  template void batch_norm_jvp_cpu<T>(const BatchNormDims&, bool, const T*, const T*,         \
                                      const T*, const T*, const T*, const double*,            \
                                      const double*, T*);
MCD_INSTANTIATE_BATCH_NORM(float)
MCD_INSTANTIATE_BATCH_NORM(double)
#undef MCD_INSTANTIATE_BATCH_NORM

}  // namespace mcd::kernels::cpu
