// The MC-Distil meta step (DESIGN.md §3): the exact gradient of the one-step-lookahead
// validation loss with respect to the C-Net's parameters, without a second-order graph.
//
// For each student k with SGD state (lr eta_k, momentum mu, dampening, weight decay, Nesterov):
//   1. theta'_k = theta_k - eta_k * d_k(theta_k; w), d_k the direction SGD would take with the
//      gradient of L_k (weights w = C-Net output, detached), as Sgd::lookahead_direction.
//   2. M = sum_k mean_j ce(S_k(xv_j; theta'_k), yv_j), BatchNorm in training mode.
//   3. With v_k = dM_k/dtheta at theta'_k and c_k = d d_k / d grad (no momentum: 1; before
//      the first momentum step: 1, or 1 + mu with Nesterov; with a buffer: 1 - dampening, or
//      1 + mu (1 - dampening) with Nesterov):
//        dM/dalpha_ki = -(eta_k c_k / B)         <v_k, grad_theta ce_ki(theta_k)>
//        dM/dbeta_ki  = -(eta_k c_k tau^2 / B)   <v_k, grad_theta kl_ki(theta_k)>
//      all B inner products of a student at once by one forward-mode pass (tangent v_k on
//      the parameters) followed by the fused loss's per-sample JVP.
//   4. dM/dphi = back-propagation of dM/dw through the C-Net.
// The real students (parameters, momentum buffers, BatchNorm running statistics, gradients)
// are bit-identical afterwards.
#pragma once
#include <vector>

#include <mcd/distill/fused_loss.h>
#include <mcd/engine/collective.h>
#include <mcd/engine/optim/sgd.h>
#include <mcd/engine/stream.h>
#include <mcd/models/cnet.h>
#include <mcd/models/module.h>

namespace mcd::distill {

struct StudentRef {
  nn::Module* model = nullptr;
  optim::Sgd* optimizer = nullptr;  // its lr() is eta_k
};

struct LabelledBatch {
  Tensor images;  // (B, C, H, W)
  Tensor labels;  // int64 (B)
};

// (B, 3K) detached per-student signals for the "image+students" C-Net: columns 3k, 3k+1,
// 3k+2 = student k's per-sample ce, kl to the teacher (0 without a teacher), and confidence
// (the largest softmax probability).
Tensor student_signals(const std::vector<Tensor>& student_logits, const TeacherTargets& teacher,
                       const Tensor& labels);

// The C-Net's weights (B, 2K) for a batch, given the students' logits on it (used only for
// the "image+students" input). Recorded for autograd when grad mode is on.
Tensor cnet_weights(nn::CNet& cnet, const Tensor& images, const std::vector<Tensor>& student_logits,
                    const TeacherTargets& teacher, const Tensor& labels);

// alpha (K, B) = w[:, 0::2]^T and beta (K, B) = w[:, 1::2]^T, differentiable.
Tensor alpha_of(const Tensor& weights);
Tensor beta_of(const Tensor& weights);

struct MetaStepResult {
  Tensor weights;                  // (B, 2K) C-Net output used by the lookahead (detached)
  Tensor student_losses;           // (K) L_k(theta_k; w)
  Tensor meta_losses;              // (K) M_k at theta'_k, on the batch's device
  Tensor weight_grad;              // (B, 2K) dM/dw
  std::vector<Tensor> cnet_grads;  // dM/dphi, one per C-Net parameter (zeros where unused)
};

// Computes the meta-gradient; writes nothing but returns everything (the caller sets the
// C-Net's .grad and steps its optimizer: see CNetWeighting::finish_before_step). With `lanes` (one
// stream per student, on the batch's device) each student's passes run on its own stream, forked
// from the caller's current stream and joined back to it before this returns; the numbers are the
// same. With `collective` this is one replica of a data-parallel group (collective.h), `train`
// and `val` its shards of the batch and the meta batch: the lookahead gradients and the meta
// gradients v_k are averaged over the replicas (so theta' and v are those of the whole batches),
// and so are the C-Net's gradient and the meta losses returned, which are then the whole
// batches' on every replica (weights, student_losses and weight_grad stay the shard's). Each of
// those reductions covers every student at once, on the caller's stream between joins of the
// lanes, so no lane waits for another's.
MetaStepResult meta_gradient(const std::vector<StudentRef>& students, nn::CNet& cnet,
                             const LabelledBatch& train, const TeacherTargets& teacher,
                             const LabelledBatch& val, const std::vector<StreamRef>& lanes = {},
                             Collective* collective = nullptr);

}  // namespace mcd::distill
