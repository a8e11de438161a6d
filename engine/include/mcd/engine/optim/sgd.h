// Stochastic gradient descent with momentum, dampening, L2 weight decay and Nesterov, with
// exactly torch.optim.SGD semantics: a parameter's momentum buffer is set to its first
// direction (no dampening) on the first step that parameter has a gradient.
#pragma once
#include <cstddef>
#include <vector>

#include <mcd/engine/optim/optimizer.h>

namespace mcd::optim {

struct SgdOptions {
  double lr = 0.1;
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;
  bool nesterov = false;  // requires momentum > 0 and dampening == 0, as PyTorch
};

// Per parameter, with g its gradient:
//   d = g + weight_decay * p
//   if momentum != 0: buf = (first step) ? d : momentum * buf + (1 - dampening) * d
//                     d = nesterov ? d + momentum * buf : buf
//   p -= lr * d
class Sgd final : public Optimizer {
 public:
  Sgd(std::vector<Tensor> params, SgdOptions options = {});

  void step() override;
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& s, const std::string& source = "optimizer state") override;

  SgdOptions options() const;  // .lr is the current lr()
  // Parameter i's momentum buffer (a copy), undefined until its first step with momentum.
  Tensor momentum_buffer(std::size_t i) const;
  // Whether parameter i has one yet (without copying it).
  bool has_momentum_buffer(std::size_t i) const;

  // The direction d that step() would subtract (times lr) from parameter i given its current
  // .grad, computed without changing any state: with d0 = g + weight_decay * p,
  //   no momentum:            d0
  //   no buffer yet:          d0 (the first-step rule: the new buffer is d0 itself)
  //   buffer:                 b = momentum * buf + (1 - dampening) * d0, then
  //                           d = nesterov ? d0 + momentum * b : b
  // so step() leaves p equal to p - lr() * lookahead_direction(i). Used by the meta-gradient
  // lookahead theta' = theta - lr * d. Returns a new contiguous tensor shaped like the
  // parameter, or an undefined Tensor when the parameter has no gradient (step() skips it).
  Tensor lookahead_direction(std::size_t i) const;
  // The same with an explicit gradient `grad` (shaped like parameter i, any layout) in place
  // of the parameter's .grad, e.g. one obtained from mcd::grad without touching .grad.
  Tensor lookahead_direction(std::size_t i, const Tensor& grad) const;

 private:
  SgdOptions options_;
  std::vector<Tensor> buffers_;  // undefined until the parameter's first step with momentum
};

}  // namespace mcd::optim
