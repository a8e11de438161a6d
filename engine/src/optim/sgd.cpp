// SGD update loops (one pass over contiguous memory per parameter) and the state-free
// lookahead direction. The arithmetic follows torch.optim.SGD operation by operation, so
// float64 results agree with PyTorch to rounding.
#include <cmath>
#include <utility>

#include <mcd/engine/optim/sgd.h>

#include "../dispatch.h"

namespace mcd::optim {
namespace {

constexpr std::int64_t kParallelMin = 1 << 15;  // below this OpenMP costs more than it saves

template <class T>
struct SgdCoeffs {
  T lr, weight_decay, momentum, one_minus_dampening;
  bool use_momentum, nesterov, has_buffer;
};

template <class T>
SgdCoeffs<T> make_coeffs(const SgdOptions& o, double lr, bool has_buffer) {
  return {static_cast<T>(lr),          static_cast<T>(o.weight_decay),
          static_cast<T>(o.momentum),  static_cast<T>(1.0 - o.dampening),
          o.momentum != 0.0,           o.nesterov,
          has_buffer};
}

// The direction for one element; `buf` is the old buffer value (read only if has_buffer) and
// `new_buf` receives the new one when momentum is on.
template <class T>
inline T sgd_direction(T p, T g, T buf, const SgdCoeffs<T>& c, T& new_buf) {
  const T d = c.weight_decay != T(0) ? g + c.weight_decay * p : g;
  if (!c.use_momentum) return d;
  new_buf = c.has_buffer ? buf * c.momentum + c.one_minus_dampening * d : d;
  return c.nesterov ? d + c.momentum * new_buf : new_buf;
}

// buf may be null only without momentum.
template <class T>
void sgd_step_loop(std::int64_t n, T* p, const T* g, T* buf, const SgdCoeffs<T> c) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (std::int64_t i = 0; i < n; ++i) {
    T new_buf = T(0);
    const T d = sgd_direction(p[i], g[i], c.has_buffer ? buf[i] : T(0), c, new_buf);
    if (c.use_momentum) buf[i] = new_buf;
    p[i] = p[i] - c.lr * d;
  }
}

template <class T>
void sgd_direction_loop(std::int64_t n, const T* p, const T* g, const T* buf, T* out,
                        const SgdCoeffs<T> c) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (std::int64_t i = 0; i < n; ++i) {
    T new_buf = T(0);
    out[i] = sgd_direction(p[i], g[i], c.has_buffer ? buf[i] : T(0), c, new_buf);
  }
}

void validate(const SgdOptions& o, const std::string& where) {
  auto bad = [&](const char* field, double v) {
    fail("{}: invalid {} {}", where, field, v);
  };
  if (!std::isfinite(o.lr) || o.lr < 0) bad("lr", o.lr);
  if (!std::isfinite(o.momentum) || o.momentum < 0) bad("momentum", o.momentum);
  if (!std::isfinite(o.dampening)) bad("dampening", o.dampening);
  if (!std::isfinite(o.weight_decay) || o.weight_decay < 0) bad("weight_decay", o.weight_decay);
  MCD_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0),
            "{}: Nesterov momentum requires momentum > 0 and dampening == 0, got momentum {} "
            "and dampening {}",
            where, o.momentum, o.dampening);
}

Tensor copy_of(const Tensor& t) {
  if (!t.defined()) return t;
  Tensor out = Tensor::empty(t.shape(), t.dtype());
  out.copy_(t);
  return out;
}

}  // namespace

Sgd::Sgd(std::vector<Tensor> params, SgdOptions options)
    : Optimizer(std::move(params)), options_(options), buffers_(params_.size()) {
  validate(options_, "Sgd");
  lr_ = options_.lr;
}

SgdOptions Sgd::options() const {
  SgdOptions o = options_;
  o.lr = lr_;
  return o;
}

Tensor Sgd::momentum_buffer(std::size_t i) const {
  MCD_CHECK(i < params_.size(), "Sgd::momentum_buffer: index {} out of range for {} parameters",
            i, params_.size());
  return copy_of(buffers_[i]);
}

void Sgd::step() {
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const Tensor g = contiguous_grad(i);
    if (!g.defined()) continue;
    Tensor& p = params_[i];
    const bool has_buffer = buffers_[i].defined();
    if (options_.momentum != 0.0 && !has_buffer)
      buffers_[i] = Tensor::empty(p.shape(), p.dtype());
    MCD_DISPATCH_FLOATING(p.dtype(), "Sgd::step", {
      scalar_t* buf = buffers_[i].defined() ? buffers_[i].data<scalar_t>() : nullptr;
      sgd_step_loop<scalar_t>(p.numel(), p.data<scalar_t>(), g.data<scalar_t>(), buf,
                              make_coeffs<scalar_t>(options_, lr_, has_buffer));
    });
  }
}

Tensor Sgd::lookahead_direction(std::size_t i) const {
  MCD_CHECK(i < params_.size(),
            "Sgd::lookahead_direction: index {} out of range for {} parameters", i,
            params_.size());
  const Tensor g = params_[i].grad();
  if (!g.defined()) return g;
  return lookahead_direction(i, g);
}

Tensor Sgd::lookahead_direction(std::size_t i, const Tensor& grad) const {
  MCD_CHECK(i < params_.size(),
            "Sgd::lookahead_direction: index {} out of range for {} parameters", i,
            params_.size());
  const Tensor& p = params_[i];
  check_defined("Sgd::lookahead_direction", grad);
  detail::require_cpu("Sgd::lookahead_direction", {&grad});
  MCD_CHECK(grad.shape() == p.shape() && grad.dtype() == p.dtype(),
            "Sgd::lookahead_direction: gradient of shape {} ({}) for parameter {} of shape {} "
            "({})",
            shape_str(grad.shape()), dtype_name(grad.dtype()), i, shape_str(p.shape()),
            dtype_name(p.dtype()));
  const Tensor g = detail::contiguous_data(grad);
  Tensor out = Tensor::empty(p.shape(), p.dtype());
  const bool has_buffer = options_.momentum != 0.0 && buffers_[i].defined();
  MCD_DISPATCH_FLOATING(p.dtype(), "Sgd::lookahead_direction", {
    const scalar_t* buf = has_buffer ? buffers_[i].data<scalar_t>() : nullptr;
    sgd_direction_loop<scalar_t>(p.numel(), p.data<scalar_t>(), g.data<scalar_t>(), buf,
                                 out.data<scalar_t>(),
                                 make_coeffs<scalar_t>(options_, lr_, has_buffer));
  });
  return out;
}

// ---- state

StateDict Sgd::state_dict() const {
  StateDict s;
  write_common_state(s);
  s["momentum"] = Tensor::scalar(options_.momentum, DType::Float64);
  s["dampening"] = Tensor::scalar(options_.dampening, DType::Float64);
  s["weight_decay"] = Tensor::scalar(options_.weight_decay, DType::Float64);
  s["nesterov"] = Tensor::from_vector<std::int64_t>({options_.nesterov ? 1 : 0}, Shape{});
  for (std::size_t i = 0; i < params_.size(); ++i)
    if (buffers_[i].defined())
      s["state." + std::to_string(i) + ".momentum_buffer"] = copy_of(buffers_[i]);
  return s;
}

void Sgd::load_state_dict(const StateDict& s, const std::string& source) {
  StateReader r(s, source);
  SgdOptions o;
  o.lr = r.common(params_.size());
  o.momentum = r.real("momentum");
  o.dampening = r.real("dampening");
  o.weight_decay = r.real("weight_decay");
  const std::int64_t nesterov = r.integer("nesterov");
  if (nesterov != 0 && nesterov != 1)
    r.fail_at("nesterov", fmt::format("expected 0 or 1, got {}", nesterov));
  o.nesterov = nesterov == 1;
  validate(o, source);
  std::vector<Tensor> buffers(params_.size());
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const std::string key = "state." + std::to_string(i) + ".momentum_buffer";
    if (!r.has(key)) continue;
    if (o.momentum == 0.0) r.fail_at(key, "a momentum buffer, but the state has momentum 0");
    buffers[i] = r.buffer_like(key, params_[i]);
  }
  r.finish();
  options_ = o;
  lr_ = o.lr;
  buffers_ = std::move(buffers);
}

}  // namespace mcd::optim
