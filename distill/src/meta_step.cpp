// The exact lookahead meta-gradient (see meta_step.h for the derivation and invariants).
#include <mcd/distill/meta_step.h>

#include <mcd/engine/autograd.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/engine/ops/shape_ops.h>
#include <mcd/engine/ops/softmax.h>
#include <mcd/engine/stream.h>

namespace mcd::distill {
namespace {

// Copies of a module's buffers (BatchNorm running statistics), restored bit for bit.
class BufferSnapshot {
 public:
  explicit BufferSnapshot(const nn::Module& m) {
    for (const auto& [name, b] : m.named_buffers())
      saved_.emplace_back(b, b.clone());
  }
  void restore() const {
    for (const auto& [live, copy] : saved_)
      Tensor(live).copy_(copy);
  }

 private:
  std::vector<std::pair<Tensor, Tensor>> saved_;
};

// Puts a module in training mode for the scope and restores its previous mode.
class TrainModeScope {
 public:
  explicit TrainModeScope(nn::Module& m) : m_(m), was_(m.is_training()) { m_.train(); }
  ~TrainModeScope() { m_.train(was_); }
  TrainModeScope(const TrainModeScope&) = delete;
  TrainModeScope& operator=(const TrainModeScope&) = delete;

 private:
  nn::Module& m_;
  bool was_;
};

// d(direction)/d(grad) for parameter i of `opt` (see meta_step.h).
double direction_gradient_factor(const optim::Sgd& opt, std::size_t i) {
  const optim::SgdOptions o = opt.options();
  if (o.momentum == 0.0) return 1.0;
  const bool has_buffer = opt.has_momentum_buffer(i);
  const double b = has_buffer ? 1.0 - o.dampening : 1.0;  // d buf / d grad
  return o.nesterov ? 1.0 + o.momentum * b : b;
}

// Largest softmax probability per row: (B, V) -> (B). The largest probability is the one of
// the arg-max class, exp(-ce(z, argmax z)), which stays on the device (no host round trip, so
// the step can also be captured as a graph).
Tensor confidence(const Tensor& logits) {
  const Tensor z = logits.detach();
  return exp(neg(cross_entropy(z, argmax(z, 1))));
}

std::vector<Tensor> detached(const std::vector<Tensor>& ts) {
  std::vector<Tensor> out;
  for (const Tensor& t : ts)
    out.push_back(t.detach());
  return out;
}

}  // namespace

Tensor student_signals(const std::vector<Tensor>& student_logits, const TeacherTargets& teacher,
                       const Tensor& labels) {
  MCD_CHECK(!student_logits.empty(), "student_signals: no students");
  NoGradGuard no_grad;
  const std::int64_t K = static_cast<std::int64_t>(student_logits.size());
  const std::int64_t B = student_logits[0].size(0);
  const Tensor zeros = Tensor::zeros({K, B}, student_logits[0].dtype(), student_logits[0].device());
  const FusedLossOutput f =
      fused_distill_loss(detached(student_logits), teacher, labels, zeros, zeros);
  std::vector<Tensor> columns;
  for (std::int64_t k = 0; k < K; ++k) {
    columns.push_back(f.ce.slice(0, k, k + 1).reshape({B, 1}));
    columns.push_back(f.kl.slice(0, k, k + 1).reshape({B, 1}));
    columns.push_back(confidence(student_logits[k]).reshape({B, 1}));
  }
  return concat(columns, 1);
}

Tensor cnet_weights(nn::CNet& cnet, const Tensor& images, const std::vector<Tensor>& student_logits,
                    const TeacherTargets& teacher, const Tensor& labels) {
  if (cnet.config().input == nn::CNetInput::ImageStudents)
    return cnet.weights(images, student_signals(student_logits, teacher, labels));
  return cnet.weights(images, Tensor());
}

Tensor alpha_of(const Tensor& w) {
  return w.slice(1, 0, w.size(1), 2).transpose(0, 1).contiguous();
}

Tensor beta_of(const Tensor& w) {
  return w.slice(1, 1, w.size(1), 2).transpose(0, 1).contiguous();
}

MetaStepResult meta_gradient(const std::vector<StudentRef>& students, nn::CNet& cnet,
                             const LabelledBatch& train, const TeacherTargets& teacher,
                             const LabelledBatch& val, const std::vector<StreamRef>& lanes,
                             Collective* collective) {
  const std::size_t K = students.size();
  MCD_CHECK(K >= 1, "meta_gradient: no students");
  MCD_CHECK(static_cast<std::int64_t>(K) == cnet.config().num_students,
            "meta_gradient: {} students but the C-Net weighs {}", K, cnet.config().num_students);
  MCD_CHECK(lanes.empty() || lanes.size() == K, "meta_gradient: {} students but {} lanes", K,
            lanes.size());
  const std::int64_t B = train.images.size(0);
  const double tau = teacher.tau;

  // Each student's passes on its lane (all on the caller's stream without lanes). Tensors
  // made on the caller's stream and read on a lane live until the lanes have joined it again
  // at the end, so no stream reuses memory another still reads.
  const StreamRef main = current_stream(train.images.device());
  std::vector<StreamRef> lane = lanes.empty() ? std::vector<StreamRef>(K, main) : lanes;
  auto fork_lanes = [&] {
    for (const StreamRef& l : lane)
      stream_wait(l, main);
  };
  auto join_lanes = [&] {
    for (const StreamRef& l : lane)
      stream_wait(main, l);
  };

  std::vector<BufferSnapshot> buffers;
  std::vector<std::vector<Tensor>> params(K);
  for (std::size_t k = 0; k < K; ++k) {
    buffers.emplace_back(*students[k].model);
    params[k] = students[k].model->parameters();
  }

  // 1. Logits at theta_k (training-mode BatchNorm) and the C-Net's weights for the batch.
  //    When the C-Net reads only the images, its weights come first and each student's
  //    logits are made inside the loop below, so one student's graph is alive at a time
  //    (the peak memory of the meta step); when it reads the students' signals, every
  //    student's logits are needed first. Each student's loss depends only on its own
  //    logits, so both orders give the same numbers.
  const bool joint = cnet.config().input == nn::CNetInput::ImageStudents;
  std::vector<Tensor> logits(K);
  auto logits_at_theta = [&](std::size_t k) {
    TrainModeScope mode(*students[k].model);
    Tensor z = (*students[k].model)(train.images);
    buffers[k].restore();
    return z;
  };
  if (joint) {
    fork_lanes();
    for (std::size_t k = 0; k < K; ++k) {
      const StreamGuard on(lane[k]);
      logits[k] = logits_at_theta(k);
    }
    join_lanes();
  }
  // The C-Net's weights without a graph: the graph is made again at the end, from the same
  //    inputs and BatchNorm statistics, only to back-propagate dM/dw, so it is not alive while
  //    the students' lookahead passes run. The repeated forward gives the same numbers.
  const BufferSnapshot cnet_buffers(cnet);
  const Tensor signals = joint ? student_signals(logits, teacher, train.labels) : Tensor();
  Tensor w;
  {
    NoGradGuard no_grad;
    w = cnet.weights(train.images, signals);
  }
  const Tensor alpha = alpha_of(w), beta = beta_of(w);
  FusedLossOutput joint_loss;
  if (joint) joint_loss = fused_distill_loss(detached(logits), teacher, train.labels, alpha, beta);
  // The two reads of the lanes' logits above are queued on main before the lanes fork again
  // below; they must stay there. Each logits tensor is dropped inside the loop, and its memory
  // then goes back to its lane, which may reuse it at once: only main's work queued before the
  // fork is sure to have read it by then.

  MetaStepResult r;
  r.weights = w;
  std::vector<Tensor> student_losses(K), meta_losses(K);
  const DType dtype = w.dtype();
  Tensor weight_grad = Tensor::zeros({B, 2 * static_cast<std::int64_t>(K)}, dtype, w.device());

  // Each student's passes come in three phases: (a) its gradient g at theta, (b) theta', M_k and
  // v_k at theta', theta restored, (c) the inner products by one JVP. Alone, each student runs
  // a, b and c in turn, so one student's graphs are alive at a time. With replicas every
  // student's (a) comes first, then one reduction of all the g, every (b), one reduction of all
  // the v, every (c): no lane waits for another lane's reduction (NCCL runs a communicator's
  // operations one after another, whatever stream they are queued on).
  std::vector<std::vector<Tensor>> g(K), v(K);
  std::vector<Tensor> z(K);  // the logits at theta, detached, for (c)

  // (a) 1. The loss at theta with the C-Net's weights and its gradient.
  auto gradient_at_theta = [&](std::size_t k) {
    const auto ki = static_cast<std::int64_t>(k);
    Tensor dz;
    if (joint) {
      dz = joint_loss.grad_logits.slice(0, ki, ki + 1).squeeze(0);
    } else {
      logits[k] = logits_at_theta(k);
      const FusedLossOutput own =
          fused_distill_loss({logits[k].detach()}, teacher, train.labels,
                             alpha.slice(0, ki, ki + 1), beta.slice(0, ki, ki + 1));
      dz = own.grad_logits.squeeze(0);
      student_losses[k] = own.loss;
    }
    g[k] = grad({logits[k]}, params[k], {dz});
    // The graph at theta_k has served: dropping it now keeps it out of the lookahead passes.
    z[k] = logits[k].detach();
    logits[k] = Tensor();
  };

  // (b) 2. theta' = theta - eta d(theta; g); M_k and v_k at theta' (training-mode BatchNorm).
  auto gradient_at_lookahead = [&](std::size_t k) {
    nn::Module& model = *students[k].model;
    const optim::Sgd& opt = *students[k].optimizer;
    const auto& p = params[k];
    std::vector<Tensor> saved;
    {
      NoGradGuard no_grad;
      for (std::size_t i = 0; i < p.size(); ++i) {
        saved.push_back(p[i].detach().clone());
        Tensor(p[i]).add_(opt.lookahead_direction(i, g[k][i]), -opt.lr());
      }
    }
    g[k].clear();
    auto restore_theta = [&] {
      NoGradGuard no_grad;
      for (std::size_t i = 0; i < p.size(); ++i)
        Tensor(p[i]).copy_(saved[i]);
      buffers[k].restore();
    };
    try {
      TrainModeScope mode(model);
      const Tensor m = mean(cross_entropy(model(val.images), val.labels));
      meta_losses[k] = m.detach().reshape({1});  // read after the lanes join: no wait here
      v[k] = grad({m}, p);
    } catch (...) {
      restore_theta();  // a failure must not leave the student at theta' (to be trained or saved)
      throw;
    }
    restore_theta();
  };

  // (c) 3. All B inner products <c v_k, grad_theta ce_ki> and <c v_k, grad_theta kl_ki> by one
  //     forward-mode pass at theta_k, tangent c_i v_i on parameter i.
  auto inner_products = [&](std::size_t k) {
    nn::Module& model = *students[k].model;
    const optim::Sgd& opt = *students[k].optimizer;
    const auto& p = params[k];
    const auto ki = static_cast<std::int64_t>(k);
    std::vector<Tensor> tangents;
    for (std::size_t i = 0; i < p.size(); ++i)
      tangents.push_back(mul(v[k][i], direction_gradient_factor(opt, i)));
    v[k].clear();
    Tensor logit_tangent;
    {
      NoGradGuard no_grad;
      TrainModeScope mode(model);
      DualScope dual(p, tangents);
      logit_tangent = model(train.images).tangent();
    }
    buffers[k].restore();
    MCD_CHECK(logit_tangent.defined(), "meta_gradient: student {} produced no tangent", k);

    std::vector<Tensor> one_logits = {z[k]};
    const FusedLossJvp j =
        fused_distill_loss_jvp(one_logits, teacher, train.labels, alpha.slice(0, ki, ki + 1),
                               beta.slice(0, ki, ki + 1), {logit_tangent});
    z[k] = Tensor();
    const double scale = -opt.lr() / static_cast<double>(B);
    // dM/dalpha_ki and dM/dbeta_ki into columns 2k and 2k+1.
    weight_grad.slice(1, 2 * ki, 2 * ki + 1).copy_(mul(j.ce_t, scale).reshape({B, 1}));
    weight_grad.slice(1, 2 * ki + 1, 2 * ki + 2)
        .copy_(mul(j.kl_t, scale * tau * tau).reshape({B, 1}));
  };

  auto on_lane = [&](std::size_t k, const auto& phase) {
    const StreamGuard on(lane[k]);
    phase(k);
  };
  // The replicas' mean of every student's tensors in `per_student`, in one reduction on main.
  auto average = [&](const std::vector<std::vector<Tensor>>& per_student) {
    join_lanes();
    std::vector<Tensor> all;
    for (const auto& ts : per_student)
      all.insert(all.end(), ts.begin(), ts.end());
    collective->all_reduce_mean(all);
    fork_lanes();
  };

  fork_lanes();
  if (collective == nullptr) {
    for (std::size_t k = 0; k < K; ++k) {
      on_lane(k, gradient_at_theta);
      on_lane(k, gradient_at_lookahead);
      on_lane(k, inner_products);
    }
  } else {
    for (std::size_t k = 0; k < K; ++k)
      on_lane(k, gradient_at_theta);
    average(g);  // theta' of the whole batch
    for (std::size_t k = 0; k < K; ++k)
      on_lane(k, gradient_at_lookahead);
    average(v);  // M_k's gradient on the whole meta batch
    for (std::size_t k = 0; k < K; ++k)
      on_lane(k, inner_products);
  }
  join_lanes();

  r.student_losses = joint ? joint_loss.loss : concat(student_losses, 0);
  // 4. Back-propagate dM/dw into the C-Net.
  {
    NoGradGuard no_grad;
    r.meta_losses = concat(meta_losses, 0);
  }
  r.weight_grad = weight_grad;
  cnet_buffers.restore();
  const Tensor w_with_graph = cnet.weights(train.images, signals);
  r.cnet_grads = grad({w_with_graph}, cnet.parameters(), {weight_grad});
  if (collective != nullptr) {
    // Each replica's rows carry its shard's 1 / B, so the mean over replicas is the whole
    // batch's dM/dphi.
    std::vector<Tensor> averaged = r.cnet_grads;
    averaged.push_back(r.meta_losses);
    collective->all_reduce_mean(averaged);
  }
  return r;
}

}  // namespace mcd::distill
