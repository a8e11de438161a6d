// Fused distillation loss kernels. Every (student, row) pair is independent: one pass finds
// the row max, one writes exp(z - max) and exp((z - max) / tau) into a per-thread row buffer
// while summing them in double, and one reads the buffer to write dL/dz, so each exponential
// is evaluated once and p and q never reach memory. The teacher's per-row terms of the KL
// (sum qT log qT, sum qT) are computed once and shared by the K students. Per-row losses are
// summed per student in a fixed order after the parallel loop, so results do not depend on
// the thread count.
#include <mcd/kernels/cpu/distill_loss.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include <mcd/kernels/cpu/scratch.h>

namespace mcd::kernels::cpu {
namespace {

constexpr std::int64_t kParallelMin = 1 << 14;

// exp(x) for x <= 0. float: Cephes' range reduction and degree-6 polynomial (about 1 ulp),
// with the clamp and the underflow test done on the bits so that `omp simd` loops vectorise
// it (std::exp does not vectorise without -ffast-math, nor do floating-point selects under the
// default -ftrapping-math). Below -87 (and for -inf) the result (< 2e-38) is flushed to 0.
// double: std::exp, the reference precision.
inline float exp_nonpositive(float x) {
  constexpr std::uint32_t kMinus87 = 0xC2AE0000u;  // bits of -87.0f
  const std::uint32_t ux = std::bit_cast<std::uint32_t>(x);
  const bool under = ux > kMinus87;  // x < -87, or -inf
  const float xc = std::bit_cast<float>(under ? kMinus87 : ux);
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x log2 e)
  const float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  const std::int32_t scale = (static_cast<std::int32_t>(n) + 127) << 23;  // 2^n
  return y * std::bit_cast<float>(under ? 0 : scale);
}
inline double exp_nonpositive(double x) {
  return std::exp(x);
}

// Calls f(i) for every row i < n, in parallel when the work is large.
template <class F>
void for_each_row(std::int64_t n, std::int64_t v, F&& f) {
  const bool parallel = n > 1 && n * v > kParallelMin;
#pragma omp parallel for if (parallel) schedule(static)
  for (std::int64_t i = 0; i < n; ++i)
    f(i);
}

// Calls f(s, i, buffer) for every student s < k and row i < b; buffer holds 2 v elements
// owned by the calling thread.
template <class T, class F>
void for_each_student_row(std::int64_t k, std::int64_t b, std::int64_t v, F&& f) {
  const std::int64_t n = k * b;
  const bool parallel = n > 1 && n * v > kParallelMin;
#pragma omp parallel if (parallel)
  {
    Scratch<T> buffer(2 * v);
#pragma omp for schedule(static)
    for (std::int64_t r = 0; r < n; ++r)
      f(r / b, r - (r / b) * b, buffer.get());
  }
}

// The teacher's share of kl_i = sum_c qT (log qT - log q): with log q_c = (z_c - max) / tau -
// log(s2), kl_i = sum qT log qT - (sum qT (z - max)) / tau + log(s2) sum qT. Entries with
// qT = 0 contribute exactly 0, even where their log is -inf. teacher (B, 2): both sums.
template <class T>
void teacher_terms(std::int64_t b, std::int64_t v, const T* qt, const T* lqt, double* teacher) {
  for_each_row(b, v, [&](std::int64_t i) {
    double neg_entropy = 0.0, mass = 0.0;
    for (std::int64_t c = 0; c < v; ++c) {
      const double p = static_cast<double>(qt[i * v + c]);
      if (p > 0.0) neg_entropy += p * static_cast<double>(lqt[i * v + c]);
      mass += p;
    }
    teacher[2 * i] = neg_entropy;
    teacher[2 * i + 1] = mass;
  });
}

// A row's max and exp sums at temperature 1 and tau, with e1 = exp(z - max) and
// e2 = exp((z - max) / tau) stored: p = e1 / s1, q = e2 / s2. The exponents are <= 0, so
// nothing overflows whatever the logits' magnitude. A NaN logit makes both sums NaN (the max
// alone would skip it).
template <class T>
struct RowStats {
  T max;
  double s1, s2;
};

template <class T>
RowStats<T> row_exps(std::int64_t v, const T* z, T inv_tau, T* e1, T* e2) {
  T mx = -std::numeric_limits<T>::infinity();
  int nan = 0;
#pragma omp simd reduction(max : mx) reduction(| : nan)
  for (std::int64_t c = 0; c < v; ++c) {
    mx = z[c] > mx ? z[c] : mx;
    nan |= z[c] != z[c];
  }
  double s1 = 0.0, s2 = 0.0;
#pragma omp simd
  for (std::int64_t c = 0; c < v; ++c) {
    const T d = z[c] - mx;
    e1[c] = exp_nonpositive(d);
    e2[c] = exp_nonpositive(d * inv_tau);
  }
#pragma omp simd reduction(+ : s1, s2)
  for (std::int64_t c = 0; c < v; ++c) {
    s1 += static_cast<double>(e1[c]);
    s2 += static_cast<double>(e2[c]);
  }
  if (nan != 0) s1 = s2 = std::numeric_limits<double>::quiet_NaN();
  return {mx, s1, s2};
}

struct RowTerms {
  double ce, kl;
};

// One (student, row): ce and kl in double, and, when g is not null, g = ca (p - onehot(y)) +
// cb (q - qT). qt null: no teacher (kl = 0, no q term); teacher: this row's teacher_terms.
// buf: 2 v scratch elements.
template <class T>
RowTerms distill_row(std::int64_t v, const T* z, const T* qt, const double* teacher, std::int64_t y,
                     double inv_tau, double ca, double cb, T* g, T* buf) {
  T* e1 = buf;
  T* e2 = buf + v;
  const RowStats<T> st = row_exps(v, z, static_cast<T>(inv_tau), e1, e2);
  const double mx = static_cast<double>(st.max);
  const double ce = (mx - static_cast<double>(z[y])) + std::log(st.s1);

  // dot = sum qT (z - max), every term <= 0 (no cancellation), z - max exact in double.
  double dot = 0.0;
  const T ip = static_cast<T>(1.0 / st.s1), iq = static_cast<T>(1.0 / st.s2);
  const T tca = static_cast<T>(ca), tcb = static_cast<T>(qt != nullptr ? cb : 0.0);
  if (g != nullptr && (tca != T(0) || tcb != T(0))) {
    if (qt != nullptr) {
#pragma omp simd reduction(+ : dot)
      for (std::int64_t c = 0; c < v; ++c) {
        g[c] = tca * (e1[c] * ip) + tcb * (e2[c] * iq - qt[c]);
        dot += static_cast<double>(qt[c]) * (static_cast<double>(z[c]) - mx);
      }
    } else {
#pragma omp simd
      for (std::int64_t c = 0; c < v; ++c)
        g[c] = tca * (e1[c] * ip);
    }
    g[y] -= tca;
  } else {
    if (g != nullptr) std::fill(g, g + v, T(0));
    if (qt != nullptr) {
#pragma omp simd reduction(+ : dot)
      for (std::int64_t c = 0; c < v; ++c)
        dot += static_cast<double>(qt[c]) * (static_cast<double>(z[c]) - mx);
    }
  }
  const double kl = qt != nullptr ? teacher[0] - dot * inv_tau + std::log(st.s2) * teacher[1] : 0.0;
  return {ce, kl};
}

// One (student, row) of the JVP: (p - onehot(y)) . zt and (q - qT) . zt / tau, in double.
template <class T>
RowTerms distill_jvp_row(std::int64_t v, const T* z, const T* zt, const T* qt, std::int64_t y,
                         double inv_tau, T* buf) {
  T* e1 = buf;
  T* e2 = buf + v;
  const RowStats<T> st = row_exps(v, z, static_cast<T>(inv_tau), e1, e2);
  const double iq = 1.0 / st.s2;
  double ce_t = 0.0, kl_t = 0.0;
  if (qt != nullptr) {
#pragma omp simd reduction(+ : ce_t, kl_t)
    for (std::int64_t c = 0; c < v; ++c) {
      const double t = static_cast<double>(zt[c]);
      ce_t += static_cast<double>(e1[c]) * t;
      kl_t += (static_cast<double>(e2[c]) * iq - static_cast<double>(qt[c])) * t;
    }
  } else {
#pragma omp simd reduction(+ : ce_t)
    for (std::int64_t c = 0; c < v; ++c)
      ce_t += static_cast<double>(e1[c]) * static_cast<double>(zt[c]);
  }
  return {ce_t / st.s1 - static_cast<double>(zt[y]), kl_t * inv_tau};
}

// out[s] = (1/B) sum_i terms[s, i], summed in row order.
template <class T>
void mean_rows(std::int64_t k, std::int64_t b, const double* terms, T* out) {
  for (std::int64_t s = 0; s < k; ++s) {
    double acc = 0.0;
    for (std::int64_t i = 0; i < b; ++i)
      acc += terms[s * b + i];
    out[s] = static_cast<T>(acc / static_cast<double>(b));
  }
}

}  // namespace

template <class T>
void distill_loss_forward_cpu(std::int64_t k, std::int64_t b, std::int64_t v,
                              const T* const* logits, const T* teacher_prob,
                              const T* teacher_log_prob, const std::int64_t* labels, const T* alpha,
                              const T* beta, double tau, T* ce, T* kl, T* loss, T* grad_logits) {
  const bool has_teacher = teacher_prob != nullptr && teacher_log_prob != nullptr;
  const double inv_tau = 1.0 / tau, inv_b = 1.0 / static_cast<double>(b);
  Scratch<double> teacher(has_teacher ? 2 * b : 0);
  if (has_teacher) teacher_terms(b, v, teacher_prob, teacher_log_prob, teacher.get());
  Scratch<double> terms(k * b);
  for_each_student_row<T>(k, b, v, [&](std::int64_t s, std::int64_t i, T* buf) {
    const std::int64_t r = s * b + i;
    const double a = static_cast<double>(alpha[r]), be = static_cast<double>(beta[r]);
    const RowTerms t =
        distill_row(v, logits[s] + i * v, has_teacher ? teacher_prob + i * v : nullptr,
                    has_teacher ? teacher.get() + 2 * i : nullptr, labels[i], inv_tau, a * inv_b,
                    tau * be * inv_b, grad_logits != nullptr ? grad_logits + r * v : nullptr, buf);
    ce[r] = static_cast<T>(t.ce);
    kl[r] = static_cast<T>(t.kl);
    terms[r] = a * t.ce + (has_teacher ? tau * tau * be * t.kl : 0.0);
  });
  mean_rows(k, b, terms.get(), loss);
}

template <class T>
void distill_loss_jvp_cpu(std::int64_t k, std::int64_t b, std::int64_t v, const T* const* logits,
                          const T* const* logits_t, const T* teacher_prob,
                          const std::int64_t* labels, const T* alpha, const T* beta, double tau,
                          T* ce_t, T* kl_t, T* loss_t) {
  Scratch<double> terms(k * b);
  for_each_student_row<T>(k, b, v, [&](std::int64_t s, std::int64_t i, T* buf) {
    const std::int64_t r = s * b + i;
    RowTerms t{0.0, 0.0};
    if (logits_t[s] != nullptr)
      t = distill_jvp_row(v, logits[s] + i * v, logits_t[s] + i * v,
                          teacher_prob != nullptr ? teacher_prob + i * v : nullptr, labels[i],
                          1.0 / tau, buf);
    ce_t[r] = static_cast<T>(t.ce);
    kl_t[r] = static_cast<T>(t.kl);
    terms[r] = static_cast<double>(alpha[r]) * t.ce +
               (teacher_prob != nullptr ? tau * tau * static_cast<double>(beta[r]) * t.kl : 0.0);
  });
  mean_rows(k, b, terms.get(), loss_t);
}

#define MCD_INSTANTIATE_DISTILL_LOSS(T)                                                            \
  template void distill_loss_forward_cpu<T>(                                                       \
      std::int64_t, std::int64_t, std::int64_t, const T* const*, const T*, const T*,               \
      const std::int64_t*, const T*, const T*, double, T*, T*, T*, T*);                            \
  template void distill_loss_jvp_cpu<T>(std::int64_t, std::int64_t, std::int64_t, const T* const*, \
                                        const T* const*, const T*, const std::int64_t*, const T*,  \
                                        const T*, double, T*, T*, T*);
MCD_INSTANTIATE_DISTILL_LOSS(float)
MCD_INSTANTIATE_DISTILL_LOSS(double)
#undef MCD_INSTANTIATE_DISTILL_LOSS

}  // namespace mcd::kernels::cpu
