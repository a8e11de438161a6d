// SGD update loops (one pass over contiguous memory per parameter) and the state-free
// lookahead direction. The arithmetic follows torch.optim.SGD operation by operation, so
// float64 results agree with PyTorch to rounding. Parameters on a device step through the
// device table's multi-tensor kernel (the same arithmetic, bit for bit); their momentum
// buffers stay on the device, and state dicts copy them to the host.
#include <cmath>
#include <type_traits>
#include <utility>

#include <mcd/engine/device_ops.h>
#include <mcd/engine/device_ops/nn.h>
#include <mcd/engine/optim/sgd.h>

#include "../dispatch.h"

namespace mcd::optim {
namespace {

constexpr std::int64_t kParallelMin = 1 << 15;  // below this OpenMP costs more than it saves

template <class T>
struct SgdCoeffs {
  T lr, weight_decay, momentum, one_minus_dampening;
};

template <class T>
SgdCoeffs<T> make_coeffs(const SgdOptions& o, double lr) {
  return {static_cast<T>(lr), static_cast<T>(o.weight_decay), static_cast<T>(o.momentum),
          static_cast<T>(1.0 - o.dampening)};
}

// Runs f(WD, M, HB, N) with std::bool_constant flags (weight decay, momentum, an existing
// buffer, Nesterov): the flags are compile-time so that every loop is branch-free and
// vectorises. Without momentum there is no buffer and no Nesterov term.
template <class F>
void with_sgd_flags(const SgdOptions& o, bool has_buffer, F&& f) {
  auto pick = [](bool v, auto&& next) {
    if (v)
      next(std::true_type{});
    else
      next(std::false_type{});
  };
  const bool m = o.momentum != 0.0;
  pick(o.weight_decay != 0.0, [&](auto wd) {
    pick(m, [&](auto mom) {
      pick(m && has_buffer,
           [&](auto hb) { pick(m && o.nesterov, [&](auto n) { f(wd, mom, hb, n); }); });
    });
  });
}

// The direction for one element; `buf` is the old buffer value (used only with HB) and
// `new_buf` receives the new one when M.
template <class T, bool WD, bool M, bool HB, bool N>
inline T sgd_direction(T p, T g, T buf, T wd, T mu, T one_minus_dampening, T& new_buf) {
  T d = g;
  if constexpr (WD) d = g + wd * p;
  if constexpr (M) {
    if constexpr (HB)
      new_buf = buf * mu + one_minus_dampening * d;
    else
      new_buf = d;  // PyTorch's first step: the buffer starts as the direction, undamped
    if constexpr (N)
      d = d + mu * new_buf;
    else
      d = new_buf;
  }
  return d;
}

// buf may be null only without momentum; it is read only with HB.
template <class T, bool WD, bool M, bool HB, bool N>
void sgd_step_loop(std::int64_t n, T* __restrict p, const T* __restrict g, T* __restrict buf,
                   const SgdCoeffs<T>& c) {
  const T lr = c.lr, wd = c.weight_decay, mu = c.momentum, omd = c.one_minus_dampening;
#pragma omp parallel for simd schedule(static) if (parallel             \
                                                   : n >= kParallelMin) \
    firstprivate(lr, wd, mu, omd)
  for (std::int64_t i = 0; i < n; ++i) {
    T new_buf = T(0);
    const T d =
        sgd_direction<T, WD, M, HB, N>(p[i], g[i], HB ? buf[i] : T(0), wd, mu, omd, new_buf);
    if constexpr (M) buf[i] = new_buf;
    p[i] = p[i] - lr * d;
  }
}

template <class T, bool WD, bool M, bool HB, bool N>
void sgd_direction_loop(std::int64_t n, const T* __restrict p, const T* __restrict g,
                        const T* __restrict buf, T* __restrict out, const SgdCoeffs<T>& c) {
  const T wd = c.weight_decay, mu = c.momentum, omd = c.one_minus_dampening;
#pragma omp parallel for simd schedule(static) if (parallel \
                                                   : n >= kParallelMin) firstprivate(wd, mu, omd)
  for (std::int64_t i = 0; i < n; ++i) {
    T new_buf = T(0);
    out[i] = sgd_direction<T, WD, M, HB, N>(p[i], g[i], HB ? buf[i] : T(0), wd, mu, omd, new_buf);
  }
}

// Throws naming the field: as a state-dict key when `state` is given, else as an option.
void validate(const SgdOptions& o, const std::string& where, const StateReader* state = nullptr) {
  auto bad = [&](const char* field, const std::string& what) {
    if (state) state->fail_at(field, what);
    fail("{}: {} {}", where, field, what);
  };
  auto check = [&](bool ok, const char* field, double v, const char* expected) {
    if (!ok) bad(field, fmt::format("invalid value {} (expected {})", v, expected));
  };
  check(std::isfinite(o.lr) && o.lr >= 0, "lr", o.lr, "finite, >= 0");
  check(std::isfinite(o.momentum) && o.momentum >= 0, "momentum", o.momentum, "finite, >= 0");
  check(std::isfinite(o.dampening), "dampening", o.dampening, "finite");
  check(std::isfinite(o.weight_decay) && o.weight_decay >= 0, "weight_decay", o.weight_decay,
        "finite, >= 0");
  if (o.nesterov && !(o.momentum > 0 && o.dampening == 0))
    bad("nesterov", fmt::format("Nesterov momentum requires momentum > 0 and dampening == 0, "
                                "got momentum {} and dampening {}",
                                o.momentum, o.dampening));
}

SgdDeviceStep device_step(const SgdOptions& o, double lr, bool has_buffer) {
  SgdDeviceStep s;
  s.lr = lr;
  s.momentum = o.momentum;
  s.dampening = o.dampening;
  s.weight_decay = o.weight_decay;
  s.nesterov = o.nesterov;
  s.has_buffer = has_buffer;
  return s;
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

bool Sgd::has_momentum_buffer(std::size_t i) const {
  MCD_CHECK(i < params_.size(), "Sgd::has_momentum_buffer: index {} out of range for {} parameters",
            i, params_.size());
  return buffers_[i].defined();
}

Tensor Sgd::momentum_buffer(std::size_t i) const {
  MCD_CHECK(i < params_.size(), "Sgd::momentum_buffer: index {} out of range for {} parameters", i,
            params_.size());
  return copy_of(buffers_[i]);
}

void Sgd::step() {
  if (!params_[0].device().is_cpu()) {
    // Two lists: parameters with a buffer, and those on their first momentum step (whose
    // buffer is created here and set to the direction by the kernel).
    OptimDeviceOps& ops = require_device_ops<OptimDeviceOps>("Sgd::step", params_[0]);
    std::vector<Tensor> p[2], g[2], b[2];  // [has_buffer]
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const Tensor grad = contiguous_grad(i);
      if (!grad.defined()) continue;
      const bool has_buffer = buffers_[i].defined();
      if (options_.momentum != 0.0 && !has_buffer)
        buffers_[i] = Tensor::empty(params_[i].shape(), params_[i].dtype(), params_[i].device());
      p[has_buffer].push_back(params_[i]);
      g[has_buffer].push_back(grad);
      b[has_buffer].push_back(buffers_[i]);
    }
    for (const bool has_buffer : {false, true})
      if (!p[has_buffer].empty())
        ops.sgd_step(p[has_buffer], g[has_buffer], b[has_buffer],
                     device_step(options_, lr_, has_buffer));
    return;
  }
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const Tensor g = contiguous_grad(i);
    if (!g.defined()) continue;
    Tensor& p = params_[i];
    const bool has_buffer = buffers_[i].defined();
    if (options_.momentum != 0.0 && !has_buffer) buffers_[i] = Tensor::empty(p.shape(), p.dtype());
    MCD_DISPATCH_FLOATING(p.dtype(), "Sgd::step", {
      scalar_t* buf = buffers_[i].defined() ? buffers_[i].data<scalar_t>() : nullptr;
      const auto c = make_coeffs<scalar_t>(options_, lr_);
      with_sgd_flags(options_, has_buffer, [&](auto wd, auto m, auto hb, auto n) {
        sgd_step_loop<scalar_t, decltype(wd)::value, decltype(m)::value, decltype(hb)::value,
                      decltype(n)::value>(p.numel(), p.data<scalar_t>(), g.data<scalar_t>(), buf,
                                          c);
      });
    });
  }
}

Tensor Sgd::lookahead_direction(std::size_t i) const {
  MCD_CHECK(i < params_.size(), "Sgd::lookahead_direction: index {} out of range for {} parameters",
            i, params_.size());
  const Tensor g = params_[i].grad();
  if (!g.defined()) return g;
  return lookahead_direction(i, g);
}

Tensor Sgd::lookahead_direction(std::size_t i, const Tensor& grad) const {
  MCD_CHECK(i < params_.size(), "Sgd::lookahead_direction: index {} out of range for {} parameters",
            i, params_.size());
  const Tensor& p = params_[i];
  check_defined("Sgd::lookahead_direction", grad);
  check_same_device("Sgd::lookahead_direction", {&p, &grad});
  MCD_CHECK(grad.shape() == p.shape() && grad.dtype() == p.dtype(),
            "Sgd::lookahead_direction: gradient of shape {} ({}) for parameter {} of shape {} "
            "({})",
            shape_str(grad.shape()), dtype_name(grad.dtype()), i, shape_str(p.shape()),
            dtype_name(p.dtype()));
  const Tensor g = detail::contiguous_data(grad);
  Tensor out = Tensor::empty(p.shape(), p.dtype(), p.device());
  const bool has_buffer = options_.momentum != 0.0 && buffers_[i].defined();
  if (!p.device().is_cpu()) {
    require_device_ops<OptimDeviceOps>("Sgd::lookahead_direction", p)
        .sgd_direction(p, g, has_buffer ? buffers_[i] : Tensor(),
                       device_step(options_, lr_, has_buffer), out);
    return out;
  }
  MCD_DISPATCH_FLOATING(p.dtype(), "Sgd::lookahead_direction", {
    const scalar_t* buf = has_buffer ? buffers_[i].data<scalar_t>() : nullptr;
    const auto c = make_coeffs<scalar_t>(options_, lr_);
    with_sgd_flags(options_, has_buffer, [&](auto wd, auto m, auto hb, auto n) {
      sgd_direction_loop<scalar_t, decltype(wd)::value, decltype(m)::value, decltype(hb)::value,
                         decltype(n)::value>(p.numel(), p.data<scalar_t>(), g.data<scalar_t>(), buf,
                                             out.data<scalar_t>(), c);
    });
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
    if (buffers_[i].defined()) s[state_key(i, "momentum_buffer")] = host_copy_of(buffers_[i]);
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
  validate(o, source, &r);
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
