// Module: a tree of named parameters, buffers and child modules, addressed by PyTorch's
// dotted state-dict names (`layer1.0.bn1.running_mean`). Parameters are leaf tensors that
// optimizers update in place, so a module never swaps a parameter's TensorImpl: to(dtype)
// and load_state_dict rewrite the existing impls, and every handle to them stays valid.
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <mcd/engine/dtype.h>
#include <mcd/engine/state_dict.h>
#include <mcd/engine/tensor.h>

namespace mcd::nn {

class Module {
 public:
  Module() = default;
  // Copies would alias the parameters silently; share modules through shared_ptr instead.
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  virtual ~Module() = default;

  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return forward(x); }

  // Recursive, in registration order (a module's own entries before its children's).
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  std::vector<Tensor> parameters() const;
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const;

  // Parameters and buffers, detached but aliasing the module's storage.
  StateDict state_dict() const;
  // Validates every key, dtype and shape before copying anything; on any problem throws an
  // error naming `source`, each offending key and both shapes, and leaves the module as it
  // was. Missing keys are always errors; unexpected keys are errors when `strict`.
  void load_state_dict(const StateDict& state, const std::string& source = "state dict",
                       bool strict = true);

  void train(bool on = true);  // recursive
  void eval() { train(false); }
  bool is_training() const { return training_; }

  std::int64_t num_parameters() const;
  // Converts parameters and floating buffers in place (same TensorImpl, new storage) and
  // drops their gradients. Call it before an optimizer captures any state.
  void to(DType dtype);
  // Moves parameters and floating buffers to `device` in place (same TensorImpl, new storage)
  // and drops their gradients. Integer buffers (counters such as BatchNorm's
  // num_batches_tracked) stay on the host: only the host reads and bumps them, and a device
  // copy would cost a round trip per layer and step. Call it before an optimizer captures any
  // state.
  void to(Device device);

 protected:
  // Names are non-empty, contain no '.', and are unique within the module.
  Tensor& register_parameter(std::string name, Tensor t);  // sets requires_grad
  Tensor& register_buffer(std::string name, Tensor t);
  template <class M>
  std::shared_ptr<M> register_module(std::string name, std::shared_ptr<M> m) {
    add_child(std::move(name), m);
    return m;
  }

 private:
  using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
  void add_child(std::string name, std::shared_ptr<Module> m);
  void check_new_name(const std::string& name, const char* what) const;
  void collect_parameters(const std::string& prefix, NamedTensors& out) const;
  void collect_buffers(const std::string& prefix, NamedTensors& out) const;

  // deques keep the references returned by register_* valid as entries are added.
  std::deque<std::pair<std::string, Tensor>> parameters_;
  std::deque<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

// The device of a module's first parameter (the CPU for a module without parameters): where
// its inputs must be.
Device model_device(const Module& module);

}  // namespace mcd::nn
