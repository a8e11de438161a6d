// Softmax-family CPU kernels: temperature softmax / log-softmax along the middle axis of a
// contiguous (outer, V, inner) array, and per-row cross-entropy and softmax KL over (B, V)
// logits. All are max-subtracted (log-sum-exp) so logits of magnitude 1e4 stay finite, and
// row sums accumulate in double. Outputs are overwritten; null optional pointers mean absent.
#pragma once
#include <cstdint>

namespace mcd::kernels::cpu {

// y = softmax(x * inv_tau) along V, or log_softmax when `log` is set.
template <class T>
void softmax_forward_cpu(std::int64_t outer, std::int64_t v, std::int64_t inner, const T* x,
                         double inv_tau, bool log, T* y);

// dx = inv_tau * y * (g - sum_V(g * y)), y = softmax output. The softmax Jacobian is
// symmetric, so the same map with g = x_t gives the JVP.
template <class T>
void softmax_backward_cpu(std::int64_t outer, std::int64_t v, std::int64_t inner, const T* y,
                          const T* g, double inv_tau, T* dx);

// log_softmax VJP: dx = inv_tau * (g - exp(y) * sum_V(g)), y = log_softmax output.
template <class T>
void log_softmax_backward_cpu(std::int64_t outer, std::int64_t v, std::int64_t inner, const T* y,
                              const T* g, double inv_tau, T* dx);

// log_softmax JVP: y_t = inv_tau * (x_t - sum_V(exp(y) * x_t)).
template <class T>
void log_softmax_jvp_cpu(std::int64_t outer, std::int64_t v, std::int64_t inner, const T* y,
                         const T* x_t, double inv_tau, T* y_t);

// Cross-entropy per row: loss_i = lse_i - z[i, y_i]. logits (B, V), labels (B) already checked
// to lie in [0, V); lse (B) = log-sum-exp of each row, saved in double for the rules.
template <class T>
void cross_entropy_forward_cpu(std::int64_t b, std::int64_t v, const T* logits,
                               const std::int64_t* labels, T* loss, double* lse);

// dlogits[i] = (softmax(z_i) - onehot(y_i)) * g_i.
template <class T>
void cross_entropy_backward_cpu(std::int64_t b, std::int64_t v, const T* logits,
                                const std::int64_t* labels, const double* lse, const T* g,
                                T* dlogits);

// loss_t_i = (softmax(z_i) - onehot(y_i)) . z_t_i.
template <class T>
void cross_entropy_jvp_cpu(std::int64_t b, std::int64_t v, const T* logits,
                           const std::int64_t* labels, const double* lse, const T* logits_t,
                           T* loss_t);

// kl_i = sum_c qT_c (log qT_c - log qS_c), qS = softmax(s * inv_tau), qT = softmax(t * inv_tau).
// s, t (B, V); lse_s, lse_t (B) = log-sum-exp of s * inv_tau and t * inv_tau, saved in double.
template <class T>
void kl_div_softmax_forward_cpu(std::int64_t b, std::int64_t v, const T* s, const T* t,
                                double inv_tau, T* kl, double* lse_s, double* lse_t);

// ds = inv_tau * (qS - qT) * g_i; dt = inv_tau * qT * ((log qT - log qS) - kl_i) * g_i.
// ds or dt may be null when not wanted.
template <class T>
void kl_div_softmax_backward_cpu(std::int64_t b, std::int64_t v, const T* s, const T* t,
                                 double inv_tau, const double* lse_s, const double* lse_t,
                                 const T* g, T* ds, T* dt);

// kl_t_i = inv_tau * ((qS - qT) . s_t_i + (qT * ((log qT - log qS) - kl_i)) . t_t_i);
// s_t or t_t may be null (zero tangent).
template <class T>
void kl_div_softmax_jvp_cpu(std::int64_t b, std::int64_t v, const T* s, const T* t, double inv_tau,
                            const double* lse_s, const double* lse_t, const T* s_t, const T* t_t,
                            T* kl_t);

}  // namespace mcd::kernels::cpu
