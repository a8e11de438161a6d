// Adam and AdamW update loops: one pass over contiguous memory per parameter, following
// torch.optim.Adam/AdamW (single-tensor path) operation by operation, so float64 results
// agree with PyTorch to rounding. Bias corrections are computed once per step in double.
// Parameters on a device step through the device table's multi-tensor kernel (the same
// arithmetic, bit for bit); the moments stay on the device, state dicts copy them to the host.
#include <cmath>
#include <map>
#include <utility>

#include <mcd/engine/device_ops.h>
#include <mcd/engine/device_ops/nn.h>
#include <mcd/engine/optim/adam.h>

#include "../dispatch.h"

namespace mcd::optim {
namespace {

constexpr std::int64_t kParallelMin = 1 << 15;  // below this OpenMP costs more than it saves

template <class T>
struct AdamCoeffs {
  T beta1, one_minus_beta1, beta2, one_minus_beta2;
  T weight_decay;   // L2 term added to the gradient (Adam)
  T decay;          // 1 - lr * weight_decay (AdamW)
  T neg_step_size;  // -lr / (1 - beta1^t)
  T bias2_sqrt;     // sqrt(1 - beta2^t)
  T eps;
};

// m and v hold zeros before a parameter's first step. L2 and Decoupled are compile-time so
// that the loop is branch-free. (std::sqrt keeps it scalar unless built with -fno-math-errno.)
template <class T, bool L2, bool Decoupled>
void adam_step_loop(std::int64_t n, T* __restrict p, const T* __restrict g, T* __restrict m,
                    T* __restrict v, const AdamCoeffs<T>& c) {
  const T b1 = c.beta1, omb1 = c.one_minus_beta1, b2 = c.beta2, omb2 = c.one_minus_beta2;
  const T wd = c.weight_decay, decay = c.decay, neg_step = c.neg_step_size;
  const T bias2_sqrt = c.bias2_sqrt, eps = c.eps;
#pragma omp parallel for simd schedule(static) if (parallel             \
                                                   : n >= kParallelMin) \
    firstprivate(b1, omb1, b2, omb2, wd, decay, neg_step, bias2_sqrt, eps)
  for (std::int64_t i = 0; i < n; ++i) {
    T pi = p[i];
    if constexpr (Decoupled) pi = pi * decay;
    T gi = g[i];
    if constexpr (L2) gi = gi + wd * pi;
    const T mi = m[i] * b1 + omb1 * gi;
    const T vi = v[i] * b2 + omb2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const T denom = std::sqrt(vi) / bias2_sqrt + eps;
    p[i] = pi + neg_step * mi / denom;
  }
}

// Throws naming the field: as a state-dict key when `state` is given, else as an option.
void validate(const AdamOptions& o, const std::string& where, const StateReader* state = nullptr) {
  auto check = [&](bool ok, const char* field, double v, const char* expected) {
    if (ok) return;
    const std::string what = fmt::format("invalid value {} (expected {})", v, expected);
    if (state) state->fail_at(field, what);
    fail("{}: {} {}", where, field, what);
  };
  check(std::isfinite(o.lr) && o.lr >= 0, "lr", o.lr, "finite, >= 0");
  check(o.beta1 >= 0 && o.beta1 < 1, "beta1", o.beta1, "0 <= beta1 < 1");
  check(o.beta2 >= 0 && o.beta2 < 1, "beta2", o.beta2, "0 <= beta2 < 1");
  check(std::isfinite(o.eps) && o.eps >= 0, "eps", o.eps, "finite, >= 0");
  check(std::isfinite(o.weight_decay) && o.weight_decay >= 0, "weight_decay", o.weight_decay,
        "finite, >= 0");
}

}  // namespace

Adam::Adam(std::vector<Tensor> params, AdamOptions options)
    : Adam(std::move(params), options, false) {}

Adam::Adam(std::vector<Tensor> params, AdamOptions options, bool decoupled)
    : Optimizer(std::move(params)),
      options_(options),
      decoupled_(decoupled),
      steps_(params_.size(), 0),
      exp_avg_(params_.size()),
      exp_avg_sq_(params_.size()) {
  validate(options_, decoupled_ ? "AdamW" : "Adam");
  lr_ = options_.lr;
}

AdamW::AdamW(std::vector<Tensor> params, AdamWOptions o)
    : Adam(std::move(params), AdamOptions{o.lr, o.beta1, o.beta2, o.eps, o.weight_decay}, true) {}

AdamOptions Adam::options() const {
  AdamOptions o = options_;
  o.lr = lr_;
  return o;
}

std::int64_t Adam::step_count(std::size_t i) const {
  MCD_CHECK(i < params_.size(), "Adam::step_count: index {} out of range for {} parameters", i,
            params_.size());
  return steps_[i];
}

Tensor Adam::exp_avg(std::size_t i) const {
  MCD_CHECK(i < params_.size(), "Adam::exp_avg: index {} out of range for {} parameters", i,
            params_.size());
  return copy_of(exp_avg_[i]);
}

Tensor Adam::exp_avg_sq(std::size_t i) const {
  MCD_CHECK(i < params_.size(), "Adam::exp_avg_sq: index {} out of range for {} parameters", i,
            params_.size());
  return copy_of(exp_avg_sq_[i]);
}

void Adam::step() {
  const char* op = decoupled_ ? "AdamW::step" : "Adam::step";
  if (!params_[0].device().is_cpu()) {
    // One multi-tensor launch per distinct step count (all parameters share it in a normal
    // run; a parameter that missed steps for lack of a gradient has its own).
    OptimDeviceOps& ops = require_device_ops<OptimDeviceOps>(op, params_[0]);
    struct Group {
      std::vector<Tensor> p, g, m, v;
    };
    std::map<std::int64_t, Group> groups;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const Tensor g = contiguous_grad(i);
      if (!g.defined()) continue;
      const Tensor& p = params_[i];
      if (!exp_avg_[i].defined()) {
        exp_avg_[i] = Tensor::zeros(p.shape(), p.dtype(), p.device());
        exp_avg_sq_[i] = Tensor::zeros(p.shape(), p.dtype(), p.device());
      }
      Group& group = groups[++steps_[i]];
      group.p.push_back(p);
      group.g.push_back(g);
      group.m.push_back(exp_avg_[i]);
      group.v.push_back(exp_avg_sq_[i]);
    }
    for (const auto& [t, group] : groups) {
      AdamDeviceStep s;
      s.lr = lr_;
      s.beta1 = options_.beta1;
      s.beta2 = options_.beta2;
      s.eps = options_.eps;
      s.weight_decay = options_.weight_decay;
      s.decoupled = decoupled_;
      s.step = t;
      ops.adam_step(group.p, group.g, group.m, group.v, s);
    }
    return;
  }
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const Tensor g = contiguous_grad(i);
    if (!g.defined()) continue;
    Tensor& p = params_[i];
    if (!exp_avg_[i].defined()) {
      exp_avg_[i] = Tensor::zeros(p.shape(), p.dtype());
      exp_avg_sq_[i] = Tensor::zeros(p.shape(), p.dtype());
    }
    const std::int64_t t = ++steps_[i];
    const double bias1 = 1.0 - std::pow(options_.beta1, static_cast<double>(t));
    const double bias2 = 1.0 - std::pow(options_.beta2, static_cast<double>(t));
    const bool decay = options_.weight_decay != 0.0;
    MCD_DISPATCH_FLOATING(p.dtype(), op, {
      using T = scalar_t;
      const AdamCoeffs<T> c{
          static_cast<T>(options_.beta1),        static_cast<T>(1.0 - options_.beta1),
          static_cast<T>(options_.beta2),        static_cast<T>(1.0 - options_.beta2),
          static_cast<T>(options_.weight_decay), static_cast<T>(1.0 - lr_ * options_.weight_decay),
          static_cast<T>(-(lr_ / bias1)),        static_cast<T>(std::sqrt(bias2)),
          static_cast<T>(options_.eps)};
      T* pp = p.data<T>();
      const T* gp = g.data<T>();
      T* mp = exp_avg_[i].data<T>();
      T* vp = exp_avg_sq_[i].data<T>();
      const std::int64_t n = p.numel();
      if (decay && decoupled_)
        adam_step_loop<T, false, true>(n, pp, gp, mp, vp, c);
      else if (decay)
        adam_step_loop<T, true, false>(n, pp, gp, mp, vp, c);
      else
        adam_step_loop<T, false, false>(n, pp, gp, mp, vp, c);
    });
  }
}

// ---- state

StateDict Adam::state_dict() const {
  StateDict s;
  write_common_state(s);
  s["beta1"] = Tensor::scalar(options_.beta1, DType::Float64);
  s["beta2"] = Tensor::scalar(options_.beta2, DType::Float64);
  s["eps"] = Tensor::scalar(options_.eps, DType::Float64);
  s["weight_decay"] = Tensor::scalar(options_.weight_decay, DType::Float64);
  s["decoupled_weight_decay"] = Tensor::from_vector<std::int64_t>({decoupled_ ? 1 : 0}, Shape{});
  for (std::size_t i = 0; i < params_.size(); ++i) {
    if (steps_[i] == 0) continue;
    s[state_key(i, "step")] = Tensor::from_vector<std::int64_t>({steps_[i]}, Shape{});
    s[state_key(i, "exp_avg")] = host_copy_of(exp_avg_[i]);
    s[state_key(i, "exp_avg_sq")] = host_copy_of(exp_avg_sq_[i]);
  }
  return s;
}

void Adam::load_state_dict(const StateDict& s, const std::string& source) {
  StateReader r(s, source);
  AdamOptions o;
  o.lr = r.common(params_.size());
  o.beta1 = r.real("beta1");
  o.beta2 = r.real("beta2");
  o.eps = r.real("eps");
  o.weight_decay = r.real("weight_decay");
  const std::int64_t decoupled = r.integer("decoupled_weight_decay");
  if (decoupled != (decoupled_ ? 1 : 0))
    r.fail_at("decoupled_weight_decay",
              fmt::format("state written by {} cannot be loaded into {}",
                          decoupled == 1 ? "AdamW" : "Adam", decoupled_ ? "AdamW" : "Adam"));
  validate(o, source, &r);
  std::vector<std::int64_t> steps(params_.size(), 0);
  std::vector<Tensor> m(params_.size()), v(params_.size());
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const std::string step_key = state_key(i, "step");
    if (!r.has(step_key)) {
      for (const char* name : {"exp_avg", "exp_avg_sq"})
        if (r.has(state_key(i, name)))
          r.fail_at(state_key(i, name), fmt::format("present without '{}'", step_key));
      continue;
    }
    steps[i] = r.integer(step_key);
    if (steps[i] < 1)
      r.fail_at(step_key, fmt::format("expected a step count >= 1, got {}", steps[i]));
    m[i] = r.buffer_like(state_key(i, "exp_avg"), params_[i]);
    v[i] = r.buffer_like(state_key(i, "exp_avg_sq"), params_[i]);
  }
  r.finish();
  options_ = o;
  lr_ = o.lr;
  steps_ = std::move(steps);
  exp_avg_ = std::move(m);
  exp_avg_sq_ = std::move(v);
}

}  // namespace mcd::optim
