// Softmax-family kernels (softmax.h; CPU twin kernels/cpu/softmax.cpp, whose arithmetic each
// row function repeats: softmax in T with a double row sum, losses in double on
// log-probabilities z * inv_tau - lse). Every row (a softmax lane, or a (B, V) logits row)
// belongs to one thread group (reduce_rows.cuh); the group's reductions hand every thread the
// same max and sums, so all threads then write their elements with identical row constants.
#include <mcd/kernels/cuda/softmax.h>

#include <limits>

#include <mcd/kernels/cuda/check.h>

#include "float_math.cuh"
#include "reduce_rows.cuh"

namespace mcd::kernels::cuda {
namespace {

using detail::exp_t;
using detail::launch_rows;

__device__ __forceinline__ double nan_value() {
  return std::numeric_limits<double>::quiet_NaN();
}

// ---- softmax along the middle axis of (outer, V, inner): lane l = (o, i) holds the V
// elements base + c * inner.

__device__ __forceinline__ std::int64_t lane_base(std::int64_t l, std::int64_t v,
                                                  std::int64_t inner) {
  const std::int64_t o = l / inner, i = l - o * inner;
  return o * v * inner + i;
}

template <class T>
struct SoftmaxArgs {
  const T* x;
  T* y;
  std::int64_t v, inner;
  double inv_tau;
  bool log;
};

template <class T>
struct SoftmaxForwardRow {
  template <class G>
  static __device__ void row(const G& grp, const SoftmaxArgs<T>& a, std::int64_t l) {
    const std::int64_t base = lane_base(l, a.v, a.inner), st = a.inner;
    const T* x = a.x + base;
    T* y = a.y + base;
    T mx = -std::numeric_limits<T>::infinity();
    for (std::int64_t c = grp.rank(); c < a.v; c += grp.size()) {
      const T xv = x[c * st];
      mx = xv > mx ? xv : mx;
    }
    const T m = static_cast<T>(grp.max(static_cast<double>(mx)));
    const T it = static_cast<T>(a.inv_tau);
    double s[1] = {0.0};
    for (std::int64_t c = grp.rank(); c < a.v; c += grp.size())
      s[0] += static_cast<double>(exp_t((x[c * st] - m) * it));
    grp.sum(s);
    if (a.log) {
      const double log_sum = log(s[0]);
      for (std::int64_t c = grp.rank(); c < a.v; c += grp.size())
        y[c * st] = static_cast<T>(static_cast<double>((x[c * st] - m) * it) - log_sum);
    } else {
      const T inv = static_cast<T>(1.0 / s[0]);
      for (std::int64_t c = grp.rank(); c < a.v; c += grp.size())
        y[c * st] = exp_t((x[c * st] - m) * it) * inv;
    }
  }
};

template <class T>
struct SoftmaxRuleArgs {
  const T* y;
  const T* u;
  T* out;
  std::int64_t v, inner;
  double inv_tau;
};

// softmax:           s = sum u y,      out = inv_tau * y * (u - s)
// log_softmax VJP:   s = sum u,        out = inv_tau * (u - exp(y) * s)
// log_softmax JVP:   s = sum exp(y) u, out = inv_tau * (u - s)
template <class T, SoftmaxRuleKernel K>
struct SoftmaxRuleRow {
  template <class G>
  static __device__ void row(const G& grp, const SoftmaxRuleArgs<T>& a, std::int64_t l) {
    const std::int64_t base = lane_base(l, a.v, a.inner), st = a.inner;
    const T* y = a.y + base;
    const T* u = a.u + base;
    T* out = a.out + base;
    double s[1] = {0.0};
    for (std::int64_t c = grp.rank(); c < a.v; c += grp.size()) {
      const double yv = static_cast<double>(y[c * st]), uv = static_cast<double>(u[c * st]);
      if constexpr (K == SoftmaxRuleKernel::SoftmaxVjpJvp)
        s[0] += uv * yv;
      else if constexpr (K == SoftmaxRuleKernel::LogSoftmaxVjp)
        s[0] += uv;
      else
        s[0] += exp(yv) * uv;
    }
    grp.sum(s);
    for (std::int64_t c = grp.rank(); c < a.v; c += grp.size()) {
      const double yv = static_cast<double>(y[c * st]), uv = static_cast<double>(u[c * st]);
      double r;
      if constexpr (K == SoftmaxRuleKernel::SoftmaxVjpJvp)
        r = a.inv_tau * yv * (uv - s[0]);
      else if constexpr (K == SoftmaxRuleKernel::LogSoftmaxVjp)
        r = a.inv_tau * (uv - exp(yv) * s[0]);
      else
        r = a.inv_tau * (uv - s[0]);
      out[c * st] = static_cast<T>(r);
    }
  }
};

// ---- per-row losses over (B, V) logits

// log-sum-exp of z * inv_tau over one row, in double (cpu row_lse).
template <class G, class T>
__device__ double row_lse(const G& grp, const T* z, std::int64_t v, double inv_tau) {
  double mx = -std::numeric_limits<double>::infinity();
  for (std::int64_t c = grp.rank(); c < v; c += grp.size()) {
    const double zv = static_cast<double>(z[c]);
    mx = zv > mx ? zv : mx;
  }
  mx = grp.max(mx);
  double s[1] = {0.0};
  for (std::int64_t c = grp.rank(); c < v; c += grp.size())
    s[0] += exp((static_cast<double>(z[c]) - mx) * inv_tau);
  grp.sum(s);
  return mx * inv_tau + log(s[0]);
}

template <class T>
struct CrossEntropyArgs {
  const T* logits;  // (B, V)
  const std::int64_t* labels;
  const T* g;         // backward: (B) cotangent
  const T* logits_t;  // jvp: (B, V) tangent
  T* out;             // forward: loss (B); backward: dlogits (B, V); jvp: loss_t (B)
  double* lse;        // forward writes it, the rules read it
  std::int64_t v;
};

template <class T>
struct CrossEntropyForwardRow {
  template <class G>
  static __device__ void row(const G& grp, const CrossEntropyArgs<T>& a, std::int64_t r) {
    const T* z = a.logits + r * a.v;
    const double lse = row_lse(grp, z, a.v, 1.0);
    if (grp.rank() != 0) return;
    const std::int64_t y = a.labels[r];
    a.lse[r] = lse;
    a.out[r] = static_cast<T>(y >= 0 && y < a.v ? lse - static_cast<double>(z[y]) : nan_value());
  }
};

template <class T>
struct CrossEntropyBackwardRow {
  template <class G>
  static __device__ void row(const G& grp, const CrossEntropyArgs<T>& a, std::int64_t r) {
    const T* z = a.logits + r * a.v;
    T* dz = a.out + r * a.v;
    const std::int64_t y = a.labels[r];
    const bool ok = y >= 0 && y < a.v;
    const double gi = static_cast<double>(a.g[r]), lse = a.lse[r];
    for (std::int64_t c = grp.rank(); c < a.v; c += grp.size()) {
      T val = static_cast<T>(exp(static_cast<double>(z[c]) - lse) * gi);
      if (c == y) val = static_cast<T>(static_cast<double>(val) - gi);
      dz[c] = ok ? val : static_cast<T>(nan_value());
    }
  }
};

template <class T>
struct CrossEntropyJvpRow {
  template <class G>
  static __device__ void row(const G& grp, const CrossEntropyArgs<T>& a, std::int64_t r) {
    const T* z = a.logits + r * a.v;
    const T* zt = a.logits_t + r * a.v;
    const double lse = a.lse[r];
    double acc[1] = {0.0};
    for (std::int64_t c = grp.rank(); c < a.v; c += grp.size())
      acc[0] += exp(static_cast<double>(z[c]) - lse) * static_cast<double>(zt[c]);
    grp.sum(acc);
    if (grp.rank() != 0) return;
    const std::int64_t y = a.labels[r];
    a.out[r] =
        static_cast<T>(y >= 0 && y < a.v ? acc[0] - static_cast<double>(zt[y]) : nan_value());
  }
};

template <class T>
struct KlArgs {
  const T* s;    // (B, V)
  const T* t;    // (B, V)
  const T* g;    // backward: (B) cotangent
  const T* s_t;  // jvp: (B, V) or null
  const T* t_t;  // jvp: (B, V) or null
  T* out;        // forward: kl (B); backward: ds (B, V) or null; jvp: kl_t (B)
  T* dt;         // backward: (B, V) or null
  double* lse_s;
  double* lse_t;
  std::int64_t v;
  double inv_tau;
};

template <class T>
struct KlForwardRow {
  template <class G>
  static __device__ void row(const G& grp, const KlArgs<T>& a, std::int64_t r) {
    const T* s = a.s + r * a.v;
    const T* t = a.t + r * a.v;
    const double ls = row_lse(grp, s, a.v, a.inv_tau), lt = row_lse(grp, t, a.v, a.inv_tau);
    double acc[1] = {0.0};
    for (std::int64_t c = grp.rank(); c < a.v; c += grp.size()) {
      const double ltc = static_cast<double>(t[c]) * a.inv_tau - lt;
      acc[0] += exp(ltc) * (ltc - (static_cast<double>(s[c]) * a.inv_tau - ls));
    }
    grp.sum(acc);
    if (grp.rank() != 0) return;
    a.lse_s[r] = ls;
    a.lse_t[r] = lt;
    a.out[r] = static_cast<T>(acc[0]);
  }
};

template <class T>
struct KlBackwardRow {
  template <class G>
  static __device__ void row(const G& grp, const KlArgs<T>& a, std::int64_t r) {
    const T* s = a.s + r * a.v;
    const T* t = a.t + r * a.v;
    const double ls = a.lse_s[r], lt = a.lse_t[r];
    const double gi = a.inv_tau * static_cast<double>(a.g[r]);
    // The row's KL again, in double: dt needs it and the saved output may be float32.
    double kl[1] = {0.0};
    if (a.dt != nullptr) {
      for (std::int64_t c = grp.rank(); c < a.v; c += grp.size()) {
        const double ltc = static_cast<double>(t[c]) * a.inv_tau - lt;
        kl[0] += exp(ltc) * (ltc - (static_cast<double>(s[c]) * a.inv_tau - ls));
      }
      grp.sum(kl);
    }
    for (std::int64_t c = grp.rank(); c < a.v; c += grp.size()) {
      const double lsc = static_cast<double>(s[c]) * a.inv_tau - ls;
      const double ltc = static_cast<double>(t[c]) * a.inv_tau - lt;
      const double qt = exp(ltc);
      if (a.out != nullptr) a.out[r * a.v + c] = static_cast<T>((exp(lsc) - qt) * gi);
      if (a.dt != nullptr) a.dt[r * a.v + c] = static_cast<T>(qt * ((ltc - lsc) - kl[0]) * gi);
    }
  }
};

template <class T>
struct KlJvpRow {
  template <class G>
  static __device__ void row(const G& grp, const KlArgs<T>& a, std::int64_t r) {
    const T* s = a.s + r * a.v;
    const T* t = a.t + r * a.v;
    const double ls = a.lse_s[r], lt = a.lse_t[r];
    // (qT (d - kl)) . t_t = (qT d) . t_t - kl * (qT . t_t), with d = log qT - log qS.
    double x[2] = {0.0, 0.0};  // student, qT d . t_t
    double y[2] = {0.0, 0.0};  // kl, qT . t_t
    for (std::int64_t c = grp.rank(); c < a.v; c += grp.size()) {
      const double lsc = static_cast<double>(s[c]) * a.inv_tau - ls;
      const double ltc = static_cast<double>(t[c]) * a.inv_tau - lt;
      const double qt = exp(ltc);
      if (a.s_t != nullptr) x[0] += (exp(lsc) - qt) * static_cast<double>(a.s_t[r * a.v + c]);
      if (a.t_t != nullptr) {
        const double tt = static_cast<double>(a.t_t[r * a.v + c]);
        y[0] += qt * (ltc - lsc);
        x[1] += qt * (ltc - lsc) * tt;
        y[1] += qt * tt;
      }
    }
    grp.sum(x);
    grp.sum(y);
    if (grp.rank() == 0) a.out[r] = static_cast<T>(a.inv_tau * (x[0] + x[1] - y[0] * y[1]));
  }
};

}  // namespace

template <class T>
void softmax_forward_cuda(std::int64_t outer, std::int64_t v, std::int64_t inner, const T* x,
                          double inv_tau, bool log, T* y, cudaStream_t stream) {
  launch_rows<SoftmaxForwardRow<T>>("launch of softmax forward kernel", outer * inner, v,
                                    SoftmaxArgs<T>{x, y, v, inner, inv_tau, log}, stream);
}

template <class T>
void softmax_rule_cuda(SoftmaxRuleKernel rule, std::int64_t outer, std::int64_t v,
                       std::int64_t inner, const T* y, const T* u, double inv_tau, T* out,
                       cudaStream_t stream) {
  const SoftmaxRuleArgs<T> a{y, u, out, v, inner, inv_tau};
  const char* name = "launch of softmax rule kernel";
  switch (rule) {
    case SoftmaxRuleKernel::SoftmaxVjpJvp:
      return launch_rows<SoftmaxRuleRow<T, SoftmaxRuleKernel::SoftmaxVjpJvp>>(name, outer * inner,
                                                                              v, a, stream);
    case SoftmaxRuleKernel::LogSoftmaxVjp:
      return launch_rows<SoftmaxRuleRow<T, SoftmaxRuleKernel::LogSoftmaxVjp>>(name, outer * inner,
                                                                              v, a, stream);
    case SoftmaxRuleKernel::LogSoftmaxJvp:
      return launch_rows<SoftmaxRuleRow<T, SoftmaxRuleKernel::LogSoftmaxJvp>>(name, outer * inner,
                                                                              v, a, stream);
  }
  throw_error("softmax_rule_cuda: unknown rule");
}

template <class T>
void cross_entropy_forward_cuda(std::int64_t b, std::int64_t v, const T* logits,
                                const std::int64_t* labels, T* loss, double* lse,
                                cudaStream_t stream) {
  launch_rows<CrossEntropyForwardRow<T>>(
      "launch of cross_entropy forward kernel", b, v,
      CrossEntropyArgs<T>{logits, labels, nullptr, nullptr, loss, lse, v}, stream);
}

template <class T>
void cross_entropy_backward_cuda(std::int64_t b, std::int64_t v, const T* logits,
                                 const std::int64_t* labels, const double* lse, const T* g,
                                 T* dlogits, cudaStream_t stream) {
  launch_rows<CrossEntropyBackwardRow<T>>(
      "launch of cross_entropy backward kernel", b, v,
      CrossEntropyArgs<T>{logits, labels, g, nullptr, dlogits, const_cast<double*>(lse), v},
      stream);
}

template <class T>
void cross_entropy_jvp_cuda(std::int64_t b, std::int64_t v, const T* logits,
                            const std::int64_t* labels, const double* lse, const T* logits_t,
                            T* loss_t, cudaStream_t stream) {
  launch_rows<CrossEntropyJvpRow<T>>(
      "launch of cross_entropy jvp kernel", b, v,
      CrossEntropyArgs<T>{logits, labels, nullptr, logits_t, loss_t, const_cast<double*>(lse), v},
      stream);
}

template <class T>
void kl_div_softmax_forward_cuda(std::int64_t b, std::int64_t v, const T* s, const T* t,
                                 double inv_tau, T* kl, double* lse_s, double* lse_t,
                                 cudaStream_t stream) {
  launch_rows<KlForwardRow<T>>(
      "launch of kl_div_softmax forward kernel", b, v,
      KlArgs<T>{s, t, nullptr, nullptr, nullptr, kl, nullptr, lse_s, lse_t, v, inv_tau}, stream);
}

template <class T>
void kl_div_softmax_backward_cuda(std::int64_t b, std::int64_t v, const T* s, const T* t,
                                  double inv_tau, const double* lse_s, const double* lse_t,
                                  const T* g, T* ds, T* dt, cudaStream_t stream) {
  launch_rows<KlBackwardRow<T>>(
      "launch of kl_div_softmax backward kernel", b, v,
      KlArgs<T>{s, t, g, nullptr, nullptr, ds, dt, const_cast<double*>(lse_s),
                const_cast<double*>(lse_t), v, inv_tau},
      stream);
}

template <class T>
void kl_div_softmax_jvp_cuda(std::int64_t b, std::int64_t v, const T* s, const T* t, double inv_tau,
                             const double* lse_s, const double* lse_t, const T* s_t, const T* t_t,
                             T* kl_t, cudaStream_t stream) {
  launch_rows<KlJvpRow<T>>(
      "launch of kl_div_softmax jvp kernel", b, v,
      KlArgs<T>{s, t, nullptr, s_t, t_t, kl_t, nullptr, const_cast<double*>(lse_s),
                const_cast<double*>(lse_t), v, inv_tau},
      stream);
}

#define MCD_INSTANTIATE(T)                                                                         \
  template void softmax_forward_cuda<T>(std::int64_t, std::int64_t, std::int64_t, const T*,        \
                                        double, bool, T*, cudaStream_t);                           \
  template void softmax_rule_cuda<T>(SoftmaxRuleKernel, std::int64_t, std::int64_t, std::int64_t,  \
                                     const T*, const T*, double, T*, cudaStream_t);                \
  template void cross_entropy_forward_cuda<T>(std::int64_t, std::int64_t, const T*,                \
                                              const std::int64_t*, T*, double*, cudaStream_t);     \
  template void cross_entropy_backward_cuda<T>(std::int64_t, std::int64_t, const T*,               \
                                               const std::int64_t*, const double*, const T*, T*,   \
                                               cudaStream_t);                                      \
  template void cross_entropy_jvp_cuda<T>(std::int64_t, std::int64_t, const T*,                    \
                                          const std::int64_t*, const double*, const T*, T*,        \
                                          cudaStream_t);                                           \
  template void kl_div_softmax_forward_cuda<T>(std::int64_t, std::int64_t, const T*, const T*,     \
                                               double, T*, double*, double*, cudaStream_t);        \
  template void kl_div_softmax_backward_cuda<T>(std::int64_t, std::int64_t, const T*, const T*,    \
                                                double, const double*, const double*, const T*,    \
                                                T*, T*, cudaStream_t);                             \
  template void kl_div_softmax_jvp_cuda<T>(std::int64_t, std::int64_t, const T*, const T*, double, \
                                           const double*, const double*, const T*, const T*, T*,   \
                                           cudaStream_t);
MCD_INSTANTIATE(float)
MCD_INSTANTIATE(double)
#undef MCD_INSTANTIATE

}  // namespace mcd::kernels::cuda
