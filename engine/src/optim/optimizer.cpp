// Optimizer base (parameter checks, zero_grad, lr) and StateReader. load_state_dict of every
// optimizer reads through a StateReader so that a bad dict fails before any state changes.
// Parameters may live on a device (all on one); state dicts are always on the host.
#include <cmath>
#include <utility>

#include <mcd/engine/optim/optimizer.h>

#include "../dispatch.h"

namespace mcd::optim {

Optimizer::Optimizer(std::vector<Tensor> params) : params_(std::move(params)) {
  MCD_CHECK(!params_.empty(), "Optimizer: got an empty parameter list");
  std::set<const TensorImpl*> seen;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    MCD_CHECK(p.defined(), "Optimizer: parameter {} is undefined", i);
    MCD_CHECK(is_floating(p.dtype()), "Optimizer: parameter {} of shape {} is {}, not floating", i,
              shape_str(p.shape()), dtype_name(p.dtype()));
    // One device for the whole list: the device updates run one list per step.
    MCD_CHECK(p.device() == params_[0].device(),
              "Optimizer: parameter {} of shape {} is on {} but parameter 0 is on {}", i,
              shape_str(p.shape()), p.device().str(), params_[0].device().str());
    MCD_CHECK(p.is_leaf(), "Optimizer: parameter {} of shape {} is not a leaf tensor", i,
              shape_str(p.shape()));
    // The update loops walk the parameter's memory linearly.
    MCD_CHECK(p.is_contiguous(),
              "Optimizer: parameter {} of shape {} has strides {}, not contiguous", i,
              shape_str(p.shape()), shape_str(p.strides()));
    MCD_CHECK(seen.insert(&p.impl()).second,
              "Optimizer: parameter {} of shape {} appears more than once in the list", i,
              shape_str(p.shape()));
  }
}

void Optimizer::zero_grad() {
  for (Tensor& p : params_)
    p.zero_grad();
}

void Optimizer::set_lr(double lr) {
  MCD_CHECK(std::isfinite(lr) && lr >= 0.0, "Optimizer::set_lr: invalid learning rate {}", lr);
  lr_ = lr;
}

namespace {
void check_same_device_as_param(const Tensor& g, const Tensor& p, std::size_t i) {
  MCD_CHECK(g.device() == p.device(),
            "Optimizer::step: gradient of parameter {} (shape {}) is on {} but the parameter is "
            "on {}",
            i, shape_str(p.shape()), g.device().str(), p.device().str());
}
}  // namespace

Tensor Optimizer::contiguous_grad(std::size_t i) const {
  const Tensor& p = params_[i];
  Tensor g = p.grad();
  if (!g.defined()) return g;
  check_same_device_as_param(g, p, i);
  MCD_CHECK(g.shape() == p.shape() && g.dtype() == p.dtype(),
            "Optimizer::step: gradient of shape {} ({}) for parameter {} of shape {} ({})",
            shape_str(g.shape()), dtype_name(g.dtype()), i, shape_str(p.shape()),
            dtype_name(p.dtype()));
  return detail::contiguous_data(g);
}

void Optimizer::write_common_state(StateDict& s) const {
  s["lr"] = Tensor::scalar(lr_, DType::Float64);
  s["num_params"] =
      Tensor::from_vector<std::int64_t>({static_cast<std::int64_t>(params_.size())}, Shape{});
}

Tensor Optimizer::copy_of(const Tensor& t) {
  if (!t.defined()) return t;
  if (!t.device().is_cpu()) return t.detach().clone();
  Tensor out = Tensor::empty(t.shape(), t.dtype());
  out.copy_(t);
  return out;
}

Tensor Optimizer::host_copy_of(const Tensor& t) {
  if (!t.defined() || t.device().is_cpu()) return copy_of(t);
  return t.detach().to(Device::cpu());
}

std::string Optimizer::state_key(std::size_t i, const char* name) {
  return "state." + std::to_string(i) + "." + name;
}

// ---- StateReader

StateReader::StateReader(const StateDict& s, std::string source)
    : dict_(s), source_(std::move(source)) {}

bool StateReader::has(const std::string& key) const {
  return dict_.count(key) != 0;
}

void StateReader::fail_at(const std::string& key, const std::string& what) const {
  fail("{}: key '{}': {}", source_, key, what);
}

const Tensor& StateReader::require(const std::string& key) {
  auto it = dict_.find(key);
  if (it == dict_.end()) fail_at(key, "missing");
  if (!it->second.defined()) fail_at(key, "tensor is undefined");
  if (!it->second.device().is_cpu())
    fail_at(key, fmt::format("expected a CPU tensor, got one on {}", it->second.device().str()));
  read_.insert(key);
  return it->second;
}

double StateReader::real(const std::string& key) {
  const Tensor& t = require(key);
  if (!t.shape().empty() || !is_floating(t.dtype()))
    fail_at(key, fmt::format("expected a floating scalar (shape []), got {} of shape {}",
                             dtype_name(t.dtype()), shape_str(t.shape())));
  const double v = t.item();
  if (!std::isfinite(v)) fail_at(key, fmt::format("expected a finite value, got {}", v));
  return v;
}

std::int64_t StateReader::integer(const std::string& key) {
  const Tensor& t = require(key);
  if (!t.shape().empty() || t.dtype() != DType::Int64)
    fail_at(key, fmt::format("expected an int64 scalar (shape []), got {} of shape {}",
                             dtype_name(t.dtype()), shape_str(t.shape())));
  return *t.data<std::int64_t>();
}

Tensor StateReader::buffer_like(const std::string& key, const Tensor& param) {
  const Tensor& t = require(key);
  if (!is_floating(t.dtype()))
    fail_at(key, fmt::format("expected a floating tensor, got {}", dtype_name(t.dtype())));
  if (t.shape() != param.shape())
    fail_at(key, fmt::format("expected shape {} (the parameter's), got {}",
                             shape_str(param.shape()), shape_str(t.shape())));
  Tensor out = Tensor::empty(param.shape(), param.dtype());
  out.copy_(t);
  return param.device().is_cpu() ? out : out.to(param.device());
}

double StateReader::common(std::size_t num_params) {
  const std::int64_t n = integer("num_params");
  if (n != static_cast<std::int64_t>(num_params))
    fail_at("num_params",
            fmt::format("state is for {} parameters, this optimizer has {}", n, num_params));
  const double lr = real("lr");
  if (lr < 0.0) fail_at("lr", fmt::format("expected a non-negative learning rate, got {}", lr));
  return lr;
}

void StateReader::finish() const {
  for (const auto& [key, tensor] : dict_)
    if (read_.count(key) == 0) fail_at(key, "unexpected key for this optimizer");
}

}  // namespace mcd::optim
