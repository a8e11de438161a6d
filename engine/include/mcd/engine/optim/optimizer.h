// Optimizer: the interface every optimizer implements, and StateReader, the checked reader
// of optimizer state dicts. Optimizers update leaf parameters in place, outside autograd;
// a parameter without a gradient is skipped and its state left as it was (as PyTorch).
#pragma once
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <mcd/engine/state_dict.h>
#include <mcd/engine/tensor.h>

namespace mcd::optim {

class Optimizer {
 public:
  // Parameters must be distinct, defined, contiguous, floating leaf tensors on the CPU.
  explicit Optimizer(std::vector<Tensor> params);
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  virtual void step() = 0;
  // Sets every parameter's grad to undefined (PyTorch's set_to_none=True).
  void zero_grad();

  double lr() const { return lr_; }
  void set_lr(double lr);

  // Everything needed to resume exactly: hyper-parameters, step counts and per-parameter
  // buffers, as copies (later steps do not change a returned dict). Keys: "lr",
  // "num_params", optimizer hyper-parameters by name, "state.<i>.<buffer>" per parameter.
  virtual StateDict state_dict() const = 0;
  // Restores a dict written by state_dict() of the same optimizer type over parameters of the
  // same shapes. Everything is validated before anything changes; an error names `source`
  // and the offending key.
  virtual void load_state_dict(const StateDict& s,
                               const std::string& source = "optimizer state") = 0;

  const std::vector<Tensor>& params() const { return params_; }

 protected:
  // The gradient of parameter i as a contiguous tensor of the parameter's dtype, or an
  // undefined Tensor when the parameter has none.
  Tensor contiguous_grad(std::size_t i) const;
  // Writes "lr" and "num_params" into s.
  void write_common_state(StateDict& s) const;
  // A copy of t (undefined stays undefined) on t's device, or on the host: state dicts hold
  // host copies, so later steps never change a returned dict.
  static Tensor copy_of(const Tensor& t);
  static Tensor host_copy_of(const Tensor& t);
  // "state.<i>.<name>", the key of parameter i's buffer or counter `name`.
  static std::string state_key(std::size_t i, const char* name);

  std::vector<Tensor> params_;
  double lr_ = 0.0;
};

// Reads an optimizer state dict with checks: each accessor throws an mcd::Error naming the
// source and the key; finish() throws if any key was never read (an unexpected key).
class StateReader {
 public:
  StateReader(const StateDict& s, std::string source);

  bool has(const std::string& key) const;
  double real(const std::string& key);           // a rank-0 floating tensor
  std::int64_t integer(const std::string& key);  // a rank-0 int64 tensor
  // A floating tensor shaped like `param`, copied and converted to the parameter's dtype.
  Tensor buffer_like(const std::string& key, const Tensor& param);
  // Reads "lr" and "num_params" and checks num_params against the optimizer's.
  double common(std::size_t num_params);
  void finish() const;

  [[noreturn]] void fail_at(const std::string& key, const std::string& what) const;
  const std::string& source() const { return source_; }

 private:
  const Tensor& require(const std::string& key);

  const StateDict& dict_;
  std::string source_;
  std::set<std::string> read_;
};

}  // namespace mcd::optim
