// The fused multi-student distillation loss (DESIGN.md §3). For K students sharing one
// teacher and one batch, with p = softmax(z), q = softmax(z / tau), qT = softmax(zT / tau):
//   ce_ki = -log p_ki[y_i]
//   kl_ki = sum_c qT_ic (log qT_ic - log q_kic)
//   L_k   = (1/B) sum_i (alpha_ki ce_ki + tau^2 beta_ki kl_ki)
//   dL_k/dz_ki = (alpha_ki / B)(p_ki - onehot(y_i)) + (tau beta_ki / B)(q_ki - qT_i)
// The teacher's softmax is computed once (TeacherTargets) and shared by all students; one
// pass over the K students' logits yields every per-sample term, the losses and dL/dz.
#pragma once
#include <vector>

#include <mcd/engine/tensor.h>

namespace mcd::distill {

// The teacher's temperature softmax, computed once per batch. Undefined members mean "no
// teacher" (CE only): then every beta must be zero and kl is reported as zero.
//
// Several teachers at once (DGKD) are one mixture: for guides j = 1..n with softmaxes qT_j and
// their mean m, every student's
//   (1/n) sum_j KL(qT_j || q) = KL(m || q) + (1/n) sum_j KL(qT_j || m),
// and the second term does not depend on the student. So the fused loss runs once against m,
// with that term added to every kl as `kl_offset`: the reported kl is exactly the mean KL over
// the guides and dL/dz is exact, at the cost of one guide. A policy that sums the guides' KL
// terms (DGKD) scales beta by `guides`.
struct TeacherTargets {
  Tensor prob;              // (B, V) softmax(zT / tau), no autograd history
  Tensor log_prob;          // (B, V) log_softmax(zT / tau)
  Tensor kl_offset;         // (B) added to every student's kl; undefined = 0 (a single teacher)
  std::int64_t guides = 1;  // teacher distributions averaged into prob
  double tau = 1.0;
  bool defined() const { return prob.defined(); }
};
TeacherTargets make_teacher_targets(const Tensor& teacher_logits, double tau);
// The mixture of several teachers' temperature softmaxes (one entry: make_teacher_targets).
TeacherTargets make_mixture_targets(const std::vector<Tensor>& teacher_logits, double tau);
TeacherTargets no_teacher(double tau = 1.0);

struct FusedLossOutput {
  Tensor ce;           // (K, B)
  Tensor kl;           // (K, B)
  Tensor loss;         // (K)
  Tensor grad_logits;  // (K, B, V): dL_k / dz_k
};

// One pass, no autograd: student_logits K tensors (B, V); labels int64 (B); alpha and beta
// (K, B) read as constants (detached). Numerically stable for logits of any magnitude.
FusedLossOutput fused_distill_loss(const std::vector<Tensor>& student_logits,
                                   const TeacherTargets& teacher, const Tensor& labels,
                                   const Tensor& alpha, const Tensor& beta);

// Forward-mode derivatives for tangents on the student logits (K tensors (B, V)):
//   ce_t_ki = (p_ki - onehot(y_i)) . z_t_ki
//   kl_t_ki = (q_ki - qT_i) . z_t_ki / tau
//   loss_t_k = (1/B) sum_i (alpha_ki ce_t_ki + tau^2 beta_ki kl_t_ki)
// These per-sample terms are the meta-gradient's inner products <v_k, grad_theta ce_ki>.
struct FusedLossJvp {
  Tensor ce_t;    // (K, B)
  Tensor kl_t;    // (K, B)
  Tensor loss_t;  // (K)
};
FusedLossJvp fused_distill_loss_jvp(const std::vector<Tensor>& student_logits,
                                    const TeacherTargets& teacher, const Tensor& labels,
                                    const Tensor& alpha, const Tensor& beta,
                                    const std::vector<Tensor>& logit_tangents);

// The same loss as a differentiable engine op: returns L (K) with reverse rules into every
// student's logits, alpha and beta, and a forward rule from their tangents.
Tensor distill_loss(const std::vector<Tensor>& student_logits, const TeacherTargets& teacher,
                    const Tensor& labels, const Tensor& alpha, const Tensor& beta);

}  // namespace mcd::distill
