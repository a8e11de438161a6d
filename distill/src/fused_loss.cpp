// The fused multi-student distillation loss: input checks, the CPU kernel calls, and the
// differentiable op form (forward, vjp and jvp side by side). Every entry point reads its
// tensors as detached contiguous values; only distill_loss records autograd history. When the
// student logits are on a device, the kernels come from the engine's DistillDeviceOps table
// (the CUDA kernels) and every output stays on that device.
#include <mcd/distill/fused_loss.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include <mcd/engine/autograd.h>
#include <mcd/engine/device_ops.h>
#include <mcd/engine/device_ops/nn.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/engine/ops/softmax.h>
#include <mcd/kernels/cpu/distill_loss.h>

namespace mcd::distill {
namespace kc = kernels::cpu;

namespace {

// Runs f(T{}) with T the C++ type of a floating dtype.
template <class F>
void dispatch_floating(const char* op, DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float32:
      f(float{});
      return;
    case DType::Float64:
      f(double{});
      return;
    default:
      fail("{}: expected float32 or float64 logits, got {}", op, dtype_name(dtype));
  }
}

// A detached, contiguous value of t (t itself, detached, when already contiguous).
Tensor dense(const Tensor& t) {
  Tensor d = t.detach();
  return d.is_contiguous() ? d : d.contiguous();
}

void check_tau(const char* op, double tau) {
  MCD_CHECK(std::isfinite(tau) && tau > 0.0,
            "{}: temperature tau must be positive and finite, got {}", op, tau);
}

// Every input lives where the student logits do.
void check_device(const char* op, const char* what, const Tensor& t, Device device) {
  MCD_CHECK(t.device() == device, "{}: {} of shape {} is on {} but the student logits are on {}",
            op, what, shape_str(t.shape()), t.device().str(), device.str());
}

std::string describe(const Tensor& t) {
  return fmt::format("{} {}", dtype_name(t.dtype()), shape_str(t.shape()));
}

// The loss's inputs after validation, as detached contiguous values.
struct LossInputs {
  std::vector<Tensor> logits;  // K x (B, V)
  Tensor prob, log_prob;       // (B, V), undefined without a teacher
  Tensor kl_offset;            // (B), undefined for a single teacher
  Tensor labels;               // int64 (B)
  Tensor alpha, beta;          // (K, B)
  std::int64_t k = 0, b = 0, v = 0;
  DType dtype = DType::Float32;
  double tau = 1.0;
  bool teacher = false;
};

LossInputs prepare(const char* op, const std::vector<Tensor>& student_logits,
                   const TeacherTargets& teacher, const Tensor& labels, const Tensor& alpha,
                   const Tensor& beta) {
  MCD_CHECK(!student_logits.empty(), "{}: expected the logits of at least one student, got none",
            op);
  const Tensor& z0 = student_logits[0];
  MCD_CHECK(z0.defined(), "{}: the logits of student 0 are undefined", op);
  check_floating(op, z0);
  MCD_CHECK(z0.dim() == 2 && z0.size(0) > 0 && z0.size(1) > 0,
            "{}: student logits must have shape (B, V) with B, V > 0, got student 0 logits {}", op,
            shape_str(z0.shape()));
  LossInputs in;
  in.k = static_cast<std::int64_t>(student_logits.size());
  in.b = z0.size(0);
  in.v = z0.size(1);
  in.dtype = z0.dtype();
  in.tau = teacher.tau;
  for (std::int64_t s = 0; s < in.k; ++s) {
    const Tensor& z = student_logits[static_cast<std::size_t>(s)];
    MCD_CHECK(z.defined(), "{}: the logits of student {} are undefined", op, s);
    MCD_CHECK(z.shape() == z0.shape() && z.dtype() == z0.dtype(),
              "{}: student {} logits are {} but student 0 logits are {}; every student's logits "
              "must share one shape (B, V) and dtype",
              op, s, describe(z), describe(z0));
    check_device(op, "student logits", z, z0.device());
    in.logits.push_back(dense(z));
  }

  check_tau(op, teacher.tau);
  in.teacher = teacher.prob.defined() || teacher.log_prob.defined();
  if (in.teacher) {
    for (const auto& [what, t] :
         {std::pair<const char*, const Tensor&>{"prob", teacher.prob},
          std::pair<const char*, const Tensor&>{"log_prob", teacher.log_prob}}) {
      MCD_CHECK(t.defined(), "{}: teacher {} is undefined while the other member is defined", op,
                what);
      MCD_CHECK(t.shape() == z0.shape() && t.dtype() == z0.dtype(),
                "{}: teacher {} is {} but must be {} like the student logits", op, what,
                describe(t), describe(z0));
      check_device(op, what, t, z0.device());
    }
    in.prob = dense(teacher.prob);
    in.log_prob = dense(teacher.log_prob);
    if (teacher.kl_offset.defined()) {
      MCD_CHECK(teacher.kl_offset.shape() == Shape({in.b}) && teacher.kl_offset.dtype() == in.dtype,
                "{}: teacher kl_offset is {} but must be {} [{}] for student logits {}", op,
                describe(teacher.kl_offset), dtype_name(in.dtype), in.b, shape_str(z0.shape()));
      check_device(op, "kl_offset", teacher.kl_offset, z0.device());
      in.kl_offset = dense(teacher.kl_offset);
    }
  }

  MCD_CHECK(labels.defined(), "{}: labels are undefined", op);
  MCD_CHECK(labels.dtype() == DType::Int64 && labels.dim() == 1 && labels.size(0) == in.b,
            "{}: labels must be int64 of shape [{}] for student logits {}, got {}", op, in.b,
            shape_str(z0.shape()), describe(labels));
  check_device(op, "labels", labels, z0.device());
  in.labels = dense(labels);
  // Value checks read the tensors, so they run where that is free: on the host. On a device
  // they would cost a synchronisation per call; there a bad label gives NaN in its row (as
  // cross_entropy does on a device), and the trainer's labels come checked from the loader.
  const bool on_host = z0.device().is_cpu();
  if (on_host) {
    const std::int64_t* y = in.labels.data<std::int64_t>();
    for (std::int64_t i = 0; i < in.b; ++i)
      MCD_CHECK(y[i] >= 0 && y[i] < in.v,
                "{}: label {} of row {} is out of range [0, {}) for student logits {}", op, y[i], i,
                in.v, shape_str(z0.shape()));
  }

  for (const auto& [what, t] : {std::pair<const char*, const Tensor&>{"alpha", alpha},
                                std::pair<const char*, const Tensor&>{"beta", beta}}) {
    MCD_CHECK(t.defined(), "{}: {} is undefined", op, what);
    MCD_CHECK(t.dtype() == in.dtype && t.shape() == Shape({in.k, in.b}),
              "{}: {} must be {} of shape (K, B) = [{}, {}] for {} students' logits {}, got {}", op,
              what, dtype_name(in.dtype), in.k, in.b, in.k, shape_str(z0.shape()), describe(t));
    check_device(op, what, t, z0.device());
  }
  in.alpha = dense(alpha);
  in.beta = dense(beta);
  if (!in.teacher && on_host) {
    const std::vector<double> bv = in.beta.to_doubles();
    for (std::size_t j = 0; j < bv.size(); ++j)
      MCD_CHECK(bv[j] == 0.0,
                "{}: beta[{}, {}] = {} but there is no teacher (no_teacher()); every beta must be "
                "0 without a teacher",
                op, static_cast<std::int64_t>(j) / in.b, static_cast<std::int64_t>(j) % in.b,
                bv[j]);
  }
  return in;
}

template <class T>
std::vector<const T*> pointers(const std::vector<Tensor>& ts) {
  std::vector<const T*> p;
  p.reserve(ts.size());
  for (const Tensor& t : ts)
    p.push_back(t.defined() ? t.data<T>() : nullptr);
  return p;
}

template <class T>
const T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// A teacher mixture's student-independent part of the mean KL (fused_loss.h): it joins every
// kl and, weighted by beta, every loss; dL/dz does not change.
template <class T>
void add_kl_offset(const LossInputs& in, FusedLossOutput& out) {
  const T* off = in.kl_offset.data<T>();
  const T* beta = in.beta.data<T>();
  T* kl = out.kl.data<T>();
  T* loss = out.loss.data<T>();
  const double scale = in.tau * in.tau / static_cast<double>(in.b);
  for (std::int64_t s = 0; s < in.k; ++s) {
    double extra = 0.0;
    for (std::int64_t i = 0; i < in.b; ++i) {
      kl[s * in.b + i] += off[i];
      extra += static_cast<double>(beta[s * in.b + i]) * static_cast<double>(off[i]);
    }
    loss[s] = static_cast<T>(static_cast<double>(loss[s]) + scale * extra);
  }
}

// grad_logits stays undefined unless `with_grad`.
FusedLossOutput run_forward(const char* op, const LossInputs& in, bool with_grad) {
  const Device dev = in.logits[0].device();
  FusedLossOutput out;
  out.ce = Tensor::empty({in.k, in.b}, in.dtype, dev);
  out.kl = Tensor::empty({in.k, in.b}, in.dtype, dev);
  out.loss = Tensor::empty({in.k}, in.dtype, dev);
  if (with_grad) out.grad_logits = Tensor::empty({in.k, in.b, in.v}, in.dtype, dev);
  if (!dev.is_cpu()) {
    DistillDeviceOps& ops = require_device_ops<DistillDeviceOps>(op, in.logits[0]);
    ops.distill_loss_forward(in.logits, in.prob, in.log_prob, in.labels, in.alpha, in.beta, in.tau,
                             out.ce, out.kl, out.loss, out.grad_logits);
    if (in.kl_offset.defined())
      ops.distill_add_kl_offset(in.kl_offset, in.beta, in.tau, out.kl, out.loss);
    return out;
  }
  dispatch_floating(op, in.dtype, [&](auto tag) {
    using T = decltype(tag);
    const std::vector<const T*> z = pointers<T>(in.logits);
    kc::distill_loss_forward_cpu<T>(in.k, in.b, in.v, z.data(), data_or_null<T>(in.prob),
                                    data_or_null<T>(in.log_prob), in.labels.data<std::int64_t>(),
                                    in.alpha.data<T>(), in.beta.data<T>(), in.tau, out.ce.data<T>(),
                                    out.kl.data<T>(), out.loss.data<T>(),
                                    with_grad ? out.grad_logits.data<T>() : nullptr);
    if (in.kl_offset.defined()) add_kl_offset<T>(in, out);
  });
  return out;
}

// tangents: K dense (B, V) values, undefined entries are zero tangents.
FusedLossJvp run_jvp(const char* op, const LossInputs& in, const std::vector<Tensor>& tangents) {
  const Device dev = in.logits[0].device();
  FusedLossJvp out;
  out.ce_t = Tensor::empty({in.k, in.b}, in.dtype, dev);
  out.kl_t = Tensor::empty({in.k, in.b}, in.dtype, dev);
  out.loss_t = Tensor::empty({in.k}, in.dtype, dev);
  if (!dev.is_cpu()) {
    require_device_ops<DistillDeviceOps>(op, in.logits[0])
        .distill_loss_jvp(in.logits, tangents, in.prob, in.labels, in.alpha, in.beta, in.tau,
                          out.ce_t, out.kl_t, out.loss_t);
    return out;
  }
  dispatch_floating(op, in.dtype, [&](auto tag) {
    using T = decltype(tag);
    const std::vector<const T*> z = pointers<T>(in.logits);
    const std::vector<const T*> zt = pointers<T>(tangents);
    kc::distill_loss_jvp_cpu<T>(in.k, in.b, in.v, z.data(), zt.data(), data_or_null<T>(in.prob),
                                in.labels.data<std::int64_t>(), in.alpha.data<T>(),
                                in.beta.data<T>(), in.tau, out.ce_t.data<T>(), out.kl_t.data<T>(),
                                out.loss_t.data<T>());
  });
  return out;
}

// A teacher's logits, checked and detached: the teacher is frozen, so its targets carry neither
// history nor tangents.
Tensor checked_teacher_logits(const char* op, const Tensor& teacher_logits, double tau) {
  check_floating(op, teacher_logits);
  MCD_CHECK(teacher_logits.dim() == 2 && teacher_logits.size(0) > 0 && teacher_logits.size(1) > 0,
            "{}: teacher logits must have shape (B, V) with B, V > 0, got {}", op,
            shape_str(teacher_logits.shape()));
  check_tau(op, tau);
  return teacher_logits.detach();
}

}  // namespace

// ---- teacher targets

TeacherTargets make_teacher_targets(const Tensor& teacher_logits, double tau) {
  NoGradGuard no_grad;
  const Tensor zt = checked_teacher_logits("make_teacher_targets", teacher_logits, tau);
  TeacherTargets t;
  t.prob = softmax(zt, 1, tau);
  t.log_prob = log_softmax(zt, 1, tau);
  t.tau = tau;
  return t;
}

TeacherTargets make_mixture_targets(const std::vector<Tensor>& teacher_logits, double tau) {
  const char* op = "make_mixture_targets";
  MCD_CHECK(!teacher_logits.empty(), "{}: expected the logits of at least one teacher, got none",
            op);
  if (teacher_logits.size() == 1) return make_teacher_targets(teacher_logits[0], tau);
  const Device dev = teacher_logits[0].device();
  // Each guide's log-probabilities (the mixture needs nothing else of them).
  NoGradGuard no_grad;
  std::vector<Tensor> log_probs;
  for (std::size_t j = 0; j < teacher_logits.size(); ++j) {
    MCD_CHECK(teacher_logits[j].device() == dev,
              "{}: teacher {} logits are on {} but teacher 0 logits are on {}", op, j,
              teacher_logits[j].device().str(), dev.str());
    log_probs.push_back(
        dense(log_softmax(checked_teacher_logits(op, teacher_logits[j], tau), 1, tau)));
    MCD_CHECK(teacher_logits[j].shape() == teacher_logits[0].shape() &&
                  teacher_logits[j].dtype() == teacher_logits[0].dtype(),
              "{}: teacher {} logits are {} but teacher 0 logits are {}", op, j,
              describe(teacher_logits[j]), describe(teacher_logits[0]));
  }
  const auto n = static_cast<std::int64_t>(log_probs.size());
  const std::int64_t b = teacher_logits[0].size(0), v = teacher_logits[0].size(1);
  const DType dtype = teacher_logits[0].dtype();
  TeacherTargets t;
  t.prob = Tensor::empty({b, v}, dtype, dev);
  t.log_prob = Tensor::empty({b, v}, dtype, dev);
  t.kl_offset = Tensor::empty({b}, dtype, dev);
  t.guides = n;
  t.tau = tau;
  if (!dev.is_cpu()) {
    // On the device, without a host round trip (so a step with several guides can also be
    // captured as a graph).
    require_device_ops<DistillDeviceOps>(op, t.prob)
        .teacher_mixture(log_probs, t.prob, t.log_prob, t.kl_offset);
    return t;
  }
  dispatch_floating(op, dtype, [&](auto tag) {
    using T = decltype(tag);
    std::vector<const T*> lp;
    for (const Tensor& l : log_probs)
      lp.push_back(l.template data<T>());
    T* prob = t.prob.data<T>();
    T* log_prob = t.log_prob.data<T>();
    T* offset = t.kl_offset.data<T>();
    const double log_n = std::log(static_cast<double>(n));
    for (std::int64_t i = 0; i < b; ++i) {
      double off = 0.0;
      for (std::int64_t c = i * v; c < (i + 1) * v; ++c) {
        // log of the mean probability by log-sum-exp, finite even where every guide's
        // probability underflows.
        double top = static_cast<double>(lp[0][c]);
        for (std::int64_t j = 1; j < n; ++j)
          top = std::max(top, static_cast<double>(lp[j][c]));
        double sum = 0.0;
        for (std::int64_t j = 0; j < n; ++j)
          sum += std::exp(static_cast<double>(lp[j][c]) - top);
        const double log_mean = top + std::log(sum) - log_n;
        prob[c] = static_cast<T>(std::exp(log_mean));
        log_prob[c] = static_cast<T>(log_mean);
        for (std::int64_t j = 0; j < n; ++j) {
          const double l = static_cast<double>(lp[j][c]);
          const double p = std::exp(l);
          if (p > 0.0) off += p * (l - log_mean);
        }
      }
      offset[i] = static_cast<T>(off / static_cast<double>(n));
    }
  });
  return t;
}

TeacherTargets no_teacher(double tau) {
  check_tau("no_teacher", tau);
  TeacherTargets t;
  t.tau = tau;
  return t;
}

// ---- fused forward and per-sample jvp (no autograd)

FusedLossOutput fused_distill_loss(const std::vector<Tensor>& student_logits,
                                   const TeacherTargets& teacher, const Tensor& labels,
                                   const Tensor& alpha, const Tensor& beta) {
  const char* op = "fused_distill_loss";
  return run_forward(op, prepare(op, student_logits, teacher, labels, alpha, beta), true);
}

FusedLossJvp fused_distill_loss_jvp(const std::vector<Tensor>& student_logits,
                                    const TeacherTargets& teacher, const Tensor& labels,
                                    const Tensor& alpha, const Tensor& beta,
                                    const std::vector<Tensor>& logit_tangents) {
  const char* op = "fused_distill_loss_jvp";
  const LossInputs in = prepare(op, student_logits, teacher, labels, alpha, beta);
  MCD_CHECK(static_cast<std::int64_t>(logit_tangents.size()) == in.k,
            "{}: {} logit tangents for {} students", op, logit_tangents.size(), in.k);
  std::vector<Tensor> zt;
  zt.reserve(logit_tangents.size());
  for (std::int64_t s = 0; s < in.k; ++s) {
    const Tensor& t = logit_tangents[static_cast<std::size_t>(s)];
    if (t.defined()) {
      MCD_CHECK(t.shape() == in.logits[0].shape() && t.dtype() == in.dtype,
                "{}: the tangent of student {} is {} but the logits are {}", op, s, describe(t),
                describe(in.logits[0]));
      check_device(op, "logit tangent", t, in.logits[0].device());
    }
    zt.push_back(t.defined() ? dense(t) : Tensor());
  }
  return run_jvp(op, in, zt);
}

// ---- distill_loss: L (K) from the fused kernel.
// vjp, cotangent g (K): dz_k = g_k dL_k/dz_k; dalpha_ki = g_k ce_ki / B;
//   dbeta_ki = g_k tau^2 kl_ki / B.
// jvp: L_t = the fused per-sample jvp for the logit tangents
//   + (1/B) sum_i (alpha_t_ki ce_ki + tau^2 beta_t_ki kl_ki).

Tensor distill_loss(const std::vector<Tensor>& student_logits, const TeacherTargets& teacher,
                    const Tensor& labels, const Tensor& alpha, const Tensor& beta) {
  const char* op = "distill_loss";
  const LossInputs in = prepare(op, student_logits, teacher, labels, alpha, beta);
  std::vector<Tensor> inputs = student_logits;
  inputs.push_back(alpha);
  inputs.push_back(beta);
  std::vector<bool> needs;
  bool need_logits = false;
  for (std::size_t j = 0; j < inputs.size(); ++j) {
    needs.push_back(inputs[j].requires_grad());
    if (j < student_logits.size()) need_logits = need_logits || inputs[j].requires_grad();
  }
  // dL/dz is what the reverse rule returns, so the kernel writes it only when it will be used.
  const FusedLossOutput f = run_forward(op, in, grad_mode_enabled() && need_logits);
  Tensor loss = f.loss;

  const std::int64_t k = in.k, b = in.b, v = in.v;
  const double tau = in.tau;
  record(loss, op, inputs,
         [ce = f.ce, kl = f.kl, gl = f.grad_logits, needs, k, b, v, tau](const Tensor& g) {
           const std::vector<double> gk = g.to_doubles();  // (K)
           const Tensor gcol = dense(g).reshape({k, 1});
           std::vector<Tensor> grads(static_cast<std::size_t>(k) + 2);
           for (std::int64_t s = 0; s < k; ++s)
             if (needs[static_cast<std::size_t>(s)])
               grads[static_cast<std::size_t>(s)] =
                   mul(gl.slice(0, s, s + 1).reshape({b, v}), gk[static_cast<std::size_t>(s)]);
           const auto ia = static_cast<std::size_t>(k), ib = ia + 1;
           if (needs[ia]) grads[ia] = mul(mul(ce, gcol), 1.0 / static_cast<double>(b));
           if (needs[ib]) grads[ib] = mul(mul(kl, gcol), tau * tau / static_cast<double>(b));
           return grads;
         });
  propagate_tangent(loss, inputs, [&] {
    std::vector<Tensor> zt;
    bool any_logit_tangent = false;
    for (const Tensor& z : student_logits) {
      const Tensor t = z.tangent();
      any_logit_tangent = any_logit_tangent || t.defined();
      zt.push_back(t.defined() ? dense(t) : Tensor());
    }
    Tensor lt = any_logit_tangent ? run_jvp(op, in, zt).loss_t
                                  : Tensor::zeros({k}, in.dtype, in.logits[0].device());
    if (alpha.tangent().defined())
      lt = add(lt, mul(sum(mul(alpha.tangent(), f.ce), {1}), 1.0 / static_cast<double>(b)));
    if (beta.tangent().defined())
      lt = add(lt, mul(sum(mul(beta.tangent(), f.kl), {1}), tau * tau / static_cast<double>(b)));
    return lt;
  });
  return loss;
}

}  // namespace mcd::distill
