// Module bookkeeping: registration, recursive traversal with dotted names, state dicts,
// train/eval and dtype conversion. Conversions and loads rewrite existing TensorImpls so
// that handles held by layers and optimizers keep pointing at the live parameters.
#include <mcd/models/module.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <mcd/engine/autograd.h>

namespace mcd::nn {
namespace {

std::string join_name(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

std::string describe(const Tensor& t) {
  return fmt::format("{} {} on {}", shape_str(t.shape()), dtype_name(t.dtype()), t.device().str());
}

// Gives `t` new storage of `dtype` while keeping its TensorImpl (and so every handle).
void replace_storage(const Tensor& t, const Tensor& converted) {
  TensorImpl& impl = t.impl();
  impl.storage = converted.impl().storage;
  impl.strides = converted.strides();
  impl.offset = converted.offset();
  impl.dtype = converted.dtype();
  impl.grad.reset();
  impl.tangent.reset();
}

void convert_in_place(const Tensor& t, DType dtype) {
  if (t.dtype() == dtype) return;
  NoGradGuard no_grad;
  replace_storage(t, t.detach().to(dtype).contiguous());
}

// Gives `t` new storage on `device` while keeping its TensorImpl (and so every handle).
void move_in_place(const Tensor& t, Device device) {
  if (t.device() == device) return;
  NoGradGuard no_grad;
  replace_storage(t, t.detach().to(device));
}

}  // namespace

void Module::check_new_name(const std::string& name, const char* what) const {
  MCD_CHECK(!name.empty() && name.find('.') == std::string::npos,
            "Module::{}: invalid name '{}' (must be non-empty and contain no '.')", what, name);
  auto taken = [&](const auto& entries) {
    for (const auto& e : entries)
      if (e.first == name) return true;
    return false;
  };
  MCD_CHECK(!taken(parameters_) && !taken(buffers_) && !taken(children_),
            "Module::{}: the name '{}' is already registered in this module", what, name);
}

Tensor& Module::register_parameter(std::string name, Tensor t) {
  check_new_name(name, "register_parameter");
  check_floating("Module::register_parameter", t);
  MCD_CHECK(t.is_leaf(), "Module::register_parameter: '{}' ({}) must be a leaf tensor", name,
            shape_str(t.shape()));
  t.set_requires_grad(true);
  parameters_.emplace_back(std::move(name), std::move(t));
  return parameters_.back().second;
}

Tensor& Module::register_buffer(std::string name, Tensor t) {
  check_new_name(name, "register_buffer");
  check_defined("Module::register_buffer", t);
  buffers_.emplace_back(std::move(name), std::move(t));
  return buffers_.back().second;
}

void Module::add_child(std::string name, std::shared_ptr<Module> m) {
  check_new_name(name, "register_module");
  MCD_CHECK(m != nullptr, "Module::register_module: child '{}' is null", name);
  MCD_CHECK(m.get() != this, "Module::register_module: '{}' cannot be its own child", name);
  children_.emplace_back(std::move(name), std::move(m));
}

void Module::collect_parameters(const std::string& prefix, NamedTensors& out) const {
  for (const auto& [name, t] : parameters_)
    out.emplace_back(join_name(prefix, name), t);
  for (const auto& [name, child] : children_)
    child->collect_parameters(join_name(prefix, name), out);
}

void Module::collect_buffers(const std::string& prefix, NamedTensors& out) const {
  for (const auto& [name, t] : buffers_)
    out.emplace_back(join_name(prefix, name), t);
  for (const auto& [name, child] : children_)
    child->collect_buffers(join_name(prefix, name), out);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  NamedTensors out;
  collect_parameters("", out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters())
    out.push_back(t);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
  NamedTensors out;
  collect_buffers("", out);
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_children() const {
  return children_;
}

StateDict Module::state_dict() const {
  StateDict out;
  for (auto& [name, t] : named_parameters())
    out.emplace(name, t.detach());
  for (auto& [name, t] : named_buffers())
    out.emplace(name, t.detach());
  return out;
}

void Module::load_state_dict(const StateDict& state, const std::string& source, bool strict) {
  const StateDict own = state_dict();
  std::vector<std::string> problems;
  for (const auto& [key, dst] : own) {
    const auto it = state.find(key);
    if (it == state.end()) {
      problems.push_back(
          fmt::format("missing key '{}' (the module expects {})", key, describe(dst)));
      continue;
    }
    const Tensor& src = it->second;
    if (!src.defined()) {
      problems.push_back(fmt::format("key '{}' holds an undefined tensor (the module expects {})",
                                     key, describe(dst)));
    } else if (src.shape() != dst.shape() || src.dtype() != dst.dtype()) {
      problems.push_back(fmt::format("key '{}' is {} in {}, but the module expects {}", key,
                                     describe(src), source, describe(dst)));
    }
  }
  if (strict) {
    for (const auto& [key, src] : state)
      if (!own.contains(key))
        problems.push_back(fmt::format("unexpected key '{}' ({}) in {}", key,
                                       src.defined() ? describe(src) : "undefined", source));
  }
  if (!problems.empty())
    fail("load_state_dict: {} does not match the module ({} problem{}):\n  {}", source,
         problems.size(), problems.size() == 1 ? "" : "s", fmt::join(problems, "\n  "));

  for (const auto& [key, dst] : own) {
    Tensor target = dst;
    const Tensor& value = state.at(key);
    // Checkpoints load on the host; a module on a device takes a copy there.
    target.copy_(value.device() == target.device() ? value : value.to(target.device()));
  }
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_)
    child->train(on);
}

std::int64_t Module::num_parameters() const {
  std::int64_t n = 0;
  for (const auto& t : parameters())
    n += t.numel();
  return n;
}

void Module::to(DType dtype) {
  MCD_CHECK(is_floating(dtype), "Module::to: target dtype must be floating, got {}",
            dtype_name(dtype));
  for (auto& [name, t] : named_parameters())
    convert_in_place(t, dtype);
  for (auto& [name, t] : named_buffers())
    if (is_floating(t.dtype())) convert_in_place(t, dtype);
}

void Module::to(Device device) {
  for (auto& [name, t] : named_parameters())
    move_in_place(t, device);
  for (auto& [name, t] : named_buffers())
    if (is_floating(t.dtype())) move_in_place(t, device);
}

Device model_device(const Module& module) {
  const auto params = module.named_parameters();
  return params.empty() ? Device::cpu() : params.front().second.device();
}

}  // namespace mcd::nn
