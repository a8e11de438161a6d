// Softmax-family kernels. Softmax lanes run along V with stride `inner` (unit stride is a
// compile-time specialisation so the common last-dim case vectorises); the per-row losses
// work in double on log-probabilities z * inv_tau - lse, which stay finite even where the
// probability underflows, so a zero target probability contributes exactly 0 to the KL.
#include <mcd/kernels/cpu/softmax.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace mcd::kernels::cpu {
namespace {

constexpr std::int64_t kParallelMin = 1 << 14;

// Calls f(base) for every lane: the V elements base + r * inner of one (outer, inner) pair.
template <class F>
void for_each_lane(std::int64_t outer, std::int64_t v, std::int64_t inner, F&& f) {
  const std::int64_t lanes = outer * inner;
  const bool parallel = lanes > 1 && lanes * v > kParallelMin;
#pragma omp parallel for if (parallel) schedule(static)
  for (std::int64_t l = 0; l < lanes; ++l) {
    const std::int64_t o = l / inner, i = l - o * inner;
    f(o * v * inner + i);
  }
}

template <class F>
void for_each_row(std::int64_t b, std::int64_t v, F&& f) {
  const bool parallel = b > 1 && b * v > kParallelMin;
#pragma omp parallel for if (parallel) schedule(static)
  for (std::int64_t i = 0; i < b; ++i)
    f(i);
}

template <bool kUnit, class T>
void softmax_lane(std::int64_t v, std::int64_t stride, const T* x, double inv_tau, bool log, T* y) {
  const std::int64_t st = kUnit ? 1 : stride;
  T mx = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : mx)
  for (std::int64_t r = 0; r < v; ++r)
    mx = x[r * st] > mx ? x[r * st] : mx;
  const T it = static_cast<T>(inv_tau);
  double sum = 0.0;
  for (std::int64_t r = 0; r < v; ++r) {
    const T e = std::exp((x[r * st] - mx) * it);
    y[r * st] = e;
    sum += static_cast<double>(e);
  }
  if (log) {
    const double log_sum = std::log(sum);
#pragma omp simd
    for (std::int64_t r = 0; r < v; ++r)
      y[r * st] = static_cast<T>(static_cast<double>((x[r * st] - mx) * it) - log_sum);
  } else {
    const T inv = static_cast<T>(1.0 / sum);
#pragma omp simd
    for (std::int64_t r = 0; r < v; ++r)
      y[r * st] *= inv;
  }
}

template <bool kUnit, class T>
void softmax_backward_lane(std::int64_t v, std::int64_t stride, const T* y, const T* g,
                           double inv_tau, T* dx) {
  const std::int64_t st = kUnit ? 1 : stride;
  double dot = 0.0;
#pragma omp simd reduction(+ : dot)
  for (std::int64_t r = 0; r < v; ++r)
    dot += static_cast<double>(g[r * st]) * static_cast<double>(y[r * st]);
#pragma omp simd
  for (std::int64_t r = 0; r < v; ++r)
    dx[r * st] = static_cast<T>(inv_tau * static_cast<double>(y[r * st]) *
                                (static_cast<double>(g[r * st]) - dot));
}

template <bool kUnit, class T>
void log_softmax_backward_lane(std::int64_t v, std::int64_t stride, const T* y, const T* g,
                               double inv_tau, T* dx) {
  const std::int64_t st = kUnit ? 1 : stride;
  double sum_g = 0.0;
#pragma omp simd reduction(+ : sum_g)
  for (std::int64_t r = 0; r < v; ++r)
    sum_g += static_cast<double>(g[r * st]);
  for (std::int64_t r = 0; r < v; ++r)
    dx[r * st] = static_cast<T>(inv_tau * (static_cast<double>(g[r * st]) -
                                           std::exp(static_cast<double>(y[r * st])) * sum_g));
}

template <bool kUnit, class T>
void log_softmax_jvp_lane(std::int64_t v, std::int64_t stride, const T* y, const T* x_t,
                          double inv_tau, T* y_t) {
  const std::int64_t st = kUnit ? 1 : stride;
  double dot = 0.0;
  for (std::int64_t r = 0; r < v; ++r)
    dot += std::exp(static_cast<double>(y[r * st])) * static_cast<double>(x_t[r * st]);
#pragma omp simd
  for (std::int64_t r = 0; r < v; ++r)
    y_t[r * st] = static_cast<T>(inv_tau * (static_cast<double>(x_t[r * st]) - dot));
}

// log-sum-exp of z * inv_tau over one row, in double.
template <class T>
double row_lse(std::int64_t v, const T* z, double inv_tau) {
  double mx = -std::numeric_limits<double>::infinity();
  for (std::int64_t c = 0; c < v; ++c)
    mx = std::max(mx, static_cast<double>(z[c]));
  double sum = 0.0;
  for (std::int64_t c = 0; c < v; ++c)
    sum += std::exp((static_cast<double>(z[c]) - mx) * inv_tau);
  return mx * inv_tau + std::log(sum);
}

// log softmax(z * inv_tau)_c given the row's lse.
template <class T>
double log_prob(const T* z, std::int64_t c, double inv_tau, double lse) {
  return static_cast<double>(z[c]) * inv_tau - lse;
}

}  // namespace

// ---- softmax / log_softmax along the middle axis

template <class T>
void softmax_forward_cpu(std::int64_t outer, std::int64_t v, std::int64_t inner, const T* x,
                         double inv_tau, bool log, T* y) {
  if (inner == 1)
    for_each_lane(outer, v, inner, [&](std::int64_t base) {
      softmax_lane<true>(v, 1, x + base, inv_tau, log, y + base);
    });
  else
    for_each_lane(outer, v, inner, [&](std::int64_t base) {
      softmax_lane<false>(v, inner, x + base, inv_tau, log, y + base);
    });
}

template <class T>
void softmax_backward_cpu(std::int64_t outer, std::int64_t v, std::int64_t inner, const T* y,
                          const T* g, double inv_tau, T* dx) {
  if (inner == 1)
    for_each_lane(outer, v, inner, [&](std::int64_t base) {
      softmax_backward_lane<true>(v, 1, y + base, g + base, inv_tau, dx + base);
    });
  else
    for_each_lane(outer, v, inner, [&](std::int64_t base) {
      softmax_backward_lane<false>(v, inner, y + base, g + base, inv_tau, dx + base);
    });
}

template <class T>
void log_softmax_backward_cpu(std::int64_t outer, std::int64_t v, std::int64_t inner, const T* y,
                              const T* g, double inv_tau, T* dx) {
  if (inner == 1)
    for_each_lane(outer, v, inner, [&](std::int64_t base) {
      log_softmax_backward_lane<true>(v, 1, y + base, g + base, inv_tau, dx + base);
    });
  else
    for_each_lane(outer, v, inner, [&](std::int64_t base) {
      log_softmax_backward_lane<false>(v, inner, y + base, g + base, inv_tau, dx + base);
    });
}

template <class T>
void log_softmax_jvp_cpu(std::int64_t outer, std::int64_t v, std::int64_t inner, const T* y,
                         const T* x_t, double inv_tau, T* y_t) {
  if (inner == 1)
    for_each_lane(outer, v, inner, [&](std::int64_t base) {
      log_softmax_jvp_lane<true>(v, 1, y + base, x_t + base, inv_tau, y_t + base);
    });
  else
    for_each_lane(outer, v, inner, [&](std::int64_t base) {
      log_softmax_jvp_lane<false>(v, inner, y + base, x_t + base, inv_tau, y_t + base);
    });
}

// ---- cross-entropy

template <class T>
void cross_entropy_forward_cpu(std::int64_t b, std::int64_t v, const T* logits,
                               const std::int64_t* labels, T* loss, double* lse) {
  for_each_row(b, v, [&](std::int64_t i) {
    const T* z = logits + i * v;
    lse[i] = row_lse(v, z, 1.0);
    loss[i] = static_cast<T>(lse[i] - static_cast<double>(z[labels[i]]));
  });
}

template <class T>
void cross_entropy_backward_cpu(std::int64_t b, std::int64_t v, const T* logits,
                                const std::int64_t* labels, const double* lse, const T* g,
                                T* dlogits) {
  for_each_row(b, v, [&](std::int64_t i) {
    const T* z = logits + i * v;
    T* dz = dlogits + i * v;
    const double gi = static_cast<double>(g[i]);
    for (std::int64_t c = 0; c < v; ++c)
      dz[c] = static_cast<T>(std::exp(log_prob(z, c, 1.0, lse[i])) * gi);
    dz[labels[i]] = static_cast<T>(static_cast<double>(dz[labels[i]]) - gi);
  });
}

template <class T>
void cross_entropy_jvp_cpu(std::int64_t b, std::int64_t v, const T* logits,
                           const std::int64_t* labels, const double* lse, const T* logits_t,
                           T* loss_t) {
  for_each_row(b, v, [&](std::int64_t i) {
    const T* z = logits + i * v;
    const T* zt = logits_t + i * v;
    double acc = 0.0;
    for (std::int64_t c = 0; c < v; ++c)
      acc += std::exp(log_prob(z, c, 1.0, lse[i])) * static_cast<double>(zt[c]);
    loss_t[i] = static_cast<T>(acc - static_cast<double>(zt[labels[i]]));
  });
}

// ---- KL(softmax(t / tau) || softmax(s / tau))

template <class T>
void kl_div_softmax_forward_cpu(std::int64_t b, std::int64_t v, const T* s, const T* t,
                                double inv_tau, T* kl, double* lse_s, double* lse_t) {
  for_each_row(b, v, [&](std::int64_t i) {
    const T* si = s + i * v;
    const T* ti = t + i * v;
    lse_s[i] = row_lse(v, si, inv_tau);
    lse_t[i] = row_lse(v, ti, inv_tau);
    double acc = 0.0;
    for (std::int64_t c = 0; c < v; ++c) {
      const double lt = log_prob(ti, c, inv_tau, lse_t[i]);
      acc += std::exp(lt) * (lt - log_prob(si, c, inv_tau, lse_s[i]));
    }
    kl[i] = static_cast<T>(acc);
  });
}

template <class T>
void kl_div_softmax_backward_cpu(std::int64_t b, std::int64_t v, const T* s, const T* t,
                                 double inv_tau, const double* lse_s, const double* lse_t,
                                 const T* g, T* ds, T* dt) {
  for_each_row(b, v, [&](std::int64_t i) {
    const T* si = s + i * v;
    const T* ti = t + i * v;
    const double gi = inv_tau * static_cast<double>(g[i]);
    // The row's KL again, in double: dt needs it and the saved output may be float32.
    double kl = 0.0;
    if (dt != nullptr)
      for (std::int64_t c = 0; c < v; ++c) {
        const double lt = log_prob(ti, c, inv_tau, lse_t[i]);
        kl += std::exp(lt) * (lt - log_prob(si, c, inv_tau, lse_s[i]));
      }
    for (std::int64_t c = 0; c < v; ++c) {
      const double ls = log_prob(si, c, inv_tau, lse_s[i]);
      const double lt = log_prob(ti, c, inv_tau, lse_t[i]);
      const double qt = std::exp(lt);
      if (ds != nullptr) ds[i * v + c] = static_cast<T>((std::exp(ls) - qt) * gi);
      if (dt != nullptr) dt[i * v + c] = static_cast<T>(qt * ((lt - ls) - kl) * gi);
    }
  });
}

template <class T>
void kl_div_softmax_jvp_cpu(std::int64_t b, std::int64_t v, const T* s, const T* t, double inv_tau,
                            const double* lse_s, const double* lse_t, const T* s_t, const T* t_t,
                            T* kl_t) {
  for_each_row(b, v, [&](std::int64_t i) {
    const T* si = s + i * v;
    const T* ti = t + i * v;
    // (qT (d - kl)) . t_t = (qT d) . t_t - kl * (qT . t_t), with d = log qT - log qS.
    double student = 0.0, qt_d_tt = 0.0, qt_tt = 0.0, kl = 0.0;
    for (std::int64_t c = 0; c < v; ++c) {
      const double ls = log_prob(si, c, inv_tau, lse_s[i]);
      const double lt = log_prob(ti, c, inv_tau, lse_t[i]);
      const double qt = std::exp(lt);
      if (s_t != nullptr) student += (std::exp(ls) - qt) * static_cast<double>(s_t[i * v + c]);
      if (t_t != nullptr) {
        const double tt = static_cast<double>(t_t[i * v + c]);
        kl += qt * (lt - ls);
        qt_d_tt += qt * (lt - ls) * tt;
        qt_tt += qt * tt;
      }
    }
    kl_t[i] = static_cast<T>(inv_tau * (student + qt_d_tt - kl * qt_tt));
  });
}

#define MCD_INSTANTIATE_SOFTMAX(T)                                                                 \
  template void softmax_forward_cpu<T>(std::int64_t, std::int64_t, std::int64_t, const T*, double, \
                                       bool, T*);                                                  \
  template void softmax_backward_cpu<T>(std::int64_t, std::int64_t, std::int64_t, const T*,        \
                                        const T*, double, T*);                                     \
  template void log_softmax_backward_cpu<T>(std::int64_t, std::int64_t, std::int64_t, const T*,    \
                                            const T*, double, T*);                                 \
  template void log_softmax_jvp_cpu<T>(std::int64_t, std::int64_t, std::int64_t, const T*,         \
                                       const T*, double, T*);                                      \
  template void cross_entropy_forward_cpu<T>(std::int64_t, std::int64_t, const T*,                 \
                                             const std::int64_t*, T*, double*);                    \
  template void cross_entropy_backward_cpu<T>(std::int64_t, std::int64_t, const T*,                \
                                              const std::int64_t*, const double*, const T*, T*);   \
  template void cross_entropy_jvp_cpu<T>(std::int64_t, std::int64_t, const T*,                     \
                                         const std::int64_t*, const double*, const T*, T*);        \
  template void kl_div_softmax_forward_cpu<T>(std::int64_t, std::int64_t, const T*, const T*,      \
                                              double, T*, double*, double*);                       \
  template void kl_div_softmax_backward_cpu<T>(std::int64_t, std::int64_t, const T*, const T*,     \
                                               double, const double*, const double*, const T*, T*, \
                                               T*);                                                \
  template void kl_div_softmax_jvp_cpu<T>(std::int64_t, std::int64_t, const T*, const T*, double,  \
                                          const double*, const double*, const T*, const T*, T*);
MCD_INSTANTIATE_SOFTMAX(float)
MCD_INSTANTIATE_SOFTMAX(double)
#undef MCD_INSTANTIATE_SOFTMAX

}  // namespace mcd::kernels::cpu
